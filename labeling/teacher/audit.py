"""The audit log (what left the machine, never the text) and the append-only JSONL files it is built on.

Every attempt to send a record gets its `send` line BEFORE the request goes out (retries, the logprobs
fallback, batch uploads and runs that halt or are killed included); the record's final `answered` /
`failed` / `refused` line follows when it is known. A line holds hashes and counts, never the text,
the prompt, the answer or the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path


def sha256(text: str) -> str:
    """Hex SHA-256 of a text (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JsonlLog:
    """An append-only JSONL file that several threads write to; each line is on disk when `append` returns
    (written with one `write` call and flushed, so a killed process loses no line it returned from)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)


class AuditLog(JsonlLog):
    """What left the machine for one teacher (endpoint, model, question, source, mode fixed at creation)."""

    def __init__(self, path: Path, *, endpoint: str, model: str, question_id: str, source: str, mode: str):
        super().__init__(path)
        self.context = {"endpoint": endpoint, "model": model, "mode": mode, "question_id": question_id,
                        "source": source}

    def _line(self, event: str, record_id: str, sent_text: str, **fields) -> None:
        self.append({"time": now_iso(), "event": event, **self.context, "record_id_sha256": sha256(record_id),
                     "text_sha256": sha256(sent_text), "chars": len(sent_text), **fields})

    def sending(self, record_id: str, sent_text: str, masked: dict[str, int], attempt: int, **fields) -> None:
        """Call BEFORE attempt number `attempt` of a record is sent (`fields`: e.g. the batch file's hash)."""
        self._line("send", record_id, sent_text, masked=masked, attempt=attempt, **fields)

    def outcome(self, record_id: str, sent_text: str, outcome: str, attempts: int, tokens_in: int = 0,
                tokens_out: int = 0) -> None:
        """The record's final outcome: answered, failed or refused, after `attempts` sends."""
        self._line(outcome, record_id, sent_text, outcome=outcome, attempts=attempts, tokens_in=tokens_in,
                   tokens_out=tokens_out)
