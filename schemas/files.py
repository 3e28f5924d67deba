"""Durable file helpers every stage shares: atomic writes and content hashes of files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_DIGESTS: dict[tuple, str] = {}


@contextmanager
def atomic_sink(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` only once complete: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write `text` (UTF-8) to `path` atomically: readers see the old file or the new one, never half."""
    with atomic_sink(path) as sink:
        sink.write(text.encode("utf-8"))
    return Path(path)


def sha256_files(root: str | Path, files: Sequence[Path]) -> str:
    """SHA-256 over `files` (their names relative to `root`, then their bytes), in the order given.

    Remembered per process by path, size and modification time, so asking again is free.
    """
    root = Path(root)
    key = (str(root), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        for file in files:
            digest.update(str(file.relative_to(root)).encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
