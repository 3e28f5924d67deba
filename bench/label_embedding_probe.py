"""Probe: what the embedding source does for Assay's label model on a part's keyword sets (balance estimated).

Per real set: the goal metric of Assay's label model, of the same model without the embedding source's
confidences (hard votes), and without the embedding source at all, each at Assay's estimated balance with the
suite's decision rule, beside Dawid–Skene, Snorkel and majority vote at that balance. Seen parts only (a probe
for a diagnosis, not a claim):

    PYTHONSAFEPATH=1 .venv/bin/python bench/label_embedding_probe.py --part holdout23 \
        --out bench/results/label_embedding_probe_holdout23.json
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_suite import _balance, goal_metric, suite  # noqa: E402
from labelbench.methods import run_method  # noqa: E402
from provenance import provenance, write_result  # noqa: E402

from assay.labeling.metrics import prevalence_labels  # noqa: E402
from assay.labeling.votes import vote_matrix  # noqa: E402

EMBEDDING = "embedding"  # the source's column in a question's votes
VARIANTS = {"assay": lambda names: [], "assay_hard_embedding": lambda names: [f"{EMBEDDING}__conf"],
            "assay_without_embedding": lambda names: [n for n in names if n.startswith(EMBEDDING)]}
BASELINES = ("dawid_skene", "snorkel", "majority")


def probe(part: str, cache: Path) -> list[dict]:
    """One row per real set of `part`: the goal metric of every variant and baseline at Assay's balance."""
    rows = []
    for bench in suite(part, ["real"], cache):
        matrix = vote_matrix(bench.votes)
        balance = _balance(matrix, "assay")
        _, metric = goal_metric(bench.truth)
        row = {"set": bench.name, "true_rate": round(float(bench.truth.mean()), 4), "balance": round(balance, 4)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, dropped in VARIANTS.items():
                votes = bench.votes.drop_columns([c for c in dropped(bench.votes.column_names)
                                                  if c in bench.votes.column_names])
                p = run_method("assay", vote_matrix(votes), balance, told=name != "assay")
                row[name] = round(float(metric(bench.truth, prevalence_labels(p, balance)[0])), 4)
            for name in BASELINES:
                p = run_method(name, matrix, balance)
                row[name] = None if p is None else round(float(metric(bench.truth, prevalence_labels(p, balance)[0])), 4)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", required=True)
    parser.add_argument("--cache", type=Path, default=Path("runs/labelbench"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    header = provenance(vars(args))
    rows = probe(args.part, args.cache)
    means = {k: round(float(np.mean([r[k] for r in rows if r[k] is not None])), 4) for k in (*VARIANTS, *BASELINES)}
    print(" ".join(f"{k} {v:.3f}" for k, v in means.items()))
    print(f"results: {write_result(args.out, vars(args), {'sets': rows, 'means': means}, header)}")


if __name__ == "__main__":
    main()
