"""Persistent response cache of the LLM teachers: SQLite (WAL), safe for concurrent threads and processes.

Each answer is committed as it arrives, so a re-run, or a run resumed after a crash, pays for nothing
twice. Keys are hashes (endpoint, model, prompt template, text); values never hold the text or a key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 500  # SQLite's host-parameter limit is at least 999


def connect(path: Path) -> sqlite3.Connection:
    """A WAL-mode connection usable from several threads (callers serialise with their own lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class ResponseCache:
    """key -> JSON answer record; `get_many` for a whole batch, `put` per answer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses "
                         "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)",
                             (key, json.dumps(value), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
