#!/usr/bin/env bash
# Runs every test suite of opswire. Installs what it needs first
# (idempotent: skips what is present), so it works on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

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
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! have cargo; then
  echo "cargo is required (rustup: https://rustup.rs)" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --all-targets --locked -- -D warnings

log "unit and integration tests"
cargo test --lib --tests --locked

log "the stack: promtool, amtool, compose, dashboards, live /metrics"
bash scripts/check-stack.sh

log "browser tests (dashboard, headless Chromium)"
bash scripts/test-web.sh

log "benchmark peers (Node ws, Socket.IO, raw writer) with opswire-bench"
bash scripts/test-peers.sh

log "all suites passed"
