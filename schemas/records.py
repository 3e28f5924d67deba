"""Input records: `id` and `text` (plus metadata columns), read lazily in bounded-memory batches.

Parquet, JSONL and CSV files, or folders of them, are read batch by batch. Rows that cannot be used
(missing or empty id, null or non-string text, undecodable bytes, a repeated id) are never dropped
silently: they go to a rejected-rows Parquet file with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .output import write_parquet_atomic

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
REJECTED_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
    ]
)


class RecordsError(ValueError):
    """The input cannot be read at all (missing file, unknown format, no id/text column)."""


def input_files(path: str | Path) -> list[Path]:
    """The record files at `path`: the file itself, or the supported files of a folder, sorted."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise RecordsError(f"{path}: unsupported format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise RecordsError(f"{path}: no .parquet, .jsonl or .csv files in this folder")
        return files
    raise RecordsError(f"{path}: no such file or folder")


@dataclass
class Rejects:
    """Collects rejected rows with their reason; `write` saves them as Parquet."""

    rows: list[dict] = field(default_factory=list)

    def add(self, source: Path | str, row: int, record_id: str | None, raw: bytes | None, reason: str) -> None:
        """Record one rejected row."""
        self.rows.append({"source": str(source), "row": row, "id": record_id, "raw": raw, "reason": reason})

    def __len__(self) -> int:
        return len(self.rows)

    def write(self, path: Path) -> Path | None:
        """Write the rejected rows to `path` (nothing is written when there are none)."""
        if not self.rows:
            return None
        write_parquet_atomic(pa.Table.from_pylist(self.rows, schema=REJECTED_SCHEMA), path)
        return path


def _raw_batches(path: Path, batch_rows: int, rejects: Rejects) -> Iterator[pa.RecordBatch]:
    kind = FORMATS[path.suffix.lower()]
    if kind == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    elif kind == "csv":
        yield from _csv_batches(path, batch_rows, rejects)
    else:
        yield from _jsonl_batches(path, batch_rows, rejects)


def _csv_batches(path: Path, batch_rows: int, rejects: Rejects) -> Iterator[pa.RecordBatch]:
    def invalid_row(row: pacsv.InvalidRow) -> str:
        rejects.add(path, row.number or -1, None, (row.text or "").encode(), f"malformed CSV row: {row.actual_columns} "
                    f"columns, expected {row.expected_columns}")
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row),
        convert_options=pacsv.ConvertOptions(column_types={"id": pa.string(), "text": pa.binary()}),
    )
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _jsonl_batches(path: Path, batch_rows: int, rejects: Rejects) -> Iterator[pa.RecordBatch]:
    rows: list[dict] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            raw = raw.rstrip(b"\r\n")
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                rejects.add(path, number, None, raw, f"not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            except json.JSONDecodeError as exc:
                rejects.add(path, number, None, raw, f"not JSON: {exc.msg}")
                continue
            if not isinstance(value, dict):
                rejects.add(path, number, None, raw, "not a JSON object")
                continue
            record_id, text, reason = check_record(value.get("id"), value.get("text"))
            if reason:
                rejects.add(path, number, record_id, raw, reason)
                continue
            value.update(id=record_id, text=text, __row=number)
            rows.append(value)
            if len(rows) >= batch_rows:
                yield _jsonl_table(rows)
                rows = []
    if rows:
        yield _jsonl_table(rows)


def _jsonl_table(rows: list[dict]) -> pa.RecordBatch:
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return pa.RecordBatch.from_pydict(arrays)


def check_record(raw_id: object, raw_text: object) -> tuple[str | None, str | None, str | None]:
    """(id, text, reason): the usable id and text of one record, or why it cannot be used.

    Ids may be strings or integers (kept as strings); text must be a UTF-8 string.
    """
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, type(None))):
        return None, None, f"id is not a string ({type(raw_id).__name__})"
    record_id = None if raw_id is None else str(raw_id)
    if record_id is None or not record_id.strip():
        return record_id, None, "missing or empty id"
    if raw_text is None:
        return record_id, None, "text is null"
    if isinstance(raw_text, bytes):
        try:
            raw_text = raw_text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return record_id, None, f"text is not UTF-8 ({exc.reason} at byte {exc.start})"
    if not isinstance(raw_text, str):
        return record_id, None, f"text is not a string ({type(raw_text).__name__})"
    return record_id, raw_text, None


@dataclass
class RecordReader:
    """Reads validated record batches (`id`, `text`, metadata) from files or folders.

    Keeps the set of ids seen so far to reject repeats across the whole input.
    """

    path: str | Path
    batch_rows: int = 10_000
    rejects: Rejects = field(default_factory=Rejects)
    seen_ids: set[str] = field(default_factory=set)

    def __iter__(self) -> Iterator[pa.Table]:
        for file in input_files(self.path):
            rows_before = 0
            for batch in _raw_batches(file, self.batch_rows, self.rejects):
                table = self._validate(file, batch, rows_before)
                rows_before += batch.num_rows
                if table.num_rows:
                    yield table

    def _validate(self, file: Path, batch: pa.RecordBatch, rows_before: int) -> pa.Table:
        missing = [name for name in ("id", "text") if name not in batch.schema.names]
        if missing:
            raise RecordsError(f"{file}: missing column(s) {', '.join(missing)}; records need `id` and `text` "
                               f"(found: {', '.join(n for n in batch.schema.names if n != '__row')})")
        rows = batch.column("__row").to_pylist() if "__row" in batch.schema.names else None
        ids = batch.column("id").to_pylist()
        texts = batch.column("text").to_pylist()
        keep, clean_ids, clean_texts = [], [], []
        for index, (raw_id, raw_text) in enumerate(zip(ids, texts)):
            record_id, text, reason = check_record(raw_id, raw_text)
            if reason is None and record_id in self.seen_ids:
                reason = f"duplicate id {record_id!r}"
            if reason:
                raw = raw_text if isinstance(raw_text, bytes) else json.dumps(
                    {"id": raw_id, "text": raw_text}, default=str).encode()
                self.rejects.add(file, rows[index] if rows else rows_before + index + 1, record_id, raw, reason)
                continue
            self.seen_ids.add(record_id)
            keep.append(index)
            clean_ids.append(record_id)
            clean_texts.append(text)
        metadata = [n for n in batch.schema.names if n not in ("id", "text", "__row")]
        kept = batch.select(metadata).take(pa.array(keep, pa.int64()))
        columns = {"id": pa.array(clean_ids, pa.string()), "text": pa.array(clean_texts, pa.string())}
        return pa.table({**columns, **{name: kept.column(name) for name in metadata}})

