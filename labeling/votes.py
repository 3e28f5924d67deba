"""What every source returns: one vote per record (`id`, `vote` -1/0/1, `conf` or null)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa

ABSTAIN, NO, YES = -1, 0, 1
VOTE_SCHEMA = pa.schema([("id", pa.string()), ("vote", pa.int8()), ("conf", pa.float32())])


class Source(Protocol):
    """A weak labeller for one question."""

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
