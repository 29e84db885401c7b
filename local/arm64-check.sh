#!/usr/bin/env bash
# Runs the arm64 artifacts of `sam build` (.aws-sam/build/*/bootstrap) on this x86_64 machine
# under qemu user emulation, behind the local stack, and drives a short load through all three
# with the exactness check. Proves the cross-built binaries start, reach Kafka and MongoDB and
# count exactly. (Init times and memory under emulation say nothing about Lambda's.)
#   make sam-build && local/arm64-check.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
say() { printf '[arm64-check] %s\n' "$*" >&2; }

for id in IngestFunction AggregateFunction NotifyFunction; do
  [[ -x ".aws-sam/build/$id/bootstrap" ]] || { say "no .aws-sam/build/$id/bootstrap: run make sam-build first"; exit 1; }
done
if ! command -v qemu-aarch64-static >/dev/null || [[ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]]; then
  say "installing qemu-user-static and the arm64 C library..."
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static libc6-arm64-cross >/dev/null
fi
cargo build --locked --bins -p emostream-local -p emostream-load
wrappers="$(mktemp -d)"
trap 'rm -rf "$wrappers"' EXIT
for pair in ingest:IngestFunction aggregate:AggregateFunction notify:NotifyFunction; do
  printf '#!/bin/sh\nexec qemu-aarch64-static -L /usr/aarch64-linux-gnu %s "$@"\n' \
    "$ROOT/.aws-sam/build/${pair##*:}/bootstrap" >"$wrappers/${pair%%:*}"
  chmod +x "$wrappers/${pair%%:*}"
done
exec "$HERE/servers.sh" run -- target/debug/emostream-load --start-stack --binaries "$wrappers" \
  --instances 2 --rate 40 --duration 8 --viewers 4 --streams 1 --listeners 1 --settle-timeout 90
