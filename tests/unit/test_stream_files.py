"""The consumer's segment files without a broker: deterministic names, crash recovery, the write fence."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from assay.engine.stream.files import Ownership, partition_dir, recover_partition, segment_path, segments


def test_names_sort_by_offset_and_parse_back(tmp_path):
    paths = [segment_path(tmp_path, "t", 2, start, end) for start, end in [(1_000, 12_000), (0, 999), (999, 1_000)]]
    assert paths[0] == tmp_path / "t" / "p2" / "00000000000000001000-00000000000000012000.parquet"
    assert all(p.parent == partition_dir(tmp_path, "t", 2) for p in paths)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (paths[0].parent / "notes.txt").write_text("not a segment")
    (paths[0].parent / "1-2.parquet").write_text("not zero-padded: not a segment")
    found = segments(paths[0].parent)
    assert [(s, e) for s, e, _ in found] == [(0, 999), (999, 1_000), (1_000, 12_000)]
    assert [p.name for _, _, p in found] == sorted(p.name for _, _, p in found)  # zero padding: names sort by offset
    assert segments(tmp_path / "missing") == []


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


def test_recovery_from_a_commit_inside_a_file_or_past_every_file(tmp_path):
    out = tmp_path / "out"
    first, second = _touch(out, 0, 100), _touch(out, 100, 180)
    assert recover_partition(out, None, "t", 0, committed=50) == (180, [])  # inside [0, 100): follow the chain
    assert recover_partition(out, None, "t", 0, committed=180) == (180, [])
    # the group's offsets were moved past the files: they stay, nothing is re-written, resume at the commit
    assert recover_partition(out, None, "t", 0, committed=500) == (500, [])
    assert first.exists() and second.exists()


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
