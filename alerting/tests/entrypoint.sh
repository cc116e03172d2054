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
#   * SLACK_WEBHOOK_URL / PAGERDUTY_ROUTING_KEY empty (as in .env.example):
#     a copy whose only difference from alertmanager.yml (compared as YAML,
#     when python3 has PyYAML) is that every receiver lost its
#     slack_configs / pagerduty_configs; `amtool check-config` and
#     routes.sh accept it; stderr names the receivers; with another opswire
#     URL too, both changes in one copy
#   * refusals: a URL that is not http(s) or has a space, a config without
#     the default URL, peers without a listen address, no webhook token, a
#     Slack URL that is not a URL, a PagerDuty key with a space
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

# Slack and PagerDuty set, unless a test empties them (VAR= after these).
slack_url=https://hooks.slack.example/services/T0/B0/test-only
pd_key=test-only-routing-key

# run NAME VAR=VALUE...: the entrypoint in a clean environment, secrets in
# $tmp/NAME; its arguments in $tmp/NAME.args, its stderr in $tmp/NAME.err.
run() {
  local name="$1"
  shift
  env -i PATH="$PATH" ALERTMANAGER_BIN="$tmp/fake-alertmanager" ALERTMANAGER_CONFIG="$config" \
    ALERTMANAGER_SECRETS_DIR="$tmp/$name" OPSWIRE_WEBHOOK_TOKEN=token-of-the-tests \
    SLACK_WEBHOOK_URL="$slack_url" PAGERDUTY_ROUTING_KEY="$pd_key" "$@" \
    sh "$script" >"$tmp/$name.args" 2>"$tmp/$name.err"
}
# run_args NAME ARGS... -- VAR=VALUE...: same, with arguments for the script.
run_args() {
  local name="$1" args=()
  shift
  while [[ "$1" != -- ]]; do args+=("$1"); shift; done
  shift
  env -i PATH="$PATH" ALERTMANAGER_BIN="$tmp/fake-alertmanager" ALERTMANAGER_CONFIG="$config" \
    ALERTMANAGER_SECRETS_DIR="$tmp/$name" OPSWIRE_WEBHOOK_TOKEN=token-of-the-tests \
    SLACK_WEBHOOK_URL="$slack_url" PAGERDUTY_ROUTING_KEY="$pd_key" "$@" \
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
  [[ "$(cat "$tmp/default/slack_webhook_url")" == "$slack_url" ]] &&
  [[ "$(cat "$tmp/default/pagerduty_routing_key")" == "$pd_key" ]] &&
  [[ "$(stat -c %a "$tmp/default/slack_webhook_url")" == 600 ]] &&
  ok "default: secrets written (0600, no trailing newline)" ||
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

# 4. Slack and PagerDuty left empty (.env.example): the receivers stay,
#    without their slack_configs / pagerduty_configs.
# same_but_without COPY KIND...: COPY is alertmanager.yml, parsed as YAML,
# with every receiver's KIND removed, and nothing else changed.
same_but_without() {
  local copy="$1"
  shift
  python3 - "$config" "$copy" "$@" <<'PY'
import sys, yaml
orig, copy = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
for r in orig["receivers"]:
    for kind in sys.argv[3:]:
        r.pop(kind, None)
sys.exit(0 if orig == copy else 1)
PY
}
have_yaml=""
python3 -c 'import yaml' 2>/dev/null && have_yaml=1
check_copy() { # check_copy NAME KIND...: the copy of run NAME, amtool, routes
  local name="$1" copy="$tmp/$1/alertmanager.yml"
  shift
  if ! grep -qx -- "--config.file=$copy" "$tmp/$name.args"; then
    bad "$name: --config.file is not the copy: $(tr '\n' ' ' <"$tmp/$name.args")"
    return
  fi
  local kind
  for kind in "$@"; do
    if grep -v '^\s*#' "$copy" | grep -q "$kind:"; then bad "$name: the copy still has $kind"; else ok "$name: no $kind in the copy"; fi
  done
  if [[ -n "$have_yaml" ]]; then
    same_but_without "$copy" "$@" && ok "$name: as YAML, the copy is alertmanager.yml without $* (nothing else changed)" ||
      bad "$name: the copy differs from alertmanager.yml by more than $*"
  else
    echo "  SKIPPED $name: YAML comparison (python3 without PyYAML)"
  fi
  if command -v "$amtool" >/dev/null 2>&1; then
    "$amtool" check-config "$copy" >"$tmp/$name.check" 2>&1 && ok "$name: amtool check-config on the copy" ||
      { sed 's/^/        /' "$tmp/$name.check"; bad "$name: amtool check-config on the copy"; }
    ALERTMANAGER_CONFIG="$copy" AMTOOL="$amtool" bash "$here/routes.sh" >"$tmp/$name.routes" 2>&1 &&
      ok "$name: routes.sh on the copy: $(tail -1 "$tmp/$name.routes")" ||
      { sed 's/^/        /' "$tmp/$name.routes"; bad "$name: routes.sh on the copy"; }
  fi
}
run no-slack-pd SLACK_WEBHOOK_URL= PAGERDUTY_ROUTING_KEY= || bad "no-slack-pd: exit $?: $(cat "$tmp/no-slack-pd.err")"
check_copy no-slack-pd slack_configs pagerduty_configs
grep -q 'SLACK_WEBHOOK_URL is empty: .*: slack-platform slack-search slack-ops$' "$tmp/no-slack-pd.err" &&
  grep -q 'PAGERDUTY_ROUTING_KEY is empty: .*: pagerduty$' "$tmp/no-slack-pd.err" &&
  ok "no-slack-pd: stderr names the receivers that send nothing" ||
  bad "no-slack-pd: stderr does not name the receivers: $(cat "$tmp/no-slack-pd.err")"
[[ ! -s "$tmp/no-slack-pd/slack_webhook_url" && -e "$tmp/no-slack-pd/pagerduty_routing_key" ]] &&
  ok "no-slack-pd: empty secret files still written" || bad "no-slack-pd: secret files"
run no-slack SLACK_WEBHOOK_URL= || bad "no-slack: exit $?"
check_copy no-slack slack_configs
grep -q 'pagerduty_configs:' "$tmp/no-slack/alertmanager.yml" && ! grep -q PAGERDUTY "$tmp/no-slack.err" &&
  ok "no-slack: PagerDuty (set) keeps its pagerduty_configs" || bad "no-slack: pagerduty_configs lost"
run no-pd PAGERDUTY_ROUTING_KEY= || bad "no-pd: exit $?"
check_copy no-pd pagerduty_configs
run lb-no-slack-pd OPSWIRE_WEBHOOK_URL="$lb_url" SLACK_WEBHOOK_URL= PAGERDUTY_ROUTING_KEY= ||
  bad "lb-no-slack-pd: exit $?: $(cat "$tmp/lb-no-slack-pd.err")"
grep -qF "url: $lb_url" "$tmp/lb-no-slack-pd/alertmanager.yml" && ! grep -q 'slack_configs:\|pagerduty_configs:' "$tmp/lb-no-slack-pd/alertmanager.yml" &&
  ok "OPSWIRE_WEBHOOK_URL and empty Slack/PagerDuty: one copy with both changes" ||
  bad "OPSWIRE_WEBHOOK_URL and empty Slack/PagerDuty: $(grep -c 'configs:' "$tmp/lb-no-slack-pd/alertmanager.yml") configs blocks"

# 5. Refusals.
refused not-http 'not an http' OPSWIRE_WEBHOOK_URL=ftp://lb/api
refused space 'not an http' OPSWIRE_WEBHOOK_URL='http://lb:8080/a b'
sed "s#$default_url#http://elsewhere:8080/hook#" "$config" >"$tmp/other.yml"
refused no-default-url 'not on exactly one line' ALERTMANAGER_CONFIG="$tmp/other.yml" OPSWIRE_WEBHOOK_URL="$lb_url"
sed "s#^\(\s*\)- url: $default_url#&\n\1- url: $default_url#" "$config" >"$tmp/twice.yml"
refused twice 'not on exactly one line' ALERTMANAGER_CONFIG="$tmp/twice.yml" OPSWIRE_WEBHOOK_URL="$lb_url"
refused peers-no-listen 'ALERTMANAGER_CLUSTER_LISTEN_ADDRESS is empty' ALERTMANAGER_CLUSTER_PEERS=alertmanager-2:9094
refused no-token 'OPSWIRE_WEBHOOK_TOKEN' OPSWIRE_WEBHOOK_TOKEN=
refused slack-not-url 'SLACK_WEBHOOK_URL is set but is not an http' SLACK_WEBHOOK_URL=replace-me
refused pd-space 'PAGERDUTY_ROUTING_KEY is set but has spaces' PAGERDUTY_ROUTING_KEY='two words'

echo "entrypoint tests: $pass passed, $fail failed"
[[ "$fail" == 0 ]]
