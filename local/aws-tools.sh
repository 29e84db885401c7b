#!/usr/bin/env bash
# Installs the AWS build and lint tools into the per-user cache, each in its own Python venv,
# reusing what is there: AWS SAM CLI (sam build / sam validate), cfn-lint, and cargo-lambda
# (with zig, for cross-compiling to Lambda's arm64). Prints their paths. Idempotent.
#
#   local/aws-tools.sh   install what is missing, then print SAM=..., CFN_LINT=...,
#                        CARGO_LAMBDA_DIR=... and RIE=... (the Lambda Runtime Interface Emulator)
set -euo pipefail

CACHE="${EMOSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emostream}"
SAM_VERSION="1.170.0"
CFN_LINT_VERSION="1.51.0"
CARGO_LAMBDA_VERSION="1.9.2"
SAM_DIR="$CACHE/aws-sam-cli-$SAM_VERSION"
CFN_DIR="$CACHE/cfn-lint-$CFN_LINT_VERSION"
LAMBDA_DIR="$CACHE/cargo-lambda-$CARGO_LAMBDA_VERSION"

say() { printf '[aws-tools] %s\n' "$*" >&2; }

# install_venv DIR WHAT PACKAGES...: a venv at DIR with PACKAGES, marked complete only on success.
install_venv() {
  local dir="$1" what="$2"
  shift 2
  [[ -f "$dir/.complete" ]] && return 0
  say "installing $what into $dir (a few minutes the first time)..."
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --disable-pip-version-check --progress-bar off -q "$@"
  touch "$dir/.complete"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.aws-tools.lock"
flock 9
install_venv "$SAM_DIR" "AWS SAM CLI $SAM_VERSION" "aws-sam-cli==$SAM_VERSION"
install_venv "$CFN_DIR" "cfn-lint $CFN_LINT_VERSION" "cfn-lint==$CFN_LINT_VERSION"
install_venv "$LAMBDA_DIR" "cargo-lambda $CARGO_LAMBDA_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
# SAM ships AWS's Lambda Runtime Interface Emulator, which runs natively (no container).
RIE="$(find "$SAM_DIR" -name 'aws-lambda-rie-x86_64' -type f | head -n 1)"
printf 'SAM=%s\nCFN_LINT=%s\nCARGO_LAMBDA_DIR=%s\nRIE=%s\n' "$SAM_DIR/bin/sam" "$CFN_DIR/bin/cfn-lint" "$LAMBDA_DIR/bin" "$RIE"
