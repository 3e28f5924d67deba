"""Every setting of one Kafka consumer, in one frozen object: defaults stated once, checked once.

``StreamConfig`` is what ``consume`` takes; the CLI (``assay consume``) builds one from the options given
and the flows build one from their parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEAD_LETTER_FOLDER = "_dead_letters"
TOPIC_PREFIX = "kafka:"


class StreamConfigError(ValueError):
    """A setting out of range: ``field`` names it, ``problem`` says what is allowed."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"StreamConfig.{field} {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class StreamConfig:
    """Where to read and write, how to cut micro-batches, and how the consumer runs.

    ``dead_letter`` is a folder or ``"kafka:TOPIC"`` (default ``OUTPUT/_dead_letters``). With ``until_end``
    the consumer stops once the end offsets taken at start are committed group-wide.
    """

    bootstrap: str  # HOST:PORT[,HOST:PORT]
    topic: str
    group: str
    output: Path
    until_end: bool = False
    dead_letter: str | Path | None = None
    batch_records: int = 2_000  # a micro-batch is cut at this many records...
    batch_seconds: float = 2.0  # ...or after this many seconds, whichever comes first
    max_in_flight: int = 2  # micro-batches scored/written at once; beyond, fetching pauses
    reload_seconds: float = 60.0  # how often the registry is checked for newly promoted adapters
    metrics_port: int | None = None  # Prometheus /metrics on this port when set
    log_seconds: float = 15.0  # one status line this often
    max_text_chars: int = 100_000  # longer texts go to the dead letters
    session_timeout_s: float = 10.0  # before the group gives a dead member's partitions away

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        for name in ("bootstrap", "topic", "group"):
            if not str(getattr(self, name)).strip():
                raise StreamConfigError(name, "must not be empty")
        for name, low in (("batch_records", 1), ("max_in_flight", 1), ("max_text_chars", 1),
                          ("session_timeout_s", 1.0), ("reload_seconds", 0.0)):
            if getattr(self, name) < low:
                raise StreamConfigError(name, f"must be at least {low}, got {getattr(self, name)}")
        for name in ("batch_seconds", "log_seconds"):
            if getattr(self, name) <= 0:
                raise StreamConfigError(name, f"must be more than 0, got {getattr(self, name)}")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise StreamConfigError("metrics_port", f"must be a TCP port (1-65535), got {self.metrics_port}")
        if str(self.dead_letter or "") == TOPIC_PREFIX:
            raise StreamConfigError("dead_letter", f"{TOPIC_PREFIX!r} needs a topic name: {TOPIC_PREFIX}TOPIC")

    @property
    def dead_letter_topic(self) -> str | None:
        """The topic bad messages are sent to (``--dead-letter kafka:TOPIC``), or None for a folder."""
        text = str(self.dead_letter or "")
        return text[len(TOPIC_PREFIX):] if text.startswith(TOPIC_PREFIX) else None

    @property
    def dead_letter_folder(self) -> Path | None:
        """The folder of dead-letter segment files, or None when they go to a topic."""
        if self.dead_letter_topic is not None:
            return None
        return Path(self.dead_letter) if self.dead_letter else self.output / DEAD_LETTER_FOLDER
