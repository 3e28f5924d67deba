"""Kafka messages to records: decode one message value, or say why it is a dead letter.

A message is a JSON object ``{"id": ..., "text": ..., <other fields>}`` in UTF-8. The id/text checks
are the record reader's (``assay.schemas.records.check_record``); the other fields are kept, as one
JSON string, in the output's ``metadata`` column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from assay.schemas.records import check_record

DEAD_LETTER_SCHEMA = pa.schema([
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp_ms", pa.int64()),
    pa.field("key", pa.binary()),
    pa.field("raw", pa.binary()),
    pa.field("reason", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class Record:
    """A usable message: its id, text and the other fields as a JSON string (None when there are none)."""

    id: str
    text: str
    metadata: str | None


def parse_message(value: bytes | None, max_text_chars: int) -> Record | str:
    """The record in a message value, or the reason (a string) why it cannot be scored (a text over
    ``max_text_chars`` characters is one)."""
    if value is None:
        return "empty message (null value, e.g. a tombstone)"
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    try:
        message = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at character {exc.pos}"
    if not isinstance(message, dict):
        return f"not a JSON object (got {type(message).__name__}); send {{\"id\": ..., \"text\": ...}}"
    record_id, text, reason = check_record(message.get("id"), message.get("text"))
    if reason:
        return reason
    if len(text) > max_text_chars:
        return f"text is {len(text):,} characters, over the limit of {max_text_chars:,} (--max-text-chars)"
    extra = {key: val for key, val in message.items() if key not in ("id", "text")}
    return Record(record_id, text, json.dumps(extra, ensure_ascii=False) if extra else None)


def reason_kind(reason: str) -> str:
    """A short, fixed label for a dead-letter reason (for metrics: bounded label values)."""
    for prefix, kind in (("not UTF-8", "not_utf8"), ("not JSON", "not_json"), ("not a JSON object", "not_object"),
                         ("empty message", "empty"), ("text is ", "text"), ("id is", "id"),
                         ("missing or empty id", "id")):
        if reason.startswith(prefix):
            return "too_large" if "over the limit" in reason else kind
    return "other"
