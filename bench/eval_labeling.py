"""Labeling quality on the bundled Jigsaw data: each source, majority vote, Snorkel and Assay's label model.

Runs `label_questions` WITHOUT gold (so the combiner picks its default, the label model), then scores every
labeller against the gold labels of the same records. Two sets: a seed of 4,000 records from train.parquet
(toxic-enriched) and all of dev.parquet (natural rates).

    flock /tmp/assay-bench.lock .venv/bin/python bench/eval_labeling.py [--out runs/eval-labeling]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.labeling.gold import gold_labels  # noqa: E402
from assay.labeling.model import VoteAnalysis, combine  # noqa: E402
from assay.labeling.pipeline import label_questions  # noqa: E402
from assay.labeling.votes import vote_matrix  # noqa: E402
from assay.schemas import load_questions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JIGSAW = ROOT / "examples" / "data" / "jigsaw"
METHODS = ("majority", "weighted", "snorkel", "label_model")
GOLD_HINTS = 200  # records whose gold `auto` may see in the last column


def evaluate(name: str, input_path: Path, sample: int | None, out: Path) -> dict:
    """Label `input_path` without gold, then score every labeller on the gold of the seed records."""
    questions = load_questions(ROOT / "examples" / "questions" / "jigsaw")
    started = time.perf_counter()
    summary = label_questions(questions, input_path, out / name, sample=sample, progress=False)
    seconds = time.perf_counter() - started
    rows = {}
    for loaded in questions:
        qid = loaded.spec.id
        votes = pq.read_table(out / name / "votes" / f"{qid}.parquet")
        gold = gold_labels(input_path, qid)
        matrix = vote_matrix(votes)
        analysis = VoteAnalysis(matrix)
        result = combine(matrix, method="label_model", gold=gold)
        scores = analysis.gold_comparison(result, gold)
        hints = gold.filter(pa.array(np.isin(gold.column("id").to_numpy(zero_copy_only=False),
                                             votes.column("id").to_numpy(zero_copy_only=False)[:GOLD_HINTS])))
        auto = combine(matrix, gold=hints)
        scores["auto_with_gold"] = {**analysis.gold_comparison(auto, gold)["combined"], "method": auto.method}
        rows[qid] = {"scores": scores, "prior": result.prior, "threshold": result.threshold,
                     "gold_rate": float(gold.column("label").to_numpy().mean())}
    return {"name": name, "records": summary.seed_rows, "label_seconds": round(seconds, 1), "questions": rows}


def markdown(run: dict) -> str:
    """A table: F1 per question of each source, each method, with macro-F1 over the questions."""
    questions = run["questions"]
    sources = sorted({k for q in questions.values() for k in q["scores"] if k.startswith("source:")})
    lines = [f"**{run['name']}** ({run['records']:,} records; labelled in {run['label_seconds']} s)", "",
             "| question | gold yes | est. P(yes) | " + " | ".join(s.removeprefix("source:") for s in sources)
             + f" | majority | weighted | Snorkel | **Assay label model** | auto, {GOLD_HINTS} gold |",
             "|---|---:|---:|" + "---:|" * (len(sources) + 5)]
    macro = {m: [] for m in (*METHODS, "auto_with_gold")}
    for qid, q in questions.items():
        cells = [f"{q['scores'][s]['f1']:.3f}" if s in q["scores"] else "—" for s in sources]
        for m in macro:
            macro[m].append(q["scores"][m]["f1"])
        auto = q["scores"]["auto_with_gold"]
        lines.append(f"| {qid} | {q['gold_rate']:.3f} | {q['prior']:.3f} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{q['scores'][m]['f1']:.3f}" for m in METHODS)
                     + f" | {auto['f1']:.3f} ({auto['method']}) |")
    lines.append("| **macro-F1** | | | " + " | ".join("" for _ in sources) + " | "
                 + " | ".join(f"**{sum(v) / len(v):.3f}**" for v in macro.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/eval-labeling"))
    parser.add_argument("--sample", type=int, default=4000)
    args = parser.parse_args()
    runs = [evaluate("train seed", JIGSAW / "train.parquet", args.sample, args.out),
            evaluate("dev", JIGSAW / "dev.parquet", None, args.out)]
    text = "\n".join(markdown(run) for run in runs)
    print(text)
    (args.out / "quality.md").write_text(text)
    (args.out / "quality.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
