"""The consumer's pure step: a micro-batch of Kafka messages in, answers and dead-letter tables out.

No I/O: the messages are already fetched, the tables are written by ``writer``. The records of all the
batch's segments are scored in one call (one padded batch for the engine), then cut back per segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from assay.schemas.output import output_schema

from .messages import DEAD_LETTER_SCHEMA, Record, parse_message

if TYPE_CHECKING:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from assay.engine.scorer import Scorer

KAFKA_METADATA_KEY = b"assay_kafka"


@dataclass(frozen=True)
class Segment:
    """One partition's messages in a micro-batch: offsets ``[start, end)``, cut under ownership ``epoch``."""

    partition: TopicPartition
    epoch: int
    start: int
    end: int
    messages: list[ConsumerRecord]


@dataclass(frozen=True)
class ScoredSegment:
    """A segment's answers (output schema + ``metadata``, Kafka provenance) and its dead letters (or None)."""

    segment: Segment
    answers: pa.Table
    dead_letters: pa.Table | None


def parse_segment(segment: Segment, max_text_chars: int) -> tuple[list[Record], list[dict]]:
    """The usable records of a segment and a dead-letter row (``DEAD_LETTER_SCHEMA``) for each other message."""
    good, dead = [], []
    for message in segment.messages:
        result = parse_message(message.value, max_text_chars)
        if isinstance(result, Record):
            good.append(result)
        else:
            dead.append({"topic": message.topic, "partition": message.partition, "offset": message.offset,
                         "timestamp_ms": message.timestamp, "key": message.key, "raw": message.value,
                         "reason": result})
    return good, dead


def score_batch(scorer: Scorer, segments: list[Segment], run_id: str, group: str,
                max_text_chars: int) -> list[ScoredSegment]:
    """Parse and score a micro-batch; one ``ScoredSegment`` per segment, in order."""
    parsed = [(segment, *parse_segment(segment, max_text_chars)) for segment in segments]
    records = [record for _, good, _ in parsed for record in good]
    if records:
        texts = pa.table({"id": pa.array([r.id for r in records], pa.string()),
                          "text": pa.array([r.text for r in records], pa.string())})
        scored = scorer.score_table(texts, run_id=run_id)
    else:
        scored = output_schema(scorer.question_ids, scorer.metadata(run_id)).empty_table()
    done, row = [], 0
    for segment, good, dead in parsed:
        answers = scored.slice(row, len(good))
        row += len(good)
        answers = answers.append_column(pa.field("metadata", pa.string()),
                                        pa.array([r.metadata for r in good], pa.string()))
        provenance = {"topic": segment.partition.topic, "partition": segment.partition.partition,
                      "start_offset": segment.start, "end_offset": segment.end, "group": group}
        answers = answers.replace_schema_metadata(
            {**(scored.schema.metadata or {}), KAFKA_METADATA_KEY: json.dumps(provenance).encode()})
        dead_table = pa.Table.from_pylist(dead, schema=DEAD_LETTER_SCHEMA) if dead else None
        done.append(ScoredSegment(segment, answers, dead_table))
    return done
