# Shared settings and helpers for start.sh / stop.sh (sourced, not run).
# Env: KAFKA_PORT (default 9092), KAFKA_DATA_DIR (default infra/kafka/.run/<port>).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${KAFKA_PORT:-9092}"
[[ "$port" =~ ^[0-9]+$ ]] && (( port > 0 && port < 65535 )) || {
  echo "kafka: KAFKA_PORT must be a TCP port number, got '$port'" >&2
  exit 2
}
data="${KAFKA_DATA_DIR:-$here/.run/$port}"
pidfile="$data/kafka.pid"
logfile="$data/kafka.log"

# Print the pid from the pid file if that process is alive and is this broker.
broker_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $data/server.properties" || return 1
  echo "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True when 127.0.0.1:$1 answers a Kafka Metadata (v4) request listing at least one broker.
kafka_ready() {
  local reply
  # size=20 | api_key=3 (Metadata) | version=4 | correlation_id=1 | client_id="probe" | topics=[] | allow_auto_create=false
  reply="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 &&
    printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x01\x00\x05probe\x00\x00\x00\x00\x00' >&3 &&
    head -c 16 <&3" 2>/dev/null | od -An -v -tx1 | tr -d ' \n')" || return 1
  # reply: size(4) correlation_id(4)=1 throttle_ms(4) broker_count(4)
  [[ ${#reply} -eq 32 && "${reply:8:8}" == "00000001" && "${reply:24:8}" != "00000000" ]]
}
