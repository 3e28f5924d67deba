#!/usr/bin/env bash
# Start a single-node Apache Kafka 4.x broker (KRaft, broker+controller) on 127.0.0.1.
# Env: KAFKA_PORT (9092), KAFKA_DATA_DIR (infra/kafka/.run/<port>), KAFKA_CONTROLLER_PORT (port+1),
#      KAFKA_START_TIMEOUT seconds (90), KAFKA_HEAP ("-Xms256m -Xmx512m"),
#      KAFKA_OWNER_PID (optional: stop the broker once this process is gone).
# Returns once the broker answers Kafka Metadata requests; prints log tail and fails otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

formatted=0
[[ -f "$data/logs/meta.properties" ]] && formatted=1
# A formatted data dir keeps its controller port (the KRaft voter endpoint is stored in the metadata log).
prev_cport="$( ((formatted)) && sed -n 's/^controller.quorum.bootstrap.servers=127.0.0.1:\([0-9]*\)$/\1/p' "$data/server.properties" 2>/dev/null || true)"
cport="${KAFKA_CONTROLLER_PORT:-${prev_cport:-$((port + 1))}}"
timeout_s="${KAFKA_START_TIMEOUT:-90}"
heap="${KAFKA_HEAP:--Xms256m -Xmx512m}"

command -v java >/dev/null 2>&1 || {
  echo "kafka: 'java' not found on PATH; the Kafka broker needs Java 17+." >&2
  exit 2
}
if pid="$(broker_pid)"; then
  echo "kafka: already running on 127.0.0.1:$port (pid $pid, data $data)"
  exit 0
fi
rm -f "$pidfile"
for p in "$port" "$cport"; do
  if port_open "$p"; then
    echo "kafka: port 127.0.0.1:$p is already in use by another process; pick another KAFKA_PORT / KAFKA_CONTROLLER_PORT" >&2
    exit 1
  fi
done

"$here/fetch.sh"
lib="$here/.cache/lib"
mkdir -p "$data/logs"

cat >"$data/server.properties" <<PROPS
# Written by infra/kafka/start.sh
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS

started=$SECONDS
if ((formatted)); then
  echo "kafka: reusing formatted data dir $data"
else
  # 16 random bytes, base64url; like Kafka's own Uuid.randomUuid, never starting with '-' (the format
  # tool's argument parser would read such an id as an option: "--cluster-id expected one argument").
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  if ! java -cp "$lib/*" -Dlog4j2.configurationFile="$here/log4j2.properties" kafka.tools.StorageTool \
      format --standalone -t "$cluster_id" -c "$data/server.properties" >"$data/format.log" 2>&1; then
    echo "kafka: formatting storage in $data/logs failed:" >&2
    tail -n 30 "$data/format.log" >&2
    exit 1
  fi
fi

# setsid: the broker outlives this script (make kafka-up) and ignores the caller's terminal signals.
# shellcheck disable=SC2086
setsid java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$data" \
  -cp "$lib/*" kafka.Kafka "$data/server.properties" </dev/null >"$logfile" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

if [[ -n "${KAFKA_OWNER_PID:-}" ]]; then
  # Watchdog: if the owner dies without calling stop.sh (e.g. killed test run), stop the broker.
  KAFKA_PORT="$port" KAFKA_DATA_DIR="$data" setsid bash -c \
    'while kill -0 "$1" 2>/dev/null; do kill -0 "$2" 2>/dev/null || exit 0; sleep 1; done; exec "$3/stop.sh"' \
    watchdog "$KAFKA_OWNER_PID" "$pid" "$here" </dev/null >/dev/null 2>&1 &
fi

deadline=$((SECONDS + timeout_s))
until kafka_ready "$port"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "kafka: broker exited during startup; last lines of $logfile:" >&2
    tail -n 40 "$logfile" >&2
    rm -f "$pidfile"
    exit 1
  fi
  if (( SECONDS >= deadline )); then
    echo "kafka: broker not ready on 127.0.0.1:$port after ${timeout_s}s; last lines of $logfile:" >&2
    tail -n 40 "$logfile" >&2
    KAFKA_PORT="$port" KAFKA_DATA_DIR="$data" "$here/stop.sh" >&2
    exit 1
  fi
  sleep 0.3
done
echo "kafka: ready on 127.0.0.1:$port (controller 127.0.0.1:$cport, pid $pid, data $data, $((SECONDS - started)) s)"
