#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, no AWS and no Docker.
#   1. installs the Kafka-wire broker and the MongoDB-wire server (local/deps.sh), unless
#      KAFKA_BROKERS and MONGODB_URI name servers to use;
#   2. builds the three function binaries and the local stack (release; DEMO_PROFILE=dev for a
#      faster debug build);
#   3. starts the servers, then the local stack, which creates the topics, runs the functions
#      as template.yaml wires them, registers and starts three sample streams (the page's
#      suggestions), serves the browser client and prints the URLs. A simulated crowd taps
#      `final` with a scripted spike every two minutes (its moments appear on the page), and
#      another taps `warm-up` for four minutes and ends it (a recording to replay).
# Ctrl-C stops everything it started. Function logs go to target/demo-logs/<function>.log.
# DELIVERY=AppSyncEvents (make demo DELIVERY=AppSyncEvents) delivers through the emulated AWS
# AppSync Events API instead of the WebSocket API (DELIVERY=WebSocketApi, the default).
# Viewer identity is on, with the local demo issuer: the page asks for a name and signs in
# (IDENTITY=off runs without it, as a stack without JwtIssuer does).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

PROFILE="${DEMO_PROFILE:-release}"
DELIVERY="${DELIVERY:-WebSocketApi}"
case "$DELIVERY" in
  WebSocketApi|AppSyncEvents) ;;
  *) echo "DELIVERY must be WebSocketApi or AppSyncEvents, not $DELIVERY" >&2; exit 2 ;;
esac
IDENTITY="${IDENTITY:-on}"
case "$IDENTITY" in
  on) IDENTITY_ARGS=(--demo-issuer --demo-issuer-port "${DEMO_ISSUER_PORT:-3003}") ;;
  off) IDENTITY_ARGS=() ;;
  *) echo "IDENTITY must be on or off, not $IDENTITY" >&2; exit 2 ;;
esac
case "$PROFILE" in
  release) TARGET_DIR="target/release" ;;
  dev) TARGET_DIR="target/debug" ;;
  *) echo "DEMO_PROFILE must be release or dev, not $PROFILE" >&2; exit 2 ;;
esac

if [[ -z "${KAFKA_BROKERS:-}" || -z "${MONGODB_URI:-}" ]]; then
  echo "[demo] installing the local servers if needed (local/deps.sh)..." >&2
  "$HERE/deps.sh" install >/dev/null
fi
echo "[demo] building the functions and the local stack ($PROFILE)..." >&2
cargo build --locked --profile "$PROFILE" --bins \
  -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-local

mkdir -p target/demo-logs
exec "$HERE/servers.sh" run -- "$TARGET_DIR/emostream-local" \
  --template template.yaml \
  --binaries "$TARGET_DIR" \
  --web web \
  --http-port "${DEMO_HTTP_PORT:-3000}" \
  --websocket-port "${DEMO_WEBSOCKET_PORT:-3001}" \
  --event-api-port "${DEMO_EVENT_API_PORT:-3002}" \
  --parameter "Delivery=$DELIVERY" \
  --web-port "${DEMO_WEB_PORT:-8080}" \
  --batching-window-ms "${DEMO_BATCHING_WINDOW_MS:-100}" \
  --function-logs target/demo-logs \
  --live-stream ind-vs-aus --live-stream eng-vs-nz \
  --demo-crowd final --demo-recording warm-up \
  "${IDENTITY_ARGS[@]}" \
  "$@"
