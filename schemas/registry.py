"""The adapter registry: versioned PEFT adapters per question, a CURRENT pointer, promotion history.

Layout::

    REGISTRY/<question_id>/<version>/   adapter_config.json, adapter_model.safetensors (standard PEFT,
                                        head in modules_to_save), manifest.json, reliability.png
    REGISTRY/<question_id>/CURRENT      the current version number, as text
    REGISTRY/<question_id>/history.jsonl  one line per promote / rollback (who was current before)

Versions are allocated by an atomic rename of a finished temporary folder, so a reader never sees a
half-written adapter; CURRENT and manifests are replaced atomically too, under a per-question lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assay.schemas.files import sha256_files, write_text_atomic

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
HISTORY = "history.jsonl"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class RegistryError(ValueError):
    """A registry operation cannot be done: unknown question or version, wrong base model, bad folder."""


@dataclass(frozen=True)
class AdapterVersion:
    """One saved adapter version of a question."""

    question_id: str
    version: int
    path: Path
    manifest: dict[str, Any]

    @property
    def threshold(self) -> float:
        """The decision threshold on P(yes) chosen at training time."""
        return float(self.manifest.get("threshold", 0.5))

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})


def now() -> str:
    """UTC timestamp, ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def base_sha256(base_path: str | Path) -> str:
    """SHA-256 over a base model folder's weight files (names and bytes, sorted); cached per process."""
    folder = Path(base_path).resolve()
    if not folder.is_dir():
        raise RegistryError(f"base model {base_path}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise RegistryError(f"base model {folder}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return sha256_files(folder, files)


class Registry:
    """A registry folder: save adapter versions, read them, promote and roll back the current one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry {self.root}: exists and is not a folder")

    # ---- reading -------------------------------------------------------------------------------
    def all_questions(self) -> list[str]:
        """Every question with at least one saved version, promoted or not."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and any(self._version_dirs(p.name)))

    def questions(self) -> list[str]:
        """Question ids that have a current version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CURRENT).is_file())

    def _version_dirs(self, question_id: str) -> Iterator[tuple[int, Path]]:
        folder = self.root / question_id
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.isdigit() and (path / MANIFEST).is_file():
                    yield int(path.name), path

    def versions(self, question_id: str) -> list[AdapterVersion]:
        """All saved versions of a question, oldest first."""
        return [self._load(question_id, n, path) for n, path in sorted(self._version_dirs(question_id))]

    def _load(self, question_id: str, version: int, path: Path) -> AdapterVersion:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise RegistryError(f"{path / MANIFEST}: unreadable manifest ({error})") from None
        return AdapterVersion(question_id=question_id, version=version, path=path, manifest=manifest)

    def get(self, question_id: str, version: int) -> AdapterVersion:
        """One saved version; ``RegistryError`` naming the versions there are when it does not exist."""
        path = self.root / question_id / str(int(version))
        if not (path / MANIFEST).is_file():
            known = [str(v.version) for v in self.versions(question_id)]
            raise RegistryError(f"{self.root}: question {question_id!r} has no version {version} "
                                f"(versions: {', '.join(known) or 'none'})")
        return self._load(question_id, int(version), path)

    def current_version(self, question_id: str) -> int | None:
        """The number in ``<question>/CURRENT``, or None when nothing is promoted."""
        pointer = self.root / question_id / CURRENT
        if not pointer.is_file():
            return None
        text = pointer.read_text().strip()
        if not text.isdigit():
            raise RegistryError(f"{pointer}: holds {text!r}, not a version number; fix it with "
                                f"`assay registry promote {question_id} VERSION`")
        return int(text)

    def current(self, question_id: str) -> AdapterVersion | None:
        """The current (promoted) version of a question, or None."""
        number = self.current_version(question_id)
        return None if number is None else self.get(question_id, number)

    def history(self, question_id: str) -> list[dict[str, Any]]:
        """Promotion events, oldest first: ``{"action", "version", "previous", "at", "reason"}``."""
        path = self.root / question_id / HISTORY
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ---- writing -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, question_id: str) -> Iterator[Path]:
        folder = self.root / question_id
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, question_id: str, adapter_dir: str | Path, manifest: dict[str, Any]) -> AdapterVersion:
        """Copy a PEFT adapter folder in as the next version, with its manifest; not promoted.

        ``manifest`` gets ``question_id``, ``version``, ``created_at`` and ``promoted: None`` filled in.
        """
        source = Path(adapter_dir)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (source / name).is_file():
                raise RegistryError(f"{source}: not a PEFT adapter folder (missing {name})")
        with self._locked(question_id) as folder:
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=".new-"))
            try:
                for file in source.iterdir():
                    if file.is_file():
                        shutil.copy2(file, staging / file.name)
                number = max((n for n, _ in self._version_dirs(question_id)), default=0) + 1
                full = {**manifest, "question_id": question_id, "version": number,
                        "created_at": manifest.get("created_at") or now(), "promoted": None}
                write_text_atomic(json.dumps(full, indent=2, default=str) + "\n", staging / MANIFEST)
                os.rename(staging, folder / str(number))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self.get(question_id, number)

    def update_manifest(self, version: AdapterVersion, **fields: Any) -> AdapterVersion:
        """Merge ``fields`` into a version's manifest (atomically) and return the re-read version."""
        with self._locked(version.question_id):
            current = self.get(version.question_id, version.version)
            write_text_atomic(json.dumps({**current.manifest, **fields}, indent=2, default=str) + "\n",
                              current.path / MANIFEST)
        return self.get(version.question_id, version.version)

    def _set_current(self, folder: Path, question_id: str, version: int, action: str, reason: str) -> None:
        previous = self.current_version(question_id)
        write_text_atomic(f"{version}\n", folder / CURRENT)
        event = {"action": action, "version": version, "previous": previous, "at": now(), "reason": reason}
        with open(folder / HISTORY, "a") as handle:
            handle.write(json.dumps(event) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        path = folder / str(version) / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["promoted"] = {"at": event["at"], "action": action, "reason": reason, "previous": previous}
        write_text_atomic(json.dumps(manifest, indent=2, default=str) + "\n", path)

    def promote(self, question_id: str, version: int, reason: str = "promoted by hand") -> AdapterVersion:
        """Make ``version`` the current one (scorers pick it up on ``reload``)."""
        self.get(question_id, version)
        with self._locked(question_id) as folder:
            self._set_current(folder, question_id, int(version), "promote", reason)
        return self.get(question_id, version)

    def rollback(self, question_id: str, reason: str = "rolled back by hand") -> AdapterVersion:
        """Make the version that was current before the current one current again.

        Rolls back through the promotion history (a rollback undoes the promote that made the
        current version current); raises ``RegistryError`` when there is nothing to go back to.
        """
        with self._locked(question_id) as folder:
            stack: list[int] = []
            for event in self.history(question_id):
                if event["action"] == "promote":
                    stack.append(event["version"])
                elif event["action"] == "rollback" and stack:
                    stack.pop()
            if len(stack) < 2:
                current = self.current_version(question_id)
                raise RegistryError(f"{question_id}: nothing to roll back to (current: "
                                    f"{current if current is not None else 'none'}; no earlier promotion)")
            self._set_current(folder, question_id, stack[-2], "rollback", reason)
        current = self.current(question_id)
        assert current is not None
        return current

    # ---- checks --------------------------------------------------------------------------------
    def check_base(self, version: AdapterVersion, base_path: str | Path) -> None:
        """Refuse an adapter trained on another base model (compares the weights' SHA-256)."""
        expected = version.manifest.get("base_model_sha256")
        trained_on = version.manifest.get("base_model", "?")
        if not expected:
            if Path(str(trained_on)).resolve() != Path(base_path).resolve():
                raise RegistryError(f"{version.path}: manifest has no base_model_sha256 and names base "
                                    f"{trained_on}, not {base_path}")
            return
        actual = base_sha256(base_path)
        if actual != expected:
            raise RegistryError(
                f"{version.question_id} v{version.version} ({version.path}) was trained on base model "
                f"{trained_on} (weights sha256 {expected[:12]}…), but the base given is {base_path} "
                f"(sha256 {actual[:12]}…). Score with --base {trained_on}, or retrain the adapter on this "
                f"base with `assay train --base {base_path}`.")
