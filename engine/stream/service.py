"""Kafka in, Parquet out: ``consume`` wires the parts into one consumer-group member; ``produce`` loads a topic.

Three threads form a pipeline: the Kafka thread (``poller``) polls, cuts micro-batches (by count and by
age) and commits; a scoring thread parses and scores batch k+1 (``step``) while a writer thread writes
batch k's files (``writer``). Per partition and batch, answers go to
``OUTPUT/<topic>/p<partition>/<start>-<end>.parquet`` (offsets ``[start, end)``, written atomically) and
bad messages to the dead letters; offsets are committed only after the files are on disk. On assignment a
partition resumes after the last file already written (``files.recover_partition``), so a crash at any
moment re-processes only records whose answers are not on disk, and never writes an offset range twice.
See docs/streaming.md.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kafka import KafkaProducer
from kafka.errors import KafkaError

from .config import StreamConfig
from .files import Ownership
from .metrics import StreamMetrics
from .poller import Poller
from .step import ScoredSegment, Segment, score_batch
from .writer import DeadLetters, Pipeline, write_batch

if TYPE_CHECKING:
    from assay.engine.scorer import Scorer

log = logging.getLogger("assay.stream")


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


class _Scoring:
    """The scoring thread's work: reload newly promoted adapters now and then, then the pure step."""

    def __init__(self, scorer: Scorer, config: StreamConfig, run_id: str, metrics: StreamMetrics) -> None:
        self.scorer, self.config, self.run_id, self.metrics = scorer, config, run_id, metrics
        self.last_reload = time.monotonic()

    def __call__(self, segments: list[Segment]) -> list[ScoredSegment]:
        self._maybe_reload()
        return score_batch(self.scorer, segments, self.run_id, self.config.group, self.config.max_text_chars)

    def _maybe_reload(self) -> None:
        if self.scorer.registry is None or time.monotonic() - self.last_reload < self.config.reload_seconds:
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


def consume(config: StreamConfig, scorer: Scorer, stop: threading.Event | None = None) -> ConsumeSummary:
    """Join ``config.group`` on ``config.topic`` and write every message's answers under ``config.output``,
    exactly once, with ``scorer``'s adapters.

    Runs until the end offsets taken at start are committed group-wide (``config.until_end``), the ``stop``
    event is set, or SIGTERM / SIGINT arrive (handled when called from the main thread): then it flushes,
    commits and returns.
    """
    config.output.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    signalled = threading.Event()
    restore = _handle_signals(stop, signalled)
    metrics = StreamMetrics(config.topic, config.metrics_port)
    run_id = f"{config.group}-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    ownership, poller, pipeline, dead_letters = Ownership(), None, None, None
    try:
        dead_letters = DeadLetters(config)
        poller = Poller(config, ownership)
        pipeline = Pipeline(_Scoring(scorer, config, run_id, metrics),
                            lambda scored: write_batch(scored, config.output, dead_letters, ownership))
        stopped_by = _run(config, scorer, poller, pipeline, metrics, stop)
    finally:
        for part in (pipeline, poller, dead_letters):
            if part is not None:
                part.close()
        metrics.close()
        restore()
    summary = ConsumeSummary(output=config.output, topic=config.topic, group=config.group, run_id=run_id,
                             records=metrics.total_records, dead_letters=metrics.total_dead,
                             files=metrics.total_files, batches=pipeline.batches,
                             seconds=time.perf_counter() - started,
                             startup_seconds=(poller.first_message_at or time.perf_counter()) - started,
                             stopped_by="signal" if signalled.is_set() else stopped_by)
    log.info("%s: done (%s): %s records, %s dead letters, %s files in %.1f s", config.topic, summary.stopped_by,
             f"{summary.records:,}", f"{summary.dead_letters:,}", f"{summary.files:,}", summary.seconds)
    return summary


def _run(config: StreamConfig, scorer: Scorer, poller: Poller, pipeline: Pipeline, metrics: StreamMetrics,
         stop: threading.Event) -> str:
    """The Kafka thread's loop, until the end offsets (``until_end``) or the stop event; returns why it stopped."""
    poller.start()
    metrics.set_adapters(scorer.metadata("").adapters)
    stopped_by, last_check = "stop", 0.0
    while not stop.is_set():
        _commit_written(poller, pipeline, metrics, wait=False)
        poller.set_backpressure(len(pipeline) >= config.max_in_flight)
        poller.poll()
        if poller.batch_ready():
            _submit(poller, pipeline)
        lags = poller.lags()
        metrics.set_lag(lags)
        metrics.maybe_log(config.log_seconds, len(pipeline), poller.paused, lags)
        if (config.until_end and time.monotonic() - last_check >= 0.5 and not len(pipeline)
                and poller.own_work_done()):
            last_check = time.monotonic()
            if poller.group_done():
                stopped_by = "end"
                break
    _submit(poller, pipeline)
    _commit_written(poller, pipeline, metrics, wait=True)
    return stopped_by


def _submit(poller: Poller, pipeline: Pipeline) -> None:
    """Hand the pending messages to the scoring thread as one micro-batch (if there are any)."""
    segments = poller.cut()
    if segments:
        pipeline.submit(segments)


def _commit_written(poller: Poller, pipeline: Pipeline, metrics: StreamMetrics, wait: bool) -> None:
    """Count and commit the micro-batches whose files are written, oldest first."""
    for done, seconds in pipeline.written(wait):
        metrics.batch_done(done.records, done.dead, done.files, seconds)
        poller.commit_written(done.segments)


def _handle_signals(stop: threading.Event, signalled: threading.Event) -> Callable[[], None]:
    """Make SIGTERM/SIGINT set ``stop`` (main thread only); returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, _frame) -> None:
        log.info("%s received: finishing the batches in flight, committing, then exiting",
                 signal.Signals(signum).name)
        signalled.set()
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def produce(path: str | Path, bootstrap: str, topic: str, key: str | None = "id", progress: bool = True) -> int:
    """Send every record of a Parquet/JSONL/CSV file or folder to ``topic`` as a JSON message; returns the count.

    The message key is the ``key`` field (default the id, so a record always lands on the same partition);
    rows the record reader rejects are skipped with a warning.
    """
    from tqdm import tqdm

    from assay.engine.run import total_records
    from assay.schemas.records import RecordReader, RecordsError, input_files

    input_files(path)  # a missing or unsupported input fails before connecting
    reader = RecordReader(path)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 18)
    failures: list[Exception] = []
    sent = 0
    try:
        with tqdm(total=total_records(Path(path)), unit="msg", desc=f"→ {topic}", disable=not progress,
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
