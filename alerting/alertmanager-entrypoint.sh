#!/bin/sh
# Entry point of the `alertmanager` service in docker-compose.yml.
#
# Alertmanager cannot expand environment variables in its configuration,
# so alertmanager.yml reads every secret from a file under /secrets
# (credentials_file, slack_api_url_file, routing_key_file). This script
# writes those files from the environment (values come from .env) onto the
# container's tmpfs /secrets, mode 0600, then execs Alertmanager. Nothing
# secret is ever written to the repository or to a volume.
set -eu

dir=/secrets
umask 077
mkdir -p "$dir"

write() { # write NAME VALUE: the value without a trailing newline
  printf '%s' "$2" > "$dir/$1.tmp"
  mv "$dir/$1.tmp" "$dir/$1"
}

: "${OPSWIRE_WEBHOOK_TOKEN:?OPSWIRE_WEBHOOK_TOKEN is not set (see .env.example)}"
write opswire_webhook_token "$OPSWIRE_WEBHOOK_TOKEN"
# Slack and PagerDuty may stay unset in a demo: notifications to them then
# fail (and are logged by Alertmanager); opswire still gets every alert.
write slack_webhook_url "${SLACK_WEBHOOK_URL:-}"
write pagerduty_routing_key "${PAGERDUTY_ROUTING_KEY:-}"

exec /bin/alertmanager \
  --config.file=/etc/alertmanager/alertmanager.yml \
  --storage.path=/alertmanager \
  --web.listen-address=:9093 \
  --web.external-url="${ALERTMANAGER_EXTERNAL_URL:-http://localhost:9093}" \
  --cluster.listen-address= \
  "$@"
