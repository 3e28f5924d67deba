"""Distillation quality on dev.parquet: combined labels vs the student adapters vs the oracle adapters.

    .venv/bin/python bench/quality_distill.py --student bench/results/train_student.json \
        --oracle bench/results/train_oracle.json --combined-dev runs/eval-labeling/dev \
        --out bench/results/quality_distill

``--student`` / ``--oracle`` are ``bench_train.py --gold dev.parquet`` results (the oracle trained on the
gold labels of the same seed records); ``--combined-dev`` is a label run over dev.parquet (the label
model applied to the dev votes: ``labels/<q>.parquet``). For ``is_bad`` the recorded GPT-4 answers are
scored too (on the dev records GPT-4 answered); with ``--student-scores`` (an ``assay score`` output
over dev.parquet from the student registry) the student is scored on those same records, like for like.
Writes a Markdown table and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from assay.distill.evaluate import binary_metrics
from assay.labeling.gold import gold_labels

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "examples/data/jigsaw/dev.parquet"
TEACHER = ROOT / "examples/data/jigsaw/teacher_gpt4.parquet"


def labelled_f1(labels: Path, question_id: str, gold_path: Path) -> dict:
    """F1 of hard labels (``label`` column, id-joined) against gold; records without a label count as 'no'."""
    gold = gold_labels(gold_path, question_id)
    table = pq.read_table(labels)
    column = "label" if "label" in table.column_names else table.column_names[1]
    label_of = dict(zip(table.column("id").cast("string").to_pylist(), table.column(column).to_pylist()))
    ids = gold.column("id").to_pylist()
    predicted = np.array([float(label_of.get(i) or 0) for i in ids])
    return {**binary_metrics(predicted, gold.column("label").to_numpy(), 0.5), "covered": sum(i in label_of for i in ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--oracle", type=Path, required=True)
    parser.add_argument("--combined-dev", type=Path, required=True, help="label run folder over dev.parquet")
    parser.add_argument("--gold", type=Path, default=DEV)
    parser.add_argument("--student-scores", type=Path, help="assay score output over dev (student vs GPT-4 on the "
                        "records GPT-4 answered)")
    parser.add_argument("--out", type=Path, required=True, help="output prefix (.md and .png are written)")
    args = parser.parse_args()
    student = {r["question"]: r for r in json.loads(args.student.read_text())["questions"]}
    oracle = {r["question"]: r for r in json.loads(args.oracle.read_text())["questions"]}
    rows = []
    for qid in student:
        combined = labelled_f1(args.combined_dev / "labels" / f"{qid}.parquet", qid, args.gold)
        s, o = student[qid]["gold"] or {}, oracle.get(qid, {}).get("gold") or {}
        rows.append({"question": qid, "positives": s.get("positives"), "combined": combined["f1"],
                     "student": s.get("f1"), "student_best": s.get("best_threshold_f1"), "student_auc": s.get("auc"), "student_ece": s.get("ece"),
                     "oracle": o.get("f1"), "oracle_auc": o.get("auc")})
    teacher = student_on_teacher_records = None
    if "is_bad" in student:
        answered = pq.read_table(TEACHER, columns=["id", "gpt4_is_bad"])
        gold = gold_labels(args.gold, "is_bad")
        label_of = dict(zip(answered.column("id").cast("string").to_pylist(), answered.column(1).to_pylist()))
        ids = [i for i in gold.column("id").to_pylist() if i in label_of]
        gold_of = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
        truth = np.array([gold_of[i] for i in ids])
        teacher = binary_metrics(np.array([float(label_of[i]) for i in ids]), truth, 0.5)
        if args.student_scores:
            scores = ds.dataset(sorted(args.student_scores.rglob("*.parquet")), format="parquet").to_table(columns=["id", "is_bad"])
            answer_of = dict(zip(scores.column("id").to_pylist(), scores.column("is_bad").to_pylist()))
            student_on_teacher_records = binary_metrics(np.array([float(answer_of[i]) for i in ids]), truth, 0.5)
    macro = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in ("combined", "student", "oracle")}
    lines = ["| question | dev positives | combined labels F1 | student F1 | student AUC | student ECE | "
             "oracle F1 | oracle AUC | student / oracle | student F1 at the best dev threshold* |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["student"] / r["oracle"] if r["oracle"] else float("nan")
        lines.append(f"| {r['question']} | {r['positives']} | {r['combined']:.3f} | {r['student']:.3f} | "
                     f"{r['student_auc'] or 0:.3f} | {r['student_ece']:.3f} | {r['oracle']:.3f} | "
                     f"{r['oracle_auc'] or 0:.3f} | {ratio:.0%} | "
                     + (f"{r['student_best']:.3f} |" if r["student_best"] is not None else "— |"))
    lines.append(f"| **macro** | | **{macro['combined']:.3f}** | **{macro['student']:.3f}** | | | "
                 f"**{macro['oracle']:.3f}** | | **{macro['student'] / macro['oracle']:.0%}** | |")
    if teacher:
        lines.append("")
        lines.append(f"GPT-4 (recorded answers) on the {teacher['n']} dev records it answered, `is_bad`: "
                     f"F1 {teacher['f1']:.3f}, precision {teacher['precision']:.3f}, recall {teacher['recall']:.3f}.")
    if student_on_teacher_records:
        s = student_on_teacher_records
        lines.append(f"The student (`--student-scores`) on the same {s['n']} records: F1 {s['f1']:.3f}, "
                     f"precision {s['precision']:.3f}, recall {s['recall']:.3f}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_text(json.dumps(
        {"rows": rows, "macro": macro, "gpt4_is_bad": teacher, "student_is_bad_on_gpt4_records": student_on_teacher_records},
        indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(rows) + 1)
    for k, (key, name) in enumerate((("combined", "combined labels"), ("student", "student adapter"),
                                     ("oracle", "oracle adapter (gold labels)"))):
        ax.bar(x + (k - 1) * 0.27, [r[key] or 0 for r in rows] + [macro[key]], width=0.27, label=name)
    ax.set_xticks(x, [r["question"] for r in rows] + ["macro"], rotation=20)
    ax.set_ylabel("F1 on dev.parquet")
    ax.set_title("Distillation quality (dev, natural rates)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
