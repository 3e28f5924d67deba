"""Speed and memory of the combiner: 1,000,000 records x 10 sources (target: under 30 s on 2 cores).

Synthetic votes with known truth (rare class, uneven sources, 3 of them with confidences), so the run also
reports F1 against the truth for the label model, majority vote and (on a subsample) Snorkel.

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_combine.py [--records 1000000] [--sources 10]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pyarrow as pa

from assay.labeling.model.combine import combine
from assay.labeling.metrics import binary_scores


def synthetic_votes(n: int, m: int, prior: float = 0.1, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """Votes of `m` sources with coverage 0.3-0.95 and accuracy 0.6-0.95; the first 3 carry confidences."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prior
    columns: dict[str, pa.Array] = {"id": pa.array(np.char.add("r", np.arange(n).astype(str)))}
    for j in range(m):
        coverage, accuracy = rng.uniform(0.3, 0.95), rng.uniform(0.6, 0.95)
        right = rng.random(n) < accuracy
        vote = np.where(right, truth, ~truth).astype(np.int8)
        vote[rng.random(n) >= coverage] = -1
        columns[f"s{j}"] = pa.array(vote)
        if j < 3:
            conf = np.where(right, rng.uniform(0.7, 1.0, n), rng.uniform(0.5, 0.8, n)).astype(np.float32)
            columns[f"s{j}__conf"] = pa.array(conf)
    return pa.table(columns), truth


def timed(votes: pa.Table, method: str) -> tuple[float, object]:
    started = time.perf_counter()
    result = combine(votes, method=method)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--snorkel-records", type=int, default=20_000)
    args = parser.parse_args()
    votes, truth = synthetic_votes(args.records, args.sources)
    print(f"{args.records:,} records x {args.sources} sources, P(yes) {truth.mean():.3f}")
    for method in ("label_model", "majority"):
        seconds, result = timed(votes, method)
        f1 = binary_scores(truth, result.probs.column("label").to_numpy() == 1)["f1"]
        extra = f", est. P(yes) {result.prior:.3f}" if method == "label_model" else ""
        print(f"{method:12s} {seconds:6.2f} s  {args.records / seconds:,.0f} records/s  F1 {f1:.3f}{extra}")
    small, small_truth = votes.slice(0, args.snorkel_records), truth[: args.snorkel_records]
    for method in ("label_model", "snorkel"):
        seconds, result = timed(small, method)
        f1 = binary_scores(small_truth, result.probs.column("label").to_numpy() == 1)["f1"]
        print(f"{method:12s} {seconds:6.2f} s on {args.snorkel_records:,}  F1 {f1:.3f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
