"""Sample the seed set: a seeded uniform sample of the input in one bounded-memory pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from assay.schemas import RecordReader


def sample_records(input_path: str | Path, sample: int | None, seed: int = 0) -> tuple[pa.Table, RecordReader]:
    """`sample` records drawn uniformly without replacement (all when None), in input order, and the reader.

    Each record gets a seeded random key; the `sample` smallest keys are kept across batches, so memory
    stays at one batch plus the sample however large the input is.
    """
    reader = RecordReader(input_path)
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    offset = 0
    for batch in reader:
        batch = batch.append_column("__pos", pa.array(np.arange(offset, offset + batch.num_rows)))
        batch = batch.append_column("__key", pa.array(rng.random(batch.num_rows)))
        offset += batch.num_rows
        kept = batch if kept is None else pa.concat_tables([kept, batch], promote_options="permissive")
        if sample is not None and kept.num_rows > sample:
            order = np.argsort(kept.column("__key").to_numpy(), kind="stable")[:sample]
            kept = kept.take(np.sort(order))
    if kept is None:
        raise ValueError(f"{input_path}: no usable records (see the rejected rows)")
    order = np.argsort(kept.column("__pos").to_numpy(), kind="stable")
    return kept.take(order).drop_columns(["__pos", "__key"]), reader
