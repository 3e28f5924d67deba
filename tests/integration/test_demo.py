"""`assay demo`: the one table on the same dev records, baselines, cascade, live-teacher option, missing data
(fast), and the whole demo end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from assay.flows.demo import EXAMPLES, with_teacher
from assay.schemas import load_questions
from assay.schemas.questions import LabelsFileSource, LlmSource

ROOT = Path(__file__).resolve().parents[2]


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


def offline_questions(out: Path, keep: tuple[str, ...]) -> Path:
    """Copies of bundled questions without the embedding source (no model to load: a fast label run)."""
    import yaml

    from assay.schemas.loader import resolve

    out.mkdir(parents=True, exist_ok=True)
    for loaded in load_questions(EXAMPLES / "questions" / "jigsaw"):
        if loaded.spec.id not in keep:
            continue
        data = yaml.safe_load(loaded.path.read_text())
        data["sources"] = [s for s in data["sources"] if s["kind"] != "embedding"]
        for source in data["sources"]:
            if source["kind"] == "labels_file":
                source["path"] = str(resolve(loaded.path, source["path"]))
        (out / loaded.path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_the_table_puts_every_method_on_the_same_dev_records(tmp_path):
    """On the bundled dev set: each source alone over all 938 records (abstain = no), majority vote, combined
    labels, a baseline, the student and the cascade, all on the same records; GPT-4 like for like on its 726."""
    import numpy as np

    from assay.flows import demo_table
    from assay.flows.demo_report import markdown, plot_f1
    from assay.labeling.metrics import precision_recall_f1
    from assay.labeling.pipeline import label_questions

    dev = EXAMPLES / "data" / "jigsaw" / "dev.parquet"
    loaded = load_questions(offline_questions(tmp_path / "q", ("is_bad", "threat")))
    label_questions(loaded, dev, tmp_path / "dev", sample=None, progress=False)
    table = pq.read_table(dev, columns=["id", "text"])
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    gold = {q: demo_table._gold(dev, q, ids) for q in ("is_bad", "threat")}
    rng = np.random.default_rng(0)
    student = {"is_bad": (np.clip(gold["is_bad"] * 0.6 + rng.random(938) * 0.5, 0, 1), 0.5),
               "threat": (rng.random(938) * 0.3, 0.25)}
    baselines = {"is_bad": {"baseline: tfidf_lr": gold["is_bad"].copy()}}
    cascades = demo_table.cascades(loaded, ids, dev, student, 0.05, None, 0.01)
    assert set(cascades) == {"is_bad"}  # threat has no recorded teacher voting yes and no
    c = cascades["is_bad"]
    assert (c["routed"], c["records"]) == (46, 938) and c["cost_usd"] == pytest.approx(46 * 0.01 / 2)
    assert c["teacher_answered"] <= 46 and c["f1_gained"] == pytest.approx(c["cascade_f1"] - c["student_f1"])
    rows = demo_table.question_rows(loaded, dev, tmp_path / "dev", ids, student, baselines, cascades)
    is_bad = rows["is_bad"]
    assert is_bad["positives"] == 98 and all(m["n"] == 938 for r in rows.values() for m in r["methods"].values())
    assert set(is_bad["methods"]) == {"gpt4", "rules", "majority vote", "combined labels", "student",
                                      "baseline: tfidf_lr", "student + cascade"}
    gpt4 = pq.read_table(EXAMPLES / "data" / "jigsaw" / "teacher_gpt4.parquet")
    said = dict(zip(gpt4.column("id").to_pylist(), gpt4.column("gpt4_is_bad").to_pylist()))
    alone = np.array([said.get(i) == 1 for i in ids])  # abstain (no recorded answer) counts as no
    assert is_bad["methods"]["gpt4"]["f1"] == pytest.approx(precision_recall_f1(gold["is_bad"], alone)[2], abs=1e-4)
    assert is_bad["methods"]["baseline: tfidf_lr"]["f1"] == 1.0
    assert is_bad["methods"]["student"]["f1"] == pytest.approx(
        precision_recall_f1(gold["is_bad"], student["is_bad"][0] >= 0.5)[2], abs=1e-4)
    assert (is_bad["teacher"]["name"], is_bad["teacher"]["records"]) == ("gpt4", 726)
    assert is_bad["teacher"]["teacher_scores"]["f1"] == pytest.approx(0.736, abs=1e-3)  # docs/QUALITY.md
    assert "teacher" not in rows["threat"] and rows["threat"]["positives"] == 5
    speed = demo_table.speed_and_cost(loaded, texts[:50], student_records_per_second=500.0)
    assert speed["teacher"]["usd_per_1000"] > 100 * speed["student"]["usd_per_1000"] > 0
    for row in rows.values():
        row.update(decision="promoted: test", current=True)
    summary = {"questions": rows, "speed": speed, "seed_rows": 4000, "pool": "p", "dev": "d", "dev_records": 938,
               "records_per_second": 500.0, "cascade_share": 0.05, "seconds": 1.0, "files": {"this report": "x"}}
    report = markdown(summary)
    assert "every column on the same 938 dev records" in report
    assert ("| question | yes | gpt4 | rules | gpt4_no | majority vote | combined labels | baseline: tfidf_lr | "
            "student | student + cascade | promotion |") in report
    assert "| is_bad | gpt4 | 726 | 0.736 |" in report and "## Cascade" in report and "records/s" in report
    plot_f1(rows, tmp_path / "f1.png")
    assert (tmp_path / "f1.png").read_bytes()[:4] == b"\x89PNG"


def test_baselines_train_on_the_seed_labels_and_answer_dev(tmp_path):
    """TF-IDF + LR and MiniLM embeddings + LR, fitted on a label run's labels, answer every dev record."""
    from assay.flows import demo_table
    from assay.labeling.pipeline import label_questions

    dev = EXAMPLES / "data" / "jigsaw" / "dev.parquet"
    loaded = load_questions(offline_questions(tmp_path / "q", ("is_bad",)))
    label_questions(loaded, dev, tmp_path / "labels", sample=None, progress=False)
    texts = pq.read_table(dev, columns=["text"]).column("text").to_pylist()
    answers = demo_table.baseline_answers(loaded, tmp_path / "labels", texts)["is_bad"]
    assert set(answers) == {"baseline: tfidf_lr", "baseline: embedding_lr"}
    assert all(len(a) == 938 and 0 < a.mean() < 0.5 for a in answers.values())


def test_demo_says_what_to_do_when_its_data_is_missing(tmp_path):
    from typer.testing import CliRunner

    from assay.flows.cli import app

    result = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "train.parquet: the demo's pool is missing" in result.output and "--data DIR" in result.output


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
    for row in report["questions"].values():
        assert {"majority vote", "combined labels"} <= set(row["methods"])
        assert {m["n"] for m in row["methods"].values()} == {938}
        if not row["decision"].startswith("not trained"):
            assert {"baseline: tfidf_lr", "baseline: embedding_lr", "student"} <= set(row["methods"])
    assert report["questions"]["is_bad"]["cascade"]["routed"] == 46  # --cascade-share 0.05 of 938
    assert report["speed"]["student"]["records_per_second"] > 0
    for row in report["questions"].values():  # 300 seed records: 60 held out, too few yes records to promote
        assert row["current"] or "not promoted" in row["decision"], row["decision"]
    for name in ("report.md", "f1.png", "labels/report/README.md", "dev/labels/votes/is_bad.parquet"):
        assert (out / name).is_file(), name
    assert (out / "batch" / "dev" / "report.md").is_file() == report["batch_ran"]
    adapters = sorted(p.parent for p in (out / "registry").glob("*/*/manifest.json"))
    started = time.time()
    second = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.parent for p in (out / "registry").glob("*/*/manifest.json")) == adapters  # nothing retrained
    assert "not retraining" in second.stdout + second.stderr
    assert time.time() - started < report["seconds"]
