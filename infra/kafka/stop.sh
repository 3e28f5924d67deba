#!/usr/bin/env bash
# Stop the broker started by start.sh for KAFKA_PORT / KAFKA_DATA_DIR:
# SIGTERM (clean shutdown), wait KAFKA_STOP_TIMEOUT seconds (30), then SIGKILL. Removes the pid file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

wait_s="${KAFKA_STOP_TIMEOUT:-30}"
if ! pid="$(broker_pid)"; then
  rm -f "$pidfile"
  echo "kafka: not running on 127.0.0.1:$port (data $data)"
  exit 0
fi
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + wait_s))
while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then
  echo "kafka: pid $pid ignored SIGTERM for ${wait_s}s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
rm -f "$pidfile"
echo "kafka: stopped (pid $pid, port $port)"
