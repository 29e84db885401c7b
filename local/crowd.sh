#!/usr/bin/env bash
# `make crowd`: many listeners on one stream under the emulated AWS quotas (10 ms per
# @connections call, 10,000 requests/s shared, 500 connects/s), to show that no listener is
# starved when one stream's audience needs more posts than the account allows per interval.
#
#   local/crowd.sh [LISTENERS] [extra emostream-load options]
#
# The local stack runs in a process of its own and the load generator in another: each holds
# one socket per listener, and a process may hold at most `ulimit -n` files (LISTENERS defaults
# to that limit less 500 for everything else either process opens). Function logs go to
# target/crowd-logs/, the figures to target/crowd.json; the stack's summary, with the requests
# and connects its quotas refused, is printed when it stops.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

LIMIT="$(ulimit -n)"
LISTENERS="${1:-$((LIMIT - 500))}"
shift || true
if (( LISTENERS + 500 > LIMIT )); then
  echo "[crowd] $LISTENERS listeners need more than this shell's open-file limit ($LIMIT) allows per process" >&2
  exit 2
fi
if [[ -z "${KAFKA_BROKERS:-}" || -z "${MONGODB_URI:-}" ]]; then
  exec "$HERE/servers.sh" run -- "$0" "$LISTENERS" "$@"
fi

HTTP_PORT="${CROWD_HTTP_PORT:-3100}"
WEBSOCKET_PORT="${CROWD_WEBSOCKET_PORT:-3101}"
mkdir -p target/crowd-logs
target/release/emostream-local \
  --template template.yaml \
  --binaries target/release \
  --http-port "$HTTP_PORT" \
  --websocket-port "$WEBSOCKET_PORT" \
  --concurrency 6 \
  --batching-window-ms 100 \
  --function-logs target/crowd-logs &
STACK=$!
# SIGTERM: a background job of a script ignores SIGINT.
trap 'kill -TERM "$STACK" 2>/dev/null || true; wait "$STACK" 2>/dev/null || true' EXIT

echo "[crowd] waiting for the local stack..." >&2
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then break; fi
  kill -0 "$STACK" 2>/dev/null || { echo "[crowd] the local stack exited" >&2; exit 1; }
  sleep 0.1
done

status=0
target/release/emostream-load \
  --api "http://127.0.0.1:$HTTP_PORT" \
  --ws "ws://127.0.0.1:$WEBSOCKET_PORT/live" \
  --streams 1 \
  --listeners "$LISTENERS" \
  --viewers 200 \
  --rate 1000 \
  --duration 60 \
  --settle-timeout 120 \
  --audience "$LISTENERS" \
  --json target/crowd.json \
  "$@" || status=$?
exit "$status"
