#!/usr/bin/env bash
# `make crowd DELIVERY=AppSyncEvents`: one stream watched by more AppSync Events subscribers than
# one process may hold connections for, while viewers tap: the local stack (its Event API holds
# half the subscribers), a relay process holding the other half (local/src/event_api/relay.rs),
# two listen-only load processes (one per half) and the load run that taps and checks exact
# counts. Every process stays under this shell's open-file limit.
#
#   local/crowd-appsync.sh [SUBSCRIBERS] [extra emostream-load options for the tapping run]
#
# The stack and the relay split AppSync's 2,000 connects/s; each subscriber's delivery latency
# (notify sending a push to the subscriber receiving it) is measured. Figures go to
# target/crowd-appsync-{a,b,run}.json, logs to target/crowd-logs/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

LIMIT="$(ulimit -n)"
SUBSCRIBERS="${1:-20400}"
shift || true
HALF=$(( (SUBSCRIBERS + 1) / 2 ))
if (( HALF + 500 > LIMIT )); then
  echo "[crowd] $HALF subscribers per process need more than this shell's open-file limit ($LIMIT)" >&2
  exit 2
fi
if [[ -z "${KAFKA_BROKERS:-}" || -z "${MONGODB_URI:-}" ]]; then
  exec "$HERE/servers.sh" run -- "$0" "$SUBSCRIBERS" "$@"
fi

HTTP_PORT="${CROWD_HTTP_PORT:-3100}"
WEBSOCKET_PORT="${CROWD_WEBSOCKET_PORT:-3101}"
EVENT_PORT="${CROWD_EVENT_PORT:-3102}"
RELAY_PORT="${CROWD_RELAY_PORT:-3103}"
KEY="da2-crowd$(date +%s)"
RUN_ID="crowd-$$"
# Long enough for the tapping run: its warm-up, 60 s of taps and the settling after.
LISTEN_SECONDS="${CROWD_LISTEN_SECONDS:-90}"
mkdir -p target/crowd-logs

target/release/emostream-local \
  --template template.yaml \
  --binaries target/release \
  --parameter Delivery=AppSyncEvents \
  --http-port "$HTTP_PORT" \
  --websocket-port "$WEBSOCKET_PORT" \
  --event-api-port "$EVENT_PORT" \
  --event-api-key "$KEY" \
  --event-connects-per-second 1000 \
  --concurrency 6 \
  --batching-window-ms 100 \
  --function-logs target/crowd-logs &
STACK=$!
target/release/emostream-event-relay \
  --upstream "ws://127.0.0.1:$EVENT_PORT/event/realtime" \
  --upstream-host "127.0.0.1:$EVENT_PORT" \
  --api-key "$KEY" \
  --listen "127.0.0.1:$RELAY_PORT" \
  --connects-per-second 1000 2>target/crowd-logs/relay.log &
RELAY=$!
PIDS="$STACK $RELAY"
# SIGTERM: a background job of a script ignores SIGINT.
trap 'kill -TERM $PIDS 2>/dev/null || true; wait 2>/dev/null || true' EXIT

echo "[crowd] waiting for the local stack..." >&2
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then break; fi
  kill -0 "$STACK" 2>/dev/null || { echo "[crowd] the local stack exited" >&2; exit 1; }
  sleep 0.1
done

# What every load process is told about the stack; a listen-only one then names its endpoint.
STACK_ARGS=(--api "http://127.0.0.1:$HTTP_PORT" --delivery AppSyncEvents
  --event-http-host "127.0.0.1:$EVENT_PORT" --event-api-key "$KEY" --run-id "$RUN_ID" --streams 1)
listen() { # NAME REALTIME_URL
  rm -f "target/crowd-appsync-$1.ready"
  target/release/emostream-load "${STACK_ARGS[@]}" \
    --event-realtime-url "$2" \
    --listen-only \
    --listeners "$HALF" \
    --duration "$LISTEN_SECONDS" \
    --settle-timeout 120 \
    --ready-file "target/crowd-appsync-$1.ready" \
    --json "target/crowd-appsync-$1.json" >"target/crowd-logs/listen-$1.out" 2>"target/crowd-logs/listen-$1.err" &
}
listen a "ws://127.0.0.1:$EVENT_PORT/event/realtime"
LISTEN_A=$!
listen b "ws://127.0.0.1:$RELAY_PORT/event/realtime"
LISTEN_B=$!
PIDS="$PIDS $LISTEN_A $LISTEN_B"
echo "[crowd] connecting $((HALF * 2)) subscribers (half through the relay)..." >&2
while [[ ! -f target/crowd-appsync-a.ready || ! -f target/crowd-appsync-b.ready ]]; do
  kill -0 "$LISTEN_A" 2>/dev/null && kill -0 "$LISTEN_B" 2>/dev/null \
    || { echo "[crowd] a listen-only process exited; see target/crowd-logs/listen-*.err" >&2; exit 1; }
  sleep 0.5
done

status=0
target/release/emostream-load "${STACK_ARGS[@]}" \
  --event-realtime-url "ws://127.0.0.1:$EVENT_PORT/event/realtime" \
  --listeners 2 \
  --viewers 200 \
  --rate 1000 \
  --duration 60 \
  --settle-timeout 120 \
  --audience "$((HALF * 2 + 2))" \
  --json target/crowd-appsync-run.json \
  "$@" || status=$?
for half in a b; do
  wait_for=$([[ $half == a ]] && echo "$LISTEN_A" || echo "$LISTEN_B")
  wait "$wait_for" || status=$?
  echo "[crowd] subscribers $half:" >&2
  cat "target/crowd-logs/listen-$half.out"
done
exit "$status"
