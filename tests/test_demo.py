"""`assay demo`: its gold comparison and live-teacher option (fast), and the whole demo end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.flows.demo import (EXAMPLES, compare_with_gold, markdown, plot_f1, read_student_answers,
                              student_vs_recorded_teachers, with_teacher)
from assay.schemas import load_questions
from assay.labeling.gold import gold_labels
from assay.schemas.questions import LabelsFileSource, LlmSource

ROOT = Path(__file__).resolve().parent.parent


def test_with_teacher_adds_a_valid_llm_source_and_keeps_file_paths(tmp_path):
    copies = with_teacher(EXAMPLES / "questions" / "jigsaw", tmp_path / "q", "http://vllm.internal:8000/v1",
                          "llama-3.3-70b", "VLLM_API_KEY")
    loaded = load_questions(copies)  # validates, and checks that labels files exist
    assert len(loaded) == 7
    for question in loaded:
        llm = [s for s in question.spec.sources if isinstance(s, LlmSource)]
        assert [(s.name, s.model, s.api_key_env) for s in llm] == [("live_llm", "llama-3.3-70b", "VLLM_API_KEY")]
        files = [s for s in question.spec.sources if isinstance(s, LabelsFileSource)]
        assert files and all(Path(s.path).is_file() for s in files)


def test_compare_with_gold_scores_sources_combined_and_student(tmp_path):
    ids = [f"r{i}" for i in range(6)]
    gold = tmp_path / "gold.parquet"
    pq.write_table(pa.table({"id": ids, "q": pa.array([1, 1, 0, 0, 1, 0], pa.int8())}), gold)
    labels = tmp_path / "run" / "labels"
    (labels / "votes").mkdir(parents=True)
    (labels / "labels").mkdir()
    votes = {"id": ids, "rules": pa.array([1, -1, 0, -1, 1, 1], pa.int8()),
             "rules__conf": pa.array([0.9] * 6, pa.float32())}
    pq.write_table(pa.table(votes), labels / "votes" / "q.parquet")
    pq.write_table(pa.table({"id": ids, "p_yes": pa.array([.9, .8, .1, .2, .4, .3], pa.float32()),
                             "label": pa.array([1, 1, 0, 0, 0, 0], pa.int8())}), labels / "labels" / "q.parquet")
    scores = tmp_path / "scores"
    scores.mkdir()
    pq.write_table(pa.table({"id": ids, "q": [True, False, False, False, True, False],
                             "q_p": pa.array([.9, .4, .1, .1, .8, .2], pa.float32())}), scores / "part-00000.parquet")
    rows = compare_with_gold(tmp_path / "run", read_student_answers(scores), gold, gold, ["q"])
    rules = rows["q"]["sources"]["rules"]
    assert rules["coverage"] == pytest.approx(4 / 6, abs=1e-4) and rules["n"] == 4
    assert rules["precision"] == pytest.approx(2 / 3, abs=1e-4) and rules["recall"] == 1.0  # voted: 1,0,1,1 vs 1,0,1,0
    assert set(rows["q"]["sources"]) == {"rules"}  # the __conf column is not a source
    assert rules["votes_yes"]
    assert rows["q"]["combined"]["recall"] == pytest.approx(2 / 3, abs=1e-4) and rows["q"]["combined"]["precision"] == 1.0
    assert rows["q"]["student"]["f1"] == pytest.approx(0.8)
    rows["q"].update(decision="promoted", current=True)
    summary = {"questions": rows, "seed_rows": 6, "pool": "p", "dev": "d", "dev_records": 6,
               "records_per_second": 10.0, "seconds": 1.0, "files": {"this report": "x"}}
    assert "| q | rules F1 0.800 (67%) | 0.800 | 0.800 | promoted |" in markdown(summary)
    plot_f1(rows, tmp_path / "f1.png")
    assert (tmp_path / "f1.png").read_bytes()[:4] == b"\x89PNG"


def test_student_is_compared_with_its_recorded_teacher_on_the_records_it_answered(tmp_path):
    """On the bundled data: GPT-4's recorded is_bad answers cover 726 of the 938 dev records (F1 0.736 there,
    docs/QUALITY.md); a student that answers every record like gold scores 1.0 on those same records."""
    dev = EXAMPLES / "data" / "jigsaw" / "dev.parquet"
    gold = gold_labels(dev, "is_bad")
    scores = tmp_path / "scores"
    scores.mkdir()
    answers = pa.array(gold.column("label").to_numpy().astype(bool))
    pq.write_table(pa.table({"id": gold.column("id"), "is_bad": answers,
                             "is_bad_p": pa.array(answers.to_numpy(zero_copy_only=False), pa.float32())}),
                   scores / "part-00000.parquet")
    compared = student_vs_recorded_teachers(EXAMPLES / "questions" / "jigsaw", read_student_answers(scores), dev,
                                            ["is_bad", "toxic"])
    assert [(c["question"], c["teacher"], c["records"]) for c in compared] == [("is_bad", "gpt4", 726)]  # no toxic column scored
    assert compared[0]["teacher_scores"]["f1"] == pytest.approx(0.736, abs=1e-3)
    assert compared[0]["student_scores"]["f1"] == 1.0 and compared[0]["student_scores"]["n"] == 726
    summary = {"questions": {}, "teachers": compared, "seed_rows": 1, "pool": "p", "dev": "d", "dev_records": 938,
               "records_per_second": 1.0, "seconds": 1.0, "files": {}}
    assert "| is_bad | gpt4 | 726 | 0.736 | 1.000 |" in markdown(summary)


@pytest.mark.slow
def test_demo_end_to_end_then_resumes(tmp_path):
    """The real demo on the bundled data with a small seed set; the re-run reuses everything."""
    out = tmp_path / "demo"
    command = [str(Path(sys.executable).parent / "assay"), "demo", "--out", str(out), "--sample", "300"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["questions"]) == {"toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate",
                                        "is_bad"}
    assert report["seed_rows"] == 300 and report["dev_records"] == 938
    assert all(row["student"] is not None for row in report["questions"].values() if row["current"])
    for name in ("report.md", "f1.png", "labels/report/README.md", "batch/dev/report.md"):
        assert (out / name).is_file(), name
    adapters = sorted(p.parent for p in (out / "registry").glob("*/*/manifest.json"))
    started = time.time()
    second = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.parent for p in (out / "registry").glob("*/*/manifest.json")) == adapters  # nothing retrained
    assert "not retraining" in second.stdout + second.stderr
    assert time.time() - started < report["seconds"]
