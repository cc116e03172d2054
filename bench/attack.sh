#!/usr/bin/env bash
# The attacker's worst cases against a release build, one fresh server per
# case (docs/security.md § Measured):
#
#   cargo build --release --bin opswire --example attack
#   bash bench/attack.sh [target/release/opswire] [SECONDS]
#
# The server runs on core 0, the attacker (examples/attack.rs) on core 1;
# both in auth mode with a throwaway secret, the attacker with a token for
# every team unless the case says `noauth`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/opswire}
SECS=${2:-8}
ATTACK=target/release/examples/attack
PORT=${PORT:-18099}
export OPSWIRE_JWT_SECRET=attack-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
for case in "huge-frame 1000 auth" "huge-frame 1000 noauth" "pong-flood 1 auth" \
            "continuation-flood 1 auth" "pong-flood 1000 auth" "ping-op-flood 1 auth"; do
    set -- $case
    RUST_LOG=warn taskset -c 0 "$BIN" --bind 127.0.0.1:$PORT >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
    if [ "$3" = auth ]; then
        export OPSWIRE_TOKEN=$("$BIN" token --team '*' --ttl 1h)
    else
        unset OPSWIRE_TOKEN
    fi
    printf 'token=%s ' "$3"
    taskset -c 1 "$ATTACK" 127.0.0.1:$PORT "$server" "$1" "$2" "$SECS"
    kill "$server"; wait "$server" 2>/dev/null || true
done
