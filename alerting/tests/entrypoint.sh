#!/usr/bin/env bash
# Tests of alerting/alertmanager-entrypoint.sh, with a stand-in for the
# Alertmanager binary that prints its arguments (ALERTMANAGER_BIN), and
# temporary secrets directories (ALERTMANAGER_SECRETS_DIR):
#   * no OPSWIRE_WEBHOOK_URL and no cluster variables: exactly the arguments
#     the default stack's `alertmanager` always got (the mounted config,
#     --cluster.listen-address= : clustering off), and no copy written
#   * OPSWIRE_WEBHOOK_URL: the copy differs from alertmanager.yml in the
#     opswire URL only; `amtool check-config` accepts it and
#     alerting/tests/routes.sh passes on it (when amtool is installed)
#   * the cluster variables: --cluster.listen-address and one --cluster.peer
#     per peer (commas or spaces), arguments given to the script last
#   * refusals: a URL that is not http(s) or has a space, a config without
#     the default URL, peers without a listen address, no webhook token
# Run from anywhere: bash alerting/tests/entrypoint.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/../alertmanager-entrypoint.sh"
config="$here/../alertmanager.yml"
amtool="${AMTOOL:-amtool}"
default_url=http://opswire:8080/api/v1/alerts/alertmanager

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$tmp/fake-alertmanager"
chmod +x "$tmp/fake-alertmanager"

pass=0
fail=0
ok() { printf '  ok    %s\n' "$*"; pass=$((pass + 1)); }
bad() { printf '  FAIL  %s\n' "$*"; fail=$((fail + 1)); }

# run NAME VAR=VALUE...: the entrypoint in a clean environment, secrets in
# $tmp/NAME; its arguments in $tmp/NAME.args, its stderr in $tmp/NAME.err.
run() {
  local name="$1"
  shift
  env -i PATH="$PATH" ALERTMANAGER_BIN="$tmp/fake-alertmanager" ALERTMANAGER_CONFIG="$config" \
    ALERTMANAGER_SECRETS_DIR="$tmp/$name" OPSWIRE_WEBHOOK_TOKEN=token-of-the-tests "$@" \
    sh "$script" >"$tmp/$name.args" 2>"$tmp/$name.err"
}
# run_args NAME ARGS... -- VAR=VALUE...: same, with arguments for the script.
run_args() {
  local name="$1" args=()
  shift
  while [[ "$1" != -- ]]; do args+=("$1"); shift; done
  shift
  env -i PATH="$PATH" ALERTMANAGER_BIN="$tmp/fake-alertmanager" ALERTMANAGER_CONFIG="$config" \
    ALERTMANAGER_SECRETS_DIR="$tmp/$name" OPSWIRE_WEBHOOK_TOKEN=token-of-the-tests "$@" \
    sh "$script" "${args[@]}" >"$tmp/$name.args" 2>"$tmp/$name.err"
}
# refused NAME WHAT VAR=VALUE...: the entrypoint must exit non-zero, say
# WHAT on stderr, and never reach the binary.
refused() {
  local name="$1" what="$2"
  shift 2
  if run "$name" "$@"; then
    bad "$name: accepted"
  elif [[ -s "$tmp/$name.args" ]]; then
    bad "$name: refused, but ran Alertmanager anyway"
  elif ! grep -q -- "$what" "$tmp/$name.err"; then
    bad "$name: refused without saying '$what': $(cat "$tmp/$name.err")"
  else
    ok "$name: refused ($(head -1 "$tmp/$name.err" | cut -c1-110))"
  fi
}

echo "entrypoint tests: $script"

# 1. The default stack: the same arguments as before, the mounted config.
run default || bad "default: exit $?"
want="--config.file=$config
--storage.path=/alertmanager
--web.listen-address=:9093
--web.external-url=http://localhost:9093
--cluster.listen-address="
if [[ "$(cat "$tmp/default.args")" == "$want" ]]; then
  ok "default: $(tr '\n' ' ' <"$tmp/default.args")"
else
  bad "default: arguments $(tr '\n' ' ' <"$tmp/default.args"), want $(tr '\n' ' ' <<<"$want")"
fi
[[ ! -e "$tmp/default/alertmanager.yml" ]] && ok "default: no copy of the config" ||
  bad "default: wrote a copy of the config"
[[ "$(cat "$tmp/default/opswire_webhook_token")" == token-of-the-tests ]] &&
  [[ "$(stat -c %a "$tmp/default/opswire_webhook_token")" == 600 ]] &&
  [[ ! -s "$tmp/default/slack_webhook_url" && -e "$tmp/default/pagerduty_routing_key" ]] &&
  ok "default: secrets written (0600, no trailing newline; empty when unset)" ||
  bad "default: secret files"
run same OPSWIRE_WEBHOOK_URL="$default_url" || bad "same: exit $?"
cmp -s "$tmp/default.args" <(sed "s#$tmp/same#$tmp/default#" "$tmp/same.args") &&
  [[ ! -e "$tmp/same/alertmanager.yml" ]] &&
  ok "OPSWIRE_WEBHOOK_URL = the default URL: as without it" || bad "OPSWIRE_WEBHOOK_URL = the default URL changed something"

# 2. Another opswire URL: a copy, one line changed, still a valid config.
lb_url=http://lb:8080/api/v1/alerts/alertmanager
run lb OPSWIRE_WEBHOOK_URL="$lb_url" || bad "lb: exit $?: $(cat "$tmp/lb.err")"
copy="$tmp/lb/alertmanager.yml"
if grep -qx -- "--config.file=$copy" "$tmp/lb.args"; then
  ok "OPSWIRE_WEBHOOK_URL=$lb_url: runs on the copy $(basename "$copy")"
else
  bad "OPSWIRE_WEBHOOK_URL: --config.file is not the copy: $(tr '\n' ' ' <"$tmp/lb.args")"
fi
changes="$(diff "$config" "$copy" | grep '^[<>]' || true)"
line="$(grep -F "$default_url" "$config" | grep -v '^\s*#')"
if [[ "$changes" == "< $line"$'\n'"> ${line/"$default_url"/"$lb_url"}" ]]; then
  ok "the copy differs in one line: ${line/"$default_url"/"$lb_url"}"
else
  bad "the copy differs otherwise: $changes"
fi
[[ "$(stat -c %a "$copy")" == 600 ]] && ok "the copy: mode 0600, next to the secrets" || bad "the copy's mode"
grep -q 'opswire receiver -> http://lb:8080' "$tmp/lb.err" && ok "says where the opswire receiver posts" ||
  bad "no word on stderr about the opswire URL"
if command -v "$amtool" >/dev/null 2>&1; then
  "$amtool" check-config "$copy" >"$tmp/check.out" 2>&1 && ok "amtool check-config on the copy" ||
    { sed 's/^/        /' "$tmp/check.out"; bad "amtool check-config on the copy"; }
  ALERTMANAGER_CONFIG="$copy" AMTOOL="$amtool" bash "$here/routes.sh" >"$tmp/routes.out" 2>&1 &&
    ok "routes.sh on the copy: $(tail -1 "$tmp/routes.out")" ||
    { sed 's/^/        /' "$tmp/routes.out"; bad "routes.sh on the copy"; }
else
  echo "  SKIPPED amtool check-config / routes.sh on the copy: no amtool"
fi
run https OPSWIRE_WEBHOOK_URL='https://opswire.example.com:8443/api/v1/alerts/alertmanager?x=1&y=\1#frag' ||
  bad "https: exit $?: $(cat "$tmp/https.err")"
grep -qF 'url: https://opswire.example.com:8443/api/v1/alerts/alertmanager?x=1&y=\1#frag' "$tmp/https/alertmanager.yml" 2>/dev/null &&
  ok "an https URL with & \\1 # ? is copied literally" || bad "an https URL with special characters was mangled"

# 3. Clustering.
run_args pair --log.level=debug -- ALERTMANAGER_CLUSTER_LISTEN_ADDRESS=0.0.0.0:9094 \
  ALERTMANAGER_CLUSTER_PEERS='alertmanager-2:9094, alertmanager-3:9094 alertmanager-4:9094' || bad "pair: exit $?"
got="$(grep -- '^--cluster\.\|^--log' "$tmp/pair.args" | sort | tr '\n' ' ')"
want='--cluster.listen-address=0.0.0.0:9094 --cluster.peer=alertmanager-2:9094 --cluster.peer=alertmanager-3:9094 --cluster.peer=alertmanager-4:9094 --log.level=debug '
[[ "$got" == "$want" ]] && ok "cluster: $got" || bad "cluster: $got, want $want"
[[ "$(tail -1 "$tmp/pair.args")" == --log.level=debug ]] && ok "the script's own arguments last" ||
  bad "the script's arguments are not last: $(tr '\n' ' ' <"$tmp/pair.args")"
run listen-only ALERTMANAGER_CLUSTER_LISTEN_ADDRESS=0.0.0.0:9094 || bad "listen-only: exit $?"
grep -qx -- '--cluster.listen-address=0.0.0.0:9094' "$tmp/listen-only.args" &&
  ! grep -q -- '--cluster.peer' "$tmp/listen-only.args" && ok "a listen address without peers: no --cluster.peer" ||
  bad "listen address without peers"

# 4. Refusals.
refused not-http 'not an http' OPSWIRE_WEBHOOK_URL=ftp://lb/api
refused space 'not an http' OPSWIRE_WEBHOOK_URL='http://lb:8080/a b'
sed "s#$default_url#http://elsewhere:8080/hook#" "$config" >"$tmp/other.yml"
refused no-default-url 'not on exactly one line' ALERTMANAGER_CONFIG="$tmp/other.yml" OPSWIRE_WEBHOOK_URL="$lb_url"
sed "s#^\(\s*\)- url: $default_url#&\n\1- url: $default_url#" "$config" >"$tmp/twice.yml"
refused twice 'not on exactly one line' ALERTMANAGER_CONFIG="$tmp/twice.yml" OPSWIRE_WEBHOOK_URL="$lb_url"
refused peers-no-listen 'ALERTMANAGER_CLUSTER_LISTEN_ADDRESS is empty' ALERTMANAGER_CLUSTER_PEERS=alertmanager-2:9094
refused no-token 'OPSWIRE_WEBHOOK_TOKEN' OPSWIRE_WEBHOOK_TOKEN=

echo "entrypoint tests: $pass passed, $fail failed"
[[ "$fail" == 0 ]]
