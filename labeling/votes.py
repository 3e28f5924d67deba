"""The votes contract shared by sources and the label model.

A source (`Voter`) returns one vote per record (`id`, `vote` -1/0/1, `conf` or null). A question's votes
table is `id` plus one int8 column per source (and `<source>__conf` where the source gives confidences);
`vote_matrix` checks such a table once and turns it into the arrays every consumer reads (`VoteMatrix`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

ABSTAIN, NO, YES = -1, 0, 1
VOTE_SCHEMA = pa.schema([("id", pa.string()), ("vote", pa.int8()), ("conf", pa.float32())])
CONF_SUFFIX = "__conf"
WEIGHTS_KEY = b"assay.weights"


class Voter(Protocol):
    """A weak labeller for one question (built from a spec's `Source`)."""

    name: str

    def vote(self, ids: list[str], texts: list[str]) -> pa.Table:
        """One row per record: `id`, `vote` (int8 -1 abstain, 0 no, 1 yes), `conf` (float32 or null)."""
        ...


def vote_table(ids: Sequence[str], votes: np.ndarray, conf: np.ndarray | None = None) -> pa.Table:
    """Build a table in VOTE_SCHEMA; `conf` NaN (or None) means the source has no confidence."""
    conf_array = pa.nulls(len(ids), pa.float32()) if conf is None else pa.array(
        np.asarray(conf, dtype=np.float32), pa.float32(), from_pandas=True)
    return pa.table([pa.array(ids, pa.string()), pa.array(np.asarray(votes, dtype=np.int8)), conf_array],
                    schema=VOTE_SCHEMA)


@dataclass(frozen=True)
class VoteMatrix:
    """The votes of one question as arrays: (n, m) int8 votes and float32 confidences (NaN: none)."""

    ids: pa.Array
    sources: list[str]
    votes: np.ndarray
    conf: np.ndarray
    weights: np.ndarray


def _source_column(votes: pa.Table, name: str) -> np.ndarray:
    column = votes.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type) or pa.types.is_null(column.type)):
        raise ValueError(f"votes column {name!r} has type {column.type}; votes must be integers -1 (abstain), "
                         "0 (no) or 1 (yes)")
    values = column.cast(pa.int8()).fill_null(ABSTAIN).to_numpy(zero_copy_only=False)
    bad = np.setdiff1d(np.unique(values), [ABSTAIN, NO, YES])
    if bad.size:
        raise ValueError(f"votes column {name!r} holds {bad.tolist()}; votes must be -1 (abstain), 0 (no) or 1 (yes)")
    return values


def _conf_column(votes: pa.Table, name: str) -> np.ndarray:
    values = votes.column(name).cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
    if np.any((values < 0.5) | (values > 1.0)):
        raise ValueError(f"confidence column {name!r} must lie in [0.5, 1] (the probability that the vote is right)")
    return values


def vote_matrix(votes: pa.Table, weights: dict[str, float] | None = None) -> VoteMatrix:
    """Check a votes table (`id`, int votes per source, optional `<source>__conf`) and turn it into arrays.

    Null votes count as abstains; source weights come from `weights`, else the table's schema metadata.
    """
    if "id" not in votes.column_names:
        raise ValueError(f"votes table has no `id` column (columns: {', '.join(votes.column_names)})")
    sources = [c for c in votes.column_names if c != "id" and not c.endswith(CONF_SUFFIX)]
    if not sources:
        raise ValueError("votes table has no source columns; expected `id` plus one int8 column per source")
    matrix = np.full((votes.num_rows, len(sources)), ABSTAIN, dtype=np.int8)
    conf = np.full((votes.num_rows, len(sources)), np.nan, dtype=np.float32)
    for j, name in enumerate(sources):
        matrix[:, j] = _source_column(votes, name)
        if f"{name}{CONF_SUFFIX}" in votes.column_names:
            conf[:, j] = _conf_column(votes, f"{name}{CONF_SUFFIX}")
    if weights is None:
        raw = (votes.schema.metadata or {}).get(WEIGHTS_KEY)
        weights = json.loads(raw) if raw else {}
    weight = np.array([float(weights.get(name, 1.0)) for name in sources], dtype=np.float32)
    return VoteMatrix(votes.column("id"), sources, matrix, conf, weight)
