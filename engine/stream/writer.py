"""The consumer's output side: atomic segment files, dead letters, and micro-batches handed back in order.

Per segment the dead-letter file is written first and the answers file last (an answers file marks its
offset range as done), each atomically, and only while the partition is still owned under the epoch the
segment was cut in (``files.Ownership``). ``Pipeline`` scores batch k+1 on one thread while another writes
batch k, and returns written batches oldest first, so offsets are committed in order.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from kafka import KafkaProducer

from assay.schemas.output import write_parquet_atomic

from .config import StreamConfig
from .files import Ownership, segment_path
from .messages import reason_kind
from .step import ScoredSegment, Segment


class DeadLetters:
    """Where bad messages go: a folder of segment files (exactly once) or a Kafka topic (at least once)."""

    def __init__(self, config: StreamConfig) -> None:
        self.topic = config.dead_letter_topic
        self.folder = config.dead_letter_folder
        self._producer = KafkaProducer(bootstrap_servers=config.bootstrap, acks="all") if self.topic else None

    def write(self, segment: Segment, table: pa.Table) -> int:
        """Store one segment's dead letters; returns the number of files written."""
        if self.folder is not None:
            topic, partition = segment.partition.topic, segment.partition.partition
            write_parquet_atomic(table, segment_path(self.folder, topic, partition, segment.start, segment.end))
            return 1
        for row in table.to_pylist():
            headers = [("assay.reason", row["reason"].encode()), ("assay.topic", row["topic"].encode()),
                       ("assay.partition", str(row["partition"]).encode()),
                       ("assay.offset", str(row["offset"]).encode())]
            self._producer.send(self.topic, key=row["key"], value=row["raw"], headers=headers)
        self._producer.flush()
        return 0

    def close(self) -> None:
        """Flush and close the dead-letter producer, if any."""
        if self._producer is not None:
            self._producer.close()


@dataclass
class Written:
    """A written micro-batch: the segments whose files are on disk, and its counts."""

    segments: list[Segment] = field(default_factory=list)
    records: int = 0
    dead: collections.Counter = field(default_factory=collections.Counter)  # dead letters per reason kind
    files: int = 0


def write_batch(scored: list[ScoredSegment], output: Path, dead_letters: DeadLetters,
                ownership: Ownership) -> Written:
    """Write each still-owned segment's dead letters, then its answers; fenced-off segments are dropped."""
    done = Written()
    for each in scored:
        files = []

        def write(each: ScoredSegment = each, files: list = files) -> None:
            segment = each.segment
            if each.dead_letters is not None:  # dead letters first: the answers file marks the range as done
                files.append(dead_letters.write(segment, each.dead_letters))
            tp = segment.partition
            write_parquet_atomic(each.answers, segment_path(output, tp.topic, tp.partition, segment.start, segment.end))
            files.append(1)

        if ownership.write_if_owned(each.segment.partition, each.segment.epoch, write):
            done.segments.append(each.segment)
            done.records += each.answers.num_rows
            done.files += sum(files)
            if each.dead_letters is not None:
                done.dead.update(reason_kind(reason) for reason in each.dead_letters.column("reason").to_pylist())
    return done


class Pipeline:
    """Micro-batches in flight: ``score`` runs on one thread, ``write`` on another, results come back in order."""

    def __init__(self, score: Callable[[list[Segment]], list[ScoredSegment]],
                 write: Callable[[list[ScoredSegment]], Written]) -> None:
        self._score, self._write = score, write
        self._score_pool = ThreadPoolExecutor(1, thread_name_prefix="assay-score")
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="assay-write")
        self._in_flight: collections.deque[tuple[Future, float]] = collections.deque()
        self.batches = 0

    def __len__(self) -> int:
        return len(self._in_flight)

    def submit(self, segments: list[Segment]) -> None:
        """Queue a micro-batch for scoring, then writing."""
        self._in_flight.append((self._score_pool.submit(self._score_then_write, segments), time.perf_counter()))
        self.batches += 1

    def _score_then_write(self, segments: list[Segment]) -> Future:
        return self._write_pool.submit(self._write, self._score(segments))

    def written(self, wait: bool) -> Iterator[tuple[Written, float]]:
        """The written micro-batches, oldest first, with their seconds since submission; ``wait`` for all of them,
        else stop at the first one not written yet. A scoring or writing error is raised here."""
        while self._in_flight:
            scoring, started = self._in_flight[0]
            if not wait and not scoring.done():
                return
            writing = scoring.result()
            if not wait and not writing.done():
                return
            done = writing.result()
            self._in_flight.popleft()
            yield done, time.perf_counter() - started

    def close(self) -> None:
        """Stop both threads; batches not started yet are dropped (their offsets are not committed)."""
        self._score_pool.shutdown(wait=True, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=True)
