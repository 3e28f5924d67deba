"""Speed and memory of the combiner: 1,000,000 records x 10 sources (target: under 30 s on 2 cores).

Synthetic votes with known truth (rare class, uneven sources, 3 of them with confidences), so the run also
reports F1 against the truth for the label model, majority vote and (on a subsample) Snorkel.

    flock /tmp/assay-bench.lock .venv/bin/python bench/bench_combine.py [--records 1000000] [--sources 10]

Prints wall and CPU seconds (the machine is shared: CPU seconds say what an idle one would take) and writes
bench/results/combine_1m.json via provenance.py. Every method's run includes the label model's fit (its
class balance is every method's).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from assay.labeling.metrics import binary_scores
from assay.labeling.model.combine import combine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance, write_result  # noqa: E402


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


def timed(votes: pa.Table, method: str) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (all threads) and the result of one `combine` call."""
    started, cpu = time.perf_counter(), time.process_time()
    result = combine(votes, method=method)
    return time.perf_counter() - started, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--snorkel-records", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "combine_1m.json")
    args = parser.parse_args()
    header = provenance(vars(args))
    votes, truth = synthetic_votes(args.records, args.sources)
    print(f"{args.records:,} records x {args.sources} sources, P(yes) {truth.mean():.3f}")
    results = []
    for method, rows in (("label_model", args.records), ("majority", args.records),
                         ("label_model", args.snorkel_records), ("snorkel", args.snorkel_records)):
        seconds, cpu, result = timed(votes.slice(0, rows), method)
        f1 = binary_scores(truth[:rows], result.probs.column("label").to_numpy() == 1)["f1"]
        results.append({"method": method, "records": rows, "wall_s": round(seconds, 2), "cpu_s": round(cpu, 2),
                        "f1": f1, "prior": result.prior})
        print(f"{method:12s} {rows:>9,} records {seconds:6.2f} s wall {cpu:6.2f} s CPU  F1 {f1:.3f}  "
              f"est. P(yes) {result.prior:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MiB")
    write_result(args.out, vars(args), {"runs": results, "peak_rss_mib": round(peak)}, header=header)


if __name__ == "__main__":
    main()
