"""Skip finished work on a re-run: fingerprints of inputs and per-step "done" stamps in the run folder.

A stamp ``RUN/.done/<step>/<question>.json`` records the fingerprint of everything the step read
(the question spec, the input files, the parameters) and what it produced. A re-run whose
fingerprint matches, and whose outputs still exist, reuses the result instead of redoing the step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from assay.schemas.files import sha256_files, write_text_atomic

STAMPS = ".done"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of every file under a folder (relative names and bytes, sorted)."""
    path = Path(path)
    if path.is_dir():
        return sha256_files(path, sorted(p for p in path.rglob("*") if p.is_file()))
    return sha256_files(path.parent, [path])


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (paths become strings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _stamp_path(run_dir: Path, step: str, question_id: str) -> Path:
    return Path(run_dir) / STAMPS / step / f"{question_id}.json"


def finished(run_dir: str | Path, step: str, question_id: str, key: str) -> dict[str, Any] | None:
    """The recorded result of a step when it finished with this fingerprint and its outputs exist."""
    path = _stamp_path(Path(run_dir), step, question_id)
    if not path.is_file():
        return None
    stamp = json.loads(path.read_text())
    outputs = [Path(p) for p in stamp.get("outputs", [])]
    if stamp.get("key") != key or not all(p.exists() for p in outputs):
        return None
    return stamp["result"]


def record(run_dir: str | Path, step: str, question_id: str, key: str, result: dict[str, Any],
           outputs: list[str | Path]) -> dict[str, Any]:
    """Stamp a finished step (atomically) and return ``result``."""
    path = _stamp_path(Path(run_dir), step, question_id)
    write_text_atomic(json.dumps({"key": key, "result": result, "outputs": [str(p) for p in outputs]},
                                 indent=1, default=str), path)
    return result
