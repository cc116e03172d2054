#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md, end to end: builds the tools, then
# for each case starts a fresh server pinned to core 0, loads it with
# opswire-bench pinned to core 1, and keeps the JSON report.
#
#   bash bench/run.sh [CASE...]          # default: every case
#   BENCH_OUT=dir D=20 REPEAT=2 bash bench/run.sh table peers
#
# Cases:
#   table     opswire, 10 teams, 1 Hz, N = 1k 2k 5k 10k 19k
#   peers     the Node peers (plain ws, Socket.IO) at the same N
#   idle      idle memory per connection (no subscription), 1k and 19k:
#             opswire, a bare actix-ws server (the framework's floor) and
#             the raw writer
#   stalled   10k with 10 % stalled clients (and the clean 10k next to it)
#   oneteam   one team of 10k: opswire vs the minimal raw writer
#   floor     10 teams at 10k and 19k: opswire, then the raw writer with its
#             teams staggered the same way (the floor of the table's runs)
#   tracing   10k with OTLP export on (sampler 1.0) to a local OTLP sink
#   flat      10k with sampler.stagger = false (every team at once)
#   sampler   the sampler's CPU cost per sample
#   cluster      cluster mode: 3 opswire processes on one port (reuse_port)
#                and a fresh redis-server, N = $NS_CLUSTER (50k) over 10 teams
#   crossnode    cluster mode: logs published on node A at 1,000/s (100/s
#                per team), read on node B by N = $NS_CROSSNODE (100, 1000);
#                then the same load on one in-memory process
#   clustercost  one process at 10k: the in-memory hub, then cluster mode
#                (Redis), CPU per delivered frame side by side
#   fleet        10 teams of $FLEET_HOSTS (50) synthetic hosts, published once a
#                second by the generator (core 1), N = $NS_FLEET (10k): each
#                view (full, summary, one host's detail) without and with
#                permessage-deflate; then the 1-host-per-team run of the
#                table (agents) at the same N, for comparison
#   teamlogs     logs at 1,000/s (100/s per team) to N = $NS_TEAMLOGS (100,
#                1000) subscribers, OTLP export on to a local sink: team
#                records for Loki on, then off (telemetry.team_logs)
#
# Cluster cases start redis-server (Debian's, /usr/bin) on a free port in a
# temp dir with --save "" --appendonly no, and wait until /readyz answers
# 200 on every opswire process (bench/ready_each.py). Pinning, see
# docs/benchmarks.md#cluster-mode: `cluster` runs the 3 servers and Redis
# on core 0, the generator and the agents on core 1 (CLUSTER_CPUS="0 0 1":
# servers, Redis, generator; "0-1 0-1 0-1" pins nothing); `crossnode` and
# `clustercost` keep the servers on core 0, the generator, the agents and
# Redis on core 1.
#
# opswire runs keyed (HS256), as in production: the generator mints read
# tokens, and nine `opswire agent`s (on core 1) feed teams t1..t9 one host
# each, so every team's frame carries a real host snapshot (t0 carries the
# server's own). Summaries: python3 bench/summarize.py $BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
# Servers hold up to 19k sockets: raise the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)"

OUT=${BENCH_OUT:-target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
D=${D:-20}
REPEAT=${REPEAT:-1}
RAMP=${RAMP:-2000}
NS=${NS:-"1000 2000 5000 10000 19000"}
NS_CLUSTER=${NS_CLUSTER:-50000}
NS_CROSSNODE=${NS_CROSSNODE:-"100 1000"}
NS_TEAMLOGS=${NS_TEAMLOGS:-"100 1000"}
NS_FLEET=${NS_FLEET:-10000}
FLEET_HOSTS=${FLEET_HOSTS:-50}
# cluster: taskset lists for the servers, Redis and the generator.
CLUSTER_CPUS=${CLUSTER_CPUS:-"0 0 1"}
PORT=18090
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=(table peers idle stalled oneteam floor tracing flat sampler)
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }

cargo build --release --locked -p opswire -p opswire-bench --bin opswire --bin opswire-bench --example raw_writer --example otlp_sink --example actix_ws_floor >&2
needs_node=0
for c in "${CASES[@]}"; do [ "$c" = peers ] && needs_node=1; done
[ $needs_node = 0 ] || [ -d node_modules/socket.io ] || npm ci --no-audit --no-fund >&2
BIN=target/release
# The server and the generator (which mints read tokens) both read the key
# from the environment: it never appears on a command line.
export OPSWIRE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# 10 teams t0..t9; this host's sampler feeds t0.
config() {
    local stagger=$1
    {
        echo '[sampler]'; echo 'team = "t0"'; echo "stagger = $stagger"
        # Every generated subscriber shares one token subject: its op
        # budget must cover one subscribe per connection of the ramp.
        echo '[limits]'; echo 'subject_inbound_rate = 100000'; echo 'subject_inbound_burst = 100000'
        for i in $(seq 0 9); do echo '[[teams]]'; echo "name = \"t$i\""; done
    } > "$WORK/opswire.toml"
}

wait_http() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/$1" >/dev/null && return 0
        sleep 0.1
    done
    log "server did not answer /$1"; return 1
}

SERVER=
start_opswire() { # [stagger] [extra env...]
    local stagger=${1:-true}; shift || true
    config "$stagger"
    env RUST_LOG=warn "$@" taskset -c 0 $BIN/opswire --config "$WORK/opswire.toml" \
        --bind 127.0.0.1:$PORT > "$WORK/server.log" 2>&1 &
    SERVER=$!; PIDS+=("$SERVER")
    wait_http healthz
    # AGENTS=0: no agents (the fleet case publishes its own hosts).
    [ "${AGENTS:-1}" = 1 ] || return 0
    start_agents $PORT
    local read; read=$($BIN/opswire token --config "$WORK/opswire.toml" --team '*' --ttl 1h)
    # Every team has a host before the load starts.
    for _ in $(seq 100); do
        local n; n=$(curl -sf -H "Authorization: Bearer $read" "http://127.0.0.1:$PORT/api/v1/teams" |
            python3 -c 'import json,sys; print(sum(1 for t in json.load(sys.stdin)["teams"] if t["hosts"]))' || echo 0)
        [ "$n" = 10 ] && return 0
        sleep 0.2
    done
    log "agents did not all report"; return 1
}

# Nine agents on core 1, one host each for t1..t9, to the server on PORT.
start_agents() { # port
    for i in $(seq 1 9); do
        OPSWIRE_AGENT_TOKEN=$($BIN/opswire token --config "$WORK/opswire.toml" --team t$i --scope ingest --ttl 2h) \
            RUST_LOG=warn taskset -c 1 $BIN/opswire agent --hub ws://127.0.0.1:$1 --team t$i \
            --host bench-t$i > "$WORK/agent-$i.log" 2>&1 &
        PIDS+=("$!")
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Cluster mode. A fresh redis-server on a free port, in a temp dir, no
# persistence (--save "" --appendonly no: this measures opswire, not disks);
# REDIS_AOF=1: append-only file, fsync every second (as deploy's compose).
REDIS= REDIS_PORT=
start_redis() { # cpus
    REDIS_PORT=$(free_port)
    rm -rf "$WORK/redis"; mkdir -p "$WORK/redis"
    local aof=(--appendonly no)
    [ "${REDIS_AOF:-0}" = 1 ] && aof=(--appendonly yes --appendfsync everysec)
    taskset -c "$1" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" "${aof[@]}" \
        --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
    REDIS=$!; PIDS+=("$REDIS")
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    log "redis-server did not answer"; return 1
}

# start_cluster PORT COUNT CPUS [env...]: COUNT opswire processes (nodes
# n1..nCOUNT, hosts bench-n1.. so t0 carries every node's host) on PORT
# with the broker, after start_redis; SERVER = their pids, comma-separated.
# Waits until each answers /readyz with 200; with agents (AGENTS=1, on
# core 1) until each sees a host in all ten teams.
start_cluster() {
    local port=$1 count=$2 cpus=$3; shift 3
    config true
    local pids=()
    for k in $(seq 1 "$count"); do
        env RUST_LOG=warn OPSWIRE_BROKER__URL="redis://127.0.0.1:$REDIS_PORT" OPSWIRE_BROKER__NODE="n$k" \
            OPSWIRE_SAMPLER__HOST_NAME="bench-n$k" "$@" \
            taskset -c "$cpus" $BIN/opswire --config "$WORK/opswire.toml" --bind 127.0.0.1:$port \
            > "$WORK/node-$port-$k.log" 2>&1 &
        pids+=("$!"); PIDS+=("$!")
        # Each process's tick starts when it does: CLUSTER_GAP_MS between
        # starts sets how far apart their bursts are (0: all at once).
        sleep "$(python3 -c "print(${CLUSTER_GAP_MS:-0} / 1000)")"
    done
    SERVER=$(IFS=,; echo "${pids[*]}")
    python3 bench/ready_each.py --port "$port" --pids "$SERVER" --timeout 30
    if [ "${AGENTS:-1}" = 1 ]; then
        start_agents "$port"
        OPSWIRE_BENCH_READ_TOKEN=$($BIN/opswire token --config "$WORK/opswire.toml" --team '*' --ttl 1h) \
            python3 bench/ready_each.py --port "$port" --pids "$SERVER" --hosts 10 --timeout 30
    fi
}

start_other() { # command...
    taskset -c 0 "$@" > "$WORK/server.log" 2>&1 &
    SERVER=$!; PIDS+=("$SERVER")
    wait_http api/v1/info
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=() REDIS= REDIS_PORT=
}

# Waits (up to QUIET_WAIT s, default 600) until the machine is quiet:
# less than QUIET_PCT (default 25) % of one core busy over a second,
# besides what this script already runs (idle servers: about 1-3 %).
# Another engineer's compile next to a run doubles its lag.
quiet() {
    local waited=0
    while :; do
        local busy
        busy=$(python3 -c '
import time
def s():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(f) - f[3] - f[4], sum(f)
a = s(); time.sleep(1); b = s()
import os
print(int(100 * os.cpu_count() * (b[0] - a[0]) / max(1, b[1] - a[1])))')
        [ "$busy" -lt "${QUIET_PCT:-25}" ] && break
        if [ "$waited" -ge "${QUIET_WAIT:-600}" ]; then
            log "machine still busy ($busy % of a core) after ${waited} s; running anyway"
            break
        fi
        [ "$waited" = 0 ] && log "machine busy ($busy % of a core): waiting for it to quieten"
        waited=$((waited + 1))
    done
    [ "$waited" = 0 ] || log "waited ${waited} s for a quiet machine"
}

# run NAME N [generator args...]: one measured run against $SERVER (a pid,
# or several comma-separated), at $URL (default: PORT), the generator on
# GEN_CPUS (default core 1).
# CPU used meanwhile by processes not started here (bench/foreign_cpu.py)
# goes to NAME.foreign.json; over FOREIGN_MAX (default 10) % of a core on
# average the run counts as disturbed, and its case runs again (below).
run() {
    local name=$1 n=$2; shift 2
    quiet
    log "$name: N=$n $*"
    python3 bench/foreign_cpu.py $$ "$OUT/$name.foreign.json" &
    local mon=$!
    taskset -c "${GEN_CPUS:-1}" $BIN/opswire-bench --url "${URL:-ws://127.0.0.1:$PORT}" -n "$n" -d "$D" \
        --ramp-rate "$RAMP" --server-pid "$SERVER" --json -q "$@" > "$OUT/$name.json"
    kill -TERM $mon; wait $mon || true
    local foreign
    foreign=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["mean_pct"]))' "$OUT/$name.foreign.json")
    if [ "$foreign" -gt "${FOREIGN_MAX:-10}" ]; then
        log "$name: other processes used $foreign % of a core meanwhile: disturbed"
        echo "$name" >> "$WORK/disturbed"
    fi
}

TEN=(--team-prefix t --team-count 10)
# one_case CASE REP: every run of one case, each on fresh servers.
one_case() {
    local c=$1 rep=$2
    case $c in
    table)
        for n in $NS; do
            start_opswire; run "table-opswire-$n-r$rep" "$n" "${TEN[@]}"; stop_all
        done ;;
    peers)
        for n in $NS; do
            start_other node bench/peers/ws-server.js --port $PORT
            run "table-ws-$n-r$rep" "$n" "${TEN[@]}"; stop_all
            start_other node bench/peers/socketio-server.js --port $PORT
            run "table-socketio-$n-r$rep" "$n" "${TEN[@]}" --protocol socketio; stop_all
        done ;;
    idle)
        for n in 1000 19000; do
            start_opswire; D=5 run "idle-opswire-$n-r$rep" "$n" --idle; stop_all
            start_other $BIN/examples/actix_ws_floor 127.0.0.1:$PORT
            D=5 run "idle-actixws-$n-r$rep" "$n" --idle; stop_all
            start_other $BIN/examples/raw_writer 127.0.0.1:$PORT --teams t0
            D=5 run "idle-raw-$n-r$rep" "$n" --idle; stop_all
        done ;;
    stalled)
        start_opswire
        run "stalled-opswire-10000-r$rep" 10000 "${TEN[@]}" \
            --stalled-share 0.1 --stalled-rcvbuf 4096
        stop_all
        start_opswire; run "clean-opswire-10000-r$rep" 10000 "${TEN[@]}"; stop_all ;;
    oneteam)
        start_opswire; run "oneteam-opswire-10000-r$rep" 10000 --teams t0; stop_all
        start_other $BIN/examples/raw_writer 127.0.0.1:$PORT --teams t0
        run "oneteam-raw-10000-r$rep" 10000 --teams t0; stop_all ;;
    floor)
        for n in 10000 19000; do
            start_opswire; run "floor-opswire-$n-r$rep" "$n" "${TEN[@]}"; stop_all
            start_other $BIN/examples/raw_writer 127.0.0.1:$PORT --team-prefix t --team-count 10 --stagger
            run "floor-raw-$n-r$rep" "$n" "${TEN[@]}"; stop_all
        done ;;
    tracing)
        taskset -c 1 $BIN/examples/otlp_sink 127.0.0.1:14317 > "$WORK/sink.log" 2>&1 &
        local_sink=$!
        start_opswire true OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_TRACES_SAMPLER=always_on
        run "tracing-opswire-10000-r$rep" 10000 "${TEN[@]}"
        stop_all; kill $local_sink; wait $local_sink 2>/dev/null || true
        tail -n 1 "$WORK/sink.log" > "$OUT/tracing-sink-r$rep.txt"
        start_opswire; run "notracing-opswire-10000-r$rep" 10000 "${TEN[@]}"; stop_all ;;
    flat)
        start_opswire false; run "flat-opswire-10000-r$rep" 10000 "${TEN[@]}"; stop_all ;;
    sampler)
        if [ "$rep" = 1 ]; then
            taskset -c 0 cargo run --release --locked --example sampler_cost -- 50 200 \
                > "$OUT/sampler.txt" 2>/dev/null
        fi ;;
    cluster)
        # 3 processes on one port, Redis, the generator (3 workers)
        # and the agents on 2 cores; pinning: CLUSTER_CPUS.
        read -r cs cr cg <<< "$CLUSTER_CPUS"
        for n in $NS_CLUSTER; do
            start_redis "$cr"; start_cluster $PORT 3 "$cs" OPSWIRE_REUSE_PORT=true
            GEN_CPUS=$cg run "cluster-cluster-$n-r$rep" "$n" "${TEN[@]}" --watch-pid "redis=$REDIS"
            stop_all
        done ;;
    crossnode)
        # Node A (PORT) takes the logs, node B (PORT+1) has the
        # subscribers (metrics and logs); 10 teams × 100 logs/s.
        for n in $NS_CROSSNODE; do
            start_redis 1
            AGENTS=0 start_cluster $PORT 1 0; a=$SERVER
            AGENTS=1 start_cluster $((PORT + 1)) 1 0; b=$SERVER
            SERVER=$b URL="ws://127.0.0.1:$((PORT + 1))" run "crossnode-cluster-$n-r$rep" "$n" "${TEN[@]}" \
                --logs --log-rate 100 --publish-url "ws://127.0.0.1:$PORT" --watch-pid "redis=$REDIS" \
                --watch-pid "nodea=$a"
            stop_all
            # The same load on one in-memory process (publisher and
            # subscribers on it): the fan-out without Redis or a second node.
            start_opswire; run "crossnode-memory-$n-r$rep" "$n" "${TEN[@]}" --logs --log-rate 100; stop_all
        done ;;
    teamlogs)
        # The same export (spans and opswire's own logs to the sink) in
        # both runs; only the team records differ.
        for n in $NS_TEAMLOGS; do
            for on in true false; do
                taskset -c 1 $BIN/examples/otlp_sink 127.0.0.1:14317 > "$WORK/sink.log" 2>&1 &
                local_sink=$!
                start_opswire true OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 \
                    OPSWIRE_TELEMETRY__TEAM_LOGS=$on
                local label=teamlogs; [ $on = true ] || label=noteamlogs
                run "$label-opswire-$n-r$rep" "$n" "${TEN[@]}" --logs --log-rate 100
                stop_all; kill $local_sink; wait $local_sink 2>/dev/null || true
                tail -n 1 "$WORK/sink.log" > "$OUT/$label-sink-$n-r$rep.txt"
            done
        done ;;
    fleet)
        for n in $NS_FLEET; do
            for view in full summary 'hosts:*-web-000'; do
                local label=${view%%:*}
                AGENTS=0 start_opswire
                run "fleet-$label-plain-$n-r$rep" "$n" "${TEN[@]}" --fleet-hosts "$FLEET_HOSTS" --view "$view"
                stop_all
                AGENTS=0 start_opswire
                run "fleet-$label-deflate-$n-r$rep" "$n" "${TEN[@]}" --fleet-hosts "$FLEET_HOSTS" --view "$view" --deflate
                stop_all
            done
            start_opswire; run "fleet-1host-plain-$n-r$rep" "$n" "${TEN[@]}"; stop_all
        done ;;
    clustercost)
        # Same N, same script run: the in-memory hub, then cluster mode
        # on one process (Redis on core 1 with the generator).
        start_opswire; run "clustercost-memory-10000-r$rep" 10000 "${TEN[@]}"; stop_all
        start_redis 1; start_cluster $PORT 1 0
        run "clustercost-cluster-10000-r$rep" 10000 "${TEN[@]}" --watch-pid "redis=$REDIS"
        stop_all ;;
    *) log "unknown case $c"; exit 2 ;;
    esac
}

# A case whose run was disturbed (see run) runs again, up to RERUNS
# (default 2) more times; the disturbed reports go to $OUT/disturbed/.
for rep in $(seq 1 "$REPEAT"); do
    for c in "${CASES[@]}"; do
        for attempt in $(seq 0 "${RERUNS:-2}"); do
            rm -f "$WORK/disturbed"
            one_case "$c" "$rep"
            [ -f "$WORK/disturbed" ] || break
            [ "$attempt" = "${RERUNS:-2}" ] && { log "$c r$rep: still disturbed, kept"; break; }
            mkdir -p "$OUT/disturbed"
            while read -r name; do
                mv "$OUT/$name.json" "$OUT/disturbed/$name.try$attempt.json"
                mv "$OUT/$name.foreign.json" "$OUT/disturbed/$name.try$attempt.foreign.json"
            done < "$WORK/disturbed"
            log "$c r$rep: disturbed; running the case again"
        done
    done
done
log "results in $OUT"
python3 bench/summarize.py "$OUT"
