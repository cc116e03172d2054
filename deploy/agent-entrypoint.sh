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
#
# `agent-entrypoint.sh healthcheck` is the services' healthcheck (the agent
# listens on no port, so the image's `curl /healthz` cannot apply): exit 0
# when the container holds an ESTABLISHED TCP connection to the port of
# AGENT_HUB (the agent's WebSocket to its hub; the agent is the only
# process of the container that connects there), read from /proc/net/tcp
# and /proc/net/tcp6; exit 1 when there is none (hub down, the agent
# reconnecting or stuck); exit 2 when AGENT_HUB names no port it can read.
set -eu

if [ "${1:-}" = healthcheck ]; then
  hub="${AGENT_HUB:-ws://opswire:8080}"
  hostport="${hub#*://}"
  hostport="${hostport%%/*}"
  hostport="${hostport%%\?*}"
  case "$hostport" in
    *\]:*) port="${hostport##*]:}" ;;
    *\]) port="" ;;
    *:*) port="${hostport##*:}" ;;
    *) port="" ;;
  esac
  if [ -z "$port" ]; then
    case "$hub" in
      wss://* | https://*) port=443 ;;
      *) port=80 ;;
    esac
  fi
  case "$port" in
    "" | *[!0-9]*)
      echo "agent healthcheck: AGENT_HUB=$hub: cannot read a port" >&2
      exit 2
      ;;
  esac
  if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "agent healthcheck: AGENT_HUB=$hub: port $port out of range" >&2
    exit 2
  fi
  files=""
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] && files="$files $f"
  done
  # Each line after the header: sl local_address rem_address st ...; an
  # address is HEXIP:HEXPORT, state 01 is ESTABLISHED.
  # shellcheck disable=SC2086
  if [ -n "$files" ] && awk -v want=":$(printf '%04X' "$port")" '
      FNR > 1 && $4 == "01" && substr($3, length($3) - 4) == want { found = 1 }
      END { exit found ? 0 : 1 }' $files; then
    echo "agent healthcheck: connected to port $port of $hub"
    exit 0
  fi
  echo "agent healthcheck: no established connection to port $port of $hub" >&2
  exit 1
fi

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
