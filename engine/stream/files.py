"""Segment files of the Kafka consumer: deterministic names, crash recovery, and fenced writes.

Layout: ``ROOT/<topic>/p<partition>/<start>-<end>.parquet`` holds the messages at offsets
``[start, end)`` of one partition (zero-padded to 20 digits, so names sort by offset). The same
layout is used for answers and for dead letters. Per partition and micro-batch the dead-letter file is
written first and the answers file last: an answers file marks its offset range as done.

Recovery (``recover_partition``) runs when a partition is assigned: starting from the committed
offset it follows the chain of answers files (``start <= position < end`` moves the position to
``end``), deletes every answers or dead-letter file that starts at or past the end of the chain
(written after the last complete batch, or for a batch whose answers never made it to disk) and
leftover temporary files, and returns the offset to resume from. Files written but not yet committed
are therefore kept and never written twice.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

_SEGMENT = re.compile(r"^(\d{20})-(\d{20})\.parquet$")


def partition_dir(root: Path, topic: str, partition: int) -> Path:
    """The folder of one partition's segment files."""
    return Path(root) / topic / f"p{partition}"


def segment_path(root: Path, topic: str, partition: int, start: int, end: int) -> Path:
    """The file holding offsets ``[start, end)`` of a partition."""
    return partition_dir(root, topic, partition) / f"{start:020d}-{end:020d}.parquet"


def segments(folder: Path) -> list[tuple[int, int, Path]]:
    """``(start, end, path)`` of every segment file in a partition folder, by start offset."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _SEGMENT.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def recover_partition(output: Path, dead_letters: Path | None, topic: str, partition: int,
                      committed: int) -> tuple[int, list[Path]]:
    """Resume offset of a partition (``>= committed``) and the stale files deleted to get there."""
    folder = partition_dir(output, topic, partition)
    position = committed
    for start, end, _ in segments(folder):
        if start <= position < end:
            position = end
    removed = []
    folders = [folder] + ([partition_dir(dead_letters, topic, partition)] if dead_letters else [])
    for each in folders:
        stale = [path for start, _, path in segments(each) if start >= position]
        if each.is_dir():
            stale += [path for path in each.iterdir() if path.name.startswith(".") and path.name.endswith(".tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return position, removed


class Ownership:
    """Which partitions this consumer may write, with an epoch per assignment (the write fence).

    A batch remembers the epoch of each of its partitions; its files are written only while that
    epoch is still current. ``revoke`` waits for a write in progress, so once it returns no file of
    a revoked partition is written by this process: the new owner's recovery sees the final state.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs: dict[object, int] = {}
        self._next = 0

    def grant(self, partition: object) -> int:
        """Own ``partition`` under a new epoch (after recovery) and return that epoch."""
        with self._lock:
            self._next += 1
            self._epochs[partition] = self._next
            return self._next

    def revoke(self, partitions: object) -> None:
        """Stop owning these partitions; in-flight batches for them are dropped, not written."""
        with self._lock:
            for partition in partitions:  # type: ignore[attr-defined]
                self._epochs.pop(partition, None)

    def owns(self, partition: object, epoch: int) -> bool:
        """Whether ``epoch`` is the current epoch of ``partition``."""
        with self._lock:
            return self._epochs.get(partition) == epoch

    def owned(self) -> dict[object, int]:
        """The owned partitions and their epochs (a copy)."""
        with self._lock:
            return dict(self._epochs)

    def write_if_owned(self, partition: object, epoch: int, write: Callable[[], None]) -> bool:
        """Run ``write`` only while ``epoch`` is current (revocation waits for it); False if fenced off."""
        with self._lock:
            if self._epochs.get(partition) != epoch:
                return False
            write()
            return True
