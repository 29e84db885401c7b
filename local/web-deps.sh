#!/usr/bin/env bash
# Installs what the browser tests need, reusing what is there: Debian's Chromium and an emoji
# font (apt), and playwright-core (npm, pinned by web/tests/package-lock.json); also DejaVu, the
# text font of the load generator's plot. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
say() { printf '[web-deps] %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
  say "installing ${missing[*]} with apt-get (a few minutes the first time)..."
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v node >/dev/null 2>&1 || { say "Node.js is required (node and npm)"; exit 1; }

cd "$ROOT/web/tests"
stamp="node_modules/.installed-lock"
if [[ ! -f "$stamp" ]] || ! cmp -s package-lock.json "$stamp"; then
  say "installing playwright-core (npm ci)..."
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
say "chromium $(chromium --version 2>/dev/null | awk '{print $2}'), playwright-core ready"
