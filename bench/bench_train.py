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
import pyarrow.compute as pc  # noqa: E402
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


def subsample(labels: Path, question_ids: list[str], records: int, out: Path) -> Path:
    """A copy of a label run folder restricted to the first ``records`` seed records."""
    (out / "labels").mkdir(parents=True, exist_ok=True)
    seed = pq.read_table(labels / "seed.parquet").slice(0, records)
    pq.write_table(seed, out / "seed.parquet")
    keep = pa.array(seed.column("id").cast(pa.string()).to_pylist())
    for qid in question_ids:
        table = pq.read_table(labels / "labels" / f"{qid}.parquet")
        table = table.filter(pc.is_in(table.column("id").cast(pa.string()), value_set=keep))
        pq.write_table(table, out / "labels" / f"{qid}.parquet")
    return out


def speed_probe(labels: Path, steps: int, threads: int | None, questions: int, epochs: int) -> dict:
    """Seconds per record: lower-layer cache fill, and one training step with/without the cache, per depth.

    Projects the time to train ``questions`` adapters for ``epochs`` on the label run's seed set.
    """
    from peft import get_peft_model

    from assay.distill.cache import upper_layers_only
    from assay.distill.train import TrainConfig, _forward, load_base, lora_config, make_cache, torch_threads
    from assay.schemas.models import bundled_minilm

    texts = pq.read_table(labels / "seed.parquet", columns=["text"]).column("text").to_pylist()
    rng = torch.Generator().manual_seed(0)
    sample = [texts[i] for i in torch.randperm(len(texts), generator=rng)[: steps * 32].tolist()]
    n_train = int(len(texts) * 0.8)
    out: dict = {"records": len(texts), "questions": questions, "epochs": epochs, "steps": steps, "modes": {}}
    with torch_threads(threads):
        for name, top, cached in (("top-1, cached lower layers", 1, True), ("top-1, no cache", 1, False),
                                  ("top-2, cached lower layers", 2, True), ("full depth (6 layers)", 6, True)):
            config = TrainConfig(top_layers=top)
            cache = make_cache(bundled_minilm(), config)
            fill = cache.fill(sample, progress=False) / len(sample)
            model = get_peft_model(load_base(bundled_minilm(), config), lora_config(cache.model, config)).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            p_yes = torch.full((32,), 0.3)
            with upper_layers_only(model.base_model.model, cache.arch, cache.layer if cached else 0) as feed:
                for step in range(-1, steps):  # step -1: warm-up, not timed
                    if step == 0:
                        started = time.perf_counter()
                    batch = sample[max(step, 0) * 32:(max(step, 0) + 1) * 32]
                    if cached:
                        logits = _forward(model, feed, cache, batch, "cpu")
                    else:  # the whole model: feed the embeddings' output, run all layers every step
                        cache_all = cache.batch(batch)
                        with torch.no_grad():
                            feed.value = cache.model.get_submodule(cache.arch.layers_path.rsplit(".", 2)[0]
                                                                   ).embeddings(input_ids=cache_all.input_ids)
                        logits = model(input_ids=cache_all.input_ids, attention_mask=cache_all.attention_mask).logits
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], p_yes)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            step = (time.perf_counter() - started) / (steps * 32)
            projected = (fill * len(texts) if cached else 0.0) + questions * epochs * n_train * step
            out["modes"][name] = {"fill_s_per_record": fill if cached else None, "step_s_per_record": step,
                                  "projected_seconds": projected}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, help="label run folder (assay label --out)")
    parser.add_argument("--questions", type=Path, default=ROOT / "examples/questions/jigsaw")
    parser.add_argument("--gold", type=Path, help="gold file to evaluate on (e.g. examples/data/jigsaw/dev.parquet)")
    parser.add_argument("--oracle", action="store_true", help="train on the seed records' gold labels")
    parser.add_argument("--oracle-gold", type=Path, help="gold file for --oracle when seed.parquet has no gold")
    parser.add_argument("--only", help="comma-separated question ids")
    parser.add_argument("--records", type=int, help="train on the first N seed records only")
    parser.add_argument("--registry", type=Path, help="registry folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    for name, kind in (("top-layers", int), ("max-length", int), ("epochs", int), ("threads", int),
                       ("batch-size", int), ("learning-rate", float), ("loss", str), ("class-weight", str),
                       ("threshold-rule", str)):
        parser.add_argument(f"--{name}", type=kind)
    parser.add_argument("--speed-probe", type=int, metavar="STEPS",
                        help="instead of training: time STEPS training steps per mode (cache / no cache / depth)")
    args = parser.parse_args()
    if args.speed_probe:
        probe = speed_probe(args.labels, args.speed_probe, args.threads, questions=7, epochs=args.epochs or 1)
        table = Table(title=f"speed probe: {probe['questions']} questions x {probe['records']} seed records x "
                            f"{probe['epochs']} epoch(s) (load average {os.getloadavg()[0]:.1f})")
        for column in ("mode", "lower layers ms/record", "train step ms/record", "projected total s"):
            table.add_column(column)
        for name, mode in probe["modes"].items():
            fill = mode["fill_s_per_record"]
            table.add_row(name, "" if fill is None else f"{fill * 1000:.1f}", f"{mode['step_s_per_record'] * 1000:.1f}",
                          f"{mode['projected_seconds']:.0f}")
        Console().print(table)
        if args.out:
            args.out.write_text(json.dumps(probe, indent=2) + "\n")
        return
    overrides = {k: getattr(args, k) for k in ("top_layers", "max_length", "epochs", "threads", "batch_size",
                                               "learning_rate", "loss", "class_weight", "threshold_rule")}
    questions = load_questions(args.questions)
    only = args.only.split(",") if args.only else None
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    labels, wanted = args.labels, only or [q.spec.id for q in questions]
    if args.oracle:
        labels = oracle_labels(labels, wanted, work / "oracle", args.oracle_gold)
    if args.records:
        labels = subsample(labels, wanted, args.records, work / "subsample")
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
    report = {"labels": str(args.labels), "oracle": args.oracle, "records": args.records, "overrides": {k: v for k, v in overrides.items() if v},
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
