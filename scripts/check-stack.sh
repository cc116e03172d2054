#!/usr/bin/env bash
# Checks the deployment stack with the real tools (no Docker engine needed):
#
#   * promtool check config  prometheus/prometheus.yml, laid out as the
#     compose file mounts it (so rules/*.yml must really resolve)
#   * promtool check rules   alerting/rules/*.yml
#   * promtool test rules    alerting/tests/*.yml
#   * amtool check-config    alerting/alertmanager.yml
#   * alerting/tests/routes.sh (amtool config routes test, per route)
#   * docker-compose config  (compose file parses with .env.example; refuses
#     to without the secrets), every file it mounts exists, every variable
#     it uses is in .env.example
#   * the Collector config wires only defined components and binds 0.0.0.0
#   * dashboards: valid JSON, unique fixed uids, data source uids that are
#     provisioned, every PromQL expression parses (promtool), every opswire
#     metric they or the rules use exists in src/metrics.rs, and `$` is
#     escaped in Grafana provisioning files
#   * opswire's LIVE /metrics (target/debug/opswire with deploy/opswire.toml)
#     through `promtool check metrics`, after exercising the webhook,
#     log ingest, SSE and WebSocket paths so lazily created series exist
#   * a real Alertmanager running alerting/alertmanager.yml delivers an alert
#     through the opswire receiver (bearer token from credentials_file) to a
#     subscriber of the alert's team, and not to another team's
#   * every runbook_url of alerting/rules/ is an anchor of docs/operations.md
#   * a REAL Prometheus (Debian's 2.42) scrapes that opswire and a real
#     `opswire agent` of team search every 1 s, evaluates the real rules
#     (every rule must evaluate without error), and every PromQL expression
#     of every dashboard, template variables filled from label_values(),
#     returns data through /api/v1/query (scripts/stack_live.py; the panels
#     that only the OpenTelemetry Collector could feed are skipped and listed)
#   * end to end: that Prometheus, with a test override of one real rule
#     (for: 0s, threshold met, labels kept), fires -> the real Alertmanager ->
#     opswire's webhook -> a WebSocket subscriber of the alert's team gets
#     the `alert` frame, a subscriber of the other team does not
#     (scripts/ws_client.py listens)
#
# Every server binds 127.0.0.1 on a free port; every wait has a timeout;
# every process started here is stopped on exit (trap). About 35 s in all.
#
# Usage: scripts/check-stack.sh          (from the repository root)
# Env:   OPSWIRE_BIN=path      binary to run (default
#                              ${CARGO_TARGET_DIR:-target}/debug/opswire,
#                              built by scripts/build-bins.sh)
#        CHECK_STACK_STRICT_LINT=1  also fail on `promtool check metrics`
#                                   lint warnings (exit 3), not only on
#                                   format errors (exit 1)
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

tmp="$(mktemp -d)"
opswire_pid=""
am_pid=""
sse_pid=""
prom_pid=""
agent_pid=""
live_pids=()
# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it.
stop_pid() {
  local pid="$1" _
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # Only the processes this script started, by pid.
  local pid
  for pid in "${live_pids[@]}" "$prom_pid" "$agent_pid" "$sse_pid" "$am_pid" "$opswire_pid"; do
    stop_pid "$pid"
  done
  rm -rf "$tmp"
}
free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
trap cleanup EXIT

# ------------------------------------------------------------------ tools
step "tools"
for t in promtool amtool docker-compose curl; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found (Debian: prometheus, prometheus-alertmanager, docker-compose, curl)"
done
# PyYAML comes with Debian's docker-compose (python3-yaml).
py=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import yaml' 2>/dev/null; then
    py="$cand"
    break
  fi
done
[[ -n "$py" ]] || die "python3 with PyYAML not found (Debian: python3-yaml)"
printf '   %s\n' "$(promtool --version 2>&1 | head -1)" "$(amtool --version 2>&1 | head -1)" \
  "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1)" "$($py --version)"

# -------------------------------------------------------------- compose
step "docker-compose config -q (with .env.example)"
[[ -f .env.example ]] || die ".env.example is missing"
docker-compose -f docker-compose.yml --env-file .env.example config -q ||
  die "docker-compose config -q: docker-compose.yml does not parse"
ok "docker-compose.yml parses"
docker-compose -f docker-compose.yml --env-file .env.example config > "$tmp/compose.resolved.yml"

step "docker-compose refuses to start without each required secret"
# Every ${VAR:?...} in the compose file: drop VAR from .env.example and
# the compose file must refuse to render, naming VAR.
required=$(grep -oE '\$\{[A-Z0-9_]+:\?' docker-compose.yml | sed 's/^\${//; s/:?$//' | sort -u)
[[ -n "$required" ]] || die "docker-compose.yml marks no secret as required (\${VAR:?message})"
for var in $required; do
  grep -v "^$var=" .env.example >"$tmp/without.env"
  if env -i PATH="$PATH" HOME="${HOME:-/tmp}" docker-compose -f docker-compose.yml \
      --env-file "$tmp/without.env" config -q >"$tmp/nosecret.out" 2>&1; then
    die "docker-compose config passed without $var"
  fi
  grep -q "$var" "$tmp/nosecret.out" || die "docker-compose failed without $var, but not because of it: $(cat "$tmp/nosecret.out")"
  ok "refused without $var"
done

step "compose: mounted files exist, variables are in .env.example, images pinned"
"$py" - "$root" "$tmp/compose.resolved.yml" <<'PY' || die "compose mounts / variables / images"
import os, re, sys, yaml
root, resolved = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(resolved))
problems = []
mounts = 0
for name, svc in doc["services"].items():
    image = svc.get("image", "")
    if "build" in svc:
        b = svc["build"]
        ctx = b["context"] if isinstance(b, dict) else b
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile")
        if not os.path.isfile(df):
            problems.append(f"{name}: build file {df} does not exist")
    elif not re.search(r":[^:/]+$", image) or image.endswith(":latest"):
        problems.append(f"{name}: image {image!r} is not pinned to a tag")
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            src, target = parts[0], parts[1] if len(parts) > 1 else ""
            kind = "bind" if src.startswith(("/", ".")) else "volume"
        else:
            kind, src, target = v.get("type"), v.get("source", ""), v.get("target", "")
        if kind == "bind":
            mounts += 1
            if not os.path.exists(src):
                problems.append(f"{name}: mounted {src} -> {target} does not exist")
            elif not src.startswith(root + "/"):
                problems.append(f"{name}: mounts {src} from outside the repository")
            else:
                print(f"   {name:15s} {os.path.relpath(src, root)} -> {target}")
        elif kind == "volume" and src not in (doc.get("volumes") or {}):
            problems.append(f"{name}: volume {src} is not declared")
    for p in svc.get("ports", []):
        published = str(p.get("published", "")) if isinstance(p, dict) else str(p)
        if published and published not in {"8080", "3000", "16686", "9090", "9093"} and not any(
                published.endswith(":" + u) or (":" + u + ":") in published for u in ("8080", "3000", "16686", "9090", "9093")):
            problems.append(f"{name}: publishes {p}, which is not a UI port")
text = open(os.path.join(root, "docker-compose.yml")).read()
used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
example = set(re.findall(r"^([A-Z0-9_]+)=", open(os.path.join(root, ".env.example")).read(), re.M))
for var in sorted(used - example):
    problems.append(f".env.example does not define {var}, which docker-compose.yml uses")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print(f"   {mounts} bind mounts exist; {len(used)} variables all in .env.example; images pinned")
PY
ok "compose mounts and variables"

step "Dockerfile: build inputs not ignored, non-root, healthcheck, no --insecure"
"$py" - <<'PY' || die "Dockerfile checks"
import fnmatch, re, sys
df = open("Dockerfile").read()
ignore = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def ignored(path):
    hit = False
    for pat in ignore:
        neg = pat.startswith("!"); pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            hit = not neg
    return hit
problems = []
for line in df.splitlines():
    m = re.match(r"\s*COPY\s+(?!--from)(.*)", line)
    if m:
        for src in m.group(1).split()[:-1]:
            if src.startswith("--"):
                continue
            if ignored(src.rstrip("/")):
                problems.append(f"COPY {src}: excluded by .dockerignore")
            import os
            if not os.path.exists(src):
                problems.append(f"COPY {src}: does not exist")
# include_str!/include_bytes! must stay inside src/ (the only source copied).
import glob, os
for f in glob.glob("src/**/*.rs", recursive=True):
    for inc in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', open(f).read()):
        target = os.path.normpath(os.path.join(os.path.dirname(f), inc))
        if not target.startswith("src/"):
            problems.append(f"{f}: includes {inc}, outside src/ (not in the image build context)")
runtime = df[df.rindex("FROM "):]
if not re.search(r"^USER\s+(?!0\b|root\b)\S+", runtime, re.M): problems.append("runtime stage has no non-root USER")
if "HEALTHCHECK" not in runtime: problems.append("runtime stage has no HEALTHCHECK")
if not re.search(r"^EXPOSE\s+8080\b", runtime, re.M): problems.append("runtime stage does not EXPOSE 8080")
if "--insecure" in re.sub(r"#.*", "", df): problems.append("Dockerfile uses --insecure")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print("   " + ", ".join(re.findall(r"^FROM\s+(\S+\s+AS\s+\S+)", df, re.M)))
PY
ok "Dockerfile"

step "entrypoint scripts parse"
for f in deploy/agent-entrypoint.sh alerting/alertmanager-entrypoint.sh; do
  sh -n "$f" || die "$f: syntax error"
  ok "sh -n $f"
done
bash -n alerting/tests/routes.sh || die "alerting/tests/routes.sh: syntax error"
ok "bash -n alerting/tests/routes.sh"

# ----------------------------------------------------------- prometheus
step "promtool check config prometheus/prometheus.yml (as mounted in the container)"
# Mirror the compose mounts of the prometheus service under $tmp/fs, so the
# relative rule_files glob resolves exactly as in the container.
"$py" - "$tmp/compose.resolved.yml" "$tmp/fs" <<'PY' || die "could not lay out the prometheus mounts"
import os, shutil, sys, yaml
doc = yaml.safe_load(open(sys.argv[1])); fs = sys.argv[2]
for v in doc["services"]["prometheus"]["volumes"]:
    src, target = (v.split(":")[:2] if isinstance(v, str) else (v.get("source"), v.get("target")))
    if not src or not src.startswith("/") or not os.path.exists(src):
        continue
    dst = fs + target
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
PY
promtool check config "$tmp/fs/etc/prometheus/prometheus.yml" >"$tmp/checkconfig.out" 2>&1 ||
  { sed "s#$tmp/fs##g" "$tmp/checkconfig.out"; die "promtool check config prometheus/prometheus.yml"; }
sed "s#$tmp/fs##g" "$tmp/checkconfig.out"
want=$(find alerting/rules -maxdepth 1 -name '*.yml' | wc -l)
grep -q "SUCCESS: $want rule files found" "$tmp/checkconfig.out" ||
  die "promtool check config did not find the $want rule files of alerting/rules (rule_files / mount mismatch)"
ok "config valid, $want rule files found through rule_files"

step "promtool check rules alerting/rules/*.yml"
promtool check rules alerting/rules/*.yml || die "promtool check rules alerting/rules/*.yml"

step "promtool test rules alerting/tests/*.yml"
promtool test rules alerting/tests/*.yml || die "promtool test rules alerting/tests/*.yml"

step "runbooks: every alert's runbook_url is a section of docs/operations.md"
"$py" - <<'PY' || die "runbook_url annotations / docs/operations.md sections"
import glob, re, yaml
doc = re.sub(r"^```.*?^```", "", open("docs/operations.md").read(), flags=re.M | re.S)
def slug(h):  # GitHub's heading anchors
    h = re.sub(r"`", "", h.strip().lower())
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")
anchors = {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", doc, re.M)}
problems, alerts = [], set()
for f in sorted(glob.glob("alerting/rules/*.yml")):
    for g in yaml.safe_load(open(f))["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            alerts.add(r["alert"])
            url = (r.get("annotations") or {}).get("runbook_url", "")
            m = re.fullmatch(r"docs/operations\.md#([\w-]+)", url)
            if not m:
                problems.append(f"{f}: {r['alert']}: runbook_url {url!r} is not docs/operations.md#<section>")
            elif m.group(1) not in anchors:
                problems.append(f"{f}: {r['alert']}: docs/operations.md has no section #{m.group(1)}")
            elif m.group(1) != r["alert"].lower():
                problems.append(f"{f}: {r['alert']}: runbook_url points at #{m.group(1)}, not its own section")
if problems:
    print("\n".join("   " + p for p in problems)); raise SystemExit(1)
print(f"   {len(alerts)} alerts, each with a runbook section in docs/operations.md")
PY
ok "runbook_url anchors resolve"

# --------------------------------------------------------- alertmanager
step "amtool check-config alerting/alertmanager.yml"
amtool check-config alerting/alertmanager.yml || die "amtool check-config alerting/alertmanager.yml"

step "routing tests: bash alerting/tests/routes.sh"
bash alerting/tests/routes.sh || die "routing tests (alerting/tests/routes.sh)"

# ------------------------------------------------------------ collector
step "otel-collector/config.yaml: components wired, listeners on 0.0.0.0"
"$py" - otel-collector/config.yaml <<'PY' || die "otel-collector/config.yaml"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1])); problems = []
svc = c["service"]
for ext in svc.get("extensions", []):
    if ext not in (c.get("extensions") or {}):
        problems.append(f"extension {ext} is not defined")
for pname, p in svc["pipelines"].items():
    for kind in ("receivers", "processors", "exporters"):
        for comp in p.get(kind, []):
            if comp not in (c.get(kind) or {}):
                problems.append(f"pipeline {pname}: {kind[:-1]} {comp} is not defined")
    procs = p.get("processors", [])
    if procs[:1] != ["memory_limiter"] or "batch" not in procs:
        problems.append(f"pipeline {pname}: processors must start with memory_limiter and include batch")
for name in c.get("exporters", {}):
    if name.split("/")[0] in ("loki", "otlp", "otlphttp"):
        problems.append(f"exporter {name}: use otlp_grpc / otlp_http (the old names are deprecated, loki is gone)")
for proto, cfg in c["receivers"]["otlp"]["protocols"].items():
    if not str(cfg.get("endpoint", "")).startswith("0.0.0.0:"):
        problems.append(f"otlp receiver {proto} must bind 0.0.0.0 inside a container")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print("   pipelines:", ", ".join(f"{k}: {'+'.join(v['receivers'])} -> {'+'.join(v['exporters'])}" for k, v in svc["pipelines"].items()))
PY
ok "collector config"

# -------------------------------------------------------------- grafana
step "grafana: provisioning escapes \$ as \$\$"
# Grafana expands $VAR / ${VAR} from its environment in provisioning files:
# outside comments, every literal $ must be written $$.
"$py" - grafana/provisioning <<'PY' || die "unescaped \$ in grafana/provisioning"
import os, re, sys
bad = []
for d, _, files in os.walk(sys.argv[1]):
    for f in sorted(files):
        if not f.endswith((".yaml", ".yml")):
            continue
        p = os.path.join(d, f)
        for n, line in enumerate(open(p), 1):
            code = re.sub(r"(^|\s)#.*$", "", line.rstrip("\n"))
            if "$" in code.replace("$$", ""):
                bad.append(f"   {p}:{n}: {line.strip()}")
if bad:
    print("unescaped $ (write $$ for a literal $):"); print("\n".join(bad)); sys.exit(1)
PY
ok "no unescaped \$ in grafana/provisioning"

step "grafana: dashboards are valid JSON with unique fixed uids"
for f in grafana/dashboards/*.json; do
  "$py" -m json.tool "$f" >/dev/null || die "$f is not valid JSON"
  ok "json.tool $f"
done

step "grafana: data source uids, PromQL, metric names"
"$py" - "$root" "$tmp/exprs.rules.yml" <<'PY' || die "dashboards: data sources / metric names"
import glob, json, os, re, sys, yaml
root, out = sys.argv[1], sys.argv[2]
problems = []
ds = yaml.safe_load(open(os.path.join(root, "grafana/provisioning/datasources/datasources.yaml")))
provisioned = {d["uid"]: d["type"] for d in ds["datasources"]}
for d in ds["datasources"]:
    jd = d.get("jsonData") or {}
    for f in jd.get("derivedFields", []):
        if f.get("datasourceUid") not in provisioned:
            problems.append(f"data source {d['uid']}: derived field links to unknown uid {f.get('datasourceUid')}")
    t2l = jd.get("tracesToLogsV2")
    if t2l and t2l.get("datasourceUid") not in provisioned:
        problems.append(f"data source {d['uid']}: tracesToLogsV2 links to unknown uid {t2l.get('datasourceUid')}")

def walk(node, path="panels"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")

def substitute(expr):
    # Template variables as Grafana would fill them in (All = .*).
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)(:\w+)?\}?", ".*", expr)

uids, exprs = {}, []
for f in sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json"))):
    name = os.path.relpath(f, root)
    d = json.load(open(f))
    uid = d.get("uid")
    if not uid or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        problems.append(f"{name}: uid {uid!r} is missing or not a fixed short uid")
    elif uid in uids:
        problems.append(f"{name}: uid {uid} also used by {uids[uid]}")
    else:
        uids[uid] = name
    n_panels = 0
    for path, node in walk(d.get("panels", [])):
        if "gridPos" in node and "type" in node:
            n_panels += 1
        dsr = node.get("datasource")
        if isinstance(dsr, str):
            problems.append(f"{name} {path}: data source {dsr!r} by name; use {{type, uid}} with a provisioned uid")
        if isinstance(dsr, dict) and dsr.get("uid") and dsr["type"] != "grafana":
            if provisioned.get(dsr["uid"]) != dsr.get("type"):
                problems.append(f"{name} {path}: data source {dsr} is not provisioned")
        if "expr" in node and (node.get("datasource") or {}).get("uid", "prometheus") == "prometheus" and "refId" in node:
            exprs.append((name, node["refId"], node["expr"]))
    for v in d.get("templating", {}).get("list", []):
        dsr = v.get("datasource") or {}
        if dsr.get("uid") and provisioned.get(dsr["uid"]) != dsr.get("type"):
            problems.append(f"{name} variable {v['name']}: data source {dsr} is not provisioned")
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if m:
            exprs.append((name, f"var {v['name']}", m.group(1)))
    print(f"   {name}: uid={uid} title={d.get('title')!r} panels={n_panels}")

# Every PromQL expression, variables substituted, as a recording rule:
# `promtool check rules` then parses each one.
rules = [{"record": f"check:expr_{i}", "expr": substitute(e)} for i, (_, _, e) in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}, open(out, "w"), sort_keys=False)
print(f"   {len(exprs)} PromQL expressions collected for promtool")

# Metric names: every opswire_* / websocket_* name used by a dashboard or a
# rule must be registered in src/metrics.rs.
src = open(os.path.join(root, "src/metrics.rs")).read()
registered = set(re.findall(r'"((?:opswire|websocket)_[a-z0-9_]+)"', src))
used = {}
texts = [(n, e) for n, _, e in exprs]
for f in glob.glob(os.path.join(root, "alerting/rules/*.yml")):
    for g in yaml.safe_load(open(f))["groups"]:
        for r in g["rules"]:
            texts.append((os.path.relpath(f, root), r["expr"]))
for where, e in texts:
    for m in re.findall(r"(?<![\w:])((?:opswire|websocket)_[a-z0-9_]+)", e):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if m not in registered and base not in registered:
            problems.append(f"{where}: metric {m} is not registered in src/metrics.rs")
        used.setdefault(base if base in registered else m, set()).add(where)
print(f"   {len(used)} opswire metric names used, all registered in src/metrics.rs" if not problems else "")
with open(out + ".names", "w") as fh:
    fh.write("\n".join(sorted(used)) + "\n")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
PY
promtool check rules "$tmp/exprs.rules.yml" | sed 's/^/   /' || die "a dashboard PromQL expression does not parse (see above)"
ok "data source uids provisioned; every dashboard expression parses"

# --------------------------------------------------- live /metrics lint
step "promtool check metrics on opswire's live /metrics"
bin="${OPSWIRE_BIN:-${CARGO_TARGET_DIR:-target}/debug/opswire}"
if [[ -z "${OPSWIRE_BIN:-}" ]]; then
  # Up to date, built as `cargo test` builds it (a no-op after that stage).
  bash scripts/build-bins.sh -q || die "cargo build (scripts/build-bins.sh)"
fi
[[ -x "$bin" ]] || die "$bin not found"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
webhook_token="check-stack-webhook-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export OPSWIRE_JWT_SECRET="$secret"
export OPSWIRE_ALERTMANAGER__WEBHOOK_TOKEN="$webhook_token"
# No collector here: keep OTLP export off (the failure counters exist anyway).
export OTEL_SDK_DISABLED=true
"$bin" serve --config deploy/opswire.toml --bind 127.0.0.1:0 >"$tmp/opswire.out" 2>"$tmp/opswire.err" &
opswire_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's#^opswire listening on http://##p' "$tmp/opswire.out" | head -1)"
  [[ -n "$addr" ]] && break
  kill -0 "$opswire_pid" 2>/dev/null || { cat "$tmp/opswire.err" >&2; die "opswire exited at start with deploy/opswire.toml"; }
  sleep 0.1
done
[[ -n "$addr" ]] || die "opswire printed no 'opswire listening on' line"
ok "opswire (deploy/opswire.toml) listening on $addr, pid $opswire_pid"
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "http://$addr/healthz" || die "/healthz failed"
curl -fsS -o /dev/null "http://$addr/readyz" || die "/readyz did not become ready"
ok "/healthz and /readyz answer 200"

# The Alertmanager -> opswire contract: the webhook payload (version 4)
# with the bearer token from alertmanager.webhook_token.
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
payload='{"version":"4","groupKey":"{}:{alertname=\"CheckStack\"}","truncatedAlerts":0,"status":"firing","receiver":"opswire",
 "groupLabels":{"alertname":"CheckStack"},"commonLabels":{"alertname":"CheckStack","severity":"warning"},"commonAnnotations":{},
 "externalURL":"http://alertmanager:9093","alerts":[
 {"status":"firing","labels":{"alertname":"CheckStack","team":"search","severity":"warning"},"annotations":{"summary":"check-stack probe"},
  "startsAt":"'"$now"'","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"c0ffee0000000001"},
 {"status":"firing","labels":{"alertname":"CheckStack","team":"nope","severity":"warning"},"annotations":{},
  "startsAt":"'"$now"'","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"c0ffee0000000002"}]}'
code="$(curl -sS -o "$tmp/webhook.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $webhook_token" \
  -H 'Content-Type: application/json' --data "$payload" "http://$addr/api/v1/alerts/alertmanager")"
[[ "$code" == 200 ]] || die "webhook with alertmanager.webhook_token answered $code: $(cat "$tmp/webhook.out")"
ok "Alertmanager webhook accepted with the webhook token: $(cat "$tmp/webhook.out")"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer wrong-token-wrong-token' \
  -H 'Content-Type: application/json' --data "$payload" "http://$addr/api/v1/alerts/alertmanager")"
[[ "$code" == 401 || "$code" == 403 ]] || die "webhook with a wrong token answered $code (want 401/403)"
ok "webhook refuses a wrong token ($code)"

# Exercise the other paths so lazily created series exist before the lint.
ingest="$("$bin" token --team platform --scope ingest --ttl 5m --sub check-stack)"
read_token="$("$bin" token --team platform --ttl 5m --sub check-stack)"
curl -sS -o /dev/null -w '   POST /api/v1/logs -> %{http_code}\n' -X POST -H "Authorization: Bearer $ingest" \
  -H 'Content-Type: application/json' --data '{"level":"info","message":"check-stack probe"}' \
  "http://$addr/api/v1/logs?team=platform" || true
curl -sS -o /dev/null -w '   GET /ws (bad token) -> %{http_code}\n' -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
  -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
  -H 'Authorization: Bearer not-a-token' "http://$addr/ws" || true
# (curl ends the stream after 2 s with exit 28: expected)
curl -s -N --max-time 2 -o /dev/null -w '   GET /sse (2 s) -> %{http_code}\n' -H "Authorization: Bearer $read_token" \
  "http://$addr/sse?team=platform&streams=metrics,logs,alerts" || true
"$py" scripts/ws_client.py exercise "$addr" "$read_token" platform ||
  echo "   (WebSocket exercise failed; continuing with the lint)"
sleep 0.5

curl -fsS "http://$addr/metrics" >"$tmp/metrics.txt" || die "GET /metrics failed"
families=$(grep -c '^# TYPE ' "$tmp/metrics.txt" || true)
echo "   /metrics: $(wc -l <"$tmp/metrics.txt") lines, $families metric families"
set +e
promtool check metrics <"$tmp/metrics.txt" >"$tmp/lint.out" 2>&1
lint_rc=$?
set -e
sed 's/^/   promtool: /' "$tmp/lint.out"
case "$lint_rc" in
  0) ok "promtool check metrics: no problems" ;;
  3)
    echo "   WARNING: promtool check metrics found LINT problems (exit 3) in opswire's metrics:" >&2
    grep -v '^error while linting' "$tmp/lint.out" | awk '{print "     metric to rename/fix: " $1}' | sort -u >&2
    if [[ "${CHECK_STACK_STRICT_LINT:-0}" == 1 ]]; then
      die "metrics lint problems (CHECK_STACK_STRICT_LINT=1)"
    fi
    echo "   (not fatal: set CHECK_STACK_STRICT_LINT=1 to fail on lint problems)" >&2
    ;;
  *) die "promtool check metrics: FORMAT ERROR (exit $lint_rc) in opswire's /metrics" ;;
esac

# Which of the metric names the rules and dashboards use did this run see?
missing=()
while read -r name; do
  [[ -z "$name" ]] && continue
  grep -qE "^# TYPE $name " "$tmp/metrics.txt" || missing+=("$name")
done <"$tmp/exprs.rules.yml.names"
if ((${#missing[@]})); then
  echo "   not exposed in this short run (created on first use): ${missing[*]}"
fi

# ---------------------------------------- Alertmanager -> opswire (live)
step "real Alertmanager with alerting/alertmanager.yml -> opswire webhook -> team subscriber"
am_bin="$(command -v prometheus-alertmanager || command -v alertmanager || true)"
if [[ -z "$am_bin" ]]; then
  echo "   SKIPPED: no prometheus-alertmanager binary (Debian: prometheus-alertmanager)"
else
  # The config as the container sees it, with the secret files in $tmp and
  # opswire at its local address instead of http://opswire:8080.
  mkdir -p "$tmp/am/secrets"
  printf '%s' "$webhook_token" >"$tmp/am/secrets/opswire_webhook_token"
  printf '' >"$tmp/am/secrets/slack_webhook_url"
  printf '' >"$tmp/am/secrets/pagerduty_routing_key"
  sed -e "s#/secrets/#$tmp/am/secrets/#g" -e "s#http://opswire:8080#http://$addr#g" \
    alerting/alertmanager.yml >"$tmp/am/alertmanager.yml"
  am_port="$(free_port)"
  "$am_bin" --config.file="$tmp/am/alertmanager.yml" --storage.path="$tmp/am/data" \
    --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$tmp/am/log" 2>&1 &
  am_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$am_port/-/ready" 2>/dev/null && break
    kill -0 "$am_pid" 2>/dev/null || { cat "$tmp/am/log" >&2; die "Alertmanager exited at start"; }
    sleep 0.1
  done
  ok "Alertmanager $("$am_bin" --version 2>&1 | head -1 | awk '{print $3}') ready on 127.0.0.1:$am_port"
  search_token="$("$bin" token --team search --ttl 5m --sub check-stack)"
  curl -s -N --max-time 25 -H "Authorization: Bearer $search_token" \
    "http://$addr/sse?team=search&streams=alerts" >"$tmp/am/sse.out" 2>/dev/null &
  sse_pid=$!
  sleep 0.5
  starts="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$am_port/api/v2/alerts" --data '[
    {"labels":{"alertname":"CheckStackSearch","team":"search","severity":"warning","host":"search-1"},
     "annotations":{"summary":"check-stack end to end"},"startsAt":"'"$starts"'"},
    {"labels":{"alertname":"CheckStackPlatform","team":"platform","severity":"warning"},
     "annotations":{"summary":"must not reach team search"},"startsAt":"'"$starts"'"}]' ||
    die "POST /api/v2/alerts to Alertmanager failed"
  got=""
  for _ in $(seq 1 200); do
    if grep -q '"alertname":"CheckStackSearch"' "$tmp/am/sse.out"; then got=1; break; fi
    sleep 0.1
  done
  sleep 1
  kill "$sse_pid" 2>/dev/null || true
  wait "$sse_pid" 2>/dev/null || true
  sse_pid=""
  # Alertmanager keeps running: the end-to-end step below sends to it.
  if [[ -z "$got" ]]; then
    grep -E 'level=(warn|error)' "$tmp/am/log" | tail -5 >&2 || true
    die "the alert did not reach the team search subscriber through Alertmanager's opswire receiver"
  fi
  ok "team search subscriber got the alert frame (Alertmanager group_wait -> webhook with credentials_file)"
  if grep -q 'CheckStackPlatform' "$tmp/am/sse.out"; then
    die "team search subscriber received team platform's alert"
  fi
  ok "team platform's alert did not reach the team search subscriber"
fi

# ------------------------------------------------ real Prometheus (live)
# One real Prometheus (Debian's 2.42) for the last two checks: it scrapes
# the opswire above (which now also gets an agent of team search), runs the
# real rule files plus a test override, and sends to the Alertmanager above.
step "real Prometheus scrapes opswire and an opswire agent (team search) every 1 s"
t_live=$SECONDS
prom_bin="$(command -v prometheus || true)"
[[ -n "$prom_bin" ]] || die "prometheus not found (Debian: prometheus)"
{ [[ -n "$am_pid" ]] && kill -0 "$am_pid" 2>/dev/null; } ||
  die "no Alertmanager running (the previous step starts it; Debian: prometheus-alertmanager)"
live="$tmp/live"
mkdir -p "$live"

# The agent of the second team, as deploy/agent-entrypoint.sh runs it: an
# ingest token minted from the hub's secret, which the agent itself never sees.
agent_token="$("$bin" token --team search --scope ingest --ttl 10m --sub agent-search-1)"
: >"$live/agent-tail.log"
env -u OPSWIRE_JWT_SECRET OPSWIRE_AGENT_TOKEN="$agent_token" "$bin" agent --hub "ws://$addr" \
  --host search-1 --team search --tail "$live/agent-tail.log" >"$live/agent.out" 2>"$live/agent.err" &
agent_pid=$!
ok "opswire agent --host search-1 --team search (ingest token minted with opswire token --scope ingest), pid $agent_pid"

# One WebSocket subscriber per team, for the whole phase: traffic for the
# dashboards (pings, one bad frame -> an error frame, live frames -> delivery
# lag), and the receivers of the end-to-end alert below.
for team in search platform; do
  tok="$("$bin" token --team "$team" --ttl 10m --sub "check-stack-$team")"
  extra=()
  [[ "$team" == search ]] && extra=(--bad-frame)
  "$py" scripts/ws_client.py listen "$addr" "$tok" "$team" --streams metrics,logs,alerts \
    --seconds 100 --ping-every 2 "${extra[@]}" --out "$live/ws-$team.jsonl" 2>"$live/ws-$team.err" &
  live_pids+=("$!")
done
for _ in $(seq 1 100); do
  grep -q '"type":"subscribed"' "$live/ws-search.jsonl" 2>/dev/null &&
    grep -q '"type":"subscribed"' "$live/ws-platform.jsonl" 2>/dev/null && break
  sleep 0.1
done
grep -q '"type":"subscribed"' "$live/ws-search.jsonl" 2>/dev/null &&
  grep -q '"type":"subscribed"' "$live/ws-platform.jsonl" 2>/dev/null ||
  { cat "$live"/ws-*.err >&2; die "the WebSocket subscribers did not get their subscribed reply within 10 s"; }
grep -q '"type":"error"' "$live/ws-search.jsonl" 2>/dev/null || sleep 0.5
ok "WebSocket subscribers of teams search (sent a bad frame) and platform, streams metrics,logs,alerts"
# An SSE stream, a log ingest POST and a refused one, and agent log lines.
search_read="$("$bin" token --team search --ttl 10m --sub check-stack-sse)"
curl -s -N --max-time 100 -H "Authorization: Bearer $search_read" \
  "http://$addr/sse?team=search&streams=metrics,logs,alerts" >"$live/sse.out" 2>/dev/null &
live_pids+=("$!")
search_ingest="$("$bin" token --team search --scope ingest --ttl 10m --sub check-stack)"
code="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $search_ingest" \
  -H 'Content-Type: application/json' --data '{"level":"warn","message":"check-stack live probe"}' \
  "http://$addr/api/v1/logs?team=search")"
[[ "$code" == 200 ]] || die "POST /api/v1/logs (team search) answered $code"
code="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $search_ingest" \
  -H 'Content-Type: application/json' --data 'this is not json' "http://$addr/api/v1/logs?team=search")"
[[ "$code" == 400 ]] || die "POST /api/v1/logs with a bad body answered $code (want 400)"
printf '%s INFO check-stack: agent tail line %s\n' "$(date -u +%FT%TZ)" 1 2 >>"$live/agent-tail.log"
ok "SSE stream open; POST /api/v1/logs 200, and 400 for a bad body (opswire_ingest_rejected_total)"

prom_port="$(free_port)"
"$py" scripts/stack_live.py prom-config "$root" "$live" --opswire "$addr" --prom "127.0.0.1:$prom_port" \
  --alertmanager "127.0.0.1:$am_port" --override HostHighCpu || die "could not write the test Prometheus config"
promtool check config "$live/prometheus.yml" >"$live/checkconfig.out" 2>&1 ||
  { cat "$live/checkconfig.out"; die "promtool check config on the test Prometheus config"; }
prom_url="http://127.0.0.1:$prom_port"
"$prom_bin" --config.file="$live/prometheus.yml" --storage.tsdb.path="$live/data" \
  --storage.tsdb.retention.time=1h --web.listen-address="127.0.0.1:$prom_port" \
  --web.external-url="$prom_url" --rules.alert.resend-delay=1s >"$live/prometheus.log" 2>&1 &
prom_pid=$!
prom_started="$(date +%s.%N)"
for _ in $(seq 1 200); do
  curl -fsS --max-time 1 -o /dev/null "$prom_url/-/ready" 2>/dev/null && break
  kill -0 "$prom_pid" 2>/dev/null || { tail -20 "$live/prometheus.log" >&2; die "Prometheus exited at start"; }
  sleep 0.1
done
curl -fsS --max-time 2 -o /dev/null "$prom_url/-/ready" ||
  { tail -20 "$live/prometheus.log" >&2; die "Prometheus not ready within 20 s"; }
ok "Prometheus $("$prom_bin" --version 2>&1 | head -1 | awk '{print $3}') ready on 127.0.0.1:$prom_port after $((SECONDS - t_live)) s"
"$py" scripts/stack_live.py wait-scrapes "$prom_url" "$root" --samples 5 --timeout 40 ||
  { tail -5 "$live/prometheus.log" >&2; tail -5 "$live/agent.err" >&2; die "Prometheus did not scrape opswire and the agent's host"; }
kill -0 "$agent_pid" 2>/dev/null || { cat "$live/agent.err" >&2; die "the opswire agent exited"; }
printf '%s INFO check-stack: agent tail line %s\n' "$(date -u +%FT%TZ)" 3 >>"$live/agent-tail.log"

step "real rules: every group loaded, every rule evaluated without error"
"$py" scripts/stack_live.py rules-health "$prom_url" "$root" "$live/override.rules.yml" ||
  die "a rule of alerting/rules/ does not evaluate on real data"

step "dashboards: every PromQL expression returns data through Prometheus's /api/v1/query"
# Data source uids were checked above (every uid a panel or target names is
# provisioned in grafana/provisioning/datasources); here, the data.
"$py" scripts/stack_live.py dashboards "$prom_url" "$root" --rate-interval 20s --interval 5s --range 1m ||
  die "a dashboard expression returns no data from a real Prometheus scraping opswire"
ok "dashboards checked against live data in $((SECONDS - t_live)) s since the agent started"

step "end to end: Prometheus (real rules + override) -> Alertmanager -> opswire webhook -> WebSocket"
t_e2e=$SECONDS
"$py" scripts/stack_live.py alert-e2e "$root" --alertname HostHighCpu --prom-url "$prom_url" \
  --am-url "http://127.0.0.1:$am_port" --frames "search=$live/ws-search.jsonl" \
  --frames "platform=$live/ws-platform.jsonl" --since "$prom_started" --timeout 40 ||
  { grep -E 'level=(warn|error)' "$live/prometheus.log" "$tmp/am/log" | tail -8 >&2 || true
    die "the override alert did not travel Prometheus -> Alertmanager -> opswire -> the team's WebSocket subscriber"; }
ok "alert frames delivered to the right team only ($((SECONDS - t_e2e)) s in this step)"

# The subscribers stayed connected the whole time (ws_client exits 1 when
# the server closed the connection).
for pid in "${live_pids[@]}"; do
  kill "$pid" 2>/dev/null || true
done
rc=0
wait "${live_pids[0]}" || rc=1
wait "${live_pids[1]}" || rc=1
wait "${live_pids[2]}" 2>/dev/null || true
live_pids=()
[[ "$rc" == 0 ]] || { cat "$live"/ws-*.err >&2; die "a WebSocket subscriber was disconnected during the live checks"; }
kill -0 "$agent_pid" 2>/dev/null || { cat "$live/agent.err" >&2; die "the opswire agent exited during the live checks"; }
stop_pid "$prom_pid"; prom_pid=""
stop_pid "$agent_pid"; agent_pid=""
stop_pid "$am_pid"; am_pid=""
ok "subscribers, agent, Prometheus and Alertmanager stopped (live checks: $((SECONDS - t_live)) s)"

stop_pid "$opswire_pid"
opswire_pid=""
ok "opswire stopped"

printf '\n== stack checks passed\n'
