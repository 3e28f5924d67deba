"""Choose the distillation base and training settings on a selection split; report once on an untouched split.

    flock /tmp/assay-bench.lock .venv/bin/python bench/select_base.py prepare --work runs/select
    flock /tmp/assay-bench.lock .venv/bin/python bench/select_base.py select --work runs/select
    flock /tmp/assay-bench.lock .venv/bin/python bench/select_base.py report --work runs/select \
        --candidate top2 --out bench/results/select_base_test.json
    .venv/bin/python bench/select_base.py probe --work runs/select --out bench/results/select_base_probe.json

Protocol (fixed before any run was looked at):

* ``prepare`` splits ``examples/data/jigsaw/train.parquet`` with a seeded permutation (seed 16) into an
  untouched **test** split (1,500 records), a **selection** split (1,500) and the **pool** (the other
  4,506), then labels the whole pool with the bundled questions' offline sources (label model, no gold).
  Training uses only the pool's combined labels; gold labels of the selection split only score configs.
* ``select`` trains every config of :data:`CONFIGS` (7 adapters each) on the first 4,000 pool records
  (``records=None``: the whole pool) and scores them on the selection split. **Criterion:** macro-F1 over
  the 7 questions at each adapter's own threshold. The winner must beat the default by more than 0.01
  macro-F1 on selection (less is within the noise of 1,500 records) and stay within the demo's budget;
  otherwise the default stays.
* ``report`` scores the default and ONE candidate on the test split, once, with the paired bootstrap
  95 % interval of the macro-F1 difference (``bench/stats.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402
from stats import bootstrap_ci, f1, paired_bootstrap, read_rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples/data/jigsaw/train.parquet"
QUESTIONS = ROOT / "examples/questions/jigsaw"
SPLIT_SEED, TEST_ROWS, SELECTION_ROWS = 16, 1500, 1500
MARGIN = 0.01  # selection macro-F1 a candidate must gain over the default
# name -> (base name in assay.schemas.models.BASES, records (None: whole pool), TrainConfig overrides);
# in priority order: the run stops wherever time runs out and the table says which were not run.
CONFIGS: dict[str, tuple[str, int | None, dict]] = {
    "default": ("minilm-l6", 4000, {}),
    "hard": ("minilm-l6", 4000, {"loss": "confidence"}),
    "epochs3": ("minilm-l6", 4000, {"epochs": 3, "patience": 1}),
    "top2": ("minilm-l6", 4000, {"top_layers": 2}),
    "balanced": ("minilm-l6", 4000, {"class_weight": "balanced"}),
    "len256": ("minilm-l6", 4000, {"max_length": 256}),
    "top4": ("minilm-l6", 4000, {"top_layers": 4}),
    "unweighted": ("minilm-l6", 4000, {"class_weight": "none"}),
    "len64": ("minilm-l6", 4000, {"max_length": 64}),
    "pool": ("minilm-l6", None, {}),
    "smollm2_top1_len64": ("smollm2-135m", 4000, {"max_length": 64}),
    "read200": ("minilm-l6", 4000, {}),  # labels made with expected_yes_rate = the yes share of 200 read records
    "self_train": ("minilm-l6", 4000, {}),  # labels averaged with a cross-fitted student's P(yes) (see below)
    # the adapter without its lexical head (the default before 7 December; student_fusion_probe.py)
    "adapter_only": ("minilm-l6", 4000, {"lexical_head": False}),
}
# configs whose labels differ: the pool's votes recombined with the class balance a data team would state
# after reading this many pool records (expected_yes_rate); added after the first grid showed the labels'
# estimated prevalence, not the training settings, setting the F1
LABEL_VARIANTS = {"read200": 200}
# configs trained on self-trained labels (probe of 7 December, pre-registered in `self_trained_labels`)
SELF_TRAINED, SELF_TRAIN_FOLDS = {"self_train"}, 2


def prepare(work: Path) -> None:
    """Write test/selection/pool Parquet files and label the pool (all of it) into ``work/labels``."""
    from assay.labeling.pipeline import label_questions
    from assay.schemas.loader import load_questions

    table = pq.read_table(TRAIN)
    order = np.random.default_rng(SPLIT_SEED).permutation(table.num_rows)
    parts = {"test": order[:TEST_ROWS], "selection": order[TEST_ROWS:TEST_ROWS + SELECTION_ROWS],
             "pool": order[TEST_ROWS + SELECTION_ROWS:]}
    work.mkdir(parents=True, exist_ok=True)
    for name, index in parts.items():
        pq.write_table(table.take(np.sort(index)), work / f"{name}.parquet")
    shutil.copy(TRAIN.parent / "gold.json", work / "gold.json")  # is_bad = any of the six labels
    pool = pq.read_table(work / "pool.parquet")
    pq.write_table(pool.drop_columns([c for c in pool.column_names if c not in ("id", "text")]),
                   work / "pool_unlabelled.parquet")  # the label run never sees gold
    label_questions(load_questions(QUESTIONS), work / "pool_unlabelled.parquet", work / "labels", sample=None)


def relabel(work: Path, qids: list[str], read: int) -> Path:
    """``work/labels_read<N>``: every question's votes recombined with the yes share of ``read`` pool records."""
    from assay.labeling.gold import gold_labels
    from assay.labeling.model.combine import combine

    out = work / f"labels_read{read}"
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "labels" / "seed.parquet", out / "seed.parquet")
    rates = {}
    for qid in qids:
        rates[qid] = read_rate(gold_labels(work / "pool.parquet", qid).column("label").to_numpy(), read)
        result = combine(pq.read_table(work / "labels" / "votes" / f"{qid}.parquet"), class_balance=rates[qid])
        pq.write_table(result.probs, out / "labels" / f"{qid}.parquet")
    (out / "read_rates.json").write_text(json.dumps(rates, indent=1))
    return out


def shift_to_mean(p: np.ndarray, mean: float) -> np.ndarray:
    """``p`` moved by one constant on the logit scale so that its mean is ``mean`` (a prior shift)."""
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1 - 1e-6)).astype(np.float64)
    low, high = -30.0, 30.0
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if np.mean(1 / (1 + np.exp(-(logit + middle)))) < mean else (low, middle)
    return 1 / (1 + np.exp(-(logit + (low + high) / 2)))


def self_trained_labels(work: Path, labels: Path, questions: list, base: Path, cache) -> Path:
    """``work/labels_self_train``: each question's P(yes) averaged with a cross-fitted default student's.

    Pre-registered (7 December, before any run): the records of ``labels`` are split into
    ``SELF_TRAIN_FOLDS`` folds by a seeded permutation; a default student trained on the other folds scores
    each fold through the engine; its P(yes) is prior-shifted to the mean of the label model's P(yes) (so
    the prevalence, and with it the decision rule, is unchanged) and averaged with the label model's P(yes).
    The config is adopted only if it beats the default by more than ``MARGIN`` selection macro-F1 within the
    demo's budget; the test split is read only then.
    """
    from assay.distill.data import load_question_data, read_seed
    from assay.distill.evaluate import score_versions
    from assay.distill.train import train_question
    from assay.schemas.registry import Registry

    out, seed = work / "labels_self_train", read_seed(labels)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copy(labels / "seed.parquet", out / "seed.parquet")
    data = {q.spec.id: load_question_data(labels, q.spec.id, seed=seed) for q in questions}
    fold = {qid: np.random.default_rng(SPLIT_SEED).permutation(len(d)) % SELF_TRAIN_FOLDS for qid, d in data.items()}
    student = {qid: np.zeros(len(d)) for qid, d in data.items()}
    for k in range(SELF_TRAIN_FOLDS):
        registry = Registry(work / "registries" / f"self_train_fold{k}")
        versions = [train_question(q, labels, registry, base, True, cache=cache,
                                   data=data[q.spec.id].subset(np.flatnonzero(fold[q.spec.id] != k)))
                    for q in questions]
        for version in versions:
            qid = version.question_id
            held = np.flatnonzero(fold[qid] == k)
            scores = score_versions([version], [data[qid].texts[i] for i in held], registry)
            student[qid][held] = scores[(qid, version.version)]
    for qid, d in data.items():
        p_yes = ((d.p_yes + shift_to_mean(student[qid], float(d.p_yes.mean()))) / 2).astype(np.float32)
        pq.write_table(pa.table({"id": d.ids, "p_yes": p_yes, "label": (p_yes >= 0.5).astype(np.int8)}),
                       out / "labels" / f"{qid}.parquet")
    return out


def run_config(work: Path, name: str, threads: int, caches: dict) -> dict:
    """Train one config's 7 adapters on the pool labels; gold metrics on the selection split.

    ``caches`` keeps the lower-layer caches between configs of the same (base, length, depth): the
    configs that differ only in the loss, weights or epochs do not recompute the lower layers.
    """
    from bench_train import subsample

    from assay.distill.data import LabelsError, load_question_data, read_seed
    from assay.distill.evaluate import evaluate_gold
    from assay.distill.train import TrainConfig, torch_threads, train_question
    from assay.schemas.loader import load_questions
    from assay.schemas.models import base_path
    from assay.schemas.registry import Registry

    base_name, records, overrides = CONFIGS[name]
    base = base_path(base_name)
    questions = load_questions(QUESTIONS)
    labels = work / "labels"
    if name in LABEL_VARIANTS:
        labels = relabel(work, [q.spec.id for q in questions], LABEL_VARIANTS[name])
    if records is not None:
        labels = subsample(labels, [q.spec.id for q in questions], records, Path(f"{labels}_{records}"))
    started = time.perf_counter()
    with torch_threads(threads):
        if name in SELF_TRAINED:
            labels = self_trained_labels(work, labels, questions, base,
                                         _cache(caches, base_name, base, TrainConfig.for_spec(questions[0], **overrides)))
        registry, seed, rows, versions = Registry(work / "registries" / name), read_seed(labels), {}, []
        for loaded in questions:
            begun = time.perf_counter()
            earlier = registry.versions(loaded.spec.id)
            if earlier:  # trained by a run that stopped before scoring: reuse, do not retrain
                versions.append(earlier[-1])
                rows[loaded.spec.id] = {"seconds": earlier[-1].manifest["training"]["seconds"], "reused": True,
                                        "version": earlier[-1].version,
                                        "holdout_f1": earlier[-1].metrics["holdout"]["f1"]}
                continue
            try:
                data = load_question_data(labels, loaded.spec.id, seed=seed)
            except LabelsError as error:  # what `assay train` refuses: no adapter, so no yes answer (F1 0)
                rows[loaded.spec.id] = {"refused": str(error), "selection": {"f1": 0.0}}
                continue
            cache = _cache(caches, base_name, base, TrainConfig.for_spec(loaded, **overrides))
            version = train_question(loaded, labels, registry, base, True, cache=cache, data=data, **overrides)
            versions.append(version)
            rows[loaded.spec.id] = {"seconds": round(time.perf_counter() - begun, 1), "version": version.version,
                                    "holdout_f1": version.metrics["holdout"]["f1"]}
        gold = evaluate_gold(versions, work / "selection.parquet", registry, progress=True)
    for qid, row in rows.items():
        row.setdefault("selection", gold.get(qid, {}).get("gold"))
    seconds = time.perf_counter() - started
    return {"name": name, "base": base_name, "records": records, "overrides": overrides, "seconds": round(seconds, 1),
            "selection_macro_f1": float(np.mean([row["selection"]["f1"] for row in rows.values()])),
            "questions": rows}


def _cache(caches: dict, base_name: str, base: Path, config):
    """The lower-layer cache of (base, length, depth), made when missing; at most two kept in memory."""
    from assay.distill.train import make_cache

    key = (base_name, config.max_length, config.top_layers)
    if key not in caches:
        while len(caches) >= 2:  # about 0.8 GB each at 4,000 x 128
            caches.pop(next(iter(caches)))
        caches[key] = make_cache(base, config)
    return caches[key]


def select(work: Path, only: list[str] | None, threads: int) -> None:
    """Run the configs not yet run (each writes ``work/select/<name>.json``) and print the table."""

    out, caches = work / "select", {}
    for name in only or list(CONFIGS):
        path = out / f"{name}.json"
        if path.exists():
            continue
        base, records, overrides = CONFIGS[name]
        config = {"config": name, "base": base, "records": records, "overrides": overrides, "threads": threads,
                  "split_seed": SPLIT_SEED, "test_rows": TEST_ROWS, "selection_rows": SELECTION_ROWS,
                  "train_defaults": "assay.distill.train.TrainConfig defaults for every field not overridden"}
        write_result(path, config, run_config(work, name, threads, caches))
    table = Table(title="selection split: macro-F1 over 7 questions (adapter thresholds)")
    for column in ("config", "base", "records", "overrides", "train s", "selection macro-F1", "vs default"):
        table.add_column(column)
    done = {n: json.loads((out / f"{n}.json").read_text())["results"] for n in CONFIGS if (out / f"{n}.json").exists()}
    reference = done.get("default", {}).get("selection_macro_f1")
    for name in CONFIGS:
        r = done.get(name)
        if r is None:
            table.add_row(name, CONFIGS[name][0], str(CONFIGS[name][1]), str(CONFIGS[name][2]), "not run", "", "")
            continue
        delta = "" if reference is None else f"{r['selection_macro_f1'] - reference:+.3f}"
        table.add_row(name, r["base"], str(r["records"]), str(r["overrides"]), f"{r['seconds']:.0f}",
                      f"{r['selection_macro_f1']:.3f}", delta)
    Console().print(table)


def test_predictions(work: Path, name: str, test: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(question ids, gold matrix, yes/no matrix) of config ``name``'s adapters on the test split."""
    from assay.distill.evaluate import gold_set, score_versions
    from assay.schemas.registry import Registry

    registry = Registry(work / "registries" / name)
    versions = [v for q in sorted(registry.all_questions()) for v in registry.versions(q)[-1:]]
    sets = {v.question_id: gold_set(test, v.question_id) for v in versions}
    texts = next(iter(sets.values())).texts
    scores = score_versions(versions, texts, registry)
    gold = np.stack([sets[v.question_id].label for v in versions], axis=1)
    pred = np.stack([scores[(v.question_id, v.version)] >= v.threshold for v in versions], axis=1)
    return [v.question_id for v in versions], gold, pred


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over columns (questions) of the yes-class F1."""
    return float(np.mean([f1(y[:, k], pred[:, k]) for k in range(y.shape[1])]))


def report(work: Path, candidate: str | None, out: Path) -> None:
    """The default (and ``candidate``, if given) on the untouched test split, with paired bootstrap 95 % intervals."""
    test = work / "test.parquet"
    qids, gold, default = test_predictions(work, "default", test)
    results: dict = {"questions": qids, "records": int(len(gold)), "positives": gold.sum(axis=0).tolist(),
                     "default": bootstrap_ci(macro_f1, gold, default),
                     "per_question": {q: {"default": bootstrap_ci(f1, gold[:, k], default[:, k])}
                                      for k, q in enumerate(qids)}}
    line = f"test split ({len(gold)} records): default macro-F1 {results['default'][0]:.3f} " \
           f"[{results['default'][1]:.3f}, {results['default'][2]:.3f}]"
    if candidate:
        qids_c, gold_c, other = test_predictions(work, candidate, test)
        if qids != qids_c or not np.array_equal(gold, gold_c):
            raise SystemExit(f"{candidate}: not the same questions/records as the default")
        results[candidate] = bootstrap_ci(macro_f1, gold, other)
        results["delta_candidate_minus_default"] = d = paired_bootstrap(macro_f1, gold, other, default)
        for k, q in enumerate(qids):
            results["per_question"][q][candidate] = bootstrap_ci(f1, gold[:, k], other[:, k])
        line += f", {candidate} {results[candidate][0]:.3f}, delta {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
    write_result(out, {"work": str(work), "candidate": candidate, "bootstrap": 1000, "seed": 0}, results)
    print(line)
    for q, row in results["per_question"].items():
        print(f"  {q}: " + ", ".join(f"{name} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for name, v in row.items()))


def probe(work: Path, records: int, steps: int, threads: int) -> dict:
    """Per base and length: lower-layer cache fill and one top-1 training step, seconds per record.

    Projects the demo's training cost (7 questions x 3,200 training records x 1 epoch + the 4,000-record
    fill); measured on the same pool records, one base after the other, under the same load.
    """
    from peft import get_peft_model

    from assay.distill.cache import upper_layers_only
    from assay.distill.train import TrainConfig, _forward, load_base, lora_config, make_cache, torch_threads
    from assay.schemas.models import base_path

    texts = pq.read_table(work / "pool.parquet", columns=["text"]).column("text").to_pylist()[:records]
    out = {}
    with torch_threads(threads):
        for base_name, length in (("minilm-l6", 128), ("smollm2-135m", 128), ("smollm2-135m", 64)):
            config = TrainConfig(max_length=length)
            cache = make_cache(base_path(base_name), config)
            fill = cache.fill(texts, progress=False) / len(texts)
            model = get_peft_model(load_base(base_path(base_name), config), lora_config(cache.model, config)).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            with upper_layers_only(model.base_model.model, cache.arch, cache.layer) as feed:
                for step in range(-1, steps):  # step -1: warm-up, not timed
                    if step == 0:
                        started = time.perf_counter()
                    logits = _forward(model, feed, cache, texts[(max(step, 0) * 32) % len(texts):][:32], "cpu")
                    loss = logits.float().logsumexp(-1).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            step_s = (time.perf_counter() - started) / (steps * 32)
            out[f"{base_name} len{length}"] = {"fill_s_per_record": fill, "step_s_per_record": step_s,
                                               "projected_train_s": fill * 4000 + 7 * 3200 * step_s,
                                               "load_average": os.getloadavg()[0]}
            print(base_name, length, out[f"{base_name} len{length}"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "select", "report", "probe"))
    parser.add_argument("--work", type=Path, default=ROOT / "runs/select")
    parser.add_argument("--only", help="select: comma-separated config names (default: all, in order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidate", help="report: the config compared with the default on the test split")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/select_base_test.json")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.work)
    elif args.step == "probe":
        write_result(args.out, {**vars(args), "records": 64, "steps": 3}, probe(args.work, 64, 3, args.threads))
    elif args.step == "select":
        select(args.work, args.only.split(",") if args.only else None, args.threads)
    else:
        if args.candidate and args.candidate not in CONFIGS:
            parser.error(f"--candidate must be one of {', '.join(CONFIGS)}")
        report(args.work, args.candidate, args.out)


if __name__ == "__main__":
    main()
