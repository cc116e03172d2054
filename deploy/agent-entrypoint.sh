#!/bin/sh
# Entry point of the `agent` service in docker-compose.yml.
#
# Mints a fresh ingest token for $AGENT_TEAM from the shared
# OPSWIRE_JWT_SECRET, then execs `opswire agent` (under compose's
# `init: true`, so SIGTERM reaches the agent directly). A restart of the
# container always starts with a new token, so token expiry can never leave
# the agent stuck: when the token expires the hub closes the connection,
# the agent exits, and compose restarts it with a new one.
#
# Environment (set in docker-compose.yml):
#   OPSWIRE_JWT_SECRET  the hub's HS256 secret (from .env)
#   AGENT_HUB           ws://opswire:8080
#   AGENT_TEAM          team of this host (must be a team in deploy/opswire.toml)
#   AGENT_HOST          host name it reports (matches that team's `hosts` globs)
#   AGENT_TOKEN_TTL     token lifetime, e.g. 30d
#   AGENT_TAIL          space-separated files to follow (optional)
#   AGENT_DEMO_LOG      if 1, write a demo line every 10 s to
#                       /tmp/agent-demo.log and follow it, so the team's log
#                       stream is never empty in a fresh stack
set -eu

: "${OPSWIRE_JWT_SECRET:?OPSWIRE_JWT_SECRET is not set (see .env.example)}"
hub="${AGENT_HUB:-ws://opswire:8080}"
team="${AGENT_TEAM:?AGENT_TEAM is not set}"
host="${AGENT_HOST:?AGENT_HOST is not set}"
ttl="${AGENT_TOKEN_TTL:-30d}"

# The token goes to the agent through its environment (OPSWIRE_AGENT_TOKEN),
# not its arguments, which `ps` shows.
OPSWIRE_AGENT_TOKEN="$(opswire token --team "$team" --scope ingest --sub "agent-$host" --ttl "$ttl")"
export OPSWIRE_AGENT_TOKEN
# The agent needs no signing key: keep the hub's secret out of its environment.
unset OPSWIRE_JWT_SECRET

set -- agent --hub "$hub" --host "$host" --team "$team"
for f in ${AGENT_TAIL:-}; do
  set -- "$@" --tail "$f"
done

if [ "${AGENT_DEMO_LOG:-0}" = "1" ]; then
  demo=/tmp/agent-demo.log
  : > "$demo"
  (
    n=0
    while :; do
      n=$((n + 1))
      printf '%s INFO demo: heartbeat %d from %s (team %s)\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$n" "$host" "$team" >> "$demo"
      sleep 10
    done
  ) &
  set -- "$@" --tail "$demo"
fi

echo "opswire agent: host=$host team=$team hub=$hub" >&2
exec opswire "$@"
