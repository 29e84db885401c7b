#!/usr/bin/env bash
# Starts and stops the Kafka-wire broker and MongoDB-wire server on free loopback ports, for
# the tests and the local stack. It stops exactly the processes it started (recorded in its
# state directory) and deletes their data.
#
#   local/servers.sh start [--owner-pid PID]
#       start both servers, wait until they answer, print KAFKA_BROKERS=... and MONGODB_URI=...,
#       the state directory (EMOSTREAM_SERVERS=...) and the bound the local stack puts on the
#       topics it creates on this broker (EMOSTREAM_TOPIC_RETENTION_BYTES=...: the broker saves
#       its whole log about once a second, so its CPU grows with what it holds; see
#       docs/local-stack.md). With --owner-pid, they are stopped automatically once that
#       process exits.
#   local/servers.sh stop STATE_DIR
#   local/servers.sh restart STATE_DIR kafka|mongo [--freeze SECONDS]
#       stop one server (SIGTERM, as an operator or a maintenance event does, so it keeps what
#       it acknowledged) and start it again on the same port and data, waiting until it
#       answers; with --freeze, stop it with SIGSTOP instead and let it go on after SECONDS
#       (connections stay open and nothing answers: a hung server or a partitioned network).
#   local/servers.sh run -- COMMAND [ARGS...]
#       run COMMAND with KAFKA_BROKERS and MONGODB_URI set; servers are started for it unless
#       both variables are already set (then the given servers are reused), and stopped after.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/servers.sh"
say() { printf '[servers] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$2 accepts connections, failing early if process $1 died.
wait_for_port() {
  local pid="$1" port="$2" name="$3" log="$4"
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during start-up; its log:"
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  say "$name did not answer on port $port within 30 s; its log:"
  tail -n 20 "$log" >&2 || true
  return 1
}

stop_servers() {
  local state="$1"
  [[ -f "$state/pids" ]] || return 0
  # Each server was started as its own process group (setsid), so signalling the group also
  # reaches helper processes a launcher may have spawned.
  local pids
  pids="$(cat "$state/pids")"
  for pid in $pids; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in $pids; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    ((alive == 0)) && break
    sleep 0.1
  done
  for pid in $pids; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$state"
}

# Starts server $2 (kafka or mongo) of state directory $1 in its own process group, on the port
# and data directory recorded there; sets LAUNCHED to its pid.
launch_server() {
  local state="$1" name="$2" binary port
  binary="$(cat "$state/$name.bin")"
  port="$(cat "$state/$name.port")"
  case "$name" in
    mongo)
      setsid "$binary" --config "$state/secantusd.toml" --host 127.0.0.1 --port "$port" \
        --storage-path "$state/mongo-data" --cache-size 256M --log-file-max 16MB --log-level WARNING \
        >>"$state/mongo.log" 2>&1 </dev/null &
      ;;
    kafka)
      setsid "$binary" start --only kafka --host 127.0.0.1 --kafka-port "$port" \
        --data-dir "$state/kafka-data" >>"$state/kafka.log" 2>&1 </dev/null &
      ;;
  esac
  LAUNCHED=$!
}

# The pids file holds the MongoDB server's pid on line 1 and the broker's on line 2.
server_line() { if [[ "$1" == mongo ]]; then echo 1; else echo 2; fi; }

restart_server() {
  local state="$1" name="$2" freeze=""
  [[ "${3:-}" == "--freeze" ]] && freeze="$4"
  [[ -f "$state/$name.port" ]] || { say "no $name server recorded in $state"; return 2; }
  local line pid port
  line="$(server_line "$name")"
  pid="$(sed -n "${line}p" "$state/pids")"
  port="$(cat "$state/$name.port")"
  if [[ -n "$freeze" ]]; then
    kill -STOP -- "-$pid"
    sleep "$freeze"
    kill -CONT -- "-$pid"
    say "$name was frozen for $freeze s"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    # Said, because a killed server may lose what it acknowledged.
    say "$name did not stop within 10 s of SIGTERM; killing it (SIGKILL)"
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  launch_server "$state" "$name"
  sed -i "${line}s/.*/$LAUNCHED/" "$state/pids"
  wait_for_port "$LAUNCHED" "$port" "$name" "$state/$name.log"
  say "$name restarted on port $port"
}

start_servers() {
  local owner=""
  if [[ "${1:-}" == "--owner-pid" ]]; then owner="$2"; fi
  local paths noida secantusd
  paths="$("$HERE/deps.sh" install)"
  noida="$(sed -n 's/^NOIDA_BIN=//p' <<<"$paths")"
  secantusd="$(sed -n 's/^SECANTUSD_BIN=//p' <<<"$paths")"

  local state
  state="$(mktemp -d "${TMPDIR:-/tmp}/emostream-servers.XXXXXX")"
  mkdir -p "$state/kafka-data" "$state/mongo-data"
  : >"$state/pids"
  local kafka_port mongo_port
  kafka_port="$(free_port)"
  mongo_port="$(free_port)"

  # An empty config file stops secantusd-rs from reading a user's ~/.secantus settings.
  : >"$state/secantusd.toml"
  printf '%s\n' "$secantusd" >"$state/mongo.bin"
  printf '%s\n' "$noida" >"$state/kafka.bin"
  printf '%s\n' "$mongo_port" >"$state/mongo.port"
  printf '%s\n' "$kafka_port" >"$state/kafka.port"
  launch_server "$state" mongo
  echo "$LAUNCHED" >>"$state/pids"
  launch_server "$state" kafka
  echo "$LAUNCHED" >>"$state/pids"

  local mongo_pid kafka_pid
  mongo_pid="$(sed -n 1p "$state/pids")"
  kafka_pid="$(sed -n 2p "$state/pids")"
  if ! wait_for_port "$kafka_pid" "$kafka_port" "Kafka broker (noida-db)" "$state/kafka.log" ||
    ! wait_for_port "$mongo_pid" "$mongo_port" "MongoDB server (secantusd-rs)" "$state/mongo.log"; then
    stop_servers "$state"
    return 1
  fi

  if [[ -n "$owner" ]]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"' \
      watchdog "$owner" "$SELF" "$state" >/dev/null 2>&1 </dev/null &
  fi
  say "Kafka on 127.0.0.1:$kafka_port, MongoDB on 127.0.0.1:$mongo_port (state in $state)"
  printf 'KAFKA_BROKERS=127.0.0.1:%s\n' "$kafka_port"
  printf 'MONGODB_URI=mongodb://127.0.0.1:%s/?directConnection=true\n' "$mongo_port"
  printf 'EMOSTREAM_SERVERS=%s\n' "$state"
  printf 'EMOSTREAM_TOPIC_RETENTION_BYTES=%s\n' "${EMOSTREAM_TOPIC_RETENTION_BYTES-2097152}"
}

case "${1:-}" in
  start)
    shift
    start_servers "$@"
    ;;
  stop)
    [[ -n "${2:-}" ]] || { echo "usage: local/servers.sh stop STATE_DIR" >&2; exit 2; }
    stop_servers "$2"
    ;;
  restart)
    [[ -n "${2:-}" && "${3:-}" =~ ^(kafka|mongo)$ ]] ||
      { echo "usage: local/servers.sh restart STATE_DIR kafka|mongo [--freeze SECONDS]" >&2; exit 2; }
    restart_server "$2" "$3" "${4:-}" "${5:-}"
    ;;
  run)
    shift
    [[ "${1:-}" == "--" ]] && shift
    (($# > 0)) || { echo "usage: local/servers.sh run -- COMMAND [ARGS...]" >&2; exit 2; }
    if [[ -n "${KAFKA_BROKERS:-}" && -n "${MONGODB_URI:-}" ]]; then
      say "reusing KAFKA_BROKERS=$KAFKA_BROKERS and MONGODB_URI=$MONGODB_URI"
      exec "$@"
    fi
    started="$(start_servers --owner-pid $$)"
    state="$(sed -n 's/^EMOSTREAM_SERVERS=//p' <<<"$started")"
    trap 'stop_servers "$state"' EXIT
    trap 'exit 130' INT TERM
    while IFS= read -r line; do export "${line?}"; done <<<"$started"
    "$@"
    ;;
  *)
    sed -n '2,22p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
