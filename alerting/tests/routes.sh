#!/usr/bin/env bash
# Routing tests for alerting/alertmanager.yml, with the real amtool:
#   amtool config routes test --verify.receivers=R1,R2 label=value ...
# exits 1 when the receivers an alert with those labels reaches differ from
# the expected list. Each case below is one row of the routing table in
# docs/operations.md. Run from anywhere: bash alerting/tests/routes.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${ALERTMANAGER_CONFIG:-$here/../alertmanager.yml}"
amtool="${AMTOOL:-amtool}"

pass=0
fail=0

resolve() {
  "$amtool" config routes test --config.file="$config" "$@" 2>/dev/null
}

# expect RECEIVERS LABEL=VALUE...: the alert reaches exactly RECEIVERS.
expect() {
  local want="$1"
  shift
  if "$amtool" config routes test --config.file="$config" \
      --verify.receivers="$want" "$@" >/dev/null 2>&1; then
    printf '  ok    %-34s -> %s\n' "$*" "$want"
    pass=$((pass + 1))
  else
    printf '  FAIL  %-34s -> want %s, got %s\n' "$*" "$want" "$(resolve "$@" || echo '?')"
    fail=$((fail + 1))
  fi
}

# expect_not RECEIVERS LABEL=VALUE...: the verifier must reject a wrong
# expectation (proves the tool really compares, so the cases above bite).
expect_not() {
  local wrong="$1"
  shift
  if "$amtool" config routes test --config.file="$config" \
      --verify.receivers="$wrong" "$@" >/dev/null 2>&1; then
    printf '  FAIL  %-34s -> wrongly matched %s\n' "$*" "$wrong"
    fail=$((fail + 1))
  else
    printf '  ok    %-34s -> not %s\n' "$*" "$wrong"
    pass=$((pass + 1))
  fi
}

echo "routing tests: $config"

# Warnings go to the owning team's Slack channel, and to opswire.
expect opswire,slack-platform  alertname=WebSocketMessageLatencyHigh team=platform severity=warning
expect opswire,slack-search    alertname=HostHighCpu team=search severity=warning host=search-1
expect opswire,slack-platform  alertname=HostDiskFullSoon team=platform severity=warning host=hub-1 mount=/

# Criticals page through PagerDuty (any team), and go to opswire.
expect opswire,pagerduty       alertname=OpswireDown team=platform severity=critical
expect opswire,pagerduty       alertname=HostMemoryPressure team=search severity=critical host=search-1
expect opswire,pagerduty       alertname=OpswireDeliveryLagBudgetBurn team=platform severity=critical

# Other severities of a known team: the team's channel.
expect opswire,slack-search    alertname=Something team=search severity=info

# Unknown or missing team: the catch-all #ops-alerts (and opswire, which
# files it under alertmanager.default_team).
expect opswire,slack-ops       alertname=Something team=payments severity=warning
expect opswire,slack-ops       alertname=Something severity=warning
expect opswire,slack-ops       alertname=Something
# ... but a critical pages even without a team.
expect opswire,pagerduty       alertname=Something severity=critical

# Matching is exact: no prefix or case folding.
expect opswire,slack-ops       alertname=Something team=Search severity=warning
expect opswire,slack-ops       alertname=Something team=search-eu severity=warning
expect opswire,slack-search    alertname=Something team=search severity=CRITICAL

# Sanity: wrong expectations are rejected.
expect_not opswire,slack-platform alertname=HostHighCpu team=search severity=warning
expect_not slack-search           alertname=HostHighCpu team=search severity=warning
expect_not opswire,pagerduty,slack-search alertname=HostHighCpu team=search severity=critical

echo "routing tests: $pass passed, $fail failed"
((fail == 0))
