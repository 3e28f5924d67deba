"""The ``stream-consumer`` flow: the long-running Kafka consumer (``assay.engine.stream.consume``) as a
Prefect deployment.

Scale out by starting more runs with the same ``group``: Kafka splits the topic's partitions between
them. The consumer polls the registry every ``reload_seconds`` (``Scorer.reload()``) and scores with a
newly promoted adapter from its next micro-batch on, without a restart.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger


@flow(name="stream-consumer")
def stream_consumer(registry: str, bootstrap: str, topic: str, output: str, group: str = "assay-stream",
                    dead_letter: str | None = None, device: str = "cpu", reload_seconds: float = 60.0,
                    until_end: bool = False) -> dict[str, Any]:
    """Consume ``topic`` and write every question's answers to Parquet under ``output`` until stopped
    (SIGTERM, or with ``until_end`` the end offsets seen at start)."""
    from assay.engine.scorer import Scorer
    from assay.engine.stream import StreamConfig, consume

    logger = get_run_logger()
    logger.info("consuming %s from %s as group %s into %s", topic, bootstrap, group, output)
    config = StreamConfig(bootstrap=bootstrap, topic=topic, group=group, output=output, until_end=until_end,
                          dead_letter=dead_letter, reload_seconds=reload_seconds)
    summary = consume(config, Scorer.from_registry(registry, device=device))
    logger.info("stopped (%s) after %s records, %s dead letters", summary.stopped_by, f"{summary.records:,}",
                f"{summary.dead_letters:,}")
    return {**asdict(summary), "output": str(summary.output)}
