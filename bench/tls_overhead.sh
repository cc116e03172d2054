#!/usr/bin/env bash
# What TLS costs the server (docs/security.md § Measured): N WebSocket
# subscribers of one team's metrics at a 100 ms tick, over ws:// and then
# over wss:// (a throwaway CA and certificate, made with openssl), each
# against a fresh release server on core 0, the clients on core 1:
#
#   cargo build --release --bin opswire
#   bash bench/tls_overhead.sh [target/release/opswire] [N] [SECONDS]
#
# Prints one JSON line per mode: the server's RSS growth per connection,
# its CPU share over the window, and the bytes the clients received.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/opswire}")
N=${2:-500}
SECS=${3:-15}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=localhost -keyout key.pem -out s.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
        -extfile ext.cnf -out cert.pem 2>/dev/null
)
export OPSWIRE_JWT_SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export OPSWIRE_SAMPLER__TICK_MS=100 RUST_LOG=warn
TOKEN=$("$BIN" token --team default --ttl 1h)
for mode in plain tls; do
    if [ "$mode" = tls ]; then
        export OPSWIRE_TLS__CERT_FILE=$dir/cert.pem OPSWIRE_TLS__KEY_FILE=$dir/key.pem
        ca=$dir/ca.pem
    else
        ca=
    fi
    taskset -c 0 "$BIN" serve --bind 127.0.0.1:0 >"$dir/out" 2>/dev/null &
    server=$!
    for _ in $(seq 50); do grep -q listening "$dir/out" && break; sleep 0.1; done
    port=$(sed -n 's#^opswire listening on https\{0,1\}://.*:##p' "$dir/out")
    SERVER_PID=$server taskset -c 1 python3 bench/tls_overhead.py 127.0.0.1 "$port" "$TOKEN" "$N" "$SECS" $ca
    kill "$server"
    wait "$server" 2>/dev/null || true
done
