"""Kafka in, Parquet out: a consumer-group member that scores JSON messages in micro-batches, exactly once.

Three threads form a pipeline: the Kafka thread polls, cuts micro-batches (by count and by age) and
commits; a scoring thread parses and scores batch k+1 while a writer thread writes batch k's files.
Per partition and batch, answers go to ``OUTPUT/<topic>/p<partition>/<start>-<end>.parquet``
(offsets ``[start, end)``, written atomically) and bad messages to the dead letters; offsets are
committed only after the files are on disk. On assignment a partition resumes after the last file
already written (``stream_files.recover_partition``), so a crash at any moment re-processes only
records whose answers are not on disk, and never writes an offset range twice. See docs/streaming.md.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from assay.schemas.output import output_schema, write_parquet_atomic

from .stream_files import Ownership, recover_partition, segment_path
from .stream_messages import DEAD_LETTER_SCHEMA, DEFAULT_MAX_TEXT_CHARS, Record, parse_message, reason_kind
from .stream_metrics import StreamMetrics

if TYPE_CHECKING:
    from .scorer import Scorer

log = logging.getLogger("assay.stream")

KAFKA_METADATA_KEY = b"assay_kafka"
DEAD_LETTER_FOLDER = "_dead_letters"
TOPIC_PREFIX = "kafka:"


@dataclass(frozen=True)
class ConsumeSummary:
    """What one ``consume`` run did."""

    output: Path
    topic: str
    group: str
    run_id: str
    records: int
    dead_letters: int
    files: int
    batches: int
    seconds: float
    startup_seconds: float  # joining the group until the first message arrived (all of it when none came)
    stopped_by: str  # "end" (--until-end reached), "signal" or "stop" (the stop event)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Segment:
    """One partition's messages in a micro-batch: offsets ``[start, end)``."""

    partition: TopicPartition
    epoch: int
    start: int
    end: int
    messages: list


@dataclass
class _Written:
    """A written micro-batch: the segments whose files are on disk, and its counts."""

    segments: list[_Segment]
    records: int
    dead: dict[str, int]
    files: int
    seconds: float


class DeadLetters:
    """Where bad messages go: a folder of segment files (exactly once) or a Kafka topic (at least once)."""

    def __init__(self, target: str | Path, bootstrap: str) -> None:
        text = str(target)
        self.topic = text[len(TOPIC_PREFIX):] if text.startswith(TOPIC_PREFIX) else None
        self.folder = None if self.topic else Path(text)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all") if self.topic else None

    def write(self, segment: _Segment, table: pa.Table) -> int:
        """Store one segment's dead letters; returns the number of files written."""
        if self.folder is not None:
            topic, partition = segment.partition.topic, segment.partition.partition
            write_parquet_atomic(table, segment_path(self.folder, topic, partition, segment.start, segment.end))
            return 1
        for row in table.to_pylist():
            headers = [("assay.reason", row["reason"].encode()), ("assay.topic", row["topic"].encode()),
                       ("assay.partition", str(row["partition"]).encode()), ("assay.offset", str(row["offset"]).encode())]
            self._producer.send(self.topic, key=row["key"], value=row["raw"], headers=headers)
        self._producer.flush()
        return 0

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


class _Rebalance(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: fences revoked partitions, queues events for the Kafka thread."""

    def __init__(self, stream: "_Stream") -> None:
        self.stream = stream

    def on_partitions_revoked(self, revoked) -> None:
        self.stream.ownership.revoke(revoked)  # waits for a write in progress; then nothing more is written
        self.stream.events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned) -> None:
        self.stream.events.append(("assigned", set(assigned)))


class _Stream:
    """One consumer-group member: poll, cut batches, score and write in background threads, commit."""

    def __init__(self, scorer: "Scorer", bootstrap: str, topic: str, group: str, output: Path,
                 dead_letters: DeadLetters, until_end: bool, batch_records: int, batch_seconds: float,
                 max_in_flight: int, reload_seconds: float, metrics: StreamMetrics, log_seconds: float,
                 max_text_chars: int, session_timeout_s: float, stop: threading.Event) -> None:
        self.scorer, self.topic, self.group, self.output = scorer, topic, group, output
        self.dead_letters, self.until_end, self.metrics, self.stop = dead_letters, until_end, metrics, stop
        self.batch_records, self.batch_seconds, self.max_in_flight = batch_records, batch_seconds, max_in_flight
        self.reload_seconds, self.log_seconds, self.max_text_chars = reload_seconds, log_seconds, max_text_chars
        self.run_id = f"{group}-{uuid.uuid4().hex[:12]}"
        self.ownership = Ownership()
        self.events: collections.deque = collections.deque()
        self.pending: dict[TopicPartition, list] = {}
        self.pending_since = 0.0
        self.next_start: dict[TopicPartition, int] = {}
        self.written: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.at_end: set[TopicPartition] = set()
        self.in_flight: collections.deque[tuple[Future, float]] = collections.deque()
        self.backpressure = False
        self.batches = 0
        self.first_message_at: float | None = None
        self.last_reload = time.monotonic()
        self.score_pool = ThreadPoolExecutor(1, thread_name_prefix="assay-score")
        self.write_pool = ThreadPoolExecutor(1, thread_name_prefix="assay-write")
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, client_id=f"assay-{socket.gethostname()}-{os.getpid()}",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=batch_records,
            session_timeout_ms=int(session_timeout_s * 1000), heartbeat_interval_ms=int(session_timeout_s * 300))

    # ---- the Kafka thread ---------------------------------------------------------------------
    def run(self) -> str:
        """Consume until the end offsets (``until_end``) or the stop event; returns why it stopped."""
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        if self.until_end:
            self.ends = self._end_offsets()
        self.metrics.set_adapters(self.scorer.metadata("").adapters)
        stopped_by, last_check = "stop", 0.0
        while not self.stop.is_set():
            self._collect(wait=False)
            self._apply_backpressure()
            room = max(1, self.batch_records - sum(map(len, self.pending.values())))
            polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=room)
            self._apply_rebalance(polled)
            self._add(polled)
            if self._batch_ready():
                self._submit()
            lags = self._lags()
            self.metrics.set_lag(lags)
            self.metrics.maybe_log(self.log_seconds, len(self.in_flight), self.backpressure, lags)
            if self.until_end and time.monotonic() - last_check >= 0.5 and self._own_work_done():
                last_check = time.monotonic()
                if self._group_done():
                    stopped_by = "end"
                    break
        self._submit()
        self._collect(wait=True)
        return stopped_by

    def _end_offsets(self) -> dict[TopicPartition, int]:
        deadline = time.monotonic() + 30
        while not (partitions := self.consumer.partitions_for_topic(self.topic)):
            if time.monotonic() > deadline:
                raise KafkaError(f"topic {self.topic!r} not found on the broker after 30 s; create it or check --topic")
            self.consumer.poll(timeout_ms=200, max_records=1)  # nothing is kept: positions reset on assignment
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        ends = self.consumer.end_offsets(tps)
        log.info("%s: --until-end: stopping at end offsets %s", self.topic,
                 ", ".join(f"p{tp.partition}={ends[tp]:,}" for tp in tps))
        return ends

    def _poll_timeout_ms(self) -> int:
        if self.backpressure:
            return 50
        if self.pending:
            left = self.batch_seconds - (time.monotonic() - self.pending_since)
            return int(1000 * min(max(left, 0.0), 0.2))
        return 200

    def _apply_backpressure(self) -> None:
        owned = list(self.ownership.owned())
        full = len(self.in_flight) >= self.max_in_flight
        if full and not self.backpressure:
            self.consumer.pause(*owned)
        elif not full and self.backpressure:
            self.consumer.resume(*[tp for tp in owned if tp not in self.at_end])
        self.backpressure = full

    def _apply_rebalance(self, polled: dict) -> None:
        """Handle the listener's events in order: drop revoked work, recover newly assigned partitions."""
        while self.events:
            kind, partitions = self.events.popleft()
            for tp in partitions:
                self.pending.pop(tp, None)
                polled.pop(tp, None)  # re-read from the recovered position
                if kind == "revoked":
                    self.next_start.pop(tp, None)
                    self.written.pop(tp, None)
                    self.at_end.discard(tp)
                else:
                    self._recover(tp)
        if not self.pending:
            self.pending_since = 0.0

    def _recover(self, tp: TopicPartition) -> None:
        committed = self.consumer.committed(tp)
        if committed is None:
            committed = self.consumer.beginning_offsets([tp])[tp]
        position, removed = recover_partition(self.output, self.dead_letters.folder, tp.topic, tp.partition,
                                              committed)
        self.consumer.seek(tp, position)
        self.next_start[tp] = self.written[tp] = position
        self.ownership.grant(tp)
        if position != committed:
            self._commit({tp: position})
        if tp in self.ends and position >= self.ends[tp]:
            self.at_end.add(tp)
            self.consumer.pause(tp)
        log.info("%s p%d: assigned; committed offset %s, resuming at %s (after the files already written); "
                 "%d stale file(s) removed", tp.topic, tp.partition, f"{committed:,}", f"{position:,}", len(removed))

    def _add(self, polled: dict) -> None:
        for tp, messages in polled.items():
            if tp in self.ends:
                end = self.ends[tp]
                if messages and messages[-1].offset >= end:
                    messages = [m for m in messages if m.offset < end]
                    self.at_end.add(tp)
                    self.consumer.pause(tp)
            if messages:
                self.first_message_at = self.first_message_at or time.perf_counter()
                if not self.pending:
                    self.pending_since = time.monotonic()
                self.pending.setdefault(tp, []).extend(messages)

    def _batch_ready(self) -> bool:
        if not self.pending:
            return False
        full = sum(map(len, self.pending.values())) >= self.batch_records
        return full or time.monotonic() - self.pending_since >= self.batch_seconds

    def _submit(self) -> None:
        """Hand the pending messages to the scoring thread as one micro-batch."""
        owned = self.ownership.owned()
        segments = []
        for tp, messages in self.pending.items():
            if tp in owned:
                end = messages[-1].offset + 1
                segments.append(_Segment(tp, owned[tp], self.next_start[tp], end, messages))
                self.next_start[tp] = end
        self.pending, self.pending_since = {}, 0.0
        if segments:
            self.in_flight.append((self.score_pool.submit(self._score, segments), time.perf_counter()))
            self.batches += 1

    def _collect(self, wait: bool) -> None:
        """Commit the micro-batches whose files are written, oldest first."""
        while self.in_flight:
            scoring, started = self.in_flight[0]
            if not wait and not scoring.done():
                return
            writing = scoring.result()
            if not wait and not writing.done():
                return
            done: _Written = writing.result()
            self.in_flight.popleft()
            self.metrics.batch_done(done.records, done.dead, done.files, time.perf_counter() - started)
            self._commit({s.partition: s.end for s in done.segments if self.ownership.owns(s.partition, s.epoch)})

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except KafkaError as error:  # the files are on disk; recovery resumes after them anyway
            log.warning("%s: offset commit failed (%s); the written files are kept and skipped on restart",
                        self.topic, error)
        for tp, offset in offsets.items():
            self.written[tp] = max(self.written.get(tp, 0), offset)

    def _lags(self) -> dict[int, int]:
        lags = {}
        for tp in self.ownership.owned():
            high = self.consumer.highwater(tp)
            if high is not None and tp in self.written:
                lags[tp.partition] = max(high - self.written[tp], 0)
        return lags

    def _own_work_done(self) -> bool:
        owned = self.ownership.owned()
        return (not self.pending and not self.in_flight
                and all(self.next_start.get(tp, 0) >= self.ends.get(tp, 0) for tp in owned))

    def _group_done(self) -> bool:
        """Whether the group's committed offsets reached the end offsets on every partition."""
        for tp, end in self.ends.items():
            committed = self.consumer.committed(tp)
            if committed is None:
                committed = self.consumer.beginning_offsets([tp])[tp]
            if committed < end:
                return False
        return True

    # ---- the scoring thread -------------------------------------------------------------------
    def _score(self, segments: list[_Segment]) -> Future:
        started = time.perf_counter()
        self._maybe_reload()
        parsed = []
        for segment in segments:
            good, dead = [], []
            for message in segment.messages:
                result = parse_message(message.value, self.max_text_chars)
                if isinstance(result, Record):
                    good.append(result)
                else:
                    dead.append({"topic": message.topic, "partition": message.partition, "offset": message.offset,
                                 "timestamp_ms": message.timestamp, "key": message.key, "raw": message.value,
                                 "reason": result})
            parsed.append((segment, good, dead))
        records = [record for _, good, _ in parsed for record in good]
        if records:
            texts = pa.table({"id": pa.array([r.id for r in records], pa.string()),
                              "text": pa.array([r.text for r in records], pa.string())})
            scored = self.scorer.score_table(texts, run_id=self.run_id)
        else:
            scored = output_schema(self.scorer.question_ids, self.scorer.metadata(self.run_id)).empty_table()
        prepared, row = [], 0
        for segment, good, dead in parsed:
            answers = scored.slice(row, len(good))
            row += len(good)
            answers = answers.append_column(pa.field("metadata", pa.string()),
                                            pa.array([r.metadata for r in good], pa.string()))
            provenance = {"topic": segment.partition.topic, "partition": segment.partition.partition,
                          "start_offset": segment.start, "end_offset": segment.end, "group": self.group}
            answers = answers.replace_schema_metadata(
                {**(scored.schema.metadata or {}), KAFKA_METADATA_KEY: json.dumps(provenance).encode()})
            dead_table = pa.Table.from_pylist(dead, schema=DEAD_LETTER_SCHEMA) if dead else None
            prepared.append((segment, answers, dead_table))
        return self.write_pool.submit(self._write, prepared, started)

    def _maybe_reload(self) -> None:
        if self.scorer.registry is None or time.monotonic() - self.last_reload < self.reload_seconds:
            return
        self.last_reload = time.monotonic()
        try:
            changed = self.scorer.reload()
        except Exception as error:  # a broken promotion must not stop the stream: keep the loaded adapters
            log.warning("adapter reload failed, keeping the loaded adapters: %s", error)
            return
        if changed:
            log.info("reloaded adapters: %s", ", ".join(f"{q} v{v}" for q, v in changed.items()))
            self.metrics.set_adapters(self.scorer.metadata("").adapters)

    # ---- the writer thread --------------------------------------------------------------------
    def _write(self, prepared: list, started: float) -> _Written:
        done = _Written([], 0, collections.Counter(), 0, 0.0)
        for segment, answers, dead_table in prepared:
            files = []

            def write() -> None:
                if dead_table is not None:  # dead letters first: the answers file marks the range as done
                    files.append(self.dead_letters.write(segment, dead_table))
                tp = segment.partition
                write_parquet_atomic(answers, segment_path(self.output, tp.topic, tp.partition, segment.start,
                                                           segment.end))
                files.append(1)

            if self.ownership.write_if_owned(segment.partition, segment.epoch, write):
                done.segments.append(segment)
                done.records += answers.num_rows
                done.files += sum(files)
                if dead_table is not None:
                    done.dead.update(reason_kind(reason) for reason in dead_table.column("reason").to_pylist())
        done.seconds = time.perf_counter() - started
        return done

    def close(self) -> None:
        self.score_pool.shutdown(wait=True, cancel_futures=True)
        self.write_pool.shutdown(wait=True, cancel_futures=True)
        self.consumer.close(autocommit=False)
        self.dead_letters.close()


def consume(scorer: "Scorer | str | Path | Any", bootstrap: str, topic: str, group: str, output: str | Path,
            until_end: bool = False, dead_letter: str | Path | None = None, questions: Sequence[str] | None = None,
            batch_records: int = 2_000, batch_seconds: float = 2.0, max_in_flight: int = 2,
            reload_seconds: float = 60.0, metrics_port: int | None = None, log_seconds: float = 15.0,
            max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, session_timeout_s: float = 10.0,
            stop: threading.Event | None = None, device: str = "cpu") -> ConsumeSummary:
    """Join consumer group ``group`` on ``topic`` and write every message's answers to ``output``, exactly once.

    ``scorer`` is a ready ``Scorer`` or a registry (folder or ``Registry``; ``questions`` restricts it).
    ``dead_letter`` is a folder (default ``OUTPUT/_dead_letters``) or ``"kafka:TOPIC"``. Runs until the end
    offsets taken at start are committed group-wide (``until_end``), the ``stop`` event is set, or SIGTERM /
    SIGINT arrive (handled when called from the main thread): then it flushes, commits and returns.
    """
    if batch_records < 1 or batch_seconds <= 0 or max_in_flight < 1:
        raise ValueError("batch_records and max_in_flight must be >= 1 and batch_seconds > 0")
    from .scorer import Scorer

    if not isinstance(scorer, Scorer):
        scorer = Scorer.from_registry(scorer, questions=questions, device=device)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    signalled = threading.Event()
    restore = _handle_signals(stop, signalled)
    metrics = StreamMetrics(topic, metrics_port)
    started = time.perf_counter()
    stream = None
    try:
        stream = _Stream(scorer, bootstrap, topic, group, output,
                         DeadLetters(dead_letter or output / DEAD_LETTER_FOLDER, bootstrap), until_end,
                         batch_records, batch_seconds, max_in_flight, reload_seconds, metrics, log_seconds,
                         max_text_chars, session_timeout_s, stop)
        stopped_by = stream.run()
    finally:
        if stream is not None:
            stream.close()
        metrics.close()
        restore()
    summary = ConsumeSummary(output=output, topic=topic, group=group, run_id=stream.run_id,
                             records=metrics.total_records, dead_letters=metrics.total_dead,
                             files=metrics.total_files, batches=stream.batches,
                             seconds=time.perf_counter() - started,
                             startup_seconds=(stream.first_message_at or time.perf_counter()) - started,
                             stopped_by="signal" if signalled.is_set() else stopped_by)
    log.info("%s: done (%s): %s records, %s dead letters, %s files in %.1f s", topic, summary.stopped_by,
             f"{summary.records:,}", f"{summary.dead_letters:,}", f"{summary.files:,}", summary.seconds)
    return summary


def _handle_signals(stop: threading.Event, signalled: threading.Event):
    """Make SIGTERM/SIGINT set ``stop`` (main thread only); returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, _frame) -> None:
        log.info("%s received: finishing the batches in flight, committing, then exiting",
                 signal.Signals(signum).name)
        signalled.set()
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def produce(path: str | Path, bootstrap: str, topic: str, key: str | None = "id", progress: bool = True) -> int:
    """Send every record of a Parquet/JSONL/CSV file or folder to ``topic`` as a JSON message; returns the count.

    The message key is the ``key`` field (default the id, so a record always lands on the same partition);
    rows the record reader rejects are skipped with a warning.
    """
    from tqdm import tqdm

    from assay.schemas.records import RecordReader, RecordsError, input_files

    from .run import _total_records

    input_files(path)  # a missing or unsupported input fails before connecting
    reader = RecordReader(path)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 18)
    failures: list[Exception] = []
    sent = 0
    try:
        with tqdm(total=_total_records(Path(path)), unit="msg", desc=f"→ {topic}", disable=not progress,
                  dynamic_ncols=True) as bar:
            for table in reader:
                if key is not None and key not in table.column_names:
                    raise RecordsError(f"{path}: no column {key!r} to use as the message key "
                                       f"(columns: {', '.join(table.column_names)}); pass --key COLUMN or --no-key")
                for row in table.to_pylist():
                    value = json.dumps(row, ensure_ascii=False, default=str).encode()
                    message_key = None if key is None or row[key] is None else str(row[key]).encode()
                    producer.send(topic, key=message_key, value=value).add_errback(failures.append)
                    sent += 1
                bar.update(table.num_rows)
            producer.flush()
    finally:
        producer.close()
    if failures:
        raise KafkaError(f"{len(failures)} of {sent:,} messages were not delivered to {topic!r}: {failures[0]}")
    if reader.rejects:
        log.warning("%s: %d row(s) rejected and not sent (first: %s)", path, len(reader.rejects),
                    reader.rejects.rows[0]["reason"])
    return sent
