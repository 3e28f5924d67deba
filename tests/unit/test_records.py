"""Record input: Parquet, JSONL and CSV, files or folders, in bounded batches, with rejected rows kept."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.schemas import RecordReader, RecordsError, input_files
from assay.schemas.records import REJECTED_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "examples" / "data" / "jigsaw" / "dev.parquet"


def read_all(path, batch_rows=1000):
    reader = RecordReader(path, batch_rows=batch_rows)
    tables = list(reader)
    return tables, reader


def test_bundled_parquet_reads_in_bounded_batches():
    tables, reader = read_all(DEV, batch_rows=100)
    assert max(t.num_rows for t in tables) <= 100
    assert sum(t.num_rows for t in tables) == pq.read_metadata(DEV).num_rows
    assert tables[0].schema.names[:2] == ["id", "text"] and "toxic" in tables[0].schema.names
    assert len(reader.rejects) == 0


def test_jsonl_rejects_bad_lines_with_reasons(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "hello", "lang": "en"}).encode(),
        b'{"id": "b", "text": "caf\xe9"}',  # latin-1 byte: not UTF-8
        b"not json at all",
        json.dumps({"id": "c", "text": None}).encode(),
        json.dumps({"id": "", "text": "no id"}).encode(),
        json.dumps({"id": "a", "text": "again"}).encode(),
        json.dumps({"id": 7, "text": "numeric id is kept as a string"}).encode(),
        json.dumps({"id": "d", "text": 42}).encode(),
        json.dumps(["a", "list"]).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    tables, reader = read_all(path)
    good = pa.concat_tables(tables)
    assert good.column("id").to_pylist() == ["a", "7"]
    assert good.column("lang").to_pylist() == ["en", None]
    reasons = {row["row"]: row["reason"] for row in reader.rejects.rows}
    assert reasons[2].startswith("not UTF-8")
    assert reasons[3].startswith("not JSON")
    assert reasons[4] == "text is null"
    assert reasons[5] == "missing or empty id"
    assert reasons[6] == "duplicate id 'a'"
    assert reasons[8] == "text is not a string (int)"
    assert reasons[9] == "not a JSON object"
    assert len(reader.rejects) == 7  # nothing dropped silently: 2 kept + 7 rejected = 9 lines
    written = reader.rejects.write(tmp_path / "rejected.parquet")
    table = pq.read_table(written)
    assert table.schema.equals(REJECTED_SCHEMA) and table.num_rows == 7
    assert table.column("raw").to_pylist()[0] == lines[1]


def test_csv_with_bad_bytes_and_malformed_rows(tmp_path: Path):
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text,source\n1,"fine, with a comma",web\n2,bad \xff byte,web\n'
                     b'3,too,many,columns\n4,"multi\nline",app\n')
    tables, reader = read_all(path)
    good = pa.concat_tables(tables)
    assert good.column("id").to_pylist() == ["1", "4"]
    assert good.column("text").to_pylist() == ["fine, with a comma", "multi\nline"]
    rejected = {row["raw"]: row["reason"] for row in reader.rejects.rows}
    assert len(reader.rejects) == 2, rejected  # 2 kept + 2 rejected = 4 data rows
    assert rejected[b"bad \xff byte"].startswith("text is not UTF-8"), rejected
    assert rejected[b"3,too,many,columns"] == "malformed CSV row: 4 columns, expected 3", rejected


def test_folder_of_mixed_files_and_cross_file_duplicates(tmp_path: Path):
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["one", "two"]}), tmp_path / "a.parquet")
    rows = [{"id": "y", "text": "dup"}, {"id": "z", "text": "three"}]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "notes.txt").write_text("ignored: not a record file")
    assert [p.name for p in input_files(tmp_path)] == ["a.parquet", "b.jsonl"]
    tables, reader = read_all(tmp_path)
    assert [i for t in tables for i in t.column("id").to_pylist()] == ["x", "y", "z"]
    assert [row["reason"] for row in reader.rejects.rows] == ["duplicate id 'y'"]


def test_unusable_inputs_raise_clear_errors(tmp_path: Path):
    with pytest.raises(RecordsError, match="no such file"):
        input_files(tmp_path / "missing.parquet")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(RecordsError, match="unsupported format"):
        input_files(tmp_path / "x.xlsx")
    pq.write_table(pa.table({"id": ["1"], "body": ["t"]}), tmp_path / "nocol.parquet")
    with pytest.raises(RecordsError, match=r"missing column\(s\) text"):
        list(RecordReader(tmp_path / "nocol.parquet"))


def test_output_is_readable_by_duckdb_and_polars(tmp_path: Path):
    from assay.schemas import RunMetadata, output_schema, write_parquet_atomic

    meta = RunMetadata(run_id="r1", base_model="minilm", adapters={"toxic": 2})
    schema = output_schema(["toxic"], meta)
    table = pa.table({"id": ["a", "b"], "toxic": [True, False], "toxic_p": pa.array([0.9, 0.1], pa.float32())},
                     schema=schema)
    path = write_parquet_atomic(table, tmp_path / "out" / "part-0.parquet")
    assert [p.name for p in path.parent.iterdir()] == ["part-0.parquet"]  # no temp file left behind
    assert RunMetadata.from_schema(pq.read_schema(path)) == meta
    assert duckdb.sql(f"select count(*) from '{path}' where toxic").fetchone()[0] == 1
    assert pl.read_parquet(path)["toxic_p"].dtype == pl.Float32


class DiskFull(OSError):
    """The injected fault: a specific error, so a test cannot pass on an unrelated one."""


def good_file(folder: Path) -> tuple[Path, bytes]:
    """A complete output file already at the target, as a previous run left it."""
    from assay.schemas import write_parquet_atomic

    path = write_parquet_atomic(pa.table({"id": ["old"], "toxic": [True]}), folder / "part-0.parquet")
    return path, path.read_bytes()


def assert_untouched(path: Path, before: bytes) -> None:
    assert [p.name for p in path.parent.iterdir()] == [path.name], "a temp file was left behind"
    assert path.read_bytes() == before, "the previous file was changed by a failed write"
    assert pq.read_table(path).column("id").to_pylist() == ["old"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails_mid_file(tmp_path: Path, monkeypatch):
    """The real Parquet writer writes a row group into the sink, then the disk fails: the target keeps its old bytes."""
    from assay.schemas import output, write_parquet_atomic

    target, before = good_file(tmp_path)
    written = []

    def write_half_then_fail(table, sink, **kwargs):
        writer = pq.ParquetWriter(sink, table.schema, **kwargs)
        writer.write_table(table.slice(0, 1))  # a real row group reaches the temp file ...
        sink.flush()
        written.append(sink.tell())
        writer.is_open = False  # abandoned, like a crashed process: no footer is written later by __del__
        raise DiskFull(28, "No space left on device")  # ... and the rest never does

    monkeypatch.setattr(output.pq, "write_table", write_half_then_fail)
    new = pa.table({"id": ["a", "b"], "toxic": [False, True]})
    with pytest.raises(DiskFull, match="No space left"):
        write_parquet_atomic(new, target)
    assert written and written[0] > 4, "the fault must come after bytes were written, or this test proves nothing"
    assert_untouched(target, before)


def test_atomic_write_keeps_the_old_file_when_fsync_fails(tmp_path: Path, monkeypatch):
    """The whole new file is written but never made durable: it must not replace the old one."""
    from assay.schemas import files, write_parquet_atomic

    target, before = good_file(tmp_path)

    def fsync_fails(fd):
        raise DiskFull(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", fsync_fails)
    with pytest.raises(DiskFull, match="Input/output"):
        write_parquet_atomic(pa.table({"id": ["new"], "toxic": [False]}), target)
    monkeypatch.undo()
    assert_untouched(target, before)


def test_atomic_write_cleans_up_after_an_interrupt(tmp_path: Path, monkeypatch):
    """Ctrl-C (a BaseException, not an Exception) in the middle of a write leaves no temp file either."""
    from assay.schemas import output, write_parquet_atomic

    target, before = good_file(tmp_path)

    def interrupted(table, sink, **kwargs):
        sink.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(output.pq, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_parquet_atomic(pa.table({"id": ["new"], "toxic": [False]}), target)
    assert_untouched(target, before)


def test_atomic_write_replaces_the_old_file_when_it_succeeds(tmp_path: Path):
    from assay.schemas import write_parquet_atomic

    target, before = good_file(tmp_path)
    write_parquet_atomic(pa.table({"id": ["new", "newer"], "toxic": [False, True]}), target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() != before
    assert pq.read_table(target).column("id").to_pylist() == ["new", "newer"]
