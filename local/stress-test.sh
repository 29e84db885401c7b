#!/usr/bin/env bash
# Runs the workspace's tests (unit, integration, end-to-end and browser, as `make test` runs
# them, each run against freshly started servers) RUNS times in a row while stress-ng keeps
# every core busy, and prints "N passed, M failed" at the end. A test that fails here depends on
# the machine being idle: fix the test, not the machine.
#
#   local/stress-test.sh [RUNS]     RUNS defaults to 5
#
# STRESS_WORKERS sets how many CPU hogs run (default: one per core). Logs of every run go to
# target/stress/run-N.log. Exits non-zero if any run failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
RUNS="${1:-5}"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "usage: local/stress-test.sh [RUNS] (a positive number)" >&2; exit 2; }
CARGO="${CARGO:-cargo}"
say() { printf '[stress] %s\n' "$*" >&2; }

if ! command -v stress-ng >/dev/null 2>&1; then
  say "installing stress-ng (Debian package)"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq stress-ng >/dev/null
fi

cd "$ROOT"
# Everything the tests need, and the test binaries themselves, before the cores are taken:
# the question is whether the tests hold on a busy machine, not how slowly cargo builds on one.
say "installing the servers and browser tools, building the tests"
make --no-print-directory toolchain deps web-deps
local/aws-tools.sh >/dev/null
"$CARGO" test --workspace --locked --no-run

workers="${STRESS_WORKERS:-$(nproc)}"
stress-ng --cpu "$workers" --timeout 0 --quiet &
hog=$!
run_group=""
# Stopping the script (Ctrl-C) stops the hog and the run in progress with its servers.
cleanup() {
  kill "$hog" 2>/dev/null || true
  [[ -n "$run_group" ]] && kill -TERM -- "-$run_group" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say "stress-ng keeps $workers core(s) busy (pid $hog)"

mkdir -p target/stress
passed=0
failed=0
for run in $(seq 1 "$RUNS"); do
  log="target/stress/run-$run.log"
  started=$SECONDS
  # A process group of its own, so that stopping the script stops all of it.
  setsid local/servers.sh run -- "$CARGO" test --workspace --locked --no-fail-fast >"$log" 2>&1 &
  run_group=$!
  if wait "$run_group"; then
    passed=$((passed + 1))
    say "run $run of $RUNS passed in $((SECONDS - started)) s"
  else
    failed=$((failed + 1))
    say "run $run of $RUNS FAILED in $((SECONDS - started)) s; failing tests (log: $log):"
    grep -E '^test .* FAILED$|^    [a-z_:]+$|panicked at' "$log" | head -n 20 >&2 || true
  fi
  run_group=""
done
echo "$passed passed, $failed failed"
((failed == 0))
