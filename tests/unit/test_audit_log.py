"""The audit log against the FAKE server's own request log: every request the server saw has its audit
line (written before it was sent), after retries, 429s, timeouts, the logprobs fallback, halted runs and
batch uploads; the log holds counts and hashes, never the text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from assay.labeling.teacher import LlmTeacher, LlmTeacherError
from assay.labeling.teacher.audit import sha256
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.02)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-fake")


def make_teacher(fake: FakeOpenAI, run_dir: Path, mode: str = "online", **settings) -> LlmTeacher:
    source = LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-model",
                       api_key_env="ASSAY_TEST_KEY", mode=mode)
    return LlmTeacher(SPEC, source, run_dir, Settings(**{**FAST, **settings}), progress=False)


def audit_lines(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "llm" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audited_sends(run_dir: Path) -> Counter:
    return Counter(line["text_sha256"] for line in audit_lines(run_dir) if line["event"] == "send")


def assert_every_request_audited(fake: FakeOpenAI, run_dir: Path, exact: bool = True) -> None:
    seen, audited = fake.sent_text_hashes(), audited_sends(run_dir)
    assert not seen - audited, f"requests the server saw without an audit line: {seen - audited}"
    if exact:  # every send line was a request that arrived (nothing died in between)
        assert seen == audited


def texts(n: int) -> tuple[list[str], list[str]]:
    return [f"id{i}" for i in range(n)], [f"record {i}" for i in range(n)]


def test_retries_and_rate_limits_are_each_audited(tmp_path):
    def fault(text: str, attempt: int) -> str | None:
        number = int(text.split()[-1])
        if number % 3 == 0 and attempt <= 2:
            return "500"
        return "429:0" if number % 3 == 1 and attempt == 1 else None

    with FakeOpenAI(fault=fault) as fake:
        table = make_teacher(fake, tmp_path, max_retries=3).vote(*texts(12))
        assert -1 not in table["vote"].to_pylist() and fake.chat_requests == 12 + 4 * 2 + 4
        assert_every_request_audited(fake, tmp_path)
    answered = [line for line in audit_lines(tmp_path) if line["event"] == "answered"]
    assert len(answered) == 12 and sorted(line["attempts"] for line in answered) == [1] * 4 + [2] * 4 + [3] * 4


def test_the_logprobs_fallback_counts_every_attempt(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "400-logprobs") as fake:
        table = make_teacher(fake, tmp_path, max_retries=0, concurrency=1).vote(*texts(3))
        assert -1 not in table["vote"].to_pylist() and fake.chat_requests == 4  # one refused with logprobs
        assert_every_request_audited(fake, tmp_path)
    first = [line for line in audit_lines(tmp_path) if line["event"] == "answered"][0]
    assert first["attempts"] == 2


def test_a_halted_run_audits_what_it_sent_and_says_so(tmp_path):
    """An endpoint answering 500: the run stops after 3 records in a row; every text the server received has
    its line, and no record that reached the server is reported as 'not sent'."""
    with FakeOpenAI(fault=lambda text, attempt: "500", latency_s=0.02) as fake:
        teacher = make_teacher(fake, tmp_path, max_retries=1, concurrency=4)
        with pytest.raises(LlmTeacherError, match=r"failed \d+ records in a row"):
            teacher.vote(*texts(40))
        assert 0 < fake.chat_requests < 80
        assert_every_request_audited(fake, tmp_path)
    id_of = {sha256(teacher.prepare(record_id, text).sent_text): record_id for record_id, text in zip(*texts(40))}
    reached_ids = {id_of[digest] for digest in fake.sent_text_hashes()}
    failures_file = tmp_path / "llm" / "failures" / "is_rude.gpt.jsonl"
    failures = [json.loads(line) for line in failures_file.read_text().splitlines()]
    for failure in failures:
        if failure["id"] in reached_ids:
            assert not failure["reason"].startswith("not sent") and failure["attempts"] >= 1, failure
        else:
            assert failure["reason"].startswith("not sent") and failure["attempts"] == 0, failure


def test_a_rejected_key_halts_and_is_audited(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "401") as fake:
        with pytest.raises(LlmTeacherError, match="refused the request"):
            make_teacher(fake, tmp_path, max_retries=2, concurrency=1).vote(*texts(5))
        assert fake.chat_requests == 1
        assert_every_request_audited(fake, tmp_path)
    assert [line["event"] for line in audit_lines(tmp_path)] == ["send", "refused"]


def test_timeouts_are_audited(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "timeout" if attempt == 1 else None, timeout_sleep_s=0.6) as fake:
        table = make_teacher(fake, tmp_path, max_retries=1, request_timeout_s=0.2).vote(*texts(3))
        assert -1 not in table["vote"].to_pylist() and fake.chat_requests == 6
        assert_every_request_audited(fake, tmp_path)


def test_batch_uploads_are_audited_before_they_are_sent(tmp_path):
    with FakeOpenAI(batch_polls=1) as fake:
        make_teacher(fake, tmp_path, mode="batch", batch_poll_s=0.01, batch_max_requests=4).vote(*texts(10))
        assert fake.hits["files.create"] == 3
        assert_every_request_audited(fake, tmp_path)
    sends = [line for line in audit_lines(tmp_path) if line["event"] == "send"]
    assert len({line["batch_intent"] for line in sends}) == 3 and all(line["batch_file_sha256"] for line in sends)


def test_the_audit_log_holds_no_text(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "500" if attempt == 1 else None) as fake:
        make_teacher(fake, tmp_path, max_retries=1).vote(["secret-id"], ["a very private sentence"])
    raw = (tmp_path / "llm" / "audit.jsonl").read_text()
    assert "private" not in raw and "secret-id" not in raw and raw.count('"event": "send"') == 2
