"""The label-model suite: every combiner on equal terms on synthetic, Jigsaw and real weak-supervision sets.

Each set is scored on one part of its fixed split (`tune`: seen while developing the combiner; `untouched`:
kept back until the end). Each `holdoutN` part was added after the part before it had been scored: a fresh synthetic
draw (seed N) and real sets nobody had scored, under keyword rules frozen before any number on them
(`labelbench/corpora.py` says which corpora and rules, `HOLDOUTS` below maps each part; `holdout23` and the seen
part `foldoc_embedding` add the embedding source, voted by `assay label`, to FOLDOC's questions, `holdout24` to
WordNet's verb and adjective questions, `holdout25` to its noun questions:
`labelbench/embedded.py`). Every method gets the
same class balance (Assay's estimate, no gold; with `--balance-from stated`, the rate a data team would state
as `expected_yes_rate`, which Assay's label model is then told too) and the same decision rule (label yes the
top balance·n records by P(yes), tie groups kept whole). Goal metric per set: accuracy, or F1 of the rarer
class where it is under 20 % of the records.

    .venv/bin/python bench/label_suite.py --part tune            # 15-40 s per part on the idle 2-core machine
    .venv/bin/python bench/label_suite.py --part untouched
    .venv/bin/python bench/label_suite.py --part holdout2 --families synthetic,real
    .venv/bin/python bench/label_suite.py --part holdout3 --families synthetic,real
    .venv/bin/python bench/label_suite.py --part holdout3 --families synthetic,real --balance-from stated \
        --out bench/results/labelbench_holdout3_stated.json
    .venv/bin/python bench/label_suite.py --part holdout4 --families synthetic,real   # holdout5-25 likewise
    .venv/bin/python bench/label_suite.py --part foldoc_embedding --families real     # seen questions, embedding
    # holdout23-25 and foldoc_embedding: the first run embeds every record (2-3 min here), later runs reuse the votes
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelbench.corpora import (  # noqa: E402
    FOLDOC_PARTS,
    FORTUNE_DEBS,
    WORDNET_PARTS,
    foldoc_sets,
    fortune_sets,
    holdout2_sets,
    holdout3_sets,
    holdout4_sets,
    holdout5_sets,
    holdout6_sets,
    holdout7_sets,
    real_sets,
    sotu_sets,
    wordnet_sets,
)
from labelbench.data import BenchSet, split  # noqa: E402
from labelbench.embedded import foldoc_embedded_sets, wordnet_embedded_sets  # noqa: E402
from labelbench.jigsaw import jigsaw_sets  # noqa: E402
from labelbench.methods import BASELINES, DS_ITER, DS_SMOOTHING, METHODS, SNORKEL_EPOCHS, SNORKEL_LR, run_method  # noqa: E402
from labelbench.report import by_kind, plot, tables  # noqa: E402
from labelbench.synthetic import CASES, synthetic_set  # noqa: E402
from provenance import provenance, write_result  # noqa: E402
from stats import accuracy, f1, interval, paired_deltas  # noqa: E402

from assay.labeling.metrics import prevalence_labels  # noqa: E402
from assay.labeling.model.label_model import PRIOR_COUNT  # noqa: E402
from assay.labeling.votes import vote_matrix  # noqa: E402

RARE = 0.2  # below this share the goal metric is the rarer class's F1
HOLDOUTS = {  # part: its real sets; the part's number seeds its synthetic draws
    "holdout2": holdout2_sets, "holdout3": holdout3_sets, "holdout4": holdout4_sets, "holdout5": holdout5_sets,
    "holdout6": holdout6_sets, "holdout7": holdout7_sets, "holdout18": sotu_sets,
    **{part: partial(sets, part=part) for sets, parts in ((fortune_sets, FORTUNE_DEBS), (wordnet_sets, WORDNET_PARTS),
                                                          (foldoc_sets, FOLDOC_PARTS)) for part in parts},
    "holdout23": partial(foldoc_embedded_sets, part="holdout23"),
    "holdout24": partial(wordnet_embedded_sets, part="holdout24"),
    "holdout25": partial(wordnet_embedded_sets, part="holdout25")}
SEEN_PARTS = {  # part: real sets of questions seen before, asked again another way (no synthetic draws)
    "foldoc_embedding": partial(foldoc_embedded_sets, part="foldoc_embedding")}


def goal_metric(truth: np.ndarray) -> tuple[str, callable]:
    """("accuracy", fn) or ("f1_rare", fn): F1 of whichever class is rarer in the truth."""
    rate = truth.mean()
    if min(rate, 1 - rate) >= RARE:
        return "accuracy", accuracy
    if rate <= 0.5:
        return "f1_rare", f1
    return "f1_rare", lambda y, p: f1(~np.asarray(y, bool), ~np.asarray(p, bool))


def score_set(bench: BenchSet, methods: list[str], balance_from: str, boot: int) -> tuple[dict, dict]:
    """All methods on one set part: metrics, labelled-yes rate, and paired-bootstrap deltas of the goal metric
    (the row), with the deltas' bootstrap draws per method (for intervals over the whole suite)."""
    matrix = vote_matrix(bench.votes)
    started = time.perf_counter()
    truth = bench.truth
    balance = stated_rate(truth) if balance_from == "stated" else _balance(matrix, balance_from)
    name, metric = goal_metric(truth)
    row = {"set": bench.name, "family": bench.family, "n": int(len(truth)), "sources": len(matrix.sources),
           "true_rate": round(float(truth.mean()), 4), "balance": round(balance, 4), "goal": name, "methods": {}}
    labels, draws = {}, {}
    for method in methods:
        t = time.perf_counter()
        p = run_method(method, matrix, balance, told=balance_from == "stated")
        if p is None:
            row["methods"][method] = None
            continue
        labels[method], _ = prevalence_labels(p, balance)
        y = labels[method]
        row["methods"][method] = {"accuracy": round(accuracy(truth, y), 4), "f1": round(f1(truth, y), 4),
                                  "goal": round(metric(truth, y), 4), "yes_rate": round(float(y.mean()), 4),
                                  "constant": bool(y.all() or not y.any()), "seconds": round(time.perf_counter() - t, 2)}
    if "assay" in labels:
        for other in [m for m in ("majority", *BASELINES) if m in labels]:
            delta, draws[other] = paired_deltas(metric, truth, labels["assay"], labels[other], n=boot)
            row.setdefault("delta_vs", {})[other] = [round(delta, 4), *(round(x, 4) for x in interval(draws[other]))]
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row, draws


def mean_margins(rows: list[dict], draws: list[dict]) -> dict[str, list[float]]:
    """Per method: assay's goal metric minus the method's, averaged over the sets, with a 95 % interval from
    resampling the records within each set (the same draws as the per-set intervals). Where a method cannot run
    (Snorkel under 3 sources) it scores as majority vote, as in the suite's means."""
    margins = {}
    for method in BASELINES:
        per_set = [(row["delta_vs"].get(method, row["delta_vs"]["majority"])[0], d.get(method, d["majority"]))
                   for row, d in zip(rows, draws) if "majority" in d]
        if per_set:
            mean = float(np.mean([delta for delta, _ in per_set]))
            low, high = interval(np.mean([d for _, d in per_set], axis=0))
            margins[method] = [round(mean, 4), round(low, 4), round(high, 4)]
    return margins


def stated_rate(truth: np.ndarray) -> float:
    """The yes rate a data team states (`expected_yes_rate`): the true rate to one significant figure."""
    return float(f"{truth.mean():.1g}")


def _balance(matrix, balance_from: str) -> float:
    from labelbench.v0 import v0_combine

    from assay.labeling.model.combine import combine

    if balance_from == "assay_v0":
        return float(v0_combine(matrix.votes, matrix.conf)[2])
    return float(combine(matrix, method="label_model").prior)


def all_families(part: str) -> list[str]:
    """Every family of sets `part` has (the Jigsaw votes only in tune and untouched)."""
    return ["synthetic", "real"] + (["jigsaw"] if part in ("tune", "untouched") else [])


def suite(part: str, families: list[str], cache: Path, rebuild_jigsaw: bool = False) -> list[BenchSet]:
    """The sets of the suite, cut to `part`."""
    sets: list[BenchSet] = []
    if part in SEEN_PARTS:
        return SEEN_PARTS[part](cache / "corpora") if "real" in families else []
    if part in HOLDOUTS:
        seed = int(part.removeprefix("holdout"))
        sets += [synthetic_set(name, seed) for name in CASES] if "synthetic" in families else []
        return sets + (HOLDOUTS[part](cache / "corpora") if "real" in families else [])
    if "synthetic" in families:
        sets += [synthetic_set(name, 0 if part == "tune" else 1) for name in CASES]
    if "jigsaw" in families:
        sets += [split(b, part) for b in jigsaw_sets(cache, rebuild_jigsaw)]
    if "real" in families:
        sets += [split(b, part) for b in real_sets(cache / "corpora")]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("tune", "untouched", *HOLDOUTS, *SEEN_PARTS), required=True)
    parser.add_argument("--families", default="synthetic,jigsaw,real")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--balance-from", default="assay", choices=("assay", "assay_v0", "stated"),
                        help="whose class-balance estimate every method gets (stated: the true rate to one "
                             "significant figure, as a data team states it; Assay's label model is told it too)")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--rebuild-jigsaw", action="store_true", help="recompute the Jigsaw votes (slow: MiniLM)")
    parser.add_argument("--cache", type=Path, default=Path("runs/labelbench"))
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/labelbench_<part>.json")
    args = parser.parse_args()
    out = args.out or Path(__file__).resolve().parent / "results" / f"labelbench_{args.part}.json"
    header = provenance(vars(args))
    methods = args.methods.split(",")
    rows, draws = [], []
    from tqdm.auto import tqdm

    for bench in tqdm(suite(args.part, args.families.split(","), args.cache, args.rebuild_jigsaw), desc="sets", unit="set"):
        row, row_draws = score_set(bench, methods, args.balance_from, args.bootstrap)
        rows.append(row)
        draws.append(row_draws)
    margins = mean_margins(rows, draws)
    config = {**vars(args), "decision_rule": "prevalence_labels(p, balance)", "rare_below": RARE,
              "snorkel_epochs": SNORKEL_EPOCHS, "snorkel_lr": SNORKEL_LR, "ds_iterations": DS_ITER,
              "ds_smoothing": DS_SMOOTHING, "label_model_prior_count": PRIOR_COUNT.tolist()}
    header["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in config.items()}
    write_result(out, config, {"sets": rows, "mean_margin_vs": margins, "by_kind": by_kind(rows)}, header=header)
    text = tables(rows, args.part, margins, "stated balance" if args.balance_from == "stated" else "est. balance")
    out.with_suffix(".md").write_text(text)
    plot(rows, out.with_suffix(".png"), args.part)
    print(text)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
