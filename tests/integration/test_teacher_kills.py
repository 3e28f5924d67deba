"""Real SIGKILLs of a labelling process (online and Batch API) against the FAKE server: afterwards the audit
log covers every request the server saw, and the resumed run pays for no batch twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
N = 60
WORKER = """
import sys
from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec
teacher = LlmTeacher(QuestionSpec.model_validate_json(sys.argv[1]), LlmSource.model_validate_json(sys.argv[2]),
                     sys.argv[3], Settings(concurrency=4, batch_poll_s=0.05, backoff_base_s=0.01), progress=False)
teacher.vote([f"id{i}" for i in range(int(sys.argv[4]))], [f"record text {i}" for i in range(int(sys.argv[4]))])
print("FINISHED")
"""


def start_worker(source: LlmSource, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "ASSAY_TEST_KEY": "sk-fake"}
    return subprocess.Popen([sys.executable, "-c", WORKER, SPEC.model_dump_json(), source.model_dump_json(),
                             str(run_dir), str(N)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill(worker: subprocess.Popen) -> str:
    worker.send_signal(signal.SIGKILL)
    out, err = worker.communicate()
    assert "FINISHED" not in out, f"the worker must die midway: {err[-2000:]}"
    return err


def audited(run_dir: Path) -> Counter:
    lines = (run_dir / "llm" / "audit.jsonl").read_text().splitlines()
    return Counter(entry["text_sha256"] for entry in map(json.loads, lines) if entry["event"] == "send")


def ids_texts() -> tuple[list[str], list[str]]:
    return [f"id{i}" for i in range(N)], [f"record text {i}" for i in range(N)]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-fake")


def source_for(fake: FakeOpenAI, mode: str) -> LlmSource:
    return LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-model",
                     api_key_env="ASSAY_TEST_KEY", mode=mode)


def retry_some(text: str, attempt: int) -> str | None:
    """A 500 on the first attempt of one record in ten: the killed run was retrying too."""
    return "500" if attempt == 1 and text.endswith("7") else None


def test_an_online_run_killed_midway_has_audited_every_request(tmp_path):
    with FakeOpenAI(latency_s=0.03, fault=retry_some) as fake:
        source = source_for(fake, "online")
        worker = start_worker(source, tmp_path)
        deadline = time.monotonic() + 60
        while fake.chat_requests < 20 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        kill(worker)
        time.sleep(0.1)  # requests in flight at the kill still reach the server
        seen = fake.sent_text_hashes()
        assert 20 <= sum(seen.values()) and not seen - audited(tmp_path)
        resumed = LlmTeacher(SPEC, source, tmp_path, Settings(concurrency=4, backoff_base_s=0.01), progress=False)
        table = resumed.vote(*ids_texts())
        assert -1 not in table["vote"].to_pylist()
        assert not fake.sent_text_hashes() - audited(tmp_path)


@pytest.mark.parametrize("point", ["files.create:before", "batches.create:before", "batches.create:after"])
def test_a_batch_run_killed_at_upload_or_creation_pays_once(point, tmp_path):
    """The server holds the request at `point` while the client is SIGKILLed, then finishes it for the dead
    client (it stores the file, creates the batch): the resumed run finds it instead of creating another."""
    with FakeOpenAI(batch_polls=1) as fake:
        source = source_for(fake, "batch")
        reached = fake.hold(point)
        worker = start_worker(source, tmp_path)
        assert reached.wait(60), worker.stderr.read() if worker.poll() is not None else "worker never got there"
        kill(worker)
        fake.release(point)
        time.sleep(0.2)  # let the server finish the dead client's request
        assert not fake.sent_text_hashes() - audited(tmp_path)
        resumed = LlmTeacher(SPEC, source, tmp_path, Settings(batch_poll_s=0.01), progress=False)
        table = resumed.vote(*ids_texts())
        assert fake.hits["batches.create"] == 1 and fake.hits["files.create"] == 1, fake.hits
        assert max(fake.by_text.values()) == 1
        assert not fake.sent_text_hashes() - audited(tmp_path)
    assert -1 not in table["vote"].to_pylist()
