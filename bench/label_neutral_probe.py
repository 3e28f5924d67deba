"""Probe, not adopted: a three-class label model (yes / no with signal / neutral, neutral counted as no).

The label suite's fourth hold-out showed texts no source votes on (neutral ones) sitting mid-ranking under
the two-class model. This probe tries the direct remedy: Dawid-Skene with a third, neutral class whose
records rarely draw a vote (pseudo-counts `NEUTRAL_COUNT` per source), started from the two-class fit
(silent records neutral, the rest of the "no" mass with signal). Each method gets its own balance (with
`stated`, the same stated rate) and the suite's decision rule. Every part of the suite, both modes:

    .venv/bin/python bench/label_neutral_probe.py --out bench/results/label_neutral_probe.json

Result (docs/QUALITY.md): the neutral class absorbs the yes class where nothing pins it down, so it is not
adopted; it stays as the baseline for the next attempt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_suite import goal_metric, stated_rate, suite  # noqa: E402
from labelbench.methods import run_method  # noqa: E402
from labelbench.report import kind  # noqa: E402
from provenance import write_result  # noqa: E402

from assay.labeling.metrics import prevalence_labels  # noqa: E402
from assay.labeling.model.combine import combine, fit_label_model  # noqa: E402
from assay.labeling.model.label_model import (  # noqa: E402
    OUT_ABSTAIN,
    OUT_NO,
    OUT_YES,
    PRIOR_COUNT,
    dependency_weights,
    outcome_counts,
)
from assay.labeling.votes import ABSTAIN, VoteMatrix, vote_matrix  # noqa: E402

NEUTRAL_COUNT = np.array([8.0, 1.0, 1.0])  # (abstain, no, yes) pseudo-counts of the neutral class per source
PARTS = ("tune", "untouched", "holdout2", "holdout3", "holdout4", "holdout5")


def three_class(matrix: VoteMatrix, balance: float | None = None, iters: int = 200) -> tuple[np.ndarray, float]:
    """P(yes) per record and the yes share, from three-class EM started at the two-class fit (which it returns
    unchanged where that fit fell back or could not be identified)."""
    two = fit_label_model(matrix, balance)
    if two.fallback or (two.warnings and balance is None):
        return two.p_yes, two.prior
    counts = outcome_counts(matrix.votes, matrix.conf)
    n, m = len(counts), counts.shape[1] // 3
    weights = dependency_weights(counts)
    silent = (matrix.votes == ABSTAIN).all(axis=1)
    post = np.stack([(1 - two.p_yes) * ~silent, two.p_yes, (1 - two.p_yes) * silent], axis=1) + 1e-6
    post /= post.sum(axis=1, keepdims=True)
    pseudo = np.stack([PRIOR_COUNT[0], PRIOR_COUNT[1], NEUTRAL_COUNT])  # classes: no with signal, yes, neutral
    share = post.mean(axis=0)  # the yes share returned if no iteration runs
    for _ in range(iters):
        share = (post.sum(axis=0) + 1.0) / (n + 3.0)
        if balance is not None:
            rest = share[[0, 2]] / share[[0, 2]].sum()
            share = np.array([(1 - balance) * rest[0], balance, (1 - balance) * rest[1]])
        totals = (counts.T @ post).reshape(m, 3, 3).transpose(0, 2, 1) + pseudo[None]  # (source, class, outcome)
        theta = totals / totals.sum(axis=2, keepdims=True)
        for outcome, right in ((OUT_YES, 1), (OUT_NO, 0)):  # a vote no likelier under a class it does not name
            for other in (c for c in range(3) if c != right):
                wrong = theta[:, right, outcome] < theta[:, other, outcome]
                pooled = totals[wrong][:, [right, other], outcome].sum(1) / totals[wrong][:, [right, other]].sum((1, 2))
                theta[wrong, right, outcome] = theta[wrong, other, outcome] = pooled
        theta[:, :, OUT_ABSTAIN] = 1 - theta[:, :, OUT_NO] - theta[:, :, OUT_YES]
        log_theta = (np.log(np.clip(theta, 1e-9, 1)) * weights[:, None, None]).transpose(0, 2, 1).reshape(-1, 3)
        scores = counts @ log_theta + np.log(share)[None]
        updated = np.exp(scores - scores.max(axis=1, keepdims=True))
        updated /= updated.sum(axis=1, keepdims=True)
        change, post = float(np.abs(updated - post).max()), updated
        if change < 1e-6:
            break
    return post[:, 1], float(share[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/labelbench"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "label_neutral_probe.json")
    args = parser.parse_args()
    rows = []
    for part in PARTS:
        families = ["synthetic", "jigsaw", "real"] if part in ("tune", "untouched") else ["synthetic", "real"]
        for bench in suite(part, families, args.cache):
            matrix = vote_matrix(bench.votes)
            _, metric = goal_metric(bench.truth)
            for mode in ("estimated", "stated"):
                given = stated_rate(bench.truth) if mode == "stated" else None
                two = combine(matrix, method="label_model", class_balance=given)
                p_two, balance_two = two.probs.column("p_yes").to_numpy().astype(float), two.prior
                p_three, balance_three = three_class(matrix, given)
                scores = {"assay": metric(bench.truth, prevalence_labels(p_two, balance_two)[0]),
                          "three_class": metric(bench.truth, prevalence_labels(p_three, given or balance_three)[0]),
                          "majority": metric(bench.truth, prevalence_labels(
                              run_method("majority", matrix, balance_two), balance_two)[0])}
                rows.append({"part": part, "mode": mode, "set": bench.name, "kind": kind({"family": bench.family}),
                             "true_rate": round(float(bench.truth.mean()), 4), "balance_assay": round(balance_two, 4),
                             "balance_three_class": round(balance_three, 4),
                             **{k: round(float(v), 4) for k, v in scores.items()}})
    means = {}
    for part in PARTS:
        for mode in ("estimated", "stated"):
            for k in ("synthetic", "jigsaw", "keyword lists"):
                picked = [r for r in rows if (r["part"], r["mode"], r["kind"]) == (part, mode, k)]
                if picked:
                    means[f"{part}/{mode}/{k}"] = {m: round(float(np.mean([r[m] for r in picked])), 4)
                                                   for m in ("assay", "three_class", "majority")} | {"sets": len(picked)}
                    print(f"{part:9s} {mode:9s} {k:13s} " + ", ".join(f"{m} {v}" for m, v in means[f'{part}/{mode}/{k}'].items()))
    write_result(args.out, {**vars(args), "neutral_count": NEUTRAL_COUNT.tolist()}, {"means": means, "sets": rows})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
