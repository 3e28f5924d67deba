"""The Batch API never pays twice: a run "killed" at every point between writing its intent and saving the
batch id resumes by finding what the provider already holds, and the FAKE server counts one batch created.

The kill is a BaseException raised in-process right before or right after the real call returns (the
server has done its part, the client saved nothing more): the state on disk and on the server is the
same as after a SIGKILL at that instant. tests/integration/test_audit_kills.py does it with real SIGKILLs.
"""

from __future__ import annotations

import json

import openai
import pytest
from fake_openai import FakeOpenAI

from assay.labeling.teacher import LlmTeacher
from assay.labeling.teacher.batch import BatchJob
from assay.labeling.teacher.settings import Settings
from assay.schemas.questions import LlmSource, QuestionSpec

SPEC = QuestionSpec(id="is_rude", version=1, question="Is this comment rude?",
                    sources=[{"kind": "rules", "yes_keywords": ["idiot"]}])
IDS = [f"id{i}" for i in range(12)]
TEXTS = [("you idiot " if i % 3 == 0 else "thanks for the edit ") + str(i) for i in range(12)]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the 'killed' run."""


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ASSAY_TEST_KEY", "sk-fake")


def make_teacher(fake: FakeOpenAI, run_dir) -> LlmTeacher:
    source = LlmSource(kind="llm", name="gpt", base_url=fake.base_url, model="fake-model",
                       api_key_env="ASSAY_TEST_KEY", mode="batch")
    return LlmTeacher(SPEC, source, run_dir, Settings(batch_poll_s=0.01, backoff_base_s=0.01), progress=False)


def kill_at(monkeypatch, point: str) -> None:
    """Make the run die at `point`: before/after the upload, before/after the batch creation, or at the
    n-th state save."""
    where, _, when = point.partition(":")
    if where == "save":
        original_save, calls = BatchJob.save, []

        def save(self, entries):
            calls.append(1)
            if len(calls) == int(when):
                raise Killed(point)
            original_save(self, entries)

        monkeypatch.setattr(BatchJob, "save", save)
        return
    cls = {"files.create": openai.resources.files.Files, "batches.create": openai.resources.batches.Batches}[where]
    original = cls.create

    def create(self, *args, **kwargs):
        if when == "before":
            raise Killed(point)
        original(self, *args, **kwargs)
        raise Killed(point)

    monkeypatch.setattr(cls, "create", create)


POINTS = ["save:1",  # the intent itself is not written (nothing sent yet)
          "files.create:before",  # intent on disk, nothing uploaded
          "files.create:after",  # uploaded, the file id not saved
          "save:2",  # the same, killed while saving the file id
          "batches.create:before",  # file id saved, no batch
          "batches.create:after",  # batch created (paid), its id not saved
          "save:3"]  # the same, killed while saving the batch id


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_between_intent_and_save_ends_with_one_batch(point, tmp_path, monkeypatch):
    with FakeOpenAI(batch_polls=1) as fake:
        with monkeypatch.context() as patch:
            kill_at(patch, point)
            with pytest.raises(Killed):
                make_teacher(fake, tmp_path).vote(IDS, TEXTS)
        created_before = fake.hits["batches.create"]
        table = make_teacher(fake, tmp_path).vote(IDS, TEXTS)
        assert fake.hits["batches.create"] == 1, f"{point}: {fake.hits}"
        assert fake.hits["files.create"] == 1  # the request file is uploaded once too
        assert created_before == (1 if point in ("batches.create:after", "save:3") else 0)
        assert max(fake.by_text.values()) == 1  # every record answered by the provider exactly once
    assert -1 not in table["vote"].to_pylist()
    state = json.loads((tmp_path / "llm" / "batches" / "is_rude.gpt.json").read_text())
    assert [entry["collected"] for entry in state] == [True]


def test_an_intent_that_never_reached_the_provider_is_rebuilt_for_other_records(tmp_path, monkeypatch):
    """Killed before the upload, resumed with other records: the stale intent is dropped, not uploaded."""
    with FakeOpenAI(batch_polls=1) as fake:
        with monkeypatch.context() as patch:
            kill_at(patch, "files.create:before")
            with pytest.raises(Killed):
                make_teacher(fake, tmp_path).vote(IDS, TEXTS)
        table = make_teacher(fake, tmp_path).vote(IDS[:4], TEXTS[:4])
        assert fake.hits["batches.create"] == 1 and fake.hits["files.create"] == 1
        assert len(fake.request_log[0]["text_sha256"]) == 4
    assert -1 not in table["vote"].to_pylist()
