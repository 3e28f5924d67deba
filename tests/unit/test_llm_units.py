"""Unit tests of the LLM teacher's parts: prompt, answer parsing, P(yes) from logprobs, prices, budget,
rate limiter, Retry-After parsing and the settings file."""

import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest

from assay.labeling.teacher.cost import Budget, BudgetExhausted, cost_usd, estimate_prompt_tokens
from assay.labeling.teacher.prompt import (
    decide,
    normalise_token,
    p_yes_from_top_logprobs,
    parse_answer,
    read_completion,
    render_prompt,
    truncate,
)
from assay.labeling.teacher.ratelimit import RateLimiter, _Rate, backoff_s, retry_after_s
from assay.labeling.teacher.settings import Price, Settings, SettingsError, load_settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?", guidelines="Insults are rude.",
                    examples=[{"text": "you idiot", "answer": True}, {"text": "thanks", "answer": False}],
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])


def test_prompt_holds_question_guidelines_examples_and_text():
    prompt = render_prompt(SPEC, "some {braces} text")
    assert "Question: Is this comment rude?" in prompt and "Insults are rude." in prompt
    assert "- Text: 'you idiot' -> Yes" in prompt and "- Text: 'thanks' -> No" in prompt
    assert "<text>\nsome {braces} text\n</text>" in prompt and prompt.rstrip().endswith("Answer (Yes or No):")
    custom = render_prompt(SPEC, "hi", "Q={question} JSON={\"a\": 1} T={text}")
    assert custom == 'Q=Is this comment rude? JSON={"a": 1} T=hi'


def test_template_override_is_validated():
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \{questoin\}"):
        LlmSource(kind="llm", base_url="http://x/v1", model="m", api_key_env="K", prompt="{questoin} {text}")
    with pytest.raises(ValueError, match=r"must contain the \{text\} placeholder"):
        LlmSource(kind="llm", base_url="http://x/v1", model="m", api_key_env="K", prompt="{question}")


def test_truncation_appends_a_note():
    assert truncate("short", 10) == ("short", False)
    text, cut = truncate("x" * 50, 20)
    assert cut and text.startswith("x" * 20 + "\n[Note: the text was truncated to its first 20 characters.]")


@pytest.mark.parametrize("content, expected", [
    ("Yes", 1), (" no.", 0), ("**Yes**", 1), ("Answer: No", 0), ("YES, it is", 1), ("Maybe", None), ("", None),
    (None, None), ("Nope", None), ("Yesterday", None)])
def test_parse_answer(content, expected):
    assert parse_answer(content) == expected


def test_normalise_token():
    assert [normalise_token(t) for t in ("Yes", " yes", "YES.", "No", "\n", "**", "Nope")] == \
        ["yes", "yes", "yes", "no", None, None, None]


def test_p_yes_sums_every_spelling_and_skips_leading_tokens():
    top = [("Yes", math.log(0.6)), (" yes", math.log(0.1)), ("No", math.log(0.2)), (" no", math.log(0.05)),
           ("Maybe", math.log(0.05))]
    p = p_yes_from_top_logprobs([("\n", [("\n", 0.0)]), ("Yes", top)])
    assert p == pytest.approx(0.7 / 0.95)
    assert p_yes_from_top_logprobs([("Sure", [("Sure", 0.0)])]) is None
    assert p_yes_from_top_logprobs([("Yes", [("Maybe", 0.0)])]) is None


def test_read_completion_and_decide():
    body = {"choices": [{"message": {"content": "No"}, "logprobs": {"content": [
        {"token": "No", "logprob": math.log(0.8), "top_logprobs": [{"token": "No", "logprob": math.log(0.8)},
                                                                   {"token": "Yes", "logprob": math.log(0.2)}]}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 1}}
    answer = read_completion(body)
    assert answer["p_yes"] == pytest.approx(0.2) and answer["tokens_in"] == 120 and answer["tokens_out"] == 1
    assert decide(answer) == (0, pytest.approx(0.8))
    assert decide({"content": "Yes", "p_yes": None}) == (1, None)
    assert decide({"content": "It depends", "p_yes": None}) == (-1, None)


def test_prices_match_the_longest_prefix_and_unknown_models_cost_nothing():
    settings = Settings(prices={"my-70b": Price(input=0.2, output=0.2)})
    assert settings.price("gpt-4o-mini-2024-07-18") == Price(input=0.15, output=0.60)
    assert settings.price("gpt-4o-2024-08-06") == Price(input=2.50, output=10.00)
    assert settings.price("my-70b") == Price(input=0.2, output=0.2)
    assert settings.price("llama-3-70b") is None
    assert cost_usd(None, 10_000, 10) == 0.0
    assert cost_usd(Price(input=2.0, output=8.0), 1_000_000, 500_000) == pytest.approx(6.0)
    assert cost_usd(Price(input=2.0, output=8.0), 1_000_000, 500_000, batch=True) == pytest.approx(3.0)
    assert estimate_prompt_tokens("x" * 300) >= 300 / 4  # over-estimates English (about 4 chars a token)


def test_budget_reserves_settles_and_persists(tmp_path):
    budget = Budget(tmp_path / "ledger.sqlite", limit_usd=1.0)
    held = budget.reserve(0.6)
    with pytest.raises(BudgetExhausted, match="budget of \\$1.0000 reached"):
        budget.reserve(0.5)
    budget.settle(held, 0.4, "gpt")
    assert budget.remaining_usd == pytest.approx(0.6)
    again = Budget(tmp_path / "ledger.sqlite", limit_usd=1.0)  # a resumed run sees the spend
    assert again.spent_usd == pytest.approx(0.4)
    assert Budget.for_run(tmp_path / "shared.sqlite", 2.0) is Budget.for_run(tmp_path / "shared.sqlite", 2.0)


def test_rate_cell_spaces_requests_after_the_burst():
    rate = _Rate(per_minute=600, burst_s=1.0)  # 10 a second, bursts of one second
    waits = [rate.reserve(1, now=100.0) for _ in range(15)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    tokens = _Rate(per_minute=60_000, burst_s=1.0)  # 1,000 tokens a second
    assert tokens.reserve(800, now=0.0) == 0.0
    assert tokens.reserve(800, now=0.0) == pytest.approx(0.6)


def test_rate_limiter_blocks_callers():
    limiter = RateLimiter(requests_per_minute=1200, burst_s=0.05)  # 20 a second
    start = time.monotonic()
    for _ in range(6):
        limiter.acquire(tokens=10)
    assert time.monotonic() - start >= 0.2
    assert RateLimiter().acquire(tokens=10**9) == 0.0


def test_retry_after_forms_and_backoff():
    headers = lambda **h: SimpleNamespace(headers=h)  # noqa: E731
    assert retry_after_s(headers(**{"retry-after": "2"})) == 2.0
    assert retry_after_s(headers(**{"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s(headers(**{"retry-after": date})) <= 31
    assert retry_after_s(headers(**{"retry-after": "soon"})) is None
    assert retry_after_s(None) is None
    assert 3.0 <= backoff_s(1, 1.0, 60.0, retry_after=3.0) <= 3.1
    delays = [backoff_s(attempt, 1.0, 8.0, None) for attempt in (1, 2, 3, 4, 5, 6)]
    for delay, ceiling in zip(delays, (1, 2, 4, 8, 8, 8)):
        assert ceiling / 2 <= delay <= ceiling


def test_settings_defaults_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSAY_CONFIG", raising=False)
    assert load_settings() == Settings()
    (tmp_path / "assay.yaml").write_text(
        "residency: on-prem\nbudget_usd: 25\nprices:\n  my-70b: {input: 0.1, output: 0.2}\n")
    settings = load_settings()
    assert settings.residency == "on-prem" and settings.budget_usd == 25 and settings.price("my-70b").output == 0.2
    other = tmp_path / "other.yaml"
    other.write_text("concurrency: 32\n")
    monkeypatch.setenv("ASSAY_CONFIG", str(other))
    assert load_settings().concurrency == 32


@pytest.mark.parametrize("text, expected", [
    ("residency: eu\n", r"bad.yaml:1: residency: .*fix: use residency: cloud or residency: on-prem"),
    ("concurency: 4\n", r"bad.yaml:1: concurency: Extra inputs .*fix: did you mean `concurrency`\?"),
    ("budget_usd: 5\nprices:\n  gpt-x: {input: 1}\n", r"bad.yaml:3: prices.gpt-x.output: Field required"),
    ("mask_patterns:\n  ticket: '(unclosed'\n", r"bad.yaml:2: mask_patterns: .*does not compile"),
    ("residency: [on-prem\n", r"bad.yaml:2: not valid YAML"),
    ("- a list\n", r"bad.yaml:1: settings must be a YAML mapping"),
])
def test_bad_settings_files_name_file_line_field_and_fix(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=expected):
        load_settings(path)


def test_missing_settings_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_cache_takes_concurrent_writers_on_separate_connections(tmp_path):
    import threading

    from assay.labeling.teacher.cache import ResponseCache

    path = tmp_path / "cache.sqlite"
    caches = [ResponseCache(path) for _ in range(4)]  # one connection each, as separate processes would have

    def write(index: int) -> None:
        for row in range(100):
            caches[index].put(f"{index}-{row}", {"content": "Yes", "p_yes": 0.9})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ResponseCache(path)) == 400
    found = caches[0].get_many([f"3-{row}" for row in range(100)] + ["missing"])
    assert len(found) == 100 and found["3-7"] == {"content": "Yes", "p_yes": 0.9}
