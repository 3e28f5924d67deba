"""Benchmark `assay train`: the bundled questions on a label run's seed set, time and quality.

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_train.py --labels runs/label \
        --gold examples/data/jigsaw/dev.parquet --out bench/results/train_default.json

``--oracle`` trains on the seed records' gold labels instead (``labels/<q>.parquet`` rebuilt from the
gold columns ``gold_labels`` finds in ``seed.parquet`` or in ``--oracle-gold``): the ceiling the student
is compared with. Training options (``--top-layers``, ``--loss``, ...) override the defaults, so the
same script measures the shared-lower-layers speed-up and the loss choice. Prints a table and writes
JSON (timings per question, the lower-layer cache fill, metrics on the hold-out and gold).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from assay.distill.train import train_questions  # noqa: E402
from assay.labeling.gold import gold_labels  # noqa: E402
from assay.schemas.loader import load_questions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def oracle_labels(labels: Path, question_ids: list[str], out: Path, gold_file: Path | None) -> Path:
    """A labels folder with the same seed records and p_yes = the gold label."""
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copy(labels / "seed.parquet", out / "seed.parquet")
    seed_ids = pq.read_table(labels / "seed.parquet", columns=["id"]).column("id").cast(pa.string())
    for qid in question_ids:
        gold = gold_labels(gold_file or labels / "seed.parquet", qid)
        label_of = dict(zip(gold.column("id").to_pylist(), gold.column("label").to_pylist()))
        ids = [i for i in seed_ids.to_pylist() if i in label_of]
        label = pa.array([label_of[i] for i in ids], pa.int8())
        pq.write_table(pa.table({"id": ids, "p_yes": label.cast(pa.float32()), "label": label}),
                       out / "labels" / f"{qid}.parquet")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, help="label run folder (assay label --out)")
    parser.add_argument("--questions", type=Path, default=ROOT / "examples/questions/jigsaw")
    parser.add_argument("--gold", type=Path, help="gold file to evaluate on (e.g. examples/data/jigsaw/dev.parquet)")
    parser.add_argument("--oracle", action="store_true", help="train on the seed records' gold labels")
    parser.add_argument("--oracle-gold", type=Path, help="gold file for --oracle when seed.parquet has no gold")
    parser.add_argument("--only", help="comma-separated question ids")
    parser.add_argument("--registry", type=Path, help="registry folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    for name, kind in (("top-layers", int), ("max-length", int), ("epochs", int), ("threads", int),
                       ("batch-size", int), ("learning-rate", float), ("loss", str), ("class-weight", str)):
        parser.add_argument(f"--{name}", type=kind)
    args = parser.parse_args()
    overrides = {k: getattr(args, k) for k in ("top_layers", "max_length", "epochs", "threads", "batch_size",
                                               "learning_rate", "loss", "class_weight")}
    questions = load_questions(args.questions)
    only = args.only.split(",") if args.only else None
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    labels = args.labels
    if args.oracle:
        labels = oracle_labels(labels, only or [q.spec.id for q in questions], work / "oracle", args.oracle_gold)
    registry = args.registry or work / "registry"
    started = time.perf_counter()
    results = train_questions(questions, labels, registry, gold_path=args.gold, only=only, progress=True, **overrides)
    total = time.perf_counter() - started
    rows = []
    for result in results:
        manifest = result.version.manifest if result.version else {}
        training = manifest.get("training", {})
        rows.append({"question": result.question_id, "error": result.error, "seconds": round(result.seconds, 1),
                     "cache_fill_seconds": training.get("cache_fill_seconds"), "records": training.get("records"),
                     "best_epoch": training.get("best_epoch"), "threshold": manifest.get("threshold"),
                     "promoted": result.decision.promoted if result.decision else None,
                     "holdout": result.metrics.get("holdout"), "gold": result.metrics.get("gold")})
    report = {"labels": str(args.labels), "oracle": args.oracle, "overrides": {k: v for k, v in overrides.items() if v},
              "total_seconds": round(total, 1), "torch_threads": args.threads or torch.get_num_threads(),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_average_at_end": os.getloadavg(), "questions": rows}
    table = Table(title=f"bench_train: {len(rows)} question(s) in {total:.0f} s "
                        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for column in ("question", "seconds", "held-out F1", "gold F1", "gold AUC", "gold ECE"):
        table.add_column(column)
    for row in rows:
        gold = row["gold"] or {}
        table.add_row(row["question"], f"{row['seconds']:.0f}", f"{(row['holdout'] or {}).get('f1', 0):.3f}",
                      f"{gold.get('f1', 0):.3f}", f"{gold.get('auc') or 0:.3f}", f"{gold.get('ece', 0):.3f}")
    Console().print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
