"""Observability of the Kafka consumer: Prometheus metrics and a periodic one-line log."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("assay.stream")


class StreamMetrics:
    """Counters and gauges of one consumer; served on ``port`` when given (``/metrics``)."""

    def __init__(self, topic: str, port: int | None = None) -> None:
        self.topic = topic
        self.registry = CollectorRegistry()
        self.records = Counter("assay_stream_records", "Records scored and written", ["topic"], registry=self.registry)
        self.dead_letters = Counter("assay_stream_dead_letters", "Messages sent to the dead letters, by kind",
                                    ["topic", "kind"], registry=self.registry)
        self.files = Counter("assay_stream_files", "Segment files written (answers and dead letters)", ["topic"],
                             registry=self.registry)
        self.batch_seconds = Histogram("assay_stream_batch_seconds", "Micro-batch latency: parse, score, write",
                                       ["topic"], registry=self.registry,
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.rate = Gauge("assay_stream_records_per_second", "Records/s over the last log interval", ["topic"],
                          registry=self.registry)
        self.lag = Gauge("assay_stream_lag", "Messages not yet written, per partition (high watermark - position "
                         "written)", ["topic", "partition"], registry=self.registry)
        self.in_flight = Gauge("assay_stream_in_flight_batches", "Micro-batches being scored or written", ["topic"],
                               registry=self.registry)
        self.paused = Gauge("assay_stream_paused", "1 while fetching is paused for backpressure", ["topic"],
                            registry=self.registry)
        self.adapter_version = Gauge("assay_stream_adapter_version", "Adapter version answering each question",
                                     ["question"], registry=self.registry)
        for metric in (self.records, self.files, self.batch_seconds, self.rate, self.in_flight, self.paused):
            metric.labels(topic)  # every series exists (at 0) from the start
        self.server = None
        if port is not None:
            self.server, _ = start_http_server(port, registry=self.registry)
        self.total_records = 0
        self.total_dead = 0
        self.total_files = 0
        self._last_log = time.monotonic()
        self._records_at_last_log = 0

    def batch_done(self, records: int, dead: Mapping[str, int], files: int, seconds: float) -> None:
        """Account for one written micro-batch (``dead``: count per reason kind)."""
        self.records.labels(self.topic).inc(records)
        for kind, count in dead.items():
            self.dead_letters.labels(self.topic, kind).inc(count)
        self.files.labels(self.topic).inc(files)
        self.batch_seconds.labels(self.topic).observe(seconds)
        self.total_records += records
        self.total_dead += sum(dead.values())
        self.total_files += files

    def set_lag(self, lags: Mapping[int, int]) -> None:
        """Lag per partition (only the partitions this consumer owns)."""
        self.lag.clear()
        for partition, value in lags.items():
            self.lag.labels(self.topic, str(partition)).set(value)

    def set_adapters(self, versions: Mapping[str, int]) -> None:
        """The adapter version of each question now answering."""
        for question, version in versions.items():
            self.adapter_version.labels(question).set(version)

    def maybe_log(self, every_seconds: float, in_flight: int, paused: bool, lags: Mapping[int, int]) -> None:
        """Update the gauges; every ``every_seconds`` also records/s and one log line with the consumer's state."""
        self.in_flight.labels(self.topic).set(in_flight)
        self.paused.labels(self.topic).set(int(paused))
        now = time.monotonic()
        elapsed = now - self._last_log
        if elapsed < every_seconds:
            return
        rate = (self.total_records - self._records_at_last_log) / elapsed
        self.rate.labels(self.topic).set(rate)
        self._last_log, self._records_at_last_log = now, self.total_records
        lag_text = " ".join(f"p{p}={n:,}" for p, n in sorted(lags.items())) or "no partitions"
        log.info("%s: %s records (%s/s), %s dead letters, %s files, lag %s, in flight %d%s", self.topic,
                 f"{self.total_records:,}", f"{rate:,.0f}", f"{self.total_dead:,}", f"{self.total_files:,}",
                 lag_text, in_flight, ", paused (backpressure)" if paused else "")

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
