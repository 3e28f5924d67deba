"""The Kafka service: a consumer-group member that scores JSON messages into Parquet exactly once.

Parts (each testable alone): ``config`` (``StreamConfig``, every setting), ``poller`` (fetch, backpressure,
rebalances, commits), ``step`` (the pure scoring step), ``writer`` (segment files, dead letters, batches in
order), ``files`` (naming, recovery, the write fence), ``messages`` (parsing, dead-letter schema), ``metrics``
(Prometheus) and ``service`` (``consume`` / ``produce``, wiring the rest). See docs/streaming.md.
The names load on first use, so the settings (``config``) import without torch or kafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEAD_LETTER_FOLDER": "config", "StreamConfig": "config", "StreamConfigError": "config",
    "ConsumeSummary": "service", "consume": "service", "produce": "service",
    "KAFKA_METADATA_KEY": "step",
}
__all__ = ["DEAD_LETTER_FOLDER", "KAFKA_METADATA_KEY", "ConsumeSummary", "StreamConfig", "StreamConfigError",
           "consume", "produce"]

if TYPE_CHECKING:
    from .config import DEAD_LETTER_FOLDER, StreamConfig, StreamConfigError
    from .service import ConsumeSummary, consume, produce
    from .step import KAFKA_METADATA_KEY


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'assay.engine.stream' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
