"""Batch API mode against the FAKE server: JSONL upload, batch creation, polling, output parsing at half
price, per-record errors as failure records, and a killed run re-attaching to its submitted batch."""

import json
import signal
import subprocess
import sys
import time

import pytest
from fake_openai import FakeOpenAI

from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.settings import Price, Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
SETTINGS = dict(batch_poll_s=0.02, backoff_base_s=0.01, prices={"fake-priced": Price(input=2.0, output=8.0)})
IDS = [f"id{i}" for i in range(30)]
TEXTS = [("you idiot " if i % 3 == 0 else "thanks for the edit ") + str(i) for i in range(30)]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-fake")


def teacher(fake, run_dir, mode: str, **settings) -> LlmTeacher:
    source = LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-priced",
                       api_key_env="ASSAY_TEST_KEY", mode=mode)
    return LlmTeacher(SPEC, source, run_dir, Settings(**{**SETTINGS, **settings}), progress=False)


def test_batch_round_trip_matches_online_at_half_price(tmp_path):
    with FakeOpenAI(batch_polls=3) as fake:
        batch = teacher(fake, tmp_path / "batch", "batch")
        table = batch.vote(IDS, TEXTS)
        assert fake.hits["files.create"] == 1 and fake.hits["batches.create"] == 1
        assert fake.hits["batches.retrieve"] == 3 and fake.hits["files.content"] == 1
        assert fake.hits["chat"] == 0 and fake.chat_requests == 0  # nothing went through the online endpoint
        online = teacher(fake, tmp_path / "online", "online")
        expected = online.vote(IDS, TEXTS)
        fake.hits.clear()  # answers are cached: a re-run submits nothing
        teacher(fake, tmp_path / "batch", "batch").vote(IDS, TEXTS)
        assert not fake.hits
    assert table.equals(expected) and table["vote"].to_pylist().count(1) == 10
    b, o = batch.summary(), online.summary()
    assert b["answered"] == 30 and b["tokens_in"] == o["tokens_in"] and b["mode"] == "batch"
    assert b["cost_usd"] == pytest.approx(o["cost_usd"] / 2, rel=1e-4)
    state = json.loads((tmp_path / "batch" / "llm" / "batches" / "is_rude.gpt.json").read_text())
    assert len(state) == 1 and state[0]["collected"] and len(state[0]["keys"]) == 30


def test_batch_errors_become_failure_records_and_large_jobs_split(tmp_path):
    with FakeOpenAI(fault=lambda text, attempt: "500" if text.endswith(" 4") else None, batch_polls=1) as fake:
        one = teacher(fake, tmp_path, "batch", batch_max_requests=8)
        table = one.vote(IDS, TEXTS)
        assert fake.hits["batches.create"] == 4  # 30 requests, 8 per batch
    failures_file = tmp_path / "llm" / "failures" / "is_rude.gpt.jsonl"
    failures = [json.loads(line) for line in failures_file.read_text().splitlines()]
    assert [f["id"] for f in failures] == ["id4"] and "HTTP 500" in failures[0]["reason"]
    assert table["vote"].to_pylist()[4] == -1 and table["vote"].to_pylist().count(-1) == 1


def test_budget_limits_what_a_batch_submits(tmp_path):
    with FakeOpenAI(batch_polls=1) as fake:
        one = teacher(fake, tmp_path, "batch", budget_usd=0.05,
                      prices={"fake-priced": Price(input=100.0, output=100.0)})
        table = one.vote(IDS, TEXTS)
    upload = next(f for f in fake.files.values() if f["purpose"] == "batch")
    submitted = sum(1 for line in upload["content"].splitlines())
    assert 0 < submitted < 30 and one.summary()["budget_exhausted"]
    assert one.budget.spent_usd <= 0.05 and table["vote"].to_pylist().count(-1) == 30 - submitted


WORKER = """
import sys
from assay.labeling.teacher import LlmTeacher
from assay.schemas.questions import LlmSource, QuestionSpec
from assay.labeling.teacher.settings import Settings
teacher = LlmTeacher(QuestionSpec.model_validate_json(sys.argv[1]), LlmSource.model_validate_json(sys.argv[2]),
                     sys.argv[3], Settings(batch_poll_s=0.05), progress=False)
teacher.vote([f"id{i}" for i in range(30)], [f"text {i}" for i in range(30)])
"""


def test_killed_run_reattaches_to_its_batch_instead_of_paying_again(tmp_path):
    with FakeOpenAI(batch_polls=10**9) as fake:  # the batch never finishes while the first run waits
        source = LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-priced",
                           api_key_env="ASSAY_TEST_KEY", mode="batch")
        worker = subprocess.Popen([sys.executable, "-c", WORKER, SPEC.model_dump_json(), source.model_dump_json(),
                                   str(tmp_path)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while fake.hits["batches.retrieve"] < 2 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        _, err = worker.communicate()
        assert fake.hits["batches.create"] == 1, err[-2000:]
        fake.batch_polls = 0  # the provider finishes the batch
        resumed = LlmTeacher(SPEC, source, tmp_path, Settings(batch_poll_s=0.02), progress=False)
        table = resumed.vote([f"id{i}" for i in range(30)], [f"text {i}" for i in range(30)])
        assert fake.hits["batches.create"] == 1 and fake.hits["files.create"] == 1  # re-attached, not resubmitted
        assert -1 not in table["vote"].to_pylist() and resumed.summary()["answered"] == 30
