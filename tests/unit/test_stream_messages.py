"""Kafka message values to records, without a broker: every reason a message becomes a dead letter."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.engine.stream.messages import DEAD_LETTER_SCHEMA, Record, parse_message, reason_kind
from assay.schemas.output import write_parquet_atomic


@pytest.mark.parametrize("value, reason", [
    (None, "empty message"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object (got list)"),
    (b'"just a string"', "not a JSON object (got str)"),
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
    record = parse_message(json.dumps({"id": 7, "text": "héllo", "lang": "fr", "n": [1, 2]}).encode(), 100)
    assert record == Record("7", "héllo", json.dumps({"lang": "fr", "n": [1, 2]}, ensure_ascii=False))
    assert parse_message(b'{"id": "x", "text": ""}', 100) == Record("x", "", None)  # empty text is a valid record


def test_text_at_the_limit_is_kept():
    assert parse_message(json.dumps({"id": "a", "text": "é" * 10}).encode(), max_text_chars=10) == Record(
        "a", "é" * 10, None)  # the limit counts characters, not UTF-8 bytes


def test_reason_kinds_are_a_small_fixed_set():
    values = (None, b"\xff", b"{", b"1", b'{"text":"a"}', b'{"id":1,"text":2}', b'{"id":1,"text":"' + b"x" * 20 + b'"}')
    kinds = {reason_kind(parse_message(v, 10)) for v in values}
    assert kinds == {"empty", "not_utf8", "not_json", "not_object", "id", "text", "too_large"}
    assert reason_kind("something new") == "other"


def test_dead_letter_schema_round_trips(tmp_path):
    row = {"topic": "t", "partition": 1, "offset": 5, "timestamp_ms": 1, "key": b"k", "raw": b"\xff", "reason": "x"}
    path = write_parquet_atomic(pa.Table.from_pylist([row], schema=DEAD_LETTER_SCHEMA), tmp_path / "d.parquet")
    assert pq.read_table(path).to_pylist() == [row]
