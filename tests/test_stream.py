"""Unit tests of the streaming consumer's parts that need no broker: message checks, crash recovery of
segment files, the write fence. The end-to-end behaviour against a real broker is in test_stream_kafka.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from assay.engine.stream_files import Ownership, recover_partition, segment_path, segments
from assay.engine.stream_messages import Record, parse_message, reason_kind


@pytest.mark.parametrize("value, reason", [
    (None, "empty message"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object (got list)"),
    (b'{"text": "hi"}', "missing or empty id"),
    (b'{"id": "  ", "text": "hi"}', "missing or empty id"),
    (b'{"id": [1], "text": "hi"}', "id is not a string (list)"),
    (b'{"id": true, "text": "hi"}', "id is not a string (bool)"),
    (b'{"id": "a", "text": null}', "text is null"),
    (b'{"id": "a"}', "text is null"),
    (b'{"id": "a", "text": 12}', "text is not a string (int)"),
    (b'{"id": "a", "text": "' + b"x" * 50 + b'"}', "text is 50 characters, over the limit of 10"),
])
def test_bad_messages_get_a_reason(value, reason):
    result = parse_message(value, max_text_chars=10)
    assert isinstance(result, str) and result.startswith(reason), result


def test_good_message_keeps_other_fields_as_metadata():
    record = parse_message(json.dumps({"id": 7, "text": "héllo", "lang": "fr", "n": [1, 2]}).encode())
    assert record == Record("7", "héllo", json.dumps({"lang": "fr", "n": [1, 2]}, ensure_ascii=False))
    assert parse_message(b'{"id": "x", "text": ""}') == Record("x", "", None)  # empty text is a valid record


def test_reason_kinds_are_a_small_fixed_set():
    kinds = {reason_kind(parse_message(v, 10)) for v in
             (None, b"\xff", b"{", b"1", b'{"text":"a"}', b'{"id":1,"text":2}', b'{"id":1,"text":"' + b"x" * 20 + b'"}')}
    assert kinds == {"empty", "not_utf8", "not_json", "not_object", "id", "text", "too_large"}


def _touch(root: Path, start: int, end: int, partition: int = 0) -> Path:
    path = segment_path(root, "t", partition, start, end)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_recovery_resumes_after_files_written_but_not_committed(tmp_path):
    out, dead = tmp_path / "out", tmp_path / "dead"
    for start, end in [(0, 100), (100, 250), (250, 300)]:
        _touch(out, start, end)
    _touch(dead, 100, 250)
    position, removed = recover_partition(out, dead, "t", 0, committed=100)
    assert position == 300 and removed == []
    assert [(s, e) for s, e, _ in segments(out.joinpath("t", "p0"))] == [(0, 100), (100, 250), (250, 300)]


def test_recovery_deletes_stale_files_past_the_chain(tmp_path):
    out, dead = tmp_path / "out", tmp_path / "dead"
    _touch(out, 0, 100)
    _touch(out, 100, 200)
    orphan = _touch(out, 350, 400)  # after a gap: cannot be part of a complete history
    dead_done, dead_stale = _touch(dead, 50, 100), _touch(dead, 200, 260)  # the batch [200, 260) died mid-write
    temp = out / "t" / "p0" / ".00000000000000000200-00000000000000000260.parquet.abc.tmp"
    temp.write_bytes(b"half")
    other_partition = _touch(out, 200, 300, partition=1)
    position, removed = recover_partition(out, dead, "t", 0, committed=100)
    assert position == 200
    assert set(removed) == {orphan, dead_stale, temp}
    assert dead_done.exists() and other_partition.exists() and not orphan.exists()


def test_recovery_without_files_starts_at_the_commit(tmp_path):
    assert recover_partition(tmp_path, None, "t", 3, committed=42) == (42, [])


def test_ownership_fences_revoked_and_reassigned_partitions():
    own = Ownership()
    first = own.grant("p0")
    writes = []
    assert own.write_if_owned("p0", first, lambda: writes.append(1))
    own.revoke(["p0"])
    assert not own.write_if_owned("p0", first, lambda: writes.append(2))
    second = own.grant("p0")  # re-assigned: batches from the first assignment stay fenced off
    assert not own.write_if_owned("p0", first, lambda: writes.append(3))
    assert own.write_if_owned("p0", second, lambda: writes.append(4))
    assert writes == [1, 4] and own.owned() == {"p0": second}


def test_revoke_waits_for_the_write_in_progress():
    own = Ownership()
    epoch = own.grant("p0")
    started, events = threading.Event(), []

    def slow_write() -> None:
        started.set()
        time.sleep(0.2)
        events.append("written")

    writer = threading.Thread(target=own.write_if_owned, args=("p0", epoch, slow_write))
    writer.start()
    started.wait(5)
    own.revoke(["p0"])
    events.append("revoked")
    writer.join()
    assert events == ["written", "revoked"]


def test_dead_letter_schema_round_trips(tmp_path):
    from assay.engine.stream_messages import DEAD_LETTER_SCHEMA
    from assay.schemas.output import write_parquet_atomic

    row = {"topic": "t", "partition": 1, "offset": 5, "timestamp_ms": 1, "key": b"k", "raw": b"\xff", "reason": "x"}
    path = write_parquet_atomic(pa.Table.from_pylist([row], schema=DEAD_LETTER_SCHEMA), tmp_path / "d.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(path).to_pylist() == [row]


def test_cli_errors_are_one_clear_line(tmp_path):
    from typer.testing import CliRunner

    from assay.flows.cli import app

    runner = CliRunner()
    empty = tmp_path / "registry"
    empty.mkdir()
    result = runner.invoke(app, ["consume", "--registry", str(empty), "--bootstrap", "127.0.0.1:1", "--topic", "t",
                                 "--group", "g", "--output", str(tmp_path / "out")])
    assert result.exit_code == 1 and "has a current adapter" in result.output
    result = runner.invoke(app, ["produce", str(tmp_path / "missing.parquet"), "--bootstrap", "127.0.0.1:1",
                                 "--topic", "t"])
    assert result.exit_code == 1 and "no such file or folder" in result.output
