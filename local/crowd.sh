#!/usr/bin/env bash
# `make crowd`: many listeners on one stream under the emulated AWS quotas, while 200 viewers
# tap 1,000 reactions/s for 60 s, to show that no listener is starved.
#
#   local/crowd.sh [LISTENERS] [extra emostream-load options for the tapping run]
#
# A process may hold at most `ulimit -n` files, one socket per listener, so the stack and the
# load generator run in processes of their own.
#
# DELIVERY=WebSocketApi (default): the WebSocket API (10 ms per @connections call, 10,000
# requests/s shared, 500 connects/s), where one stream's audience may need more posts than the
# account allows per interval. LISTENERS defaults to the open-file limit less 500.
#
# DELIVERY=AppSyncEvents: AppSync Events subscribers, more than one process may hold. Two
# relay processes (local/src/event_api/relay.rs), subscribed to the stack's Event API, hold
# half of them each, splitting AppSync's 2,000 connects/s; two listen-only load processes hold
# one half each and report each subscriber's delivery latency. LISTENERS defaults to 20,400.
#
# Function logs go to target/crowd-logs/, the figures to target/crowd*.json; the stack's
# summary, with what its quotas refused, is printed when it stops.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

DELIVERY="${DELIVERY:-WebSocketApi}"
LIMIT="$(ulimit -n)"
case "$DELIVERY" in
  WebSocketApi) LISTENERS="${1:-$((LIMIT - 500))}"; PER_PROCESS="$LISTENERS" ;;
  AppSyncEvents) LISTENERS="${1:-20400}"; PER_PROCESS=$(( (LISTENERS + 1) / 2 )) ;;
  *) echo "DELIVERY must be WebSocketApi or AppSyncEvents, not $DELIVERY" >&2; exit 2 ;;
esac
shift || true
if (( PER_PROCESS + 500 > LIMIT )); then
  echo "[crowd] $PER_PROCESS listeners per process need more than this shell's open-file limit ($LIMIT)" >&2
  exit 2
fi
if [[ -z "${KAFKA_BROKERS:-}" || -z "${MONGODB_URI:-}" ]]; then
  exec "$HERE/servers.sh" run -- "$0" "$LISTENERS" "$@"
fi

HTTP_PORT="${CROWD_HTTP_PORT:-3100}"
WEBSOCKET_PORT="${CROWD_WEBSOCKET_PORT:-3101}"
EVENT_PORT="${CROWD_EVENT_PORT:-3102}"
RELAY_PORT="${CROWD_RELAY_PORT:-3103}"
KEY="da2-crowd$(date +%s)"
mkdir -p target/crowd-logs
STACK_OPTIONS=()
if [[ "$DELIVERY" == AppSyncEvents ]]; then
  STACK_OPTIONS=(--parameter Delivery=AppSyncEvents --event-api-port "$EVENT_PORT"
    --event-api-key "$KEY" --event-connects-per-second 1000)
fi
target/release/emostream-local \
  --template template.yaml \
  --binaries target/release \
  --http-port "$HTTP_PORT" \
  --websocket-port "$WEBSOCKET_PORT" \
  "${STACK_OPTIONS[@]}" \
  --concurrency 6 \
  --batching-window-ms 100 \
  --function-logs target/crowd-logs &
PIDS="$!"
STACK="$PIDS"
# SIGTERM: a background job of a script ignores SIGINT.
trap 'kill -TERM $PIDS 2>/dev/null || true; wait 2>/dev/null || true' EXIT

echo "[crowd] waiting for the local stack..." >&2
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then break; fi
  kill -0 "$STACK" 2>/dev/null || { echo "[crowd] the local stack exited" >&2; exit 1; }
  sleep 0.1
done

# The tapping run's defaults; LOAD_ARGS (the extra options) may override them.
TAPPING=(--streams 1 --viewers 200 --rate 1000 --duration 60 --settle-timeout 120)
status=0
if [[ "$DELIVERY" == WebSocketApi ]]; then
  target/release/emostream-load \
    --api "http://127.0.0.1:$HTTP_PORT" \
    --ws "ws://127.0.0.1:$WEBSOCKET_PORT/live" \
    "${TAPPING[@]}" \
    --listeners "$LISTENERS" \
    --audience "$LISTENERS" \
    --json target/crowd.json \
    "$@" || status=$?
  exit "$status"
fi

# Two relays, one per half of the audience: the stack's Event API then delivers each update to
# the relays (and the tapping run's own listeners), and the relays fan it out side by side, as
# AppSync's hosts do.
for half in a b; do
  port=$([[ $half == a ]] && echo "$RELAY_PORT" || echo "$((RELAY_PORT + 1))")
  target/release/emostream-event-relay \
    --upstream "ws://127.0.0.1:$EVENT_PORT/event/realtime" \
    --upstream-host "127.0.0.1:$EVENT_PORT" \
    --api-key "$KEY" \
    --listen "127.0.0.1:$port" \
    --connects-per-second 1000 2>"target/crowd-logs/relay-$half.log" &
  PIDS="$PIDS $!"
done
RUN_ID="crowd-$$"
# Long enough for the tapping run: its warm-up, 60 s of taps and the settling after.
LISTEN_SECONDS="${CROWD_LISTEN_SECONDS:-90}"
# What every load process is told about the stack; each then names its real-time endpoint.
EVENTS=(--api "http://127.0.0.1:$HTTP_PORT" --delivery AppSyncEvents
  --event-http-host "127.0.0.1:$EVENT_PORT" --event-api-key "$KEY" --run-id "$RUN_ID" --streams 1)
LISTENING=()
for half in a b; do
  port=$([[ $half == a ]] && echo "$RELAY_PORT" || echo "$((RELAY_PORT + 1))")
  rm -f "target/crowd-$half.ready"
  target/release/emostream-load "${EVENTS[@]}" \
    --event-realtime-url "ws://127.0.0.1:$port/event/realtime" \
    --listen-only \
    --listeners "$PER_PROCESS" \
    --duration "$LISTEN_SECONDS" \
    --settle-timeout 120 \
    --ready-file "target/crowd-$half.ready" \
    --json "target/crowd-$half.json" >"target/crowd-logs/listen-$half.out" 2>"target/crowd-logs/listen-$half.err" &
  LISTENING+=("$!")
  PIDS="$PIDS $!"
done
echo "[crowd] connecting $((PER_PROCESS * 2)) subscribers (half through each relay)..." >&2
while [[ ! -f target/crowd-a.ready || ! -f target/crowd-b.ready ]]; do
  kill -0 "${LISTENING[0]}" 2>/dev/null && kill -0 "${LISTENING[1]}" 2>/dev/null \
    || { echo "[crowd] a listen-only process exited; see target/crowd-logs/listen-*.err" >&2; exit 1; }
  sleep 0.5
done

target/release/emostream-load "${EVENTS[@]}" \
  --event-realtime-url "ws://127.0.0.1:$EVENT_PORT/event/realtime" \
  "${TAPPING[@]}" \
  --listeners 2 \
  --audience "$((PER_PROCESS * 2 + 2))" \
  --json target/crowd.json \
  "$@" || status=$?
for i in 0 1; do
  wait "${LISTENING[$i]}" || status=$?
  half=$([[ $i == 0 ]] && echo a || echo b)
  echo "[crowd] subscribers $half:" >&2
  cat "target/crowd-logs/listen-$half.out"
done
exit "$status"
