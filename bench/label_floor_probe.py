"""Probe, not adopted: the suite's shared decision rule with a Bayes floor.

`prevalence_labels` labels the top `balance` share of records by P(yes), so with a stated rate rounded down
it labels no on records a calibrated method finds likelier yes than not (kind (d) in docs/QUALITY.md). The
floor also labels the rarer class wherever P(rarer class) > 0.5: the cut moves to 0.5 when it lies beyond
it. Both rules put F1's and accuracy's optimal cut on calibrated P at or before 0.5 (F1's optimum is F1*/2),
so the floor loses nothing for a calibrated method. Every method gets it, from the same P(yes) and balance
as in the suite. Every part of the suite, both modes (every part seen before, so a probe, not a claim):

    PYTHONSAFEPATH=1 .venv/bin/python bench/label_floor_probe.py --out bench/results/label_floor_probe.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_suite import HOLDOUTS, _balance, all_families, goal_metric, stated_rate, suite  # noqa: E402
from labelbench.methods import BASELINES, run_method  # noqa: E402
from labelbench.report import summary  # noqa: E402
from provenance import provenance, write_result  # noqa: E402

from assay.labeling.metrics import prevalence_labels  # noqa: E402
from assay.labeling.votes import vote_matrix  # noqa: E402

PARTS = ("tune", "untouched", *sorted(HOLDOUTS, key=lambda p: int(p.removeprefix("holdout"))))
MODES = {"estimated": "assay", "stated": "stated"}


def with_floor(scores: np.ndarray, rate: float) -> np.ndarray:
    """`prevalence_labels`, and the rarer class (by `rate`) wherever P(rarer class) > 0.5."""
    labels, _ = prevalence_labels(scores, rate)
    return labels | (scores > 0.5) if rate <= 0.5 else labels & ~(scores < 0.5)


RULES = {"prevalence": lambda p, rate: prevalence_labels(p, rate)[0], "prevalence_with_floor": with_floor}


def run_summary(rows: list[dict], rule: str) -> dict:
    """One run (part x mode) under one rule: the suite's goal checks (`labelbench.report.summary`) on it."""
    checks = summary([{"set": r["set"], "methods": {m: None if g is None else {"goal": g} for m, g in r[rule].items()}}
                      for r in rows])
    best = max((m for m in BASELINES if m in checks["means"]), key=checks["means"].get)
    return {"best_baseline": best, "margin": round(checks["means"]["assay"] - checks["best_baseline_mean"], 4),
            "below_majority": checks["fails_mv"], "below_best": checks["fails_best"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/labelbench"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/label_floor_probe.json"))
    args = parser.parse_args()
    config = {k: str(v) for k, v in vars(args).items()} | {"rules": list(RULES), "parts": list(PARTS)}
    header = provenance(config)
    from tqdm.auto import tqdm

    runs = {}
    for part in tqdm(PARTS, desc="parts", unit="part"):
        sets = suite(part, all_families(part), args.cache)
        for mode, balance_from in MODES.items():
            rows = []
            for bench in sets:
                matrix = vote_matrix(bench.votes)
                balance = stated_rate(bench.truth) if mode == "stated" else _balance(matrix, balance_from)
                _, metric = goal_metric(bench.truth)
                row = {"set": bench.name, "true_rate": round(float(bench.truth.mean()), 4), "balance": round(balance, 4)}
                scores = {m: run_method(m, matrix, balance, told=mode == "stated") for m in (*BASELINES, "assay")}
                for rule, decide in RULES.items():
                    row[rule] = {m: None if p is None else round(float(metric(bench.truth, decide(p, balance))), 4)
                                 for m, p in scores.items()}
                rows.append(row)
            runs[f"{part}/{mode}"] = {"sets": rows, **{rule: run_summary(rows, rule) for rule in RULES}}
    lines = ["| run | prevalence: margin, below majority, below best | with floor: margin, below majority, below best |",
             "|---|---|---|"]
    for name, run in runs.items():
        cells = [f"{run[r]['margin']:+.3f}, {len(run[r]['below_majority'])}, {len(run[r]['below_best'])}" for r in RULES]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    for rule in RULES:
        margins = [run[rule]["margin"] for run in runs.values()]
        clean = sum(not run[rule]["below_majority"] and not run[rule]["below_best"] for run in runs.values())
        misses = sum(len(run[rule]["below_majority"]) + len(run[rule]["below_best"]) for run in runs.values())
        lines.append(f"\n{rule}: mean margin {np.mean(margins):+.4f}; >= +0.02 on {sum(m >= 0.02 for m in margins)} "
                     f"of {len(margins)} runs; clean runs {clean}; set misses {misses}")
    write_result(args.out, config, runs, header=header)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
