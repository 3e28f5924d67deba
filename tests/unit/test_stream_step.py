"""The consumer's pure step and its writer, without a broker: real messages objects (kafka-python's
``ConsumerRecord``), a real Scorer on a tiny random Llama with two PEFT adapters, real Parquet files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_fixtures import WORDS, make_adapter, make_llama_base
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from assay.engine.scorer import Scorer
from assay.engine.stream import KAFKA_METADATA_KEY, StreamConfig
from assay.engine.stream.files import Ownership, segment_path
from assay.engine.stream.messages import DEAD_LETTER_SCHEMA
from assay.engine.stream.step import Segment, parse_segment, score_batch
from assay.engine.stream.writer import DeadLetters, write_batch
from assay.schemas.output import RunMetadata

TOPIC = "comments"


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    root = tmp_path_factory.mktemp("step")
    base = make_llama_base(root / "base", layers=2)
    scorer = Scorer(base)
    for seed, qid in enumerate(("toxic", "insult")):
        scorer.add_adapter(qid, make_adapter(base, root / qid, 30 + seed, 4, ["q_proj", "v_proj"], head="score"),
                           version=seed + 1)
    return scorer


def _message(partition: int, offset: int, value: bytes | None, key: bytes | None = None) -> ConsumerRecord:
    return ConsumerRecord(TOPIC, partition, 0, offset, 1_700_000_000_000 + offset, 0, key, value, [], None,
                          -1, -1 if value is None else len(value), -1)


def _segment(partition: int, start: int, values: list[bytes | None], epoch: int = 1) -> Segment:
    messages = [_message(partition, start + k, value, key=f"k{k}".encode()) for k, value in enumerate(values)]
    return Segment(TopicPartition(TOPIC, partition), epoch, start, start + len(values), messages)


def _good(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"id": f"r{seed}-{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(1, 30))),
                        "lang": "en"}).encode() for i in range(n)]


def test_parse_segment_keeps_offsets_and_raw_bytes_of_dead_letters():
    values = [_good(1, 0)[0], b"\xff", None, b'{"id": "x"}']
    good, dead = parse_segment(_segment(2, 40, values), max_text_chars=1_000)
    assert [r.id for r in good] == ["r0-0"]
    assert [(d["offset"], d["raw"], d["key"], d["partition"]) for d in dead] == [
        (41, b"\xff", b"k1", 2), (42, None, b"k2", 2), (43, b'{"id": "x"}', b"k3", 2)]
    assert pa.Table.from_pylist(dead, schema=DEAD_LETTER_SCHEMA).num_rows == 3  # the rows fit the schema


def test_one_batch_scored_and_cut_back_per_segment(scorer):
    first = _good(5, 1) + [b"{broken", b'{"id": "n", "text": 3}'] + _good(4, 2)
    second = _good(7, 3)
    segments = [_segment(0, 100, first), _segment(1, 0, second, epoch=4)]
    done = score_batch(scorer, segments, run_id="run-1", group="scoring", max_text_chars=1_000)
    assert [d.segment for d in done] == segments
    direct = scorer.score_table(pa.table({
        "id": [json.loads(v)["id"] for v in first[:5] + first[7:] + second],
        "text": [json.loads(v)["text"] for v in first[:5] + first[7:] + second]}))
    got = pa.concat_tables([d.answers.drop_columns(["metadata"]) for d in done])
    assert got.column("id").to_pylist() == direct.column("id").to_pylist()
    for qid in ("toxic", "insult"):
        assert np.abs(got.column(f"{qid}_p").to_numpy() - direct.column(f"{qid}_p").to_numpy()).max() < 1e-5
    assert [d.answers.num_rows for d in done] == [9, 7]
    assert set(done[0].answers.column("metadata").to_pylist()) == {json.dumps({"lang": "en"})}
    provenance = [json.loads(d.answers.schema.metadata[KAFKA_METADATA_KEY]) for d in done]
    assert provenance == [{"topic": TOPIC, "partition": 0, "start_offset": 100, "end_offset": 111, "group": "scoring"},
                          {"topic": TOPIC, "partition": 1, "start_offset": 0, "end_offset": 7, "group": "scoring"}]
    run = RunMetadata.from_schema(done[1].answers.schema)
    assert run.run_id == "run-1" and run.adapters == {"toxic": 1, "insult": 2}
    assert done[0].dead_letters.column("offset").to_pylist() == [105, 106] and done[1].dead_letters is None


def test_a_batch_of_only_bad_messages_gives_empty_answers_with_the_schema(scorer):
    (done,) = score_batch(scorer, [_segment(0, 0, [b"nope", None])], "run-2", "g", max_text_chars=10)
    assert done.answers.num_rows == 0 and done.dead_letters.num_rows == 2
    assert done.answers.column_names == ["id", "toxic", "toxic_p", "insult", "insult_p", "metadata"]
    assert json.loads(done.answers.schema.metadata[KAFKA_METADATA_KEY])["end_offset"] == 2


def test_the_step_is_pure(scorer):
    segments = [_segment(0, 0, _good(6, 4) + [b"x"])]
    before = [m.value for m in segments[0].messages]
    one, two = (score_batch(scorer, segments, "run-3", "g", 1_000) for _ in range(2))
    assert one[0].answers.equals(two[0].answers) and one[0].dead_letters.equals(two[0].dead_letters)
    assert [m.value for m in segments[0].messages] == before


def test_writer_puts_dead_letters_beside_answers_and_drops_fenced_segments(scorer, tmp_path: Path):
    config = StreamConfig("127.0.0.1:1", TOPIC, "g", tmp_path / "out")  # dead letters to a folder: no broker
    ownership = Ownership()
    owned, revoked = ownership.grant(TopicPartition(TOPIC, 0)), ownership.grant(TopicPartition(TOPIC, 1))
    ownership.revoke([TopicPartition(TOPIC, 1)])
    segments = [_segment(0, 10, _good(3, 5) + [b"\xff"], epoch=owned), _segment(1, 0, _good(2, 6), epoch=revoked)]
    dead_letters = DeadLetters(config)
    written = write_batch(score_batch(scorer, segments, "run-4", "g", 1_000), config.output, dead_letters, ownership)
    dead_letters.close()
    assert written.segments == segments[:1] and written.records == 3 and written.files == 2
    assert dict(written.dead) == {"not_utf8": 1}
    answers = pq.read_table(segment_path(config.output, TOPIC, 0, 10, 14))
    assert answers.num_rows == 3 and answers.column("id").to_pylist() == [f"r5-{i}" for i in range(3)]
    dead = pq.read_table(segment_path(config.dead_letter_folder, TOPIC, 0, 10, 14))
    assert dead.column("offset").to_pylist() == [13]
    assert not (config.output / TOPIC / "p1").exists()  # fenced off: nothing written for the revoked partition
