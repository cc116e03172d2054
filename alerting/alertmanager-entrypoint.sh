#!/bin/sh
# Entry point of the Alertmanager services in docker-compose.yml: `alertmanager`
# (the default stack) and `alertmanager-1`, `alertmanager-2` (the HA pair of
# the `cluster` profile).
#
# Alertmanager cannot expand environment variables in its configuration,
# so alertmanager.yml reads every secret from a file under /secrets
# (credentials_file, slack_api_url_file, routing_key_file). This script
# writes those files from the environment (values come from .env) onto the
# container's tmpfs /secrets, mode 0600, then execs Alertmanager. Nothing
# secret is ever written to the repository or to a volume.
#
# OPSWIRE_WEBHOOK_URL: where the `opswire` receiver posts. alertmanager.yml
# says http://opswire:8080/api/v1/alerts/alertmanager (the default stack's
# hub). Unset, or that same URL: Alertmanager runs on the mounted file, as
# it always did. Any other http(s) URL (the pair: the cluster's load
# balancer, http://lb:8080/...): this script writes a copy of
# alertmanager.yml with that one URL replaced, to /secrets/alertmanager.yml,
# and Alertmanager runs on the copy. Nothing else differs, so
# `amtool check-config` and alerting/tests/routes.sh test the one file. (A
# reload, SIGHUP or POST /-/reload, re-reads the copy: after editing
# alertmanager.yml, restart the container, which writes a new copy.)
#
# Clustering (gossip of silences and of the notification log, so that an HA
# pair sends each notification once while both members are up):
#   ALERTMANAGER_CLUSTER_LISTEN_ADDRESS  host:port to gossip on (the pair:
#       0.0.0.0:9094). Unset or empty: clustering off
#       (--cluster.listen-address=), the default stack's single Alertmanager.
#   ALERTMANAGER_CLUSTER_PEERS  the other members, host:port, separated by
#       commas or spaces (one --cluster.peer each). Needs the listen address.
#
# Outside the image (scripts/check-stack.sh runs Debian's Alertmanager
# through this script, alerting/tests/entrypoint.sh a stand-in), these
# replace the image's paths and port: ALERTMANAGER_BIN (/bin/alertmanager),
# ALERTMANAGER_CONFIG (/etc/alertmanager/alertmanager.yml),
# ALERTMANAGER_SECRETS_DIR (/secrets), ALERTMANAGER_STORAGE_PATH
# (/alertmanager), ALERTMANAGER_WEB_LISTEN_ADDRESS (:9093). Arguments are
# passed on to Alertmanager, after the ones above (a flag set here cannot
# be given again).
set -eu
set -f

bin="${ALERTMANAGER_BIN:-/bin/alertmanager}"
config="${ALERTMANAGER_CONFIG:-/etc/alertmanager/alertmanager.yml}"
dir="${ALERTMANAGER_SECRETS_DIR:-/secrets}"
storage="${ALERTMANAGER_STORAGE_PATH:-/alertmanager}"
web_listen="${ALERTMANAGER_WEB_LISTEN_ADDRESS:-:9093}"

die() {
  echo "alertmanager-entrypoint: $*" >&2
  exit 1
}

umask 077
mkdir -p "$dir"

write() { # write NAME VALUE: the value without a trailing newline
  printf '%s' "$2" > "$dir/$1.tmp"
  mv "$dir/$1.tmp" "$dir/$1"
}

: "${OPSWIRE_WEBHOOK_TOKEN:?OPSWIRE_WEBHOOK_TOKEN is not set (see .env.example)}"
write opswire_webhook_token "$OPSWIRE_WEBHOOK_TOKEN"
# Slack and PagerDuty are optional (.env.example leaves them empty): see
# "Slack or PagerDuty left empty" below. A value that is set must look
# like one, so that a typo fails here, at start, and not at the first alert.
slack_url="${SLACK_WEBHOOK_URL:-}"
pd_key="${PAGERDUTY_ROUTING_KEY:-}"
if [ -n "$slack_url" ] && ! printf '%s' "$slack_url" | grep -Eq '^https?://[!-~]+$'; then
  die "SLACK_WEBHOOK_URL is set but is not an http(s) URL of printable characters without spaces (leave it empty to send nothing to Slack)"
fi
if [ -n "$pd_key" ] && ! printf '%s' "$pd_key" | grep -Eq '^[!-~]+$'; then
  die "PAGERDUTY_ROUTING_KEY is set but has spaces or unprintable characters (leave it empty to send nothing to PagerDuty)"
fi
write slack_webhook_url "$slack_url"
write pagerduty_routing_key "$pd_key"

# The opswire receiver's URL.
default_url=http://opswire:8080/api/v1/alerts/alertmanager
url="${OPSWIRE_WEBHOOK_URL:-$default_url}"
if [ "$url" != "$default_url" ]; then
  # Literal replacement (no regex, no sed escaping) on the one line outside
  # comments that holds the default URL; exit 2: not an http(s) URL of
  # printable characters without spaces; exit 3: not exactly one such line.
  rc=0
  FROM="$default_url" TO="$url" awk '
    BEGIN {
      from = ENVIRON["FROM"]; to = ENVIRON["TO"]
      if (to !~ /^https?:\/\/[!-~]+$/) { bad = 1; exit 2 }
    }
    !/^[ \t]*#/ && index($0, from) > 0 {
      n++
      rest = $0; out = ""
      while ((i = index(rest, from)) > 0) {
        out = out substr(rest, 1, i - 1) to
        rest = substr(rest, i + length(from))
      }
      $0 = out rest
    }
    { print }
    END { if (bad) exit 2; if (n != 1) exit 3 }
  ' "$config" > "$dir/alertmanager.yml.tmp" || rc=$?
  case "$rc" in
    0) ;;
    2) die "OPSWIRE_WEBHOOK_URL=$url is not an http:// or https:// URL (printable, no spaces)" ;;
    3) die "$config: $default_url is not on exactly one line (outside comments): cannot point the opswire receiver at $url" ;;
    *) die "cannot read $config or write $dir/alertmanager.yml" ;;
  esac
  mv "$dir/alertmanager.yml.tmp" "$dir/alertmanager.yml"
  config="$dir/alertmanager.yml"
  echo "alertmanager-entrypoint: opswire receiver -> $url ($config)" >&2
fi

# Slack or PagerDuty left empty: Alertmanager would still notify them, with
# an empty webhook URL or routing key (every notification failing, retried,
# logged as an error). Instead, the receivers keep their names and routes,
# and lose their slack_configs (SLACK_WEBHOOK_URL empty) or
# pagerduty_configs (PAGERDUTY_ROUTING_KEY empty): a receiver without
# integrations is valid and sends nothing. Routing is unchanged (the routing
# tests pass on the copy), and opswire still gets every alert. The copy
# goes next to the secrets, as for OPSWIRE_WEBHOOK_URL; nothing else in it
# differs from alertmanager.yml.
strip=""
[ -z "$slack_url" ] && strip="$strip slack_configs"
[ -z "$pd_key" ] && strip="$strip pagerduty_configs"
if [ -n "$strip" ]; then
  # Under the top-level `receivers:` key, drop each `<kind>_configs:` line of
  # a stripped kind and every following line indented deeper than it (its
  # list); a line as shallow or shallower ends the block. Each receiver that
  # lost a block is written to the side file, one per line.
  rc=0
  : > "$dir/stripped.tmp"
  STRIP="$strip" awk -v side="$dir/stripped.tmp" '
    BEGIN { n = split(ENVIRON["STRIP"], k, " "); for (i = 1; i <= n; i++) drop[k[i]] = 1 }
    function indent(line) { match(line, /^ */); return RLENGTH }
    /^[^ 	#]/ { inrecv = ($0 ~ /^receivers:/); skipping = 0 }
    skipping {
      if ($0 ~ /^[ 	]*(#.*)?$/ || indent($0) > skipind) next
      skipping = 0
    }
    inrecv && /^  - name: / { name = $0; sub(/^  - name: */, "", name); sub(/[ 	]*(#.*)?$/, "", name) }
    inrecv && /^ +[a-z_]+_configs:/ {
      key = $0; sub(/^ +/, "", key); sub(/:.*/, "", key)
      if (key in drop) { skipping = 1; skipind = indent($0); print name " (" key ")" > side; next }
    }
    { print }
  ' "$config" > "$dir/alertmanager.yml.tmp" || rc=$?
  [ "$rc" = 0 ] || die "cannot read $config or write $dir/alertmanager.yml"
  for kind in $strip; do
    if grep -v '^[[:space:]]*#' "$dir/alertmanager.yml.tmp" | grep -q "^[[:space:]]*$kind:"; then
      die "$config: a $kind block is not where it is expected (under receivers:, as '<indent>$kind:'): cannot leave it out"
    fi
  done
  mv "$dir/alertmanager.yml.tmp" "$dir/alertmanager.yml"
  config="$dir/alertmanager.yml"
  [ -z "$slack_url" ] && echo "alertmanager-entrypoint: SLACK_WEBHOOK_URL is empty: these receivers send nothing to Slack (routes unchanged; opswire still gets every alert):" \
    "$(grep '(slack_configs)' "$dir/stripped.tmp" | sed 's/ (slack_configs)//' | tr '\n' ' ' | sed 's/ $//')" >&2
  [ -z "$pd_key" ] && echo "alertmanager-entrypoint: PAGERDUTY_ROUTING_KEY is empty: these receivers send nothing to PagerDuty (routes unchanged; opswire still gets every alert):" \
    "$(grep '(pagerduty_configs)' "$dir/stripped.tmp" | sed 's/ (pagerduty_configs)//' | tr '\n' ' ' | sed 's/ $//')" >&2
  rm -f "$dir/stripped.tmp"
fi

# Clustering.
cluster_listen="${ALERTMANAGER_CLUSTER_LISTEN_ADDRESS:-}"
peers="$(printf '%s' "${ALERTMANAGER_CLUSTER_PEERS:-}" | tr ',' ' ')"
if [ -n "$(printf '%s' "$peers" | tr -d ' \t\n')" ] && [ -z "$cluster_listen" ]; then
  die "ALERTMANAGER_CLUSTER_PEERS is set but ALERTMANAGER_CLUSTER_LISTEN_ADDRESS is empty (clustering off)"
fi
# Prepended, so that arguments given to this script stay last.
for peer in $peers; do
  set -- "--cluster.peer=$peer" "$@"
done

exec "$bin" \
  --config.file="$config" \
  --storage.path="$storage" \
  --web.listen-address="$web_listen" \
  --web.external-url="${ALERTMANAGER_EXTERNAL_URL:-http://localhost:9093}" \
  --cluster.listen-address="$cluster_listen" \
  "$@"
