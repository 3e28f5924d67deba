"""The Kafka service: a consumer-group member that scores JSON messages into Parquet exactly once.

Parts (each testable alone): ``config`` (``StreamConfig``, every setting), ``poller`` (fetch, backpressure,
rebalances, commits), ``step`` (the pure scoring step), ``writer`` (segment files, dead letters, batches in
order), ``files`` (naming, recovery, the write fence), ``messages`` (parsing, dead-letter schema), ``metrics``
(Prometheus) and ``service`` (``consume`` / ``produce``, wiring the rest). See docs/streaming.md.
"""

from .config import DEAD_LETTER_FOLDER, StreamConfig, StreamConfigError
from .service import ConsumeSummary, consume, produce
from .step import KAFKA_METADATA_KEY

__all__ = ["DEAD_LETTER_FOLDER", "KAFKA_METADATA_KEY", "ConsumeSummary", "StreamConfig", "StreamConfigError",
           "consume", "produce"]
