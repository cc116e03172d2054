#!/usr/bin/env bash
# Smoke test of the benchmark's side-by-side servers (not the benchmark):
# the Node peers under bench/peers/ (plain `ws`, Socket.IO) and the minimal
# raw writer (examples/raw_writer.rs) each serve 30 opswire-bench
# subscribers over 3 teams for 2 s; every subscriber must connect and every
# frame of the window must arrive, for its own team. The peers need Node.js
# >= 18 (Debian 12's 18.20 will do) and node_modules: scripts/test-web.sh
# installs both; run alone, this installs node_modules (npm ci) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
[ -d node_modules/socket.io ] || npm ci --no-audit --no-fund --loglevel=error
log "node $(node --version)"

bash scripts/build-bins.sh
BIN=${CARGO_TARGET_DIR:-target}/debug
mkdir -p target   # the generator's reports: target/peer-*.json
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_info() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$1/api/v1/info" >/dev/null && return 0
        sleep 0.1
    done
    echo "peer on port $1 did not start" >&2; return 1
}

check() { # name port [generator args...]
    local name=$1 port=$2; shift 2
    log "$name: 30 subscribers, 3 teams, 2 s"
    $BIN/opswire-bench --url "ws://127.0.0.1:$port" -n 30 --team-prefix t --team-count 3 \
        -d 2 --grace-ms 1000 --ramp-rate 200 --json -q "$@" > "target/peer-$name.json"
    python3 - "target/peer-$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name = sys.argv[2]
h, m = r["healthy"], r["healthy"]["metrics"]
assert r["connect"]["connected"] == 30, r["connect"]
assert m["received"] > 0 and m["received"] == m["expected"], m
assert all(t["metrics"]["received"] > 0 for t in r["teams"]), r["teams"]
assert h["disconnected"] == 0 and r["generator"]["unparsed_frames"] == 0, h
assert 0 < h["lag_ms"]["all"]["p50"] < 2000, h["lag_ms"]
print(f"{name}: {m['received']}/{m['expected']} frames, lag p99 {h['lag_ms']['all']['p99']} ms, protocol {r['config']['protocol']}")
PY
}

port=$(free_port)
node bench/peers/ws-server.js --port "$port" --team-prefix t --team-count 3 --tick-ms 250 >/dev/null &
PIDS+=("$!"); wait_info "$port"
check ws "$port"

port=$(free_port)
node bench/peers/socketio-server.js --port "$port" --team-prefix t --team-count 3 --tick-ms 250 >/dev/null &
PIDS+=("$!"); wait_info "$port"
check socketio "$port" --protocol socketio

port=$(free_port)
$BIN/examples/raw_writer "127.0.0.1:$port" --team-prefix t --team-count 3 --tick-ms 250 --stagger >/dev/null &
PIDS+=("$!"); wait_info "$port"
check raw "$port"

log "peers ok"
