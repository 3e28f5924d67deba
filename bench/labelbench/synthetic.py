"""Synthetic votes with known truth, one generator per thing that breaks label models.

A source is one of: two-way (fires at `coverage`, right with `accuracy`), yes-only (fires at `tpr` on the
positives and `fpr` on the negatives, always voting yes), no-only (the mirror), or a copy of another
source (duplicated, or correlated: copies it with probability `rho`, else votes on its own). Each case draws
its parameters from ranges with the seed, so the `untouched` part (seed 1) is a fresh draw of every case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .data import BenchSet


@dataclass(frozen=True)
class Spec:
    """One source: kind in {two_way, yes_only, no_only, copy}; ranges are (low, high) drawn per seed."""

    kind: str
    a: tuple[float, float] = (0.5, 0.5)  # two_way: coverage; yes_only: tpr; no_only: tnr; copy: rho
    b: tuple[float, float] = (0.8, 0.8)  # two_way: accuracy; yes_only: fpr; no_only: fnr
    of: int = 0  # copy: index of the copied source
    conf: bool = False  # two_way: give confidences


def _two(m: int, cov: tuple, acc: tuple, conf: bool = False) -> list[Spec]:
    return [Spec("two_way", cov, acc, conf=conf) for _ in range(m)]


CASES: dict[str, tuple[int, float, list[Spec]]] = {  # name: (records, P(yes), sources)
    "oneway_spamlike": (4000, 0.5, [Spec("yes_only", (0.1, 0.3), (0.005, 0.03)) for _ in range(5)]
                        + [Spec("no_only", (0.1, 0.3), (0.005, 0.03)) for _ in range(5)]),
    "oneway_rare": (20000, 0.02, [Spec("yes_only", (0.2, 0.5), (0.002, 0.01)) for _ in range(6)]
                    + [Spec("no_only", (0.3, 0.5), (0.03, 0.08)) for _ in range(2)]),
    "yes_only_sources": (10000, 0.1, [Spec("yes_only", (0.2, 0.5), (0.01, 0.05)) for _ in range(4)]),
    "no_only_heavy": (10000, 0.3, [Spec("yes_only", (0.3, 0.5), (0.02, 0.05))]
                      + [Spec("no_only", (0.2, 0.5), (0.02, 0.08)) for _ in range(5)]),
    "twoway_balanced": (5000, 0.5, _two(5, (0.3, 0.9), (0.6, 0.85))),
    "twoway_rare": (20000, 0.01, _two(6, (0.5, 0.9), (0.85, 0.97))),
    "very_rare": (40000, 0.003, [Spec("yes_only", (0.3, 0.6), (0.0005, 0.002)) for _ in range(4)]
                  + _two(2, (0.6, 0.9), (0.97, 0.99))),
    "low_coverage": (20000, 0.2, _two(4, (0.05, 0.15), (0.7, 0.9))
                     + [Spec("yes_only", (0.05, 0.15), (0.005, 0.02)) for _ in range(2)]
                     + [Spec("no_only", (0.05, 0.15), (0.005, 0.02)) for _ in range(2)]),
    "high_coverage": (5000, 0.4, _two(5, (0.85, 0.95), (0.62, 0.8))),
    "one_source_two_way": (5000, 0.3, _two(1, (0.6, 0.8), (0.8, 0.9))),
    "one_source_yes_only": (10000, 0.1, [Spec("yes_only", (0.3, 0.5), (0.005, 0.02))]),
    "two_sources": (5000, 0.2, _two(2, (0.6, 0.8), (0.7, 0.85))),
    "worse_than_chance": (5000, 0.4, _two(4, (0.5, 0.8), (0.72, 0.85)) + _two(1, (0.5, 0.7), (0.25, 0.35))
                          + [Spec("yes_only", (0.05, 0.1), (0.15, 0.25))]),
    "duplicated": (5000, 0.3, _two(3, (0.5, 0.8), (0.75, 0.85)) + _two(1, (0.6, 0.8), (0.6, 0.65))
                   + [Spec("copy", (1.0, 1.0), of=3) for _ in range(3)]),
    "correlated": (10000, 0.15, _two(3, (0.4, 0.7), (0.75, 0.9)) + _two(1, (0.7, 0.9), (0.6, 0.65))
                   + [Spec("copy", (0.7, 0.9), of=3) for _ in range(3)]),
    "confidences": (5000, 0.25, _two(5, (0.4, 0.9), (0.65, 0.85), conf=True)),
    "mixed_half": (5000, 0.5, _two(3, (0.3, 0.9), (0.65, 0.85))
                   + [Spec("yes_only", (0.05, 0.3), (0.01, 0.05)) for _ in range(2)]
                   + [Spec("no_only", (0.05, 0.3), (0.01, 0.05)) for _ in range(2)]),
}


def _source(spec: Spec, truth: np.ndarray, done: list[np.ndarray], rng: np.random.Generator):
    n = len(truth)
    a, b = rng.uniform(*spec.a), rng.uniform(*spec.b)
    conf = None
    if spec.kind == "two_way":
        right = rng.random(n) < b
        vote = np.where(right, truth, ~truth).astype(np.int8)
        vote[rng.random(n) >= a] = -1
        if spec.conf:
            conf = np.where(right, rng.uniform(0.7, 1.0, n), rng.uniform(0.5, 0.8, n)).astype(np.float32)
            conf[vote < 0] = np.nan
    elif spec.kind in ("yes_only", "no_only"):
        target = truth if spec.kind == "yes_only" else ~truth
        fires = rng.random(n) < np.where(target, a, b)
        vote = np.where(fires, 1 if spec.kind == "yes_only" else 0, -1).astype(np.int8)
    else:  # copy of an earlier source, with probability a; else an independent draw of the same kind
        vote = done[spec.of].copy()
        own = rng.random(n) >= a
        vote[own] = rng.permutation(done[spec.of])[own]
    return vote, conf


def synthetic_set(name: str, seed: int) -> BenchSet:
    """One case drawn with `seed` (0: tune, 1: untouched, 2: the second hold-out)."""
    n, prior, specs = CASES[name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    truth = rng.random(n) < prior
    columns: dict[str, pa.Array] = {"id": pa.array([f"r{i}" for i in range(n)], pa.string())}
    done: list[np.ndarray] = []
    for j, spec in enumerate(specs):
        vote, conf = _source(spec, truth, done, rng)
        done.append(vote)
        columns[f"s{j}_{spec.kind}"] = pa.array(vote, pa.int8())
        if conf is not None:
            columns[f"s{j}_{spec.kind}__conf"] = pa.array(conf, pa.float32(), from_pandas=True)
    part = {0: "tune", 1: "untouched"}.get(seed, f"holdout{seed}")
    return BenchSet(f"syn/{name} [{part}]", "synthetic", pa.table(columns), truth,
                    f"{len(specs)} sources, P(yes) {prior}")
