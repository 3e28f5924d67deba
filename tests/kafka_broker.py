"""A real single-node Kafka broker for tests, run through infra/kafka/start.sh and stop.sh."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "infra" / "kafka"
_PORT_ATTEMPTS = 3
# start.sh may fetch the jars with Maven first (minutes), then waits up to KAFKA_START_TIMEOUT (90 s).
SCRIPT_TIMEOUT_S = 900.0


class KafkaBrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message carries the script output."""


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class KafkaBroker:
    """Handle on a running broker; create it with `KafkaBroker.start()`, end it with `stop()`."""

    def __init__(self, port: int, data_dir: Path, owns_data_dir: bool) -> None:
        self.port = port
        self.data_dir = data_dir
        self._owns_data_dir = owns_data_dir
        self._running = True

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for Kafka clients, e.g. "127.0.0.1:40123"."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's log file (stdout and stderr of the JVM)."""
        return self.data_dir / "kafka.log"

    @classmethod
    def start(cls, port: int | None = None, data_dir: Path | None = None) -> KafkaBroker:
        """Start a broker and return once it serves requests.

        port=None picks free broker and controller ports (retrying if a port is taken meanwhile);
        data_dir=None uses a fresh temporary directory that `stop()` deletes.
        The broker is also stopped by a watchdog if this Python process dies without calling stop().
        """
        owns_data_dir = data_dir is None
        attempts = _PORT_ATTEMPTS if port is None else 1
        error = ""
        for _ in range(attempts):
            env = {"KAFKA_OWNER_PID": str(os.getpid())}
            if port is None:
                broker_port, controller_port = free_ports(2)
                env["KAFKA_CONTROLLER_PORT"] = str(controller_port)
            else:
                broker_port = port
            run_dir = Path(tempfile.mkdtemp(prefix="assay-kafka-")) if owns_data_dir else Path(data_dir)
            result = run_script("start.sh", port=broker_port, data_dir=run_dir, **env)
            if result.returncode == 0:
                return cls(broker_port, run_dir, owns_data_dir)
            error = _describe(result)
            if owns_data_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
            if "already in use" not in error:
                break
        raise KafkaBrokerError(f"could not start the Kafka broker:\n{error}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after a timeout) and delete its temporary data dir. Idempotent."""
        if not self._running:
            return
        result = run_script("stop.sh", port=self.port, data_dir=self.data_dir)
        if result.returncode != 0:
            raise KafkaBrokerError(f"could not stop the Kafka broker:\n{_describe(result)}")
        self._running = False
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_script(name: str, port: int, data_dir: Path, timeout_s: float = SCRIPT_TIMEOUT_S,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Run an infra/kafka script (start.sh / stop.sh) for this port and data dir, capturing its output.

    A script still running after `timeout_s` is killed and raises subprocess.TimeoutExpired (a hung
    script must fail the test run, not hang it).
    """
    script_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [str(SCRIPTS / name)], env=script_env, capture_output=True, text=True, check=False, timeout=timeout_s
    )


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    """The exit status and output of a finished script, for error messages."""
    return f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}{result.stderr}".rstrip()
