"""One benchmark set (votes + truth) and its fixed split into a `tune` part and an `untouched` part."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SPLIT_SALT = "labelbench-2026-12-03"  # fixed: changing it re-draws every split
PARTS = ("tune", "untouched")


@dataclass(frozen=True)
class BenchSet:
    """The votes of one question (`id` + one int8 column per source) with the true labels."""

    name: str
    family: str  # synthetic, jigsaw, polarity, hedging, spam
    votes: pa.Table
    truth: np.ndarray  # bool, aligned with votes rows
    note: str = ""


def part_of(set_name: str, ids: list[str]) -> np.ndarray:
    """0 (tune) or 1 (untouched) per id: the parity of a salted SHA-256, so the split never moves."""
    return np.array([hashlib.sha256(f"{SPLIT_SALT}/{set_name}/{i}".encode()).digest()[0] & 1 for i in ids],
                    dtype=np.int8)


def split(bench: BenchSet, part: str) -> BenchSet:
    """The `part` ("tune" or "untouched") of a real set; each record falls in one part by its id's hash."""
    which = part_of(bench.family, bench.votes.column("id").to_pylist()) == PARTS.index(part)
    rows = np.flatnonzero(which)
    return BenchSet(f"{bench.name} [{part}]", bench.family, bench.votes.take(rows), bench.truth[rows], bench.note)
