"""Integration tests against the real Kafka broker started by infra/kafka (kafka-python clients)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from kafka_broker import KafkaBroker, run_script

pytestmark = pytest.mark.kafka

N_RECORDS = 90


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _produce(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Send n keyed JSON records; return key -> partition reported by the broker."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    try:
        futures = {f"rec-{i}": producer.send(topic, key=f"rec-{i}", value={"id": i, "text": f"record {i}"}) for i in range(n)}
        producer.flush()
        return {key: fut.get(timeout=10).partition for key, fut in futures.items()}
    finally:
        producer.close()


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10,
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
    )
    consumer.subscribe([topic])
    return consumer


def _poll_until(consumer: KafkaConsumer, enough: int, timeout_s: float = 30.0) -> list:
    """Poll until at least `enough` records arrived (fails after timeout_s)."""
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < enough:
        assert time.monotonic() < deadline, f"only {len(records)}/{enough} records within {timeout_s}s"
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_create_topic_with_three_partitions(kafka_broker: KafkaBroker) -> None:
    topic = _unique("created")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        admin.wait_for_topics([topic], timeout_ms=10_000)
        (described,) = admin.describe_topics([topic])
        assert described["error_code"] == 0
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_auto_created_topic_gets_default_partitions(kafka_broker: KafkaBroker) -> None:
    topic = _unique("auto")
    partitions = _produce(kafka_broker.bootstrap, topic, 30)
    assert set(partitions.values()) == {0, 1, 2}


def test_group_resumes_after_committed_offsets_exactly_once(kafka_broker: KafkaBroker) -> None:
    topic, group = _unique("resume"), _unique("group")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    produced = _produce(kafka_broker.bootstrap, topic, N_RECORDS)
    assert set(produced.values()) == {0, 1, 2}, "key hashing should spread records over all partitions"

    first = _consumer(kafka_broker.bootstrap, topic, group)
    try:
        part1 = _poll_until(first, N_RECORDS // 3)
        first.commit()  # commits the position after every record returned by poll
        committed = {tp: first.committed(tp) for tp in first.assignment()}
    finally:
        first.close(autocommit=False)

    second = _consumer(kafka_broker.bootstrap, topic, group)
    try:
        part2 = _poll_until(second, N_RECORDS - len(part1))
        assert second.poll(timeout_ms=1000) == {}, "no records beyond the produced ones"
        second.commit()
        ends = second.end_offsets(list(second.assignment()))
        assert {tp: second.committed(tp) for tp in ends} == ends
    finally:
        second.close(autocommit=False)

    for partition in range(3):  # the second consumer starts exactly at each partition's committed offset
        start = committed[TopicPartition(topic, partition)] or 0
        assert all(r.offset < start for r in part1 if r.partition == partition)
        resumed = [r.offset for r in part2 if r.partition == partition]
        assert not resumed or min(resumed) == start
    keys = [rec.key for rec in part1 + part2]
    assert len(keys) == N_RECORDS and set(keys) == set(produced), "every record exactly once"
    for rec in part1 + part2:
        assert rec.partition == produced[rec.key], "a key always lands on the partition it was sent to"
        assert rec.value["id"] == int(rec.key.removeprefix("rec-"))


def test_broker_lifecycle_scripts(tmp_path: Path) -> None:
    """A second broker on its own ports: start is reported ready, re-start is a no-op, stop leaves no JVM."""
    broker = KafkaBroker.start(data_dir=tmp_path / "data")
    try:
        pid = int((broker.data_dir / "kafka.pid").read_text())
        again = _script_output("start.sh", broker)
        assert "already running" in again
        assert _produce(broker.bootstrap, _unique("lifecycle"), 3)
    finally:
        broker.stop()
    assert not Path(f"/proc/{pid}").exists(), "broker JVM must be gone after stop()"
    assert not (broker.data_dir / "kafka.pid").exists()
    assert "not running" in _script_output("stop.sh", broker)



def _script_output(name: str, broker: KafkaBroker) -> str:
    result = run_script(name, port=broker.port, data_dir=broker.data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout
