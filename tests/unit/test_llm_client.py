"""The LLM teacher against the FAKE OpenAI server: concurrency, retries, Retry-After, failures, cache,
budget, logprobs and the hard-vote fallback. The server counts every request it receives."""

import json
import random
import socket
import time

import pytest
from fake_openai import FakeOpenAI, stub_dns

from assay.labeling.teacher import LlmTeacher, LlmTeacherError
from assay.labeling.teacher.settings import Price, Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    examples=[{"text": "you idiot", "answer": True}, {"text": "thanks", "answer": False}],
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, request_timeout_s=5)
KEY_ENV = "ASSAY_TEST_FAKE_KEY"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-fake-test")


def source(fake: FakeOpenAI, **fields) -> LlmSource:
    return LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model=fields.pop("model", "fake-model"),
                     api_key_env=KEY_ENV, **fields)


def teacher(fake: FakeOpenAI, run_dir, settings: dict | None = None, spec=SPEC, **fields) -> LlmTeacher:
    return LlmTeacher(spec, source(fake, **fields), run_dir, Settings(**{**FAST, **(settings or {})}), progress=False)


def texts(n: int, prefix: str = "comment") -> tuple[list[str], list[str]]:
    return [f"id{i}" for i in range(n)], [f"{prefix} number {i}" for i in range(n)]


def failures(run_dir) -> list[dict]:
    path = run_dir / "llm" / "failures" / "is_rude.gpt.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_concurrency_limit_holds_at_the_server(tmp_path):
    with FakeOpenAI(latency_s=0.05) as fake:
        ids, bodies = texts(40)
        table = teacher(fake, tmp_path, {"concurrency": 4}).vote(ids, bodies)
    assert fake.max_in_flight == 4
    assert fake.chat_requests == 40 and table.num_rows == 40 and -1 not in table["vote"].to_pylist()


def test_logprobs_give_p_yes_and_hard_votes_without_them(tmp_path):
    chance = {f"text {i}": i / 20 + 0.01 for i in range(20)}
    ids, bodies = list(chance), list(chance)
    with FakeOpenAI(answer=chance.__getitem__) as fake:
        table = teacher(fake, tmp_path / "a").vote(ids, bodies)
    p_yes = [c if v == 1 else 1 - c for v, c in zip(table["vote"].to_pylist(), table["conf"].to_pylist())]
    assert p_yes == pytest.approx(list(chance.values()), abs=1e-6)  # Yes + " yes" mass, renormalised
    assert all(0.5 <= c <= 1 for c in table["conf"].to_pylist())
    with FakeOpenAI(answer=chance.__getitem__, logprobs=False) as fake:
        hard = teacher(fake, tmp_path / "b").vote(ids, bodies)
    assert hard["vote"].to_pylist() == [int(p >= 0.5) for p in chance.values()]
    assert hard["conf"].null_count == 20


def test_endpoint_without_logprobs_support_falls_back_to_hard_votes(tmp_path):
    with FakeOpenAI(answer=lambda text: 0.9, fault=lambda text, attempt: "400-logprobs") as fake:
        one = teacher(fake, tmp_path)
        table = one.vote(*texts(5))
    assert table["vote"].to_pylist() == [1] * 5 and table["conf"].null_count == 5
    assert not failures(tmp_path) and one.summary()["with_logprobs"] == 0


def test_every_record_ends_labelled_or_with_a_failure_record(tmp_path):
    rng = random.Random(7)
    plan = {}

    def fault(text, attempt):
        if "dead" in text:
            return "500"
        if "maybe" in text:
            return None
        if attempt == 1 and text not in plan:
            plan[text] = rng.choice([None, None, "429", "500", "503", "timeout", "malformed", "slow:0.05"])
        return plan.get(text) if attempt == 1 else None

    ids, bodies = texts(60)
    bodies[5], bodies[17] = "dead record one", "dead record two"
    bodies[9] = "maybe record"
    with FakeOpenAI(answer=lambda t: "Perhaps" if "maybe" in t else 0.8, fault=fault, timeout_sleep_s=0.6) as fake:
        one = teacher(fake, tmp_path, {"request_timeout_s": 0.3, "max_retries": 3, "concurrency": 8})
        table = one.vote(ids, bodies)
    records = {f["id"]: f for f in failures(tmp_path)}
    votes = dict(zip(table["id"].to_pylist(), table["vote"].to_pylist()))
    assert all((votes[i] != -1) != (i in records) for i in ids), "each record: a vote or a failure record"
    assert set(records) == {"id5", "id17", "id9"}
    assert records["id5"]["attempts"] == 4
    assert "failed after 4 attempts: InternalServerError 500" in records["id5"]["reason"]
    assert "unparseable answer: 'Perhaps'" in records["id9"]["reason"]
    assert fake.by_text["dead record one"] == 4
    summary = one.summary()
    assert summary["failed"] == 3 and summary["answered"] == 58 and summary["retries"] >= sum(
        1 for v in plan.values() if v and not v.startswith("slow")) + 6


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "429:0.6" if attempt == 1 else None) as fake:
        table = teacher(fake, tmp_path, {"backoff_base_s": 0.01}).vote(["a"], ["slow down"])
    first, second = fake.arrivals["slow down"]
    assert second - first >= 0.6 and table["vote"][0].as_py() != -1


def test_requests_per_minute_limit_spaces_requests(tmp_path):
    with FakeOpenAI() as fake:
        start = time.monotonic()
        teacher(fake, tmp_path, {"requests_per_minute": 600, "concurrency": 8}).vote(*texts(25))
        elapsed = time.monotonic() - start
    arrivals = sorted(t for times in fake.arrivals.values() for t in times)
    assert elapsed >= 1.3  # 10 in the first second's burst, then 10 a second
    assert arrivals[-1] - arrivals[10] >= 1.2


def test_cache_means_a_rerun_pays_nothing_and_a_changed_prompt_asks_again(tmp_path):
    ids, bodies = texts(30)
    with FakeOpenAI() as fake:
        first = teacher(fake, tmp_path).vote(ids, bodies)
        rerun_teacher = teacher(fake, tmp_path)
        again = rerun_teacher.vote(ids + ["dup"], bodies + [bodies[0]])
        assert fake.chat_requests == 30
        assert again.slice(0, 30).equals(first) and rerun_teacher.summary()["cached"] == 31
        changed = SPEC.model_copy(update={"question": "Is this comment very rude?"})
        teacher(fake, tmp_path, spec=changed).vote(ids, bodies)
        assert fake.chat_requests == 60
        dup_teacher = teacher(fake, tmp_path / "fresh")
        dup_teacher.vote(["x", "y"], ["same text", "same text"])
        assert fake.by_text["same text"] == 1


def test_budget_cap_stops_before_it_is_exceeded(tmp_path):
    ids, bodies = texts(40)
    settings = {"budget_usd": 1.0, "prices": {"fake-priced": Price(input=1000.0, output=1000.0)}, "concurrency": 4}
    with FakeOpenAI(latency_s=0.01) as fake:
        one = teacher(fake, tmp_path, settings, model="fake-priced")
        table = one.vote(ids, bodies)
        summary = one.summary()
        assert summary["budget_exhausted"] and 0 < summary["cost_usd"] <= 1.0
        assert fake.chat_requests == summary["answered"] < 40
        assert table["vote"].to_pylist().count(-1) == 40 - summary["answered"]
        assert all("budget_exhausted" in f["reason"] for f in failures(tmp_path))
        resumed = teacher(fake, tmp_path, settings, model="fake-priced")  # the spend is kept in the run folder
        resumed.vote(ids, bodies)
        assert resumed.summary()["budget_exhausted"] and resumed.summary()["answered"] <= 1  # room freed by settling
        assert 0 < resumed.budget.spent_usd <= 1.0 and fake.chat_requests < 40


def test_cost_and_tokens_are_accounted(tmp_path):
    settings = {"prices": {"fake-priced": Price(input=2.0, output=8.0)}}
    with FakeOpenAI() as fake:
        one = teacher(fake, tmp_path, settings, model="fake-priced")
        one.vote(*texts(10))
    summary = one.summary()
    expected = (summary["tokens_in"] * 2.0 + summary["tokens_out"] * 8.0) / 1e6
    assert summary["tokens_out"] == 10 and summary["tokens_in"] > 10 * 50
    assert summary["cost_usd"] == pytest.approx(expected, rel=1e-4) and summary["price_known"]


def test_rejected_key_stops_the_run_with_a_clear_error(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "401") as fake:
        with pytest.raises(LlmTeacherError, match=f"refused the request .*check the key in \\${KEY_ENV}"):
            teacher(fake, tmp_path, {"concurrency": 2}).vote(*texts(20))
        assert fake.chat_requests <= 2


def test_missing_key_is_a_clear_error_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with FakeOpenAI() as fake:
        with pytest.raises(LlmTeacherError, match=f"environment variable {KEY_ENV} is not set"):
            teacher(fake, tmp_path).vote(*texts(3))
        assert fake.chat_requests == 0


def test_endpoint_down_stops_the_run_instead_of_retrying_every_record(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    src = LlmSource(kind="llm", name="gpt", base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=KEY_ENV)
    one = LlmTeacher(SPEC, src, tmp_path, Settings(**FAST, max_retries=1, concurrency=2), progress=False)
    start = time.monotonic()  # it halts at 3 failures in a row; the second worker may finish one more in flight
    with pytest.raises(LlmTeacherError, match="failed [34] records in a row .*is the endpoint up"):
        one.vote(*texts(200))
    assert time.monotonic() - start < 10


def test_teachers_check_cli_reports_residency_key_price_and_probe(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from assay.flows.cli import app

    stub_dns(monkeypatch, {"api.openai.com": ["162.159.140.245"]})  # never real DNS in a test
    questions = tmp_path / "questions"
    questions.mkdir()
    with FakeOpenAI() as fake:
        (questions / "is_rude.yaml").write_text(f"""\
id: is_rude
version: 1
question: Is this comment rude?
sources:
  - {{kind: llm, name: local_vllm, base_url: "{fake.base_url}", model: gpt-4o-mini, api_key_env: {KEY_ENV}}}
  - {{kind: llm, name: openai, base_url: "https://api.openai.com/v1", model: gpt-4o, api_key_env: {KEY_ENV}}}
""")
        (tmp_path / "assay.yaml").write_text("residency: on-prem\n")
        # wide enough that no table cell wraps (a wrap inside a message would break the asserts below)
        result = CliRunner().invoke(app, ["teachers", "check", str(questions), "--settings",
                                          str(tmp_path / "assay.yaml"), "--probe"], env={"COLUMNS": "1000"})
        assert fake.chat_requests == 1 and "Thanks for fixing the references" in fake.prompts[0]
    assert result.exit_code == 1, result.output
    assert "answered 'No'" in result.output and "with logprobs" in result.output
    assert "residency is 'on-prem'" in result.output and "1 teacher(s) unusable" in result.output


def test_nothing_to_label_sends_nothing(tmp_path):
    with FakeOpenAI() as fake:
        table = teacher(fake, tmp_path).vote([], [])
        assert table.num_rows == 0 and table.schema.names == ["id", "vote", "conf"] and fake.chat_requests == 0
        with pytest.raises(ValueError, match="2 ids but 1 texts"):
            teacher(fake, tmp_path).vote(["a", "b"], ["x"])
