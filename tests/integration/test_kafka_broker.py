"""Our Kafka test infrastructure: infra/kafka/start.sh, stop.sh, fetch.sh and the KafkaBroker handle in
tests/kafka_broker.py. Kafka's own behaviour (partitions, consumer groups) is the streaming tests' business."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kafka_broker as broker_module
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka_broker import SCRIPTS, KafkaBroker, KafkaBrokerError, free_ports, run_script

pytestmark = pytest.mark.kafka

# What the scripts need before they look for java / mvn (bash for `#!/usr/bin/env bash`).
BASE_TOOLS = ("bash", "dirname", "cat", "sed", "cut", "sha256sum", "mkdir", "flock", "rm", "timeout", "tr", "grep")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def bare_path(tmp_path: Path, without: str) -> str:
    """A PATH that has the scripts' basic tools but not `without` (java or mvn)."""
    folder = tmp_path / f"bin-without-{without}"
    folder.mkdir()
    for tool in BASE_TOOLS:
        (folder / tool).symlink_to(shutil.which(tool))
    assert shutil.which(without, path=str(folder)) is None
    return str(folder)


def jvm_alive(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s}s"
        time.sleep(0.2)


# ---- refusals: clear messages, nothing started ---------------------------------------------------
def test_start_on_a_busy_port_fails_with_a_clear_message(tmp_path, busy_port):
    result = run_script("start.sh", port=busy_port, data_dir=tmp_path, KAFKA_CONTROLLER_PORT=str(free_ports(1)[0]))
    assert result.returncode == 1
    assert f"port 127.0.0.1:{busy_port} is already in use by another process" in result.stderr
    assert "pick another KAFKA_PORT" in result.stderr
    assert not (tmp_path / "kafka.pid").exists() and not (tmp_path / "server.properties").exists()
    # the controller port is checked too
    result = run_script("start.sh", port=free_ports(1)[0], data_dir=tmp_path, KAFKA_CONTROLLER_PORT=str(busy_port))
    assert result.returncode == 1 and f"127.0.0.1:{busy_port} is already in use" in result.stderr


def test_handle_does_not_retry_a_port_it_was_given(tmp_path, busy_port):
    with pytest.raises(KafkaBrokerError, match=f"127.0.0.1:{busy_port} is already in use"):
        KafkaBroker.start(port=busy_port, data_dir=tmp_path)


@pytest.mark.parametrize("port", ["abc", "0", "70000", "9092 "])
def test_a_bad_port_setting_is_refused(tmp_path, port):
    for script in ("start.sh", "stop.sh"):
        result = subprocess.run([str(SCRIPTS / script)], env={**os.environ, "KAFKA_PORT": port,
                                "KAFKA_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (script, result)
        assert f"KAFKA_PORT must be a TCP port number, got '{port}'" in result.stderr


def test_missing_java_is_named(tmp_path):
    env = {**os.environ, "PATH": bare_path(tmp_path, "java"), "KAFKA_PORT": str(free_ports(1)[0]),
           "KAFKA_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "'java' not found on PATH" in result.stderr, result


def test_fetch_refetches_when_the_pom_changes_and_names_a_missing_maven(tmp_path):
    """A copy of the scripts whose pom.xml differs from the cache stamp must fetch, and says it needs mvn."""
    copy = tmp_path / "kafka"
    copy.mkdir()
    shutil.copy(SCRIPTS / "fetch.sh", copy)
    (copy / "pom.xml").write_text((SCRIPTS / "pom.xml").read_text() + "<!-- changed -->\n")
    result = subprocess.run([str(copy / "fetch.sh")], env={**os.environ, "PATH": bare_path(tmp_path, "mvn")},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert "'mvn' not found on PATH" in result.stderr and not (copy / ".cache" / "lib").exists()


# ---- stop: idempotent, and it never kills what is not its broker -----------------------------------
def test_stop_is_idempotent_and_spares_a_process_that_reused_the_pid(tmp_path):
    port = free_ports(1)[0]
    for _ in range(2):  # nothing ever started here
        result = run_script("stop.sh", port=port, data_dir=tmp_path)
        assert result.returncode == 0 and "not running" in result.stdout
    bystander = subprocess.Popen(["sleep", "300"])
    threading.Thread(target=bystander.wait, daemon=True).start()  # reaped at once if killed, as init would
    try:
        for stale in (str(bystander.pid), "not-a-pid"):  # a pid file left by a crash; the pid now someone else's
            (tmp_path / "kafka.pid").write_text(stale)
            result = run_script("stop.sh", port=port, data_dir=tmp_path, timeout_s=60)
            assert result.returncode == 0 and "not running" in result.stdout, result
            assert not (tmp_path / "kafka.pid").exists()
        assert bystander.poll() is None, "stop.sh killed a process that is not its broker"
    finally:
        bystander.kill()
        bystander.wait()


# ---- a real broker's lifecycle ----------------------------------------------------------------------
def test_fetch_is_instant_once_cached(kafka_broker, tmp_path):
    """The session broker fetched the jars; a second fetch needs no Maven and prints nothing."""
    started = time.monotonic()
    result = subprocess.run([str(SCRIPTS / "fetch.sh")], env={**os.environ, "PATH": bare_path(tmp_path, "mvn")},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == result.stderr == "", result
    assert time.monotonic() - started < 5


def test_lifecycle(tmp_path, monkeypatch, busy_port):
    """Start retries past a port taken meanwhile; re-start is a no-op; stop leaves no JVM and is idempotent;
    a restart on the same data dir reuses the fetched jars and the formatted storage (topics survive)."""
    offered = iter([[busy_port, free_ports(1)[0]]])
    monkeypatch.setattr(broker_module, "free_ports", lambda count: next(offered, None) or free_ports(count))
    broker = KafkaBroker.start(data_dir=tmp_path / "data")
    try:
        assert broker.port != busy_port, "the handle must retry on fresh ports when its pick was taken"
        pid = int((broker.data_dir / "kafka.pid").read_text())
        again = run_script("start.sh", port=broker.port, data_dir=broker.data_dir)
        assert again.returncode == 0 and f"already running on 127.0.0.1:{broker.port} (pid {pid}" in again.stdout
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic("kept", num_partitions=1, replication_factor=1)])
        finally:
            admin.close()
    finally:
        broker.stop()
    wait_until(lambda: not jvm_alive(pid), 5, "the broker JVM to exit after stop()")
    assert not (broker.data_dir / "kafka.pid").exists()
    broker.stop()  # the handle: a second stop is a no-op
    assert "not running" in run_script("stop.sh", port=broker.port, data_dir=broker.data_dir).stdout

    properties = (broker.data_dir / "server.properties").read_text()
    controller = properties.split("controller.quorum.bootstrap.servers=127.0.0.1:")[1].split()[0]
    restart = run_script("start.sh", port=broker.port, data_dir=broker.data_dir)  # no KAFKA_CONTROLLER_PORT
    try:
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert "reusing formatted data dir" in restart.stdout and "fetch.sh: resolving" not in restart.stdout
        assert f"controller 127.0.0.1:{controller}," in restart.stdout, "the formatted storage's controller port"
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
        try:
            assert "kept" in admin.list_topics()
        finally:
            admin.close()
    finally:
        assert run_script("stop.sh", port=broker.port, data_dir=broker.data_dir).returncode == 0


def test_watchdog_stops_the_broker_when_its_owner_dies(tmp_path):
    owner = subprocess.Popen(["sleep", "300"])
    port, controller = free_ports(2)
    try:
        result = run_script("start.sh", port=port, data_dir=tmp_path, KAFKA_OWNER_PID=str(owner.pid),
                            KAFKA_CONTROLLER_PORT=str(controller))
        assert result.returncode == 0, result.stdout + result.stderr
        pid = int((tmp_path / "kafka.pid").read_text())
        assert jvm_alive(pid)
    finally:
        owner.kill()
        owner.wait()
    try:
        pid_file = tmp_path / "kafka.pid"  # stop.sh removes it just after the JVM has gone
        wait_until(lambda: not jvm_alive(pid) and not pid_file.exists(), 45,
                   "the watchdog to stop the broker of a dead owner (JVM gone, pid file removed)")
    finally:
        run_script("stop.sh", port=port, data_dir=tmp_path)
