"""The output of scoring: one Arrow schema, defined once, and an atomic Parquet writer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_sink

METADATA_KEY = b"assay"


@dataclass(frozen=True)
class RunMetadata:
    """File-level metadata of an output file: which model and adapters answered, in which run."""

    run_id: str
    base_model: str
    adapters: Mapping[str, int] = field(default_factory=dict)  # question id -> adapter version

    def to_bytes(self) -> bytes:
        """JSON, as stored under the `assay` key of the Parquet schema metadata."""
        return json.dumps({**asdict(self), "adapters": dict(self.adapters)}, sort_keys=True).encode()

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> RunMetadata:
        """Read it back from a file's schema (`pq.read_schema(path)`)."""
        return cls(**json.loads((schema.metadata or {})[METADATA_KEY]))


def output_schema(question_ids: Sequence[str], metadata: RunMetadata | None = None) -> pa.Schema:
    """`id`, then per question `<id>` (bool, the answer) and `<id>_p` (float32, P(yes))."""
    fields = [pa.field("id", pa.string(), nullable=False)]
    for question_id in question_ids:
        fields.append(pa.field(question_id, pa.bool_(), nullable=False))
        fields.append(pa.field(f"{question_id}_p", pa.float32(), nullable=False))
    schema = pa.schema(fields)
    return schema.with_metadata({METADATA_KEY: metadata.to_bytes()}) if metadata else schema


def write_parquet_atomic(table: pa.Table, path: str | Path, compression: str = "zstd") -> Path:
    """Write `table` to `path` via a temp file in the same folder, fsync and rename: readers never see half a file."""
    with atomic_sink(path) as sink:
        pq.write_table(table, sink, compression=compression)
    return Path(path)
