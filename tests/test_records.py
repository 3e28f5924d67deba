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

ROOT = Path(__file__).resolve().parent.parent
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
    path.write_bytes(b'id,text,source\n1,"fine, with a comma",web\n2,bad \xff byte,web\n3,too,many,columns\n4,"multi\nline",app\n')
    tables, reader = read_all(path)
    good = pa.concat_tables(tables)
    assert good.column("id").to_pylist() == ["1", "4"]
    assert good.column("text").to_pylist() == ["fine, with a comma", "multi\nline"]
    reasons = sorted(row["reason"] for row in reader.rejects.rows)
    assert reasons[0].startswith("malformed CSV row") and reasons[1].startswith("text is not UTF-8")


def test_folder_of_mixed_files_and_cross_file_duplicates(tmp_path: Path):
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["one", "two"]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "y", "text": "dup"}) + "\n" + json.dumps({"id": "z", "text": "three"}) + "\n")
    (tmp_path / "notes.txt").write_text("ignored: not a record file")
    assert [p.name for p in input_files(tmp_path)] == ["a.parquet", "b.jsonl"]
    tables, reader = read_all(tmp_path)
    assert [i for t in tables for i in t.column("id").to_pylist()] == ["x", "y", "z"]
    assert reader.rejects.rows[0]["reason"] == "duplicate id 'y'"


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


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path):
    from assay.schemas import write_parquet_atomic

    with pytest.raises(Exception):
        write_parquet_atomic("not a table", tmp_path / "x.parquet")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
