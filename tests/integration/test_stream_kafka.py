"""The Kafka consumer against the real broker: exactly-once output through SIGKILL crashes, a member
killed mid-run, malformed messages, SIGTERM, adapter reloads. No mocks: real `assay consume`
processes, real PEFT adapters on a tiny random Llama base, real Parquet read back with pyarrow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from engine_fixtures import WORDS, make_adapter, make_llama_base, publish
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka_broker import free_ports

from assay.engine.scorer import Scorer
from assay.engine.stream import KAFKA_METADATA_KEY, StreamConfig, consume, produce
from assay.engine.stream.files import partition_dir, segment_path, segments
from assay.schemas.output import RunMetadata, write_parquet_atomic
from assay.schemas.registry import Registry

pytestmark = pytest.mark.kafka

QUESTIONS = ("toxic", "insult", "threat")
ASSAY = str(Path(sys.executable).with_name("assay"))
SESSION_TIMEOUT = "6"  # the broker's minimum: a killed member's partitions move after 6 s
N_KILL = 6_000  # default run; the 20,000-record variant is marked slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream_registry")
    base = make_llama_base(root / "base", layers=2)
    for seed, qid in enumerate(QUESTIONS):
        adapter = make_adapter(base, root / "adapters" / qid, 20 + seed, 4, ["q_proj", "v_proj"], head="score")
        publish(root / "registry", qid, 1, adapter, base, max_length=64)
    return root / "registry"


@pytest.fixture(scope="module")
def scorer(registry) -> Iterator[Scorer]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # leaves a core to the consumer subprocesses and the broker
    try:
        yield Scorer.from_registry(Registry(registry))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """The consumer subprocesses a test starts; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _texts(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]
    return pa.table({"id": [f"r{seed}-{i}" for i in range(n)], "text": texts,
                     "source": ["test"] * n})


def _topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"stream-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def _load(bootstrap: str, topic: str, table: pa.Table, folder: Path) -> None:
    path = folder / f"{topic}.parquet"
    pq.write_table(table, path)
    assert produce(path, bootstrap, topic, progress=False) == table.num_rows


def _start(procs: list, registry: Path, bootstrap: str, topic: str, group: str, output: Path, log: Path, *extra: str):
    args = [ASSAY, "consume", "--registry", str(registry), "--bootstrap", bootstrap, "--topic", topic,
            "--group", group, "--output", str(output), "--batch-records", "300", "--batch-seconds", "0.5",
            "--session-timeout", SESSION_TIMEOUT, "--log-seconds", "1", *extra]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}  # the 2 shared cores: no OpenMP spinning
    procs.append(subprocess.Popen(args, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env))
    return procs[-1]


def _config(bootstrap: str, topic: str, group: str, output: Path, **settings) -> StreamConfig:
    """An in-process consumer's settings: up to the end offsets, with the broker's shortest session."""
    return StreamConfig(bootstrap, topic, group, output, until_end=True, session_timeout_s=6, **settings)


def _answer_files(output: Path, topic: str) -> list[Path]:
    return sorted((output / topic).glob("p*/*.parquet"))


def _wait_for_files(output: Path, topic: str, more_than: int, proc, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len(_answer_files(output, topic)) <= more_than:
        assert proc.poll() is None, f"consumer exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no new output within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def _check_exactly_once(output: Path, topic: str, records: pa.Table, scorer: Scorer) -> pa.Table:
    """Every record exactly once, answers equal to scoring directly, files contiguous per partition."""
    for folder in sorted((output / topic).iterdir()):
        spans = [(start, end) for start, end, _ in segments(folder)]
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])), (folder, spans)
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    got = pa.concat_tables([pq.read_table(p) for p in _answer_files(output, topic)], promote_options="default")
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == records.num_rows and set(ids) == set(records.column("id").to_pylist())
    expected = scorer.score_table(records.select(["id", "text"]))
    order = {record_id: k for k, record_id in enumerate(ids)}
    rows = np.array([order[i] for i in expected.column("id").to_pylist()])
    for qid in scorer.question_ids:
        want_p = expected.column(f"{qid}_p").to_numpy()
        got_p = got.column(f"{qid}_p").to_numpy()[rows]
        assert np.abs(got_p - want_p).max() < 1e-5, qid
        clear = np.abs(want_p - 0.5) > 1e-4
        assert (got.column(qid).to_numpy(zero_copy_only=False)[rows][clear] == (want_p >= 0.5)[clear]).all(), qid
    assert set(json.loads(m)["source"] for m in got.column("metadata").to_pylist()) == {"test"}
    return got


def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(consumer.partitions_for_topic(topic))}
    finally:
        consumer.close(autocommit=False)


def _file_ends(output: Path, topic: str, partitions: int = 3) -> dict[int, int | None]:
    """End offset of each partition's last answer file; None where a partition has none (its folder may
    still exist, emptied of a killed member's temp file, with nothing committed)."""
    ends = {p: [end for _, end, _ in segments(partition_dir(output, topic, p))] for p in range(partitions)}
    return {p: found[-1] if found else None for p, found in ends.items()}


def _kill_and_restart(procs, registry, scorer, bootstrap, tmp_path, n: int) -> None:
    topic, group, output = _topic(bootstrap), "g-kill", tmp_path / "out"
    records = _texts(n, seed=1)
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in records.to_pylist()))
    sent = subprocess.run([ASSAY, "produce", str(jsonl), "--bootstrap", bootstrap, "--topic", topic],
                          capture_output=True, text=True, check=True)
    assert f"{n:,} messages sent" in sent.stdout + sent.stderr
    rng = random.Random(7)
    log = tmp_path / "consume.log"
    for _ in range(3):
        before = len(_answer_files(output, topic))
        proc = _start(procs, registry, bootstrap, topic, group, output, log, "--until-end")
        # 1 to 3 batches in, then a random moment: on a quiet machine the whole topic takes a few seconds, so
        # the kill points stay early enough that the last kill still finds work left
        _wait_for_files(output, topic, before + rng.randint(0, 2), proc, log)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in _answer_files(output, topic))
    assert written < n, "the consumer finished before the last kill: nothing was tested"
    summary = consume(_config(bootstrap, topic, group, output, batch_records=500, batch_seconds=0.5), scorer)
    assert summary.stopped_by == "end" and summary.records == n - written
    _check_exactly_once(output, topic, records, scorer)
    assert _committed(bootstrap, topic, group) == _file_ends(output, topic)


def test_sigkill_three_times_then_exactly_once(procs, registry, scorer, kafka_broker, tmp_path):
    _kill_and_restart(procs, registry, scorer, kafka_broker.bootstrap, tmp_path, N_KILL)


@pytest.mark.slow
def test_sigkill_three_times_then_exactly_once_20k(procs, registry, scorer, kafka_broker, tmp_path):
    _kill_and_restart(procs, registry, scorer, kafka_broker.bootstrap, tmp_path, 20_000)


def _assigned(log: Path) -> list[int]:
    """Partitions a consumer logged as assigned, in order (a partition may repeat across rebalances)."""
    return [int(part.split(":")[0][1:]) for line in log.read_text().splitlines()
            if ": assigned;" in line for part in line.split() if part.startswith("p") and part.endswith(":")]


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}:\n{log.read_text()[-2000:]}" for log in logs)


def _wait_until(condition, what: str, logs: list[Path], procs, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(p.poll() is None for p in procs), "a consumer exited:\n" + _tails(logs)
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s:\n{_tails(logs)}"
        time.sleep(0.1)


def test_two_consumers_one_killed_then_sigterm(procs, registry, scorer, kafka_broker, tmp_path):
    """Two members share the partitions; one is SIGKILLed mid-run and the survivor takes its partitions
    over (rebalance); then SIGTERM mid-batch: exit 0, everything written committed; the rest is
    consumed afterwards and the output holds every record exactly once."""
    bootstrap = kafka_broker.bootstrap
    topic, group, output = _topic(bootstrap), "g-two", tmp_path / "out"
    records = _texts(4_000, seed=2)
    _load(bootstrap, topic, records, tmp_path)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    (port,) = free_ports(1)
    first = _start(procs, registry, bootstrap, topic, group, output, logs[0])
    second = _start(procs, registry, bootstrap, topic, group, output, logs[1], "--metrics-port", str(port))
    _wait_until(lambda: _assigned(logs[0]) and _assigned(logs[1]), "both members assigned", logs, procs)
    _wait_for_files(output, topic, 0, first, logs[0])
    seen = len(_assigned(logs[1]))
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    _wait_until(lambda: set(_assigned(logs[0])) <= set(_assigned(logs[1])[seen:]), "the survivor taking over",
                logs, [second])
    # fresh work on every partition, the taken-over ones included, so that the survivor has something to write
    # and SIGTERM comes mid-run however fast the machine drained the first load (it may be gone before the kill)
    more = _texts(6_000, seed=3)
    (tmp_path / "more").mkdir()
    _load(bootstrap, topic, more, tmp_path / "more")
    records = pa.concat_tables([records, more])
    _wait_for_files(output, topic, len(_answer_files(output, topic)), second, logs[1])
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "assay_stream_records_total" in metrics and "assay_stream_batch_seconds_bucket" in metrics
    assert 'assay_stream_adapter_version{question="toxic"} 1.0' in metrics and "assay_stream_lag{" in metrics
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0, logs[1].read_text()[-3000:]
    text = logs[1].read_text()
    assert "SIGTERM received" in text and "done (signal)" in text
    # flushed and committed: each partition's commit is the end of its files
    assert _committed(bootstrap, topic, group) == _file_ends(output, topic)
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in _answer_files(output, topic))
    assert written < records.num_rows, "nothing left when SIGTERM came: the test did not test it"
    consume(_config(bootstrap, topic, group, output, batch_records=500), scorer)
    _check_exactly_once(output, topic, records, scorer)


def test_files_written_but_not_committed_are_kept_and_skipped(scorer, kafka_broker, tmp_path):
    """The crash window between writing a file and committing it: the restarted consumer keeps that file,
    removes the stale dead-letter and temp files past it, and resumes after it."""
    bootstrap = kafka_broker.bootstrap
    topic, output = _topic(bootstrap), tmp_path / "out"
    records = _texts(600, seed=7)
    _load(bootstrap, topic, records, tmp_path)
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    reader.seek(tp, 0)
    messages = []
    while len(messages) < 100:
        messages += reader.poll(timeout_ms=1000, max_records=100 - len(messages)).get(tp, [])
    reader.close()
    rows = [json.loads(m.value) for m in messages]
    texts = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    answers = scorer.score_table(texts, "crashed")
    answers = answers.append_column(pa.field("metadata", pa.string()), pa.array([json.dumps({"source": "test"})] * 100))
    done = write_parquet_atomic(answers, segment_path(output, topic, 0, 0, 100))
    stale = [segment_path(output / "_dead_letters", topic, 0, 100, 180), done.with_name(".x.parquet.123.tmp")]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by the crash")
    inode = done.stat().st_ino
    summary = consume(_config(bootstrap, topic, "g-window", output), scorer)
    assert summary.records == 500 and done.stat().st_ino == inode and not any(p.exists() for p in stale)
    _check_exactly_once(output, topic, records, scorer)


def test_malformed_messages_go_to_dead_letters(scorer, kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic, output = _topic(bootstrap), tmp_path / "out"
    good = _texts(600, seed=3)
    bad = {b"\xff\xfe not utf-8": "not UTF-8", b"{broken json": "not JSON", b"[1, 2, 3]": "not a JSON object",
           b'{"text": "no id"}': "missing or empty id", b'{"id": "", "text": "x"}': "missing or empty id",
           b'{"id": {"a": 1}, "text": "x"}': "id is not a string", b'{"id": "n1", "text": null}': "text is null",
           b'{"id": "n2", "text": 42}': "text is not a string",
           json.dumps({"id": "n3", "text": "word " * 100}).encode(): "over the limit of 300", None: "empty message"}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    rows, bad_keys = good.to_pylist(), {}
    for k, row in enumerate(rows):
        producer.send(topic, key=row["id"].encode(), value=json.dumps(row).encode())
        if k % 60 == 0:
            for j, (value, reason) in enumerate(bad.items()):
                key = f"bad-{k}-{j}".encode()
                producer.send(topic, key=key, value=value)
                bad_keys[key] = reason
    producer.flush()
    producer.close()
    summary = consume(_config(bootstrap, topic, "g-bad", output, batch_records=250, batch_seconds=0.3,
                              max_text_chars=300), scorer)
    assert summary.records == 600 and summary.dead_letters == len(bad_keys)
    _check_exactly_once(output, topic, good, scorer)
    dead = pa.concat_tables([pq.read_table(p) for p in sorted((output / "_dead_letters" / topic).glob("p*/*.parquet"))])
    assert dead.num_rows == len(bad_keys)
    for row in dead.to_pylist():
        assert bad_keys[row["key"]] in row["reason"], row
        assert row["topic"] == topic and row["offset"] >= 0
    assert {row["raw"] for row in dead.to_pylist()} == set(bad)
    for folder in (output / "_dead_letters" / topic).iterdir():  # dead letters follow the answers' naming
        answered = {p.name for _, _, p in segments(output / topic / folder.name)}
        assert {p.name for _, _, p in segments(folder)} <= answered


def test_dead_letters_to_a_topic(scorer, kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic, dead_topic, output = _topic(bootstrap), _topic(bootstrap, partitions=1), tmp_path / "out"
    good = _texts(100, seed=8)
    _load(bootstrap, topic, good, tmp_path)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in (b"\xff", b"{oops", b'{"id": "z"}'):
        producer.send(topic, key=b"bad", value=value)
    producer.close()
    summary = consume(_config(bootstrap, topic, "g-dlt", output, dead_letter=f"kafka:{dead_topic}"), scorer)
    assert summary.records == 100 and summary.dead_letters == 3 and not (output / "_dead_letters").exists()
    reader = KafkaConsumer(dead_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                           consumer_timeout_ms=5000)
    got = {m.value: dict(m.headers) for m in reader}
    reader.close()
    assert set(got) == {b"\xff", b"{oops", b'{"id": "z"}'}
    assert got[b"{oops"]["assay.reason"].startswith(b"not JSON") and got[b"\xff"]["assay.topic"] == topic.encode()
    _check_exactly_once(output, topic, good, scorer)


def test_reload_picks_up_a_promoted_adapter_and_says_so(registry, kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    copy = tmp_path / "registry"
    for path in registry.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(registry)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(registry)).write_bytes(path.read_bytes())
    local = Scorer.from_registry(Registry(copy))
    topic, output = _topic(bootstrap), tmp_path / "out"
    _load(bootstrap, topic, _texts(200, seed=5), tmp_path)
    consume(_config(bootstrap, topic, "g-reload", output), local)
    base = Path(json.loads((copy / "toxic" / "1" / "manifest.json").read_text())["base_model"])
    adapter = make_adapter(base, tmp_path / "v2", 99, 4, ["q_proj", "v_proj"], head="score")
    publish(copy, "toxic", 2, adapter, base, max_length=64)
    _load(bootstrap, topic, _texts(200, seed=6), tmp_path)
    consume(_config(bootstrap, topic, "g-reload", output, reload_seconds=0), local)
    versions = {}
    for path in _answer_files(output, topic):
        schema = pq.read_schema(path)
        provenance = json.loads(schema.metadata[KAFKA_METADATA_KEY])
        versions[(provenance["partition"], provenance["start_offset"])] = RunMetadata.from_schema(schema).adapters
    assert {v["toxic"] for v in versions.values()} == {1, 2} and all(v["insult"] == 1 for v in versions.values())


def test_a_partition_paused_for_backpressure_is_fetched_again_after_a_rebalance(kafka_broker, tmp_path):
    """kafka-python keeps a partition's paused flag across a rebalance when the partition stays assigned. The
    poller paused it for backpressure, backpressure ended while it was revoked (so the resume skipped it), and
    it came back: it must be fetched again (a survivor once sat on 1,300 unread messages for good)."""
    from assay.engine.stream.files import Ownership
    from assay.engine.stream.poller import Poller

    bootstrap = kafka_broker.bootstrap
    topic = _topic(bootstrap, partitions=1)
    _load(bootstrap, topic, _texts(50, seed=7), tmp_path)
    poller = Poller(StreamConfig(bootstrap, topic, "g-pause", tmp_path / "out", session_timeout_s=6), Ownership())
    try:
        poller.start()
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + 60
        while tp not in poller.ownership.owned():
            assert time.monotonic() < deadline, "never assigned"
            poller.poll()
        poller.set_backpressure(True)  # batches pile up: every owned partition paused
        poller.ownership.revoke({tp})  # a rebalance: the listener fences it ...
        poller.set_backpressure(False)  # ... backpressure ends meanwhile: the resume skips the fenced partition
        poller.events.append(("assigned", {tp}))  # ... and it is assigned again, kafka-python's paused flag kept
        poller.pending.clear()
        while poller._pending_count() < 50:
            assert time.monotonic() < deadline, f"paused for good: {poller.consumer.paused()}"
            poller.poll()
        assert tp not in poller.consumer.paused()
    finally:
        poller.close()
