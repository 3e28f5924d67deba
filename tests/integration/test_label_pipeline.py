"""`assay label` end to end on real Jigsaw records: seed, votes, labels, report, resume, teachers, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from assay.flows.cli import app
from assay.labeling.pipeline import label_questions
from assay.schemas import load_questions

ROOT = Path(__file__).resolve().parents[2]
JIGSAW = ROOT / "examples" / "data" / "jigsaw"
EXAMPLES = [{"text": "You are a pathetic idiot.", "answer": True}, {"text": "fuck off", "answer": True},
            {"text": "Thanks for fixing the references.", "answer": False},
            {"text": "I disagree with this merge.", "answer": False}]


def write_question(folder: Path, qid: str, sources: list[dict]) -> None:
    spec = {"id": qid, "version": 1, "question": f"Is this {qid}?", "examples": EXAMPLES, "sources": sources}
    (folder / f"{qid}.yaml").write_text(yaml.safe_dump(spec))


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("questions")
    teacher = str(JIGSAW / "teacher_gpt4.parquet")
    write_question(folder, "is_bad", [
        {"kind": "labels_file", "name": "gpt4", "path": teacher, "label_column": "gpt4_is_bad"},
        {"kind": "rules", "yes_keywords": ["idiot", "stupid", "fuck", "shit"], "no_keywords": ["thanks"]},
        {"kind": "embedding"}])
    write_question(folder, "obscene", [
        {"kind": "labels_file", "name": "gpt4_no", "path": teacher, "label_column": "gpt4_is_bad", "vote": "no"},
        {"kind": "rules", "yes_patterns": ["f+u+c+k+", "sh[i1]t"]}])
    return folder


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """150 real dev comments, the teacher-labelled ones first, as the unlabelled input."""
    dev = pq.read_table(JIGSAW / "dev.parquet")
    path = tmp_path_factory.mktemp("input") / "records.parquet"
    pq.write_table(dev.slice(0, 150).select(["id", "text"]), path)
    return path


@pytest.fixture(scope="module")
def run(questions, records, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = label_questions(load_questions(questions), records, out, sample=100, seed=1,
                              gold_path=JIGSAW / "dev.parquet", progress=False)
    return out, summary


def test_run_folder_follows_the_contract(run):
    out, summary = run
    seed = pq.read_table(out / "seed.parquet")
    assert seed.num_rows == 100 and {"id", "text"} <= set(seed.column_names)
    for qid, sources in (("is_bad", ["gpt4", "rules", "embedding"]), ("obscene", ["gpt4_no", "rules"])):
        votes = pq.read_table(out / "votes" / f"{qid}.parquet")
        assert votes.column_names[:1 + len(sources)] == ["id", *sources]
        assert all(votes.schema.field(s).type == pa.int8() for s in sources)
        assert votes.column("id").to_pylist() == seed.column("id").to_pylist()
        labels = pq.read_table(out / "labels" / f"{qid}.parquet")
        assert labels.schema.names == ["id", "p_yes", "label"]
        assert labels.schema.field("p_yes").type == pa.float32() and labels.schema.field("label").type == pa.int8()
        p_yes = labels.column("p_yes").to_numpy()
        assert ((p_yes >= 0) & (p_yes <= 1)).all() and set(labels.column("label").to_pylist()) <= {0, 1}
        assert (out / "report" / f"{qid}.md").exists()
        assert (out / "report" / f"{qid}_agreement.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "report" / f"{qid}_calibration.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "summary.json").read_text())
    assert data["seed_rows"] == 100 and set(data["questions"]) == {"is_bad", "obscene"}
    assert summary.questions["is_bad"].gold["combined"]["n"] == 100  # dev gold covers every seed record
    assert summary.questions["is_bad"].gold["combined"]["f1"] > 0.6
    assert "gold records" in summary.questions["is_bad"].reason
    assert (out / "cache").is_dir() and any((out / "cache").iterdir())


def test_votes_are_real_labels_from_each_source(run):
    out, _ = run
    votes = pq.read_table(out / "votes" / "is_bad.parquet")
    teacher = dict(zip(*pq.read_table(JIGSAW / "teacher_gpt4.parquet", columns=["id", "gpt4_is_bad"])
                       .to_pydict().values()))
    for record_id, vote in zip(votes.column("id").to_pylist(), votes.column("gpt4").to_pylist()):
        assert vote == teacher.get(record_id, -1)
    obscene = pq.read_table(out / "votes" / "obscene.parquet").column("gpt4_no").to_numpy()
    assert 1 not in obscene and 0 in obscene


def test_rerun_reuses_the_seed_and_finished_sources(run, questions, records):
    out, _ = run
    files = sorted((out / "sources").rglob("*.parquet")) + [out / "seed.parquet"]
    before = {f: f.stat().st_mtime_ns for f in files}
    label_questions(load_questions(questions), records, out, sample=100, seed=1, progress=False)
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert json.loads((out / "summary.json").read_text())["questions"]["is_bad"]["gold"] == {}


def test_llm_teacher_is_asked_only_where_cheap_sources_are_unsure(tmp_path, records, monkeypatch):
    from fake_openai import FakeOpenAI

    monkeypatch.setenv("ASSAY_TEST_FAKE_KEY", "sk-fake")
    monkeypatch.setenv("ASSAY_CONFIG", str(tmp_path / "assay.yaml"))
    (tmp_path / "assay.yaml").write_text("backoff_base_s: 0.01\nrequest_timeout_s: 5\n")
    folder = tmp_path / "questions"
    folder.mkdir()
    with FakeOpenAI() as fake:
        write_question(folder, "is_bad", [
            {"kind": "labels_file", "name": "gpt4", "path": str(JIGSAW / "teacher_gpt4.parquet"),
             "label_column": "gpt4_is_bad"},
            {"kind": "rules", "yes_keywords": ["idiot", "stupid", "fuck"], "no_keywords": ["thanks", "article"]},
            {"kind": "llm", "name": "teacher", "base_url": fake.base_url, "model": "gpt-4o-mini",
             "api_key_env": "ASSAY_TEST_FAKE_KEY", "skip_when_confident": 0.9}])
        summary = label_questions(load_questions(folder), records, tmp_path / "run", sample=60, progress=False)
        asked = summary.questions["is_bad"].teachers["teacher"]
        assert 0 < asked["asked"] < 60 and asked["skipped"] == 60 - asked["asked"]
        assert fake.chat_requests == asked["asked"]
    votes = pq.read_table(tmp_path / "run" / "votes" / "is_bad.parquet")
    teacher_votes = votes.column("teacher").to_numpy()
    assert (teacher_votes >= 0).sum() == asked["asked"]
    assert "teacher__conf" in votes.column_names  # the fake returns log-probabilities: soft votes
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["questions"]["is_bad"]["teachers"]


def test_cli_label_and_combine(run, questions, records, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-run"
    result = runner.invoke(app, ["label", "--questions", str(questions), "--input", str(records), "--out", str(out),
                                 "--sample", "40", "--only", "obscene", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "obscene" in result.output and sorted(p.name for p in (out / "labels").iterdir()) == ["obscene.parquet"]
    run_dir, _ = run
    probs = tmp_path / "probs.parquet"
    result = runner.invoke(app, ["combine", str(run_dir / "votes" / "is_bad.parquet"), "--out", str(probs),
                                 "--gold", str(JIGSAW / "dev.parquet")])
    assert result.exit_code == 0, result.output
    assert "gold records" in result.output
    assert pq.read_table(probs).num_rows == 100
    result = runner.invoke(app, ["combine", str(run_dir / "votes" / "is_bad.parquet"), "--out", str(probs),
                                 "--method", "majority"])
    assert result.exit_code == 0 and "majority" in result.output


def test_cli_errors_name_the_problem(questions, records, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["label", "--questions", str(questions), "--input", str(records), "--out",
                                 str(tmp_path / "x"), "--only", "nope"])
    assert result.exit_code == 1 and "unknown question id(s): nope" in result.output
    result = runner.invoke(app, ["label", "--questions", str(questions), "--input", str(tmp_path / "missing.parquet"),
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no such file or folder" in result.output
    bad = tmp_path / "votes.parquet"
    pq.write_table(pa.table({"id": ["a"], "s": pa.array([3], pa.int8())}), bad)
    result = runner.invoke(app, ["combine", str(bad), "--out", str(tmp_path / "p.parquet")])
    assert result.exit_code == 1 and "'s' holds [3]" in result.output


def test_stratified_seed_oversamples_disagreement(records, tmp_path):
    write_question(tmp_path, "addresses_reader", [
        {"kind": "labels_file", "name": "gpt4_no", "path": str(JIGSAW / "teacher_gpt4.parquet"),
         "label_column": "gpt4_is_bad", "vote": "no"},
        {"kind": "rules", "yes_keywords": ["you"]}])
    loaded = load_questions(tmp_path)

    def conflict_rate(run_dir: Path) -> float:
        votes = pq.read_table(run_dir / "votes" / "addresses_reader.parquet")
        cheap = np.stack([votes.column(n).to_numpy() for n in ("gpt4_no", "rules")])
        return float(((cheap == 1).any(axis=0) & (cheap == 0).any(axis=0)).mean())

    label_questions(loaded, records, tmp_path / "strat", sample=30, seed=0, stratify=True, progress=False)
    everything = label_questions(loaded, records, tmp_path / "all", sample=None, progress=False)
    assert everything.seed_rows == 150
    assert conflict_rate(tmp_path / "strat") > conflict_rate(tmp_path / "all") > 0


def test_expected_yes_rate_in_the_question_holds_the_class_balance(tmp_path, records):
    folder = tmp_path / "questions"
    folder.mkdir()
    write_question(folder, "obscene", [{"kind": "rules", "yes_patterns": ["f+u+c+k+", "sh[i1]t"]},
                                       {"kind": "rules", "name": "civil", "no_keywords": ["thanks", "article"]}])
    spec = yaml.safe_load((folder / "obscene.yaml").read_text())
    (folder / "obscene.yaml").write_text(yaml.safe_dump({**spec, "expected_yes_rate": 0.07}))
    summary = label_questions(load_questions(folder), records, tmp_path / "run", sample=100, progress=False)
    question = summary.questions["obscene"]
    assert question.prior == pytest.approx(0.07) and question.balance_known
    assert 0 < question.yes_rate <= 0.08  # at most that share (a tie group of records with the same votes stays whole)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["questions"]["obscene"]
    assert saved["balance_known"] is True and saved["prior"] == pytest.approx(0.07)
