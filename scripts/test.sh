#!/usr/bin/env bash
# Runs every test suite of opswire: the README's test command, and what CI
# runs (.ci/run). Needs a Rust toolchain (rustup, Rust >= the rust-version of
# Cargo.toml) on a Debian 12 machine, run as root (or with a passwordless
# apt-get); installs everything else it needs first, idempotently (skips what
# is present): build-essential, pkg-config, curl, python3, Prometheus and
# Alertmanager, docker-compose (it only parses the compose file), Redis and
# nginx here, and
# Chromium, Node.js, npm and the locked npm packages in scripts/test-web.sh.
# Prints how long each stage took at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# Stages and their durations, for the summary at the end.
stage_names=()
stage_secs=()
stage_start=""
stage() {
  stage_end
  stage_names+=("$1")
  stage_start=$(date +%s.%N)
  printf '\n== %s\n' "$1"
}
stage_end() {
  [[ -n "$stage_start" ]] || return 0
  stage_secs+=("$(awk -v a="$stage_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')")
  stage_start=""
}
summary() {
  local rc=$? i total=0
  stage_end
  ((${#stage_secs[@]})) || return 0
  printf '\n== stage times\n'
  for i in "${!stage_secs[@]}"; do
    printf '%6s s  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
    total=$((total + stage_secs[i]))
  done
  printf '%6s s  total%s\n' "$total" "$( ((rc == 0)) || echo " (failed in: ${stage_names[-1]})")"
}
trap summary EXIT

stage "setup: Debian packages, rustfmt and clippy"
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need_apt+=(build-essential)
have pkg-config || need_apt+=(pkg-config)
have curl || need_apt+=(curl)
have python3 || need_apt+=(python3)
# Real Alertmanager (+ amtool) and Prometheus (+ promtool) for the alerting
# tests; docker-compose only parses the compose file (no engine needed).
have prometheus-alertmanager || need_apt+=(prometheus-alertmanager)
have amtool || need_apt+=(prometheus-alertmanager)
have promtool || need_apt+=(prometheus)
have docker-compose || need_apt+=(docker-compose)
# Cluster mode's tests run a real Redis (and the stack check a real nginx
# in front of two opswire replicas).
have redis-server || need_apt+=(redis-server)
have redis-cli || need_apt+=(redis-tools)
have nginx || need_apt+=(nginx)
# A CA and a certificate for the rediss:// (TLS) test.
have openssl || need_apt+=(openssl)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! have cargo; then
  echo "cargo is required: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
# Each component on its own: rustfmt may be there without clippy.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
printf '%s\n' "$(cargo --version)" "$(rustc --version)"

stage "format"
cargo fmt --all -- --check

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "unit, integration and fuzz-target tests"
cargo test --workspace --lib --tests --locked

stage "wire fuzzer: mutated WebSocket and HTTP traffic against the binary (dev and auth)"
FUZZ_TARGETS=0 bash scripts/test-fuzz.sh

stage "the stack: promtool, amtool, compose, dashboards, live /metrics"
CHECK_STACK_REQUIRE_CLUSTER=1 bash scripts/check-stack.sh

stage "browser tests (dashboard, headless Chromium)"
bash scripts/test-web.sh

stage "benchmark peers (Node ws, Socket.IO, raw writer) with opswire-bench"
bash scripts/test-peers.sh

stage_end
printf '\n== all suites passed\n'
