#!/usr/bin/env bash
# Installs the servers emostream's local stack and tests need when Docker is not available:
# a Kafka-wire broker (noida-db, from PyPI) and a MongoDB-wire server (secantusd-rs, built from
# crates.io). Idempotent; installs go to a per-user cache outside the clone, so every clone and
# every CI run on this machine reuses them.
#
#   local/deps.sh          install what is missing, then print where the servers are
#   local/deps.sh paths    print where the servers are (fails if not installed)
#
# EMOSTREAM_CACHE overrides the cache directory (default: ~/.cache/emostream).
set -euo pipefail

CACHE="${EMOSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emostream}"
NOIDA_VERSION="0.2.3"
SECANTUS_VERSION="0.5.3-beta.196"
NOIDA_DIR="$CACHE/noida-$NOIDA_VERSION"
SECANTUS_DIR="$CACHE/secantus-$SECANTUS_VERSION"
NOIDA_BIN="$NOIDA_DIR/bin/noida-db"
SECANTUSD_BIN="$SECANTUS_DIR/bin/secantusd-rs"

say() { printf '[deps] %s\n' "$*" >&2; }

print_paths() {
  printf 'NOIDA_BIN=%s\nSECANTUSD_BIN=%s\n' "$NOIDA_BIN" "$SECANTUSD_BIN"
}

installed() { [[ -x "$NOIDA_BIN" && -f "$NOIDA_DIR/.complete" && -x "$SECANTUSD_BIN" ]]; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_noida() {
  [[ -x "$NOIDA_BIN" && -f "$NOIDA_DIR/.complete" ]] && return 0
  say "installing noida-db $NOIDA_VERSION (Kafka-wire broker) into $NOIDA_DIR"
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "$NOIDA_DIR"
  python3 -m venv "$NOIDA_DIR"
  "$NOIDA_DIR/bin/pip" install --quiet --disable-pip-version-check "noida-db==$NOIDA_VERSION"
  touch "$NOIDA_DIR/.complete"
}

install_secantus() {
  [[ -x "$SECANTUSD_BIN" ]] && return 0
  say "building secantusd-rs $SECANTUS_VERSION (MongoDB-wire server); about 5 minutes, once per machine; cargo shows its progress"
  apt_install cmake zlib1g-dev build-essential
  local staging="$CACHE/.secantus-staging"
  rm -rf "$staging"
  CARGO_TARGET_DIR="$CACHE/.secantus-build" cargo install secantus-mdb \
    --version "$SECANTUS_VERSION" --locked --ignore-rust-version --root "$staging"
  rm -rf "$SECANTUS_DIR"
  mv "$staging" "$SECANTUS_DIR"
  rm -rf "$CACHE/.secantus-build"
}

case "${1:-install}" in
  paths)
    installed || { say "servers not installed: run local/deps.sh"; exit 1; }
    print_paths
    ;;
  install)
    mkdir -p "$CACHE"
    # One installer at a time per cache (make demo and make test may race).
    exec 9>"$CACHE/.install.lock"
    flock 9
    if installed; then
      say "servers already installed in $CACHE"
    else
      install_noida
      install_secantus
    fi
    print_paths
    ;;
  *)
    echo "usage: local/deps.sh [install|paths]" >&2
    exit 2
    ;;
esac
