"""A labelling run killed midway (SIGKILL) and resumed pays for nothing twice: every answer that arrived
before the kill is in the cache, and the resumed run sends exactly the rest (counted at the FAKE server)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_openai import FakeOpenAI

from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.cache import ResponseCache
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
N, CONCURRENCY = 120, 4
WORKER = """
import sys
from assay.labeling.teacher import LlmTeacher
from assay.schemas.questions import LlmSource, QuestionSpec
from assay.labeling.teacher.settings import Settings
spec = QuestionSpec.model_validate_json(sys.argv[1])
source = LlmSource.model_validate_json(sys.argv[2])
ids = [f"id{i}" for i in range(int(sys.argv[4]))]
teacher = LlmTeacher(spec, source, sys.argv[3], Settings(concurrency=int(sys.argv[5])), progress=False)
teacher.vote(ids, [f"record text {i}" for i in range(len(ids))])
print("FINISHED")
"""


def run_worker(source: LlmSource, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "ASSAY_TEST_KEY": "sk-fake"}
    return subprocess.Popen([sys.executable, "-c", WORKER, SPEC.model_dump_json(), source.model_dump_json(),
                             str(run_dir), str(N), str(CONCURRENCY)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_without_paying_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-fake")
    with FakeOpenAI(latency_s=0.03) as fake:
        source = LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-model",
                           api_key_env="ASSAY_TEST_KEY")
        worker = run_worker(source, tmp_path)
        deadline = time.monotonic() + 60
        while fake.chat_requests < 40 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        out, err = worker.communicate()
        assert "FINISHED" not in out, f"the worker must be killed midway: {err[-2000:]}"
        sent_before = fake.chat_requests
        cache = ResponseCache(tmp_path / "llm" / "cache.sqlite")
        cached = len(cache)
        cache.close()
        assert 40 - CONCURRENCY <= cached <= sent_before < N

        teacher = LlmTeacher(SPEC, source, tmp_path, Settings(concurrency=CONCURRENCY), progress=False)
        table = teacher.vote([f"id{i}" for i in range(N)], [f"record text {i}" for i in range(N)])
        assert -1 not in table["vote"].to_pylist()
        assert fake.chat_requests - sent_before == N - cached  # exactly the records with no stored answer
        twice = [text for text, count in fake.by_text.items() if count > 1]
        assert len(twice) == sent_before - cached <= CONCURRENCY  # only those in flight at the kill
        assert teacher.summary()["cached"] == cached
