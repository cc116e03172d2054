#!/usr/bin/env bash
# Checks the deployment stack with the real tools (no Docker engine needed):
#
#   * promtool check config  prometheus/prometheus.yml, laid out as the
#     compose file mounts it (so rules/*.yml must really resolve)
#   * promtool check rules   alerting/rules/*.yml
#   * promtool test rules    alerting/tests/*.yml
#   * amtool check-config    alerting/alertmanager.yml
#   * alerting/tests/routes.sh (amtool config routes test, per route)
#   * alerting/tests/entrypoint.sh (the Alertmanager entrypoint with a
#     stand-in binary), then the entrypoint with each Alertmanager service's
#     compose environment (Slack and PagerDuty empty, as in .env.example):
#     each runs on a copy of alertmanager.yml whose receivers send nothing to
#     Slack or PagerDuty (amtool check-config, routes.sh on it); `alertmanager`
#     keeps the opswire URL and its other arguments, clustering off; each
#     member of the pair gets the opswire URL replaced and its gossip flags
#   * docker-compose config  (compose file parses with .env.example, with and
#     without --profile cluster; refuses to without the secrets), every file
#     it mounts exists, every variable it uses is in .env.example
#   * the `cluster` profile: no default service depends on it; each opswire
#     replica (OPSWIRE_BROKER__URL) waits for a healthy Redis with AOF on, a
#     healthcheck and a /data volume; the load balancer's upstream servers in
#     deploy/nginx.conf are exactly the replicas, its listen port the
#     published one; the Alertmanager pair (services of the profile running
#     alerting/alertmanager-entrypoint.sh): alertmanager's image, mounts and
#     secrets, a data volume each, every member peering with every other,
#     the opswire receiver -> the load balancer; Prometheus sends to and
#     scrapes each member by DNS (never a static target); the replicas'
#     silences go to the pair; no host port published twice
#   * compose on a real engine: opswire:local built by one service only (no
#     profile, pull_policy build), run by the others with pull_policy never;
#     the agents' healthcheck is `agent-entrypoint.sh healthcheck` (tested on
#     real sockets: a listener alone is unhealthy, a connection healthy, its
#     end unhealthy again); every Alertmanager's /secrets tmpfs is owned by
#     nobody (uid/gid 65534); Prometheus retention is in prometheus.yml
#     (storage.tsdb.retention, checked here, hidden from Debian's promtool
#     2.42 which predates it), no deprecated --storage.tsdb.retention flag
#   * the Collector config wires only defined components and binds 0.0.0.0
#   * dashboards: valid JSON, unique fixed uids, data source uids that are
#     provisioned, every PromQL expression parses (promtool), every opswire
#     metric they or the rules use exists in src/metrics.rs, and `$` is
#     escaped in Grafana provisioning files; every Loki query (dashboards,
#     variables, the LogQL examples of docs/observability.md) parses with
#     Grafana's LogQL grammar (@grafana/lezer-logql from npm, cached; a
#     structure check without node), selects only by labels Loki indexes
#     (deploy/loki.yaml, fed by the Collector's groupbyattrs), filters only
#     on fields the team records carry, uses only defined variables, a
#     textbox only as ${name:json}
#   * opswire's LIVE /metrics (target/debug/opswire with deploy/opswire.toml)
#     through `promtool check metrics`, after exercising the webhook,
#     log ingest, SSE and WebSocket paths so lazily created series exist
#   * a real Alertmanager started through alerting/alertmanager-entrypoint.sh
#     with the compose environment (Slack and PagerDuty empty, as in
#     .env.example) loads every receiver, none with a Slack or PagerDuty
#     integration, delivers an alert through the opswire receiver (bearer
#     token from credentials_file) to a subscriber of the alert's team, and
#     not to another team's, and (after the Slack route's group_wait) never
#     tried Slack or PagerDuty
#   * every runbook_url of alerting/rules/ is an anchor of docs/operations.md
#   * a REAL Prometheus (Debian's 2.42) scrapes that opswire and a real
#     `opswire agent` of team search every 1 s, evaluates the real rules
#     (every rule must evaluate without error), and every PromQL expression
#     of every dashboard, template variables filled from label_values(),
#     returns data through /api/v1/query (scripts/stack_live.py; the panels
#     that only the OpenTelemetry Collector could feed are skipped and listed)
#   * the cluster profile, live: Debian's nginx runs deploy/nginx.conf (names
#     of the replicas -> local ports; `nginx -t` first) in front of two real
#     opswire started with their compose environment, next to a real
#     redis-server started with the compose command (its compose healthcheck
#     fails before it starts, passes after): /readyz, a browser-like
#     same-origin WebSocket, WebSocket and SSE subscribers reaching each
#     replica through nginx, a log posted to each replica and one through
#     nginx reaching them as they should, both replicas in the access log,
#     no token in it, no error in nginx's log. Cluster mode (the replicas
#     connected to Redis) also asserts cross-replica delivery and /readyz 503
#     without Redis; without it (this build), those are listed as skipped.
#     In cluster mode, the Alertmanager pair: two real Alertmanagers started
#     through alerting/alertmanager-entrypoint.sh with their compose
#     environment (names -> local ports) gossip with each other, and an
#     alert posted to BOTH (gossip slowed down, so that both notify) reaches
#     each WebSocket subscriber behind nginx exactly once
#   * end to end: that Prometheus, with a test override of one real rule
#     (for: 0s, threshold met, labels kept), fires -> the real Alertmanager ->
#     opswire's webhook -> a WebSocket subscriber of the alert's team gets
#     the `alert` frame, a subscriber of the other team does not
#     (scripts/ws_client.py listens)
#
# Every server binds 127.0.0.1 on a free port; every wait has a timeout;
# every process started here is stopped on exit (trap). About 60 s in all.
#
# Usage: scripts/check-stack.sh          (from the repository root)
# Env:   OPSWIRE_BIN=path      binary to run (default
#                              ${CARGO_TARGET_DIR:-target}/debug/opswire,
#                              built by scripts/build-bins.sh)
#        CHECK_STACK_STRICT_LINT=1  also fail on `promtool check metrics`
#                                   lint warnings (exit 3), not only on
#                                   format errors (exit 1)
#        CHECK_STACK_REQUIRE_CLUSTER=1  fail when the replicas do not connect
#                                   to redis-server (cluster mode missing)
#                                   instead of skipping the cross-replica
#                                   assertions
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
lb_pids=()
nginx_pid=""
redis_pid=""
replica_pids=()
pair_pids=()
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
  for pid in "${live_pids[@]}" "$prom_pid" "$agent_pid" "$sse_pid" "$am_pid" "$opswire_pid" \
      "${lb_pids[@]}" "${pair_pids[@]}" "$nginx_pid" "${replica_pids[@]}" "$redis_pid"; do
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
for t in promtool amtool docker-compose curl nginx redis-server redis-cli; do
  command -v "$t" >/dev/null 2>&1 ||
    die "$t not found (Debian: prometheus, prometheus-alertmanager, docker-compose, curl, nginx, redis-server)"
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
  "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1)" "$($py --version)" \
  "$(nginx -v 2>&1)" "$(redis-server --version | cut -d' ' -f1-3)"

# -------------------------------------------------------------- compose
step "docker-compose config -q (with .env.example)"
[[ -f .env.example ]] || die ".env.example is missing"
docker-compose -f docker-compose.yml --env-file .env.example config -q ||
  die "docker-compose config -q: docker-compose.yml does not parse"
ok "docker-compose.yml parses"
docker-compose -f docker-compose.yml --env-file .env.example --profile cluster config -q ||
  die "docker-compose --profile cluster config -q: docker-compose.yml does not parse with the cluster profile"
ok "docker-compose.yml parses with --profile cluster"
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
seen_ports = {}
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
        if kind == "bind" and (name, src, target) == ("agent", "/", "/host"):
            # The agent's host root (checked below): the one mount from
            # outside the repository, and read-only.
            if not v.get("read_only") or (v.get("bind") or {}).get("propagation") != "rslave":
                problems.append(f"agent: the host's / must be mounted read_only with propagation rslave: {v}")
            print(f"   {name:15s} / (the host's, read-only) -> /host")
        elif kind == "bind":
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
        host_port = published.split("/")[0].split(":")[-2] if published.count(":") >= 2 else published.split(":")[0]
        if host_port in seen_ports:
            problems.append(f"{name}: publishes host port {host_port}, as {seen_ports[host_port]} does")
        seen_ports[host_port] = name
        # The UI ports, and the cluster profile's: 8081 (the load balancer),
        # 9095 and 9096 (the Alertmanager pair).
        # 4317: the Collector's OTLP gRPC, for the agent in the host's network.
        ui = ("8080", "8081", "3000", "16686", "9090", "9093", "9095", "9096", "4317")
        if published and published not in ui and not any(
                published.endswith(":" + u) or (":" + u + ":") in published for u in ui):
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

step "compose: the agent reports the Docker host (host PID and network namespaces, the host's / at its host root)"
"$py" - "$tmp/compose.resolved.yml" <<'PY' || die "compose: the agent's host view"
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"]["agent"]
env = svc.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) for e in env)
problems = []
if svc.get("pid") != "host":
    problems.append(f"pid: {svc.get('pid')!r}, want host (the host's processes)")
if svc.get("network_mode") != "host":
    problems.append(f"network_mode: {svc.get('network_mode')!r}, want host (the host's interfaces)")
if "hostname" in svc:
    problems.append("hostname: is refused with the host's network")
root = env.get("OPSWIRE_AGENT_HOST_ROOT")
mounted = [v for v in svc.get("volumes", []) if isinstance(v, dict) and v.get("source") == "/"]
if not root or [v.get("target") for v in mounted] != [root]:
    problems.append(f"OPSWIRE_AGENT_HOST_ROOT={root!r} is not where the host's / is mounted ({mounted})")
for var in ("AGENT_HUB", "OTEL_EXPORTER_OTLP_ENDPOINT"):
    host = env.get(var, "").split("://", 1)[-1].split(":")[0]
    if host not in ("127.0.0.1", "localhost", "0.0.0.0") and not host[:1].isdigit():
        problems.append(f"{var}={env.get(var)!r}: a service name does not resolve in the host's network")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print(f"   pid: host, network_mode: host, host root {root} (read-only), hub {env['AGENT_HUB']}")
PY
ok "the agent samples the Docker host"

step "compose: a shared image built once, never pulled; agents' healthcheck; Alertmanager's /secrets tmpfs"
# * Each image some service builds is built by exactly ONE service (two
#   `build:` with one `image:` are two Bake targets exporting one tag in
#   parallel: "image ... already exists" on a clean machine), one without a
#   profile (so it is in every `up`, with the cluster profile or without),
#   with pull_policy build (compose's default would first try to pull the
#   local tag from Docker Hub); every other service running that image has
#   no `build:` and pull_policy never (compose only tolerates a failed pull
#   of an image another service builds; never: no pull at all).
# * Services running deploy/agent-entrypoint.sh (no port) do not inherit the
#   image's `curl /healthz`: their healthcheck is the entrypoint's
#   `healthcheck` (or disabled).
# * The Alertmanager services' /secrets tmpfs belongs to the image's user
#   (nobody, 65534) through uid=/gid= mount options: after a restart a bare
#   tmpfs comes back root-owned 0755 and the entrypoint cannot write.
"$py" - "$root" "$tmp/compose.resolved.yml" <<'PY' || die "compose: image builds / healthchecks / tmpfs"
import os, sys, yaml
root, resolved = sys.argv[1:3]
svcs = yaml.safe_load(open(resolved))["services"]
problems = []
built = {}
for n, s in svcs.items():
    if "build" in s:
        built.setdefault(s.get("image") or f"<{n}>", []).append(n)
for image, builders in sorted(built.items()):
    if len(builders) != 1:
        problems.append(f"image {image} is built by {builders}: one builder, the others `image:` + pull_policy never")
        continue
    b = builders[0]
    if svcs[b].get("profiles"):
        problems.append(f"{b} builds {image} but has profiles {svcs[b]['profiles']}: without them the image is never built")
    if svcs[b].get("pull_policy") != "build":
        problems.append(f"{b} builds {image} with pull_policy {svcs[b].get('pull_policy')!r}: want build (never pull a local tag)")
    users = sorted(n for n, s in svcs.items() if s.get("image") == image and n != b)
    for u in users:
        if svcs[u].get("pull_policy") != "never":
            problems.append(f"{u} runs {image} (built by {b}) with pull_policy {svcs[u].get('pull_policy')!r}: want never")
    print(f"   {image}: built by {b} (pull_policy build, no profile); used by {', '.join(users)} (pull_policy never)")
agent_entry = os.path.join(root, "deploy/agent-entrypoint.sh")
for n, s in sorted(svcs.items()):
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in s.get("volumes", []) if isinstance(v, str)}
    if agent_entry not in mounts:
        continue
    hc = s.get("healthcheck")
    test = (hc or {}).get("test") or []
    if not hc:
        problems.append(f"{n}: no healthcheck: it inherits the image's `curl /healthz`, and an agent listens on no port")
    elif not hc.get("disable") and not (mounts[agent_entry] in test and test[-1] == "healthcheck"):
        problems.append(f"{n}: healthcheck {test} is not `{mounts[agent_entry]} healthcheck`")
    else:
        print(f"   {n}: healthcheck {' '.join(test) if test else 'disabled'}")
am_entry = os.path.join(root, "alerting/alertmanager-entrypoint.sh")
for n, s in sorted(svcs.items()):
    if not any(str(v).split(":")[0] == am_entry for v in s.get("volumes", [])):
        continue
    tmpfs = [t for t in (s.get("tmpfs") or []) if str(t).split(":")[0] == "/secrets"]
    opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in (tmpfs[0].split(":", 1)[1].split(",") if tmpfs and ":" in tmpfs[0] else []))
    if not tmpfs or opts.get("uid") != "65534" or opts.get("gid") != "65534":
        problems.append(f"{n}: tmpfs {tmpfs}: want /secrets:uid=65534,gid=65534,... (the image runs as nobody)")
    else:
        print(f"   {n}: tmpfs {tmpfs[0]}")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
PY
ok "one build of each image, no pull of it; agents' healthcheck; /secrets owned by nobody"

step "the agents' healthcheck (deploy/agent-entrypoint.sh healthcheck) on real sockets"
# Healthy only while a TCP connection to AGENT_HUB's port is ESTABLISHED
# (/proc/net/tcp, /proc/net/tcp6): a listener alone is not enough, a
# connection is, and its end is seen at once.
hc_port="$(free_port)"
"$py" - "$hc_port" "$tmp/hc.fifo" <<'PY' &
import os, socket, sys, time
port, fifo = int(sys.argv[1]), sys.argv[2]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen()
def step(name):
    open(fifo + "." + name, "w").close()
    while not os.path.exists(fifo + "." + name + ".done"):
        time.sleep(0.02)
step("listening")
c = socket.create_connection(("127.0.0.1", port)); a, _ = l.accept()
step("connected")
c.close(); a.close()
step("closed")
PY
hc_pid=$!
hc_wait() { for _ in $(seq 1 250); do [[ -e "$tmp/hc.fifo.$1" ]] && return 0; sleep 0.02; done; die "healthcheck test: no '$1' from the socket helper"; }
hc_run() { env -i PATH="$PATH" AGENT_HUB="ws://127.0.0.1:$hc_port" sh deploy/agent-entrypoint.sh healthcheck >/dev/null 2>&1; }
hc_wait listening
hc_run && die "agent healthcheck: healthy with only a listener on the hub's port (no connection)"
touch "$tmp/hc.fifo.listening.done"; hc_wait connected
hc_run || die "agent healthcheck: unhealthy while a connection to the hub's port is established"
touch "$tmp/hc.fifo.connected.done"; hc_wait closed
hc_run && die "agent healthcheck: still healthy after the connection closed"
touch "$tmp/hc.fifo.closed.done"
wait "$hc_pid" 2>/dev/null || true
env -i PATH="$PATH" AGENT_HUB="ws://opswire:http" sh deploy/agent-entrypoint.sh healthcheck >"$tmp/hc.err" 2>&1 && rc=0 || rc=$?
[[ "$rc" == 2 ]] && grep -q "cannot read a port" "$tmp/hc.err" || die "agent healthcheck: a bad AGENT_HUB port: exit $rc, $(cat "$tmp/hc.err")"
ok "unhealthy with a listener only, healthy with a connection, unhealthy once it closed; a bad AGENT_HUB port: exit 2"

step "compose: the cluster profile (Redis, opswire replicas, load balancer) and the default stack without it"
# Writes $tmp/cluster.sh (the replicas, the broker service, the replicas'
# port, the load balancer) for the live check of the profile below.
"$py" - "$root" "$tmp/compose.resolved.yml" "$tmp/cluster.sh" <<'PY' || die "compose: cluster profile"
import os, re, shlex, sys, urllib.parse, yaml
root, resolved, out = sys.argv[1:4]
svcs = yaml.safe_load(open(resolved))["services"]
problems = []
prof = {n: list(s.get("profiles") or []) for n, s in svcs.items()}
default = sorted(n for n, p in prof.items() if not p)
profiled = sorted(n for n, p in prof.items() if p)
deps = lambda n: svcs[n].get("depends_on") or {}
env = lambda n: svcs[n].get("environment") or {}
def cmd(n, key="command"):
    c = svcs[n].get(key) or []
    return shlex.split(c) if isinstance(c, str) else [str(x) for x in c]
def vols(n):
    for v in svcs[n].get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            yield parts[0], parts[1] if len(parts) > 1 else ""
        else:
            yield v.get("source", ""), v.get("target", "")
for n in profiled:
    if prof[n] != ["cluster"]:
        problems.append(f"{n}: profiles {prof[n]}, expected [cluster]")
for n in default:
    for d in deps(n):
        if prof.get(d):
            problems.append(f"{n} (no profile) depends on {d} (profile {prof[d]}): plain `docker compose up` would break")
for n in svcs:
    for d in deps(n):
        if d not in svcs:
            problems.append(f"{n} depends on {d}, which is not a service")
replicas = sorted(n for n in svcs if "OPSWIRE_BROKER__URL" in env(n))
if len(replicas) < 2:
    problems.append(f"cluster: {len(replicas)} service(s) set OPSWIRE_BROKER__URL, want at least 2 replicas")
brokers, ports = set(), set()
for r in replicas:
    if not prof[r]:
        problems.append(f"{r} sets OPSWIRE_BROKER__URL outside the cluster profile")
    u = urllib.parse.urlparse(env(r)["OPSWIRE_BROKER__URL"])
    if u.scheme not in ("redis", "rediss") or u.hostname not in svcs:
        problems.append(f"{r}: OPSWIRE_BROKER__URL {u.geturl()!r} does not name a redis:// service of this file")
        continue
    brokers.add(u.hostname)
    if (deps(r).get(u.hostname) or {}).get("condition") != "service_healthy":
        problems.append(f"{r} does not wait for {u.hostname} to be healthy (depends_on condition service_healthy)")
    if not (svcs[r].get("healthcheck") or {}).get("test"):
        problems.append(f"{r} has no healthcheck")
    c = cmd(r)
    bind = c[c.index("--bind") + 1] if "--bind" in c else ""
    if not re.fullmatch(r"0\.0\.0\.0:\d+", bind):
        problems.append(f"{r}: command {c} does not --bind 0.0.0.0:PORT")
    else:
        ports.add(bind.split(":")[1])
    if svcs[r].get("ports"):
        problems.append(f"{r} publishes a port: clients go through the load balancer")
for b in sorted(brokers):
    c = " ".join(cmd(b))
    if not re.search(r"--appendonly\s+yes\b", c):
        problems.append(f"{b}: command {c!r} does not turn AOF on (--appendonly yes)")
    hc = (svcs[b].get("healthcheck") or {}).get("test") or []
    if not hc or hc[0] not in ("CMD", "CMD-SHELL") or "redis-cli" not in " ".join(hc):
        problems.append(f"{b}: healthcheck {hc} does not run redis-cli")
    if not any(t == "/data" and not src.startswith(("/", ".")) for src, t in vols(b)):
        problems.append(f"{b}: no named volume at /data (the AOF would die with the container)")
    if svcs[b].get("ports"):
        problems.append(f"{b} publishes a port")
lbs = [n for n in svcs if any(src == os.path.join(root, "deploy/nginx.conf") for src, _ in vols(n))]
if len(lbs) != 1:
    problems.append(f"services mounting deploy/nginx.conf: {lbs}, want one load balancer")
else:
    lb = lbs[0]
    conf = open(os.path.join(root, "deploy/nginx.conf")).read()
    code = "\n".join(l for l in conf.splitlines() if not l.lstrip().startswith("#"))
    servers = set(re.findall(r"^\s*server\s+([^\s;{]+)", code, re.M))
    want = {f"{r}:{p}" for r in replicas for p in ports}
    if len(ports) != 1 or servers != want:
        problems.append(f"deploy/nginx.conf upstream servers {sorted(servers)}, want the replicas {sorted(want)}")
    listen = re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)\b", code, re.M)
    published = [str(p).split("/")[0].rsplit(":", 1)[-1] for p in svcs[lb].get("ports", [])]
    if len(listen) != 1 or published != listen:
        problems.append(f"{lb}: publishes container port(s) {published}, nginx listens on {listen}")
    for r in replicas:
        if (deps(lb).get(r) or {}).get("condition") != "service_healthy":
            problems.append(f"{lb} does not wait for {r} to be healthy")
    hc = " ".join((svcs[lb].get("healthcheck") or {}).get("test") or [])
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", hc)
    if not m or m.group(1) not in listen:
        problems.append(f"{lb}: healthcheck {hc!r} does not ask nginx on its listen port")

# The Alertmanagers: every service that runs alerting/alertmanager-entrypoint.sh.
# `alertmanager` (no profile) keeps posting to http://opswire:8080 with
# clustering off; the pair of the profile gossips, every member with every
# other, and posts to the load balancer.
entry = os.path.join(root, "alerting/alertmanager-entrypoint.sh")
am_yml = os.path.join(root, "alerting/alertmanager.yml")
ams = sorted(n for n in svcs if any(src == entry for src, _ in vols(n)))
single = [n for n in ams if not prof[n]]
pair = [n for n in ams if prof[n]]
am_cfg = yaml.safe_load(open(am_yml))
opswire_urls = [w["url"] for r in am_cfg["receivers"] if r["name"] == "opswire" for w in r.get("webhook_configs", [])]
hook_path = urllib.parse.urlparse(opswire_urls[0]).path if len(opswire_urls) == 1 else ""
if not hook_path:
    problems.append(f"alerting/alertmanager.yml: receiver opswire has webhook URLs {opswire_urls}, want one")
AM_VARS = ("OPSWIRE_WEBHOOK_URL", "ALERTMANAGER_CLUSTER_LISTEN_ADDRESS", "ALERTMANAGER_CLUSTER_PEERS")
if single != ["alertmanager"]:
    problems.append(f"Alertmanagers without a profile: {single}, want [alertmanager]")
for n in single:
    for k in AM_VARS:
        if k in env(n):
            problems.append(f"{n} (no profile) sets {k}: the default stack's Alertmanager must stay as it was")
if len(pair) < 2:
    problems.append(f"cluster: Alertmanagers of the profile {pair}, want an HA pair (at least 2)")
gossip, am_port = {}, {}
ref = svcs.get("alertmanager") or {}
def mount_targets(n):
    return {src: t.split(":")[0] for src, t in vols(n) if src in (entry, am_yml)}
def published_to(n, container_port):
    for p in svcs[n].get("ports", []):
        parts = str(p.get("published", "")) if isinstance(p, dict) else str(p)
        if isinstance(p, dict) and str(p.get("target")) == container_port:
            return str(p.get("published"))
        bits = parts.split("/")[0].split(":")
        if len(bits) >= 2 and bits[-1] == container_port:
            return bits[-2]
    return None
for n in pair:
    e = env(n)
    la = str(e.get("ALERTMANAGER_CLUSTER_LISTEN_ADDRESS", ""))
    mm = re.fullmatch(r"0\.0\.0\.0:(\d+)", la)
    if not mm:
        problems.append(f"{n}: ALERTMANAGER_CLUSTER_LISTEN_ADDRESS {la!r}, want 0.0.0.0:PORT (gossip on)")
        continue
    gossip[n] = mm.group(1)
    for key in ("image", "entrypoint", "tmpfs", "healthcheck"):
        if svcs[n].get(key) != ref.get(key):
            problems.append(f"{n}: {key} {svcs[n].get(key)!r} differs from alertmanager's {ref.get(key)!r}")
    if mount_targets(n) != mount_targets("alertmanager") or len(mount_targets(n)) != 2:
        problems.append(f"{n}: mounts {mount_targets(n)}, want alertmanager's {mount_targets('alertmanager')}")
    for k in ("OPSWIRE_WEBHOOK_TOKEN", "SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
        if e.get(k) != env("alertmanager").get(k):
            problems.append(f"{n}: {k} is not alertmanager's")
    u = urllib.parse.urlparse(str(e.get("OPSWIRE_WEBHOOK_URL", "")))
    if lbs and len(lbs) == 1 and not (u.scheme == "http" and u.hostname == lbs[0]
                                      and str(u.port) in listen and u.path == hook_path):
        problems.append(f"{n}: OPSWIRE_WEBHOOK_URL {u.geturl()!r}, want http://{lbs[0]}:{'/'.join(listen)}{hook_path} (the load balancer)")
    if lbs and (deps(n).get(lbs[0]) or {}).get("condition") != "service_healthy":
        problems.append(f"{n} does not wait for {lbs[0]} to be healthy")
    data = [src for src, t in vols(n) if t == "/alertmanager" and not src.startswith(("/", "."))]
    if len(data) != 1:
        problems.append(f"{n}: no named volume of its own at /alertmanager")
    else:
        am_port[n] = data[0]
    pub = published_to(n, "9093")
    ext = urllib.parse.urlparse(str(e.get("ALERTMANAGER_EXTERNAL_URL", "")))
    if pub and str(ext.port) != pub:
        problems.append(f"{n}: ALERTMANAGER_EXTERNAL_URL {ext.geturl()!r} does not name its published port {pub}")
datas = list(am_port.values()) + [src for src, t in vols("alertmanager") if t == "/alertmanager"]
if len(set(datas)) != len(datas):
    problems.append(f"Alertmanagers share a data volume: {datas} (each needs its own notification log)")
for n in gossip:
    got = set(re.split(r"[,\s]+", str(env(n).get("ALERTMANAGER_CLUSTER_PEERS", "")).strip())) - {""}
    want = {f"{o}:{gossip[o]}" for o in gossip if o != n}
    if got != want:
        problems.append(f"{n}: ALERTMANAGER_CLUSTER_PEERS {sorted(got)}, want every other member {sorted(want)}")
# Prometheus sends every alert to `alertmanager` and to every member of the
# pair, and scrapes each member; the pair by DNS (names that do not resolve
# without the profile), never as static targets (two dead Alertmanagers in
# the default stack: every send would fail, TargetDown would fire).
prom = yaml.safe_load(open(os.path.join(root, "prometheus/prometheus.yml")))
def reached(cfgs):
    static, dns = set(), set()
    for c in cfgs:
        for sc in c.get("static_configs") or []:
            static.update(sc.get("targets") or [])
        for dc in c.get("dns_sd_configs") or []:
            if dc.get("type", "SRV") == "A" and dc.get("port"):
                dns.update(f"{nm}:{dc['port']}" for nm in dc.get("names") or [])
    return static, dns
a_static, a_dns = reached((prom.get("alerting") or {}).get("alertmanagers") or [])
s_static, s_dns = reached(prom.get("scrape_configs") or [])
if "alertmanager:9093" not in a_static:
    problems.append("prometheus/prometheus.yml: alerting does not reach alertmanager:9093 (static)")
for n in pair:
    if f"{n}:9093" not in a_dns:
        problems.append(f"prometheus/prometheus.yml: alerting does not find {n}:9093 through dns_sd_configs (type A)")
    if f"{n}:9093" not in s_dns:
        problems.append(f"prometheus/prometheus.yml: no scrape job finds {n}:9093 through dns_sd_configs (type A)")
    if any(t.split(":")[0] == n for t in a_static | s_static):
        problems.append(f"prometheus/prometheus.yml: {n} is a static target (down in the default stack)")
# The replicas' `silence` op goes to the pair (the Alertmanagers feeding
# the cluster), through a name every member answers to.
aliases = {n: set(((svcs[n].get("networks") or {}).get("default") or {}).get("aliases") or []) for n in svcs}
for r in replicas:
    u = urllib.parse.urlparse(str(env(r).get("OPSWIRE_ALERTMANAGER__URL", "")))
    holders = sorted(n for n in svcs if u.hostname == n or u.hostname in aliases[n])
    if holders != sorted(pair) or u.port != 9093:
        problems.append(f"{r}: OPSWIRE_ALERTMANAGER__URL {u.geturl()!r} reaches {holders}:{u.port}, want every member of the pair {pair}:9093")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
with open(out, "w") as fh:
    fh.write(f"cluster_replicas=({' '.join(replicas)})\ncluster_broker={sorted(brokers)[0]}\n"
             f"cluster_port={ports.pop()}\ncluster_lb={lb}\ncluster_lb_health={shlex.quote(m.group(2))}\n"
             f"cluster_lb_port={listen[0]}\ncluster_ams=({' '.join(pair)})\ncluster_hook_path={shlex.quote(hook_path)}\n"
             f"declare -A cluster_am_gossip=({' '.join(f'[{n}]={p}' for n, p in gossip.items())})\n")
print(f"   without a profile: {', '.join(default)}")
print(f"   profile cluster:   {', '.join(profiled)}")
print(f"   replicas {', '.join(replicas)} -> broker {', '.join(sorted(brokers))} (AOF, healthcheck, /data volume); "
      f"{lb} upstreams = the replicas, listens on the published port")
print(f"   Alertmanager pair {', '.join(pair)}: gossip "
      f"{', '.join(f'{n}:{gossip[n]}' for n in gossip)}, each peering with the other(s); opswire receiver -> "
      f"http://{lb}:{listen[0]}{hook_path}; alertmanager's image, entrypoint, mounts and secrets, a data volume each")
print(f"   prometheus/prometheus.yml: alerts -> alertmanager:9093 (static) + {', '.join(f'{n}:9093' for n in pair)} (DNS); "
      f"the replicas' silences -> the pair")
PY
ok "cluster profile wired; the default services depend on none of it"

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
for f in alerting/tests/routes.sh alerting/tests/entrypoint.sh; do
  bash -n "$f" || die "$f: syntax error"
  ok "bash -n $f"
done

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
# Retention lives in the file (storage.tsdb.retention, Prometheus 3), not
# in the deprecated --storage.tsdb.retention.* flags. Debian's promtool
# 2.42 refuses that block ("field retention not found"): check its shape
# here, and give a promtool older than 3 the file without it.
"$py" - "$tmp/compose.resolved.yml" "$tmp/fs/etc/prometheus/prometheus.yml" "$(promtool --version 2>&1 | head -1)" <<'PY' ||
import re, sys, yaml
resolved, path, version = sys.argv[1:4]
problems = []
cmd = yaml.safe_load(open(resolved))["services"]["prometheus"].get("command") or []
cmd = cmd.split() if isinstance(cmd, str) else cmd
for a in cmd:
    if str(a).startswith("--storage.tsdb.retention"):
        problems.append(f"prometheus command has {a}: deprecated in Prometheus 3, use storage.tsdb.retention in prometheus.yml")
doc = yaml.safe_load(open(path))
ret = (((doc.get("storage") or {}).get("tsdb") or {}).get("retention")) or {}
dur = r"(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?"
if not ret:
    problems.append("prometheus.yml: no storage.tsdb.retention block (retention would be the 15d default, unstated)")
for k in ret:
    if k not in ("time", "size", "percentage"):
        problems.append(f"prometheus.yml: storage.tsdb.retention.{k} is not a retention setting (time, size, percentage)")
if "time" in ret and not (re.fullmatch(dur, str(ret["time"])) and str(ret["time"]) not in ("", "0")):
    problems.append(f"prometheus.yml: storage.tsdb.retention.time {ret['time']!r} is not a Prometheus duration")
if "size" in ret and not re.fullmatch(r"\d+(?:B|KB|MB|GB|TB|PB|EB)", str(ret["size"])):
    problems.append(f"prometheus.yml: storage.tsdb.retention.size {ret['size']!r} is not a size (e.g. 10GB)")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
m = re.search(r"version (\d+)\.", version)
if m and int(m.group(1)) < 3:
    del doc["storage"]["tsdb"]["retention"]
    if not doc["storage"]["tsdb"]:
        del doc["storage"]["tsdb"]
    if not doc["storage"]:
        del doc["storage"]
    yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
    print(f"   storage.tsdb.retention {ret} checked here; removed for promtool {m.group(1)}.x, which predates it")
else:
    print(f"   storage.tsdb.retention {ret}: left for promtool")
PY
  die "prometheus retention: storage.tsdb.retention in prometheus.yml, no deprecated flag"
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

step "entrypoint tests: bash alerting/tests/entrypoint.sh"
bash alerting/tests/entrypoint.sh || die "entrypoint tests (alerting/tests/entrypoint.sh)"

step "the entrypoint as compose runs each Alertmanager (a stand-in binary prints the arguments)"
# Every service that runs alerting/alertmanager-entrypoint.sh, with its
# compose environment: every one runs on the entrypoint's copy (Slack and
# PagerDuty are empty in .env.example: no slack_configs/pagerduty_configs
# left), which amtool and the routing tests accept; `alertmanager` keeps
# the opswire URL and its other arguments (clustering off); each member of
# the pair posts to the load balancer and gets its gossip flags.
printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$tmp/fake-alertmanager"
chmod +x "$tmp/fake-alertmanager"
mkdir -p "$tmp/amsvc"
mapfile -t am_services < <("$py" -c '
import os, sys, yaml
svcs = yaml.safe_load(open(sys.argv[1]))["services"]
entry = os.path.join(sys.argv[2], "alerting/alertmanager-entrypoint.sh")
for n, s in sorted(svcs.items()):
    if any(str(v).split(":")[0] == entry for v in s.get("volumes", [])):
        print(n)' "$tmp/compose.resolved.yml" "$root")
((${#am_services[@]} >= 3)) || die "services running the Alertmanager entrypoint: ${am_services[*]}, want alertmanager and a pair"
for svc in "${am_services[@]}"; do
  mapfile -t aenv < <("$py" -c '
import sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]].get("environment") or {}
print("\n".join(f"{k}={v}" for k, v in sorted(env.items())))' "$tmp/compose.resolved.yml" "$svc")
  env -i PATH="$PATH" "${aenv[@]}" ALERTMANAGER_BIN="$tmp/fake-alertmanager" \
    ALERTMANAGER_CONFIG="$root/alerting/alertmanager.yml" ALERTMANAGER_SECRETS_DIR="$tmp/amsvc/$svc" \
    sh alerting/alertmanager-entrypoint.sh >"$tmp/amsvc/$svc.args" 2>"$tmp/amsvc/$svc.err" ||
    { cat "$tmp/amsvc/$svc.err" >&2; die "$svc: the entrypoint failed with the compose environment"; }
  cfg="$(sed -n 's/^--config.file=//p' "$tmp/amsvc/$svc.args")"
  # .env.example leaves Slack and PagerDuty empty: every Alertmanager runs
  # on the entrypoint's copy, whose receivers send nothing to them.
  [[ "$cfg" == "$tmp/amsvc/$svc/alertmanager.yml" ]] || die "$svc: runs on $cfg, not the entrypoint's copy"
  slack_env="$(grep -c '^SLACK_WEBHOOK_URL=.' <(printf '%s\n' "${aenv[@]}") || true)"
  pd_env="$(grep -c '^PAGERDUTY_ROUTING_KEY=.' <(printf '%s\n' "${aenv[@]}") || true)"
  if [[ "$slack_env" == 0 ]] && grep -v '^\s*#' "$cfg" | grep -q 'slack_configs:'; then
    die "$svc: SLACK_WEBHOOK_URL is empty, but the copy still notifies Slack (with an empty URL)"
  fi
  if [[ "$pd_env" == 0 ]] && grep -v '^\s*#' "$cfg" | grep -q 'pagerduty_configs:'; then
    die "$svc: PAGERDUTY_ROUTING_KEY is empty, but the copy still notifies PagerDuty (with an empty key)"
  fi
  grep -q 'is empty: these receivers send nothing' "$tmp/amsvc/$svc.err" ||
    die "$svc: the entrypoint does not say which receivers send nothing: $(cat "$tmp/amsvc/$svc.err")"
  amtool check-config "$cfg" >"$tmp/amsvc/$svc.check" 2>&1 ||
    { cat "$tmp/amsvc/$svc.check"; die "$svc: amtool check-config on the entrypoint's copy of alertmanager.yml"; }
  ALERTMANAGER_CONFIG="$cfg" bash alerting/tests/routes.sh >"$tmp/amsvc/$svc.routes" 2>&1 ||
    { cat "$tmp/amsvc/$svc.routes"; die "$svc: routing tests on the entrypoint's copy of alertmanager.yml"; }
  if [[ "$svc" == alertmanager ]]; then
    # The default stack's: clustering off, the opswire receiver as in the
    # mounted file (http://opswire:8080), the rest of its arguments as before.
    want="--config.file=$cfg
--storage.path=/alertmanager
--web.listen-address=:9093
--web.external-url=http://localhost:9093
--cluster.listen-address="
    [[ "$(cat "$tmp/amsvc/$svc.args")" == "$want" ]] ||
      die "$svc: arguments $(tr '\n' ' ' <"$tmp/amsvc/$svc.args"), want the default stack's: $(tr '\n' ' ' <<<"$want")"
    grep -qx '      - url: http://opswire:8080/api/v1/alerts/alertmanager' "$cfg" ||
      die "$svc: the copy's opswire receiver is not http://opswire:8080/api/v1/alerts/alertmanager"
  fi
  { diff alerting/alertmanager.yml "$cfg" || true; } | { grep '^>' || true; } | sed "s/^>\s*/   $svc: /"
  sed -n 's/^alertmanager-entrypoint: \([A-Z_]*\) is empty: .*: /\1 empty -> no notification from: /p' "$tmp/amsvc/$svc.err" | sed "s/^/   $svc: /"
  ok "$svc: the copy passes amtool check-config and $(tail -1 "$tmp/amsvc/$svc.routes" | sed 's/^routing tests: //') routing tests; $(grep -- '^--cluster' "$tmp/amsvc/$svc.args" | tr '\n' ' ')"
done

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
        if dsr.get("type", "prometheus") != "prometheus":
            continue  # Loki variables: checked with the LogQL below
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

step "grafana: LogQL of every Loki query (labels indexed, fields exported, variables defined, syntax)"
# No Loki binary here. Every Loki query of the dashboards (panels and
# variables), its variables filled in as Grafana's Loki data source would
# (multi-value -> (a|b), All -> allValue, ${var:json} -> a JSON string, with
# a search text full of quotes, backslashes and regex characters), must:
#   * parse: Grafana's own LogQL grammar (@grafana/lezer-logql, installed
#     once into ${XDG_CACHE_HOME:-~/.cache}/opswire-check-stack from the npm
#     registry when node and npm are here; without them: a bracket, quote
#     and structure check here, said as such)
#   * select streams only by index labels: Loki's default OTLP resource
#     labels or an index_label of deploy/loki.yaml's otlp_config; the team
#     records' own labels (opswire_team, host_name) must come from
#     attributes the Collector's logs pipeline moves to the resource
#     (groupbyattrs keys), since Loki indexes resource attributes only
#   * filter (`| name op "v"`) and group (`by (...)`) only on fields the
#     records carry: the team-records contract's attributes and OTLP fields
#     as Loki stores them (structured metadata), or index labels
#   * reference only variables the dashboard defines (or Grafana's own), a
#     textbox only as ${name:json} (the one format that escapes any text
#     into a valid LogQL string)
logql_dir="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/opswire-check-stack/logql"
logql_parser=""
if command -v node >/dev/null 2>&1; then
  if [[ ! -f "$logql_dir/node_modules/@grafana/lezer-logql/index.cjs" ]] && command -v npm >/dev/null 2>&1; then
    mkdir -p "$logql_dir"
    timeout 180 npm install --prefix "$logql_dir" --no-audit --no-fund --silent --no-save \
      @grafana/lezer-logql@0.4.2 >"$tmp/npm-logql.out" 2>&1 ||
      echo "   (npm install @grafana/lezer-logql failed: $(tail -1 "$tmp/npm-logql.out"))"
  fi
  [[ -f "$logql_dir/node_modules/@grafana/lezer-logql/index.cjs" ]] && logql_parser="$logql_dir"
fi
"$py" - "$root" "$tmp/logql.json" <<'PY' || die "dashboards: LogQL (see above)"
import glob, json, os, re, sys, tomllib, yaml
root, out = sys.argv[1:3]
problems, queries = [], []
# Loki 3.5's default OTLP resource attributes that become index labels
# (distributor/otlp defaults), and the ones deploy/loki.yaml adds.
default_attrs = ["service.name", "service.namespace", "service.instance.id", "deployment.environment",
                 "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
                 "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name",
                 "k8s.replicaset.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
                 "k8s.cronjob.name", "k8s.job.name"]
lab = lambda a: re.sub(r"[^A-Za-z0-9_]", "_", a)
loki = yaml.safe_load(open(os.path.join(root, "deploy/loki.yaml")))
rc = ((loki.get("limits_config") or {}).get("otlp_config") or {}).get("resource_attributes") or {}
custom = {}
for c in rc.get("attributes_config") or []:
    if c.get("action") == "index_label":
        for a in c.get("attributes") or []:
            custom[lab(a)] = a
index = ({} if rc.get("ignore_defaults") else {lab(a): a for a in default_attrs}) | custom
# The Collector's logs pipeline: which record attributes groupbyattrs moves
# to the resource.
col = yaml.safe_load(open(os.path.join(root, "otel-collector/config.yaml")))
moved = set()
for proc in col["service"]["pipelines"]["logs"].get("processors", []):
    if proc.split("/")[0] == "groupbyattrs":
        moved.update((col["processors"][proc] or {}).get("keys") or [])
for l, a in sorted(custom.items()):
    if a not in moved and a not in default_attrs:
        problems.append(f"deploy/loki.yaml indexes {a} ({l}), which no groupbyattrs of the Collector's logs pipeline moves to the resource")
# Fields a record carries in Loki (structured metadata): the team-records
# contract (docs/observability.md, "Team logs in Loki") and OTLP's own.
fields = {"severity_text", "severity_number", "trace_id", "span_id", "scope_name", "flags", "observed_timestamp",
          "detected_level", "opswire_source", "opswire_stream", "opswire_seq", "opswire_epoch",
          "opswire_alert_name", "opswire_alert_status", "opswire_alert_severity",
          "opswire_alert_fingerprint", "opswire_record_trace_id"}
builtin = {"__interval", "__interval_ms", "__auto", "__range", "__range_s", "__range_ms", "__rate_interval",
           "__from", "__to", "__dashboard", "__org", "__user", "__timeFilter"}
teams = [t["name"] for t in tomllib.load(open(os.path.join(root, "deploy/opswire.toml"), "rb")).get("teams", [])]
nasty = 'say "hi" C:\\temp `x` (a|b)* $1 \u00e9'
def regex_escape(v):
    return re.sub(r"([\\$^*{}\[\]+?.()|])", r"\\\1", v)
def fill(q, variables, where):
    def rep(m):
        var, fmt = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), None)
        if var in builtin:
            return {"__range": "1h"}.get(var, "1m")
        v = variables.get(var)
        if v is None:
            problems.append(f"{where}: ${var} is not a variable of the dashboard")
            return "x"
        if v["type"] == "textbox":
            if fmt != "json":
                problems.append(f"{where}: textbox ${var} used as {m.group(0)}: write ${{{var}:json}} (any text, escaped)")
                return "x"
            return json.dumps(nasty, ensure_ascii=False)
        if fmt == "json":
            return json.dumps(v["sample"][0])
        vals = [regex_escape(x) for x in v["sample"]]
        return vals[0] if len(vals) == 1 else "(" + "|".join(vals) + ")"
    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", rep, q)
for f in sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json"))):
    name = os.path.relpath(f, root)
    d = json.load(open(f))
    variables = {}
    for v in d.get("templating", {}).get("list", []):
        sample = {"team": teams or ["search"], "host": ["search-1", "hub-1"]}.get(v["name"]) or \
            [o["value"] for o in v.get("options", []) if o.get("value") not in (None, "", "$__all")] or ["x"]
        variables[v["name"]] = {"type": v.get("type"), "sample": sample}
        if (v.get("datasource") or {}).get("type") == "loki":
            q = v.get("query")
            stream = q.get("stream") if isinstance(q, dict) else None
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v.get("definition") or "")
            if not m or (stream is not None and stream != m.group(1)):
                problems.append(f"{name} variable {v['name']}: definition {v.get('definition')!r} and query stream {stream!r} disagree")
                continue
            label = (q or {}).get("label") if isinstance(q, dict) else m.group(2)
            if label != m.group(2) or label not in index:
                problems.append(f"{name} variable {v['name']}: label {label!r} is not an index label {sorted(index)}")
            queries.append({"where": f"{name} variable {v['name']}", "q": fill(m.group(1), variables, f"{name} variable {v['name']}"),
                            "raw": m.group(1)})
    def walk(ps):
        for p in ps:
            yield p
            yield from walk(p.get("panels", []))
    for p in walk(d.get("panels", [])):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("type") == "loki" and t.get("expr"):
                where = f"{name} {p.get('title')!r} [{t.get('refId')}]"
                queries.append({"where": where, "q": fill(t["expr"], variables, where), "raw": t["expr"]})
# The LogQL examples of docs/observability.md (```logql blocks) too.
doc = open(os.path.join(root, "docs/observability.md")).read()
for block in re.findall(r"^```logql\n(.*?)^```", doc, re.S | re.M):
    for n, line in enumerate(block.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            queries.append({"where": f"docs/observability.md logql example {line.strip()[:50]!r}", "q": line.strip(), "raw": line})
json.dump({"queries": queries, "index": sorted(index), "fields": sorted(fields),
           "custom": custom, "moved": sorted(moved)}, open(out, "w"))
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print(f"   {len(queries)} Loki queries; index labels: {', '.join(sorted(custom))} (deploy/loki.yaml) + "
      f"{len(index) - len(custom)} defaults; the Collector moves {', '.join(sorted(moved))} to the resource")
PY
if [[ -n "$logql_parser" ]]; then
  node - "$logql_parser" "$tmp/logql.json" >"$tmp/logql.parsed" <<'JS' || { cat "$tmp/logql.parsed"; die "a dashboard LogQL query does not parse (@grafana/lezer-logql)"; }
const fs = require("fs");
const { parser } = require(process.argv[2] + "/node_modules/@grafana/lezer-logql/index.cjs");
const { queries } = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
let bad = 0;
const out = [];
for (const { where, q } of queries) {
  const tree = parser.parse(q);
  const errs = [], selector = [], filters = [], grouping = [];
  tree.iterate({
    enter: (n) => {
      if (n.type.isError) errs.push(n.from);
      if (n.name !== "Identifier") return;
      const name = q.slice(n.from, n.to);
      const chain = [];
      for (let p = n.node.parent; p; p = p.parent) chain.push(p.name);
      if (chain.includes("Grouping")) grouping.push(name);
      else if (chain[0] === "Matcher" && chain[1] === "Matchers") selector.push(name);
      else if (chain[0] === "Matcher" && chain[1] === "LabelFilter") filters.push(name);
    },
  });
  if (errs.length) bad++;
  out.push({ where, errs: errs.map((i) => q.slice(Math.max(0, i - 15), i + 15)), selector, filters, grouping });
}
console.log(JSON.stringify(out));
process.exit(bad ? 1 : 0);
JS
  parsed="$tmp/logql.parsed"
  echo "   parser: @grafana/lezer-logql 0.4.2 (Grafana's LogQL grammar) in $logql_parser"
else
  parsed=""
  echo "   parser: none (node/npm missing or offline): structure checked here only"
fi
"$py" - "$tmp/logql.json" "$parsed" <<'PY' || die "dashboards: LogQL labels / fields (see above)"
import json, re, sys
spec = json.load(open(sys.argv[1]))
index, fields = set(spec["index"]), set(spec["fields"])
parsed = json.load(open(sys.argv[2])) if sys.argv[2] else None
problems = []
STR = r'"(?:[^"\\]|\\.)*"|`[^`]*`'
def balance(q):
    stack, i, pairs = [], 0, {")": "(", "]": "[", "}": "{"}
    while i < len(q):
        c = q[i]
        if c == '"':
            m = re.compile(r'"(?:[^"\\]|\\.)*"').match(q, i)
            if not m: return "unterminated \" string"
            i = m.end(); continue
        if c == "`":
            j = q.find("`", i + 1)
            if j < 0: return "unterminated ` string"
            i = j + 1; continue
        if c in "([{": stack.append(c)
        elif c in ")]}":
            if not stack or stack.pop() != pairs[c]: return f"unbalanced {c!r} at {i}"
        i += 1
    return f"unclosed {stack[-1]!r}" if stack else None
def extract(q):
    # Outside strings: {matchers} are stream selectors; `| name op "v"` label filters; by (...) groupings.
    blank = re.sub(STR, lambda m: '"' + "_" * (len(m.group(0)) - 2) + '"', q)
    sel, flt, grp = [], [], []
    for m in re.finditer(r"\{([^{}]*)\}", blank):
        body = q[m.start(1):m.end(1)]
        for mm in re.finditer(r"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*(" + STR + r")\s*(?:,|$)", body):
            sel.append(mm.group(1))
        if not re.fullmatch(r"\s*(?:[A-Za-z_]\w*\s*(?:=~|!~|!=|=)\s*(?:" + STR + r")\s*,?\s*)+", body):
            problems.append(f"selector {{{body}}} is not a list of matchers")
    for m in re.finditer(r"\|\s*([A-Za-z_]\w*)\s*(=~|!~|!=|==|=|>=|<=|>|<)", blank):
        flt.append(m.group(1))
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", blank):
        grp += [x.strip() for x in m.group(1).split(",") if x.strip()]
    return sel, flt, grp
for i, item in enumerate(spec["queries"]):
    where, q = item["where"], item["q"]
    b = balance(q)
    if b:
        problems.append(f"{where}: {b}: {q}")
        continue
    sel, flt, grp = extract(q)
    if parsed is not None:
        p = parsed[i]
        if (sorted(p["selector"]), sorted(p["filters"]), sorted(p["grouping"])) != (sorted(sel), sorted(flt), sorted(grp)):
            problems.append(f"{where}: the parser reads selector {p['selector']} filters {p['filters']} by {p['grouping']}, "
                            f"this check {sel} {flt} {grp}")
    if not sel:
        problems.append(f"{where}: no stream selector")
    for l in sel:
        if l not in index:
            problems.append(f"{where}: stream selector label {l} is not an index label (Loki indexes {sorted(index)})")
    team = re.search(r'service_name\s*=\s*"opswire-teams"', q)
    for l in sel:
        if team and l in spec["custom"] and spec["custom"][l] not in spec["moved"]:
            problems.append(f"{where}: {l} ({spec['custom'][l]}) is a record attribute of the team records that no groupbyattrs moves to the resource")
    for l in flt + grp:
        if l not in fields and l not in index:
            problems.append(f"{where}: `{l}` is neither an index label nor a field the records carry ({sorted(fields)})")
    print(f"   ok {where}: selector {sorted(set(sel))}, filters {flt}, by {grp}")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
PY
ok "every Loki query: parses, selects by index labels, filters on exported fields, variables defined"

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
  # Started as the `alertmanager` service starts it: through
  # alerting/alertmanager-entrypoint.sh with its compose environment (Slack
  # and PagerDuty empty, as in .env.example), the secret files in $tmp
  # (alertmanager.yml's /secrets/ paths pointed there) and opswire at its
  # local address (OPSWIRE_WEBHOOK_URL) instead of http://opswire:8080.
  mkdir -p "$tmp/am"
  sed -e "s#/secrets/#$tmp/am/secrets/#g" alerting/alertmanager.yml >"$tmp/am/alertmanager.yml"
  am_port="$(free_port)"
  mapfile -t amenv < <("$py" -c '
import sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"]["alertmanager"].get("environment") or {}
print("\n".join(f"{k}={v}" for k, v in sorted(env.items())))' "$tmp/compose.resolved.yml")
  env -i PATH="$PATH" HOME="$tmp/am" "${amenv[@]}" OPSWIRE_WEBHOOK_TOKEN="$webhook_token" \
    OPSWIRE_WEBHOOK_URL="http://$addr/api/v1/alerts/alertmanager" ALERTMANAGER_BIN="$am_bin" \
    ALERTMANAGER_CONFIG="$tmp/am/alertmanager.yml" ALERTMANAGER_SECRETS_DIR="$tmp/am/secrets" \
    ALERTMANAGER_STORAGE_PATH="$tmp/am/data" ALERTMANAGER_WEB_LISTEN_ADDRESS="127.0.0.1:$am_port" \
    sh alerting/alertmanager-entrypoint.sh >"$tmp/am/log" 2>&1 &
  am_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$am_port/-/ready" 2>/dev/null && break
    kill -0 "$am_pid" 2>/dev/null || { cat "$tmp/am/log" >&2; die "Alertmanager exited at start"; }
    sleep 0.1
  done
  ok "Alertmanager $("$am_bin" --version 2>&1 | head -1 | awk '{print $3}') ready on 127.0.0.1:$am_port (through the entrypoint)"
  # Slack and PagerDuty empty: the loaded configuration has the receivers
  # (routes unchanged) without their integrations, and the log says so.
  curl -fsS "http://127.0.0.1:$am_port/api/v2/status" >"$tmp/am/status.json" || die "GET /api/v2/status failed"
  "$py" - "$tmp/am/status.json" <<'PY' || die "Alertmanager loaded Slack/PagerDuty integrations with empty credentials"
import json, sys, yaml
cfg = yaml.safe_load(json.load(open(sys.argv[1]))["config"]["original"])
recv = {r["name"]: r for r in cfg["receivers"]}
problems = [f"receiver {n} still has {k}" for n, r in recv.items() for k in ("slack_configs", "pagerduty_configs") if r.get(k)]
for n in ("slack-platform", "slack-search", "slack-ops", "pagerduty"):
    if n not in recv:
        problems.append(f"receiver {n} is gone (its routes would not load)")
if not (recv.get("opswire") or {}).get("webhook_configs"):
    problems.append("receiver opswire lost its webhook")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
kinds = {n: sorted(k for k in r if k.endswith("_configs")) for n, r in recv.items()}
print("   loaded receivers: " + ", ".join(f"{n} {'+'.join(k) or '(no integration)'}" for n, k in kinds.items()))
PY
  grep -q 'SLACK_WEBHOOK_URL is empty: .*slack-search' "$tmp/am/log" && grep -q 'PAGERDUTY_ROUTING_KEY is empty: .*pagerduty' "$tmp/am/log" ||
    die "the entrypoint did not log which receivers send nothing: $(head -5 "$tmp/am/log")"
  ok "Slack and PagerDuty empty: receivers kept without integrations, logged: $(grep -o 'SLACK_WEBHOOK_URL is empty' "$tmp/am/log")"
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
  am_posted=$SECONDS
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
# ingest token minted from the hub's secret, which the agent itself never sees;
# with a host root, as the compose agent has (here this machine's own /).
agent_token="$("$bin" token --team search --scope ingest --ttl 10m --sub agent-search-1)"
: >"$live/agent-tail.log"
env -u OPSWIRE_JWT_SECRET OPSWIRE_AGENT_TOKEN="$agent_token" "$bin" agent --hub "ws://$addr" \
  --host search-1 --team search --tail "$live/agent-tail.log" --host-root / >"$live/agent.out" 2>"$live/agent.err" &
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
# The agent's host root: the root filesystem of search-1, read through it.
for _ in $(seq 1 100); do
  curl -fsS --max-time 2 "http://$addr/metrics" 2>/dev/null |
    grep '^opswire_host_disk_total_bytes{' | grep 'host="search-1"' | grep -q 'mount="/"' && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$live/agent.err" >&2; die "the agent with --host-root / exited"; }
  sleep 0.1
done
curl -fsS --max-time 2 "http://$addr/metrics" | grep '^opswire_host_disk_total_bytes{' | grep 'host="search-1"' |
  grep -q 'mount="/"' || die "no root disk of search-1 (agent --host-root /) in opswire's /metrics"
ok "the agent with --host-root / reports its host's root filesystem"

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
# Slack and PagerDuty empty: Alertmanager never tried to notify them. The
# team search warning (CheckStackSearch) matched slack-search, whose group
# flushes after the root group_wait (30 s): only after that is "no attempt"
# a result (before the entrypoint's change, an empty webhook URL made it one
# failed notification, retried).
waited=$((SECONDS - am_posted))
gw="$("$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["route"].get("group_wait", "30s"))' alerting/alertmanager.yml)"
gw_s="$("$py" -c 'import re, sys; m = re.fullmatch(r"(\d+)([sm])", sys.argv[1]); print(int(m.group(1)) * (60 if m.group(2) == "m" else 1))' "$gw")"
if ((waited < gw_s + 3)); then
  sleep $((gw_s + 3 - waited))
fi
curl -fsS "http://127.0.0.1:$am_port/metrics" >"$tmp/am/metrics.txt" || die "GET Alertmanager /metrics failed"
"$py" - "$tmp/am/metrics.txt" <<'PY' || die "Alertmanager tried to notify Slack or PagerDuty with empty credentials"
import re, sys
vals = {}
for line in open(sys.argv[1]):
    m = re.match(r'alertmanager_notifications(_failed)?_total\{[^}]*integration="(\w+)"[^}]*\} (\S+)', line)
    if m:
        k = (m.group(1) or "", m.group(2))
        vals[k] = vals.get(k, 0) + float(m.group(3))
bad = {k: v for k, v in vals.items() if k[1] in ("slack", "pagerduty") and v > 0}
webhook = vals.get(("", "webhook"), 0)
print(f"   notifications: webhook {webhook:g}, slack {vals.get(('', 'slack'), 0):g}, pagerduty {vals.get(('', 'pagerduty'), 0):g}; "
      f"failed: {sum(v for k, v in vals.items() if k[0]):g}")
if bad or webhook < 1:
    print(f"   slack/pagerduty attempts {bad}, webhook {webhook}"); sys.exit(1)
PY
ok "after the slack route's group_wait ($gw): no Slack or PagerDuty notification attempted; opswire's webhook notified"

stop_pid "$prom_pid"; prom_pid=""
stop_pid "$agent_pid"; agent_pid=""
stop_pid "$am_pid"; am_pid=""
ok "subscribers, agent, Prometheus and Alertmanager stopped (live checks: $((SECONDS - t_live)) s)"

stop_pid "$opswire_pid"
opswire_pid=""
ok "opswire stopped"

# ------------------------------------- cluster profile: load balancer (live)
# The compose `cluster` profile on this machine: Debian's nginx with
# deploy/nginx.conf in front of two real opswire replicas started with their
# compose environment, and a real redis-server started with the compose
# command. ($tmp/cluster.sh comes from the static compose check above.)
step "cluster profile: nginx -t on deploy/nginx.conf, the replicas' names mapped to local ports"
t_lb=$SECONDS
# shellcheck disable=SC1091
source "$tmp/cluster.sh"
lbd="$tmp/lb"
mkdir -p "$lbd/redis"
lb_addr="127.0.0.1:$(free_port)"
redis_port="$(free_port)"
declare -A rport=()
ups=()
for r in "${cluster_replicas[@]}"; do
  rport[$r]="$(free_port)"
  ups+=(--upstream "$r:$cluster_port=127.0.0.1:${rport[$r]}")
done
"$py" scripts/stack_live.py lb-config "$root" "$lbd/nginx" --listen "$lb_addr" "${ups[@]}" ||
  die "could not map deploy/nginx.conf to local ports"
nginx_args=(-p "$lbd/nginx" -e "$lbd/nginx/log/error.log" -c "$lbd/nginx/nginx.conf")
nginx -t "${nginx_args[@]}" >"$lbd/nginx-t.out" 2>&1 ||
  { sed 's/^/   /' "$lbd/nginx-t.out"; die "nginx -t on deploy/nginx.conf"; }
sed 's/^/   /' "$lbd/nginx-t.out"
ok "$(nginx -v 2>&1 | sed 's/^nginx version: //') accepts deploy/nginx.conf"

step "cluster profile: redis-server with the compose command; the compose healthcheck"
mapfile -t redis_args < <("$py" -c '
import shlex, sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]
c = svc["command"]; c = shlex.split(c) if isinstance(c, str) else c
print("\n".join(str(x) for x in c[1:] if c[0].endswith("redis-server")))' "$tmp/compose.resolved.yml" "$cluster_broker")
redis_hc="$("$py" -c '
import shlex, sys, yaml
t = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]["healthcheck"]["test"]
print(t[1] if t[0] == "CMD-SHELL" else shlex.join(t[1:]))' "$tmp/compose.resolved.yml" "$cluster_broker")"
# The healthcheck as compose runs it, against this redis-server's port.
redis_hc_local="${redis_hc//redis-cli/redis-cli -p $redis_port}"
if sh -c "$redis_hc_local" >/dev/null 2>&1; then
  die "the $cluster_broker healthcheck ($redis_hc) passes with no redis-server running"
fi
redis-server "${redis_args[@]}" --port "$redis_port" --bind 127.0.0.1 --dir "$lbd/redis" \
  --daemonize no --logfile "$lbd/redis.log" >/dev/null 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do
  sh -c "$redis_hc_local" >/dev/null 2>&1 && break
  kill -0 "$redis_pid" 2>/dev/null || { tail -5 "$lbd/redis.log" >&2; die "redis-server exited with ${redis_args[*]}"; }
  sleep 0.1
done
sh -c "$redis_hc_local" >/dev/null 2>&1 || die "the $cluster_broker healthcheck ($redis_hc) fails against a running redis-server"
aof="$(redis-cli -p "$redis_port" config get appendonly | tail -1)"
[[ "$aof" == yes ]] || die "redis-server with ${redis_args[*]} runs with appendonly=$aof"
ok "redis-server ${redis_args[*]} on 127.0.0.1:$redis_port (appendonly=$aof); healthcheck '$redis_hc' fails before it starts, passes after"

step "cluster profile: ${cluster_replicas[*]} with their compose environment (broker -> that redis-server)"
for r in "${cluster_replicas[@]}"; do
  # Every OPSWIRE_* setting compose gives the replica, except the two
  # secrets (this run's own), with the broker's host name -> 127.0.0.1.
  mapfile -t renv < <("$py" -c '
import re, sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]].get("environment") or {}
broker = re.compile("//" + re.escape(sys.argv[3]) + r"(:\d+)?(?=/|$)")
for k, v in sorted(env.items()):
    if k.startswith("OPSWIRE_") and k not in ("OPSWIRE_JWT_SECRET", "OPSWIRE_ALERTMANAGER__WEBHOOK_TOKEN"):
        print(k + "=" + broker.sub("//127.0.0.1:" + sys.argv[4], str(v)))' \
    "$tmp/compose.resolved.yml" "$r" "$cluster_broker" "$redis_port")
  echo "   $r: ${renv[*]}"
  env "${renv[@]}" "$bin" serve --config deploy/opswire.toml --bind "127.0.0.1:${rport[$r]}" \
    >"$lbd/$r.out" 2>"$lbd/$r.err" &
  replica_pids+=("$!")
done
for r in "${cluster_replicas[@]}"; do
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:${rport[$r]}/readyz" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:${rport[$r]}/readyz" ||
    { tail -5 "$lbd/$r.err" >&2; die "replica $r did not become ready on 127.0.0.1:${rport[$r]}"; }
done
# Cluster mode connects every replica to Redis; a build without it ignores
# OPSWIRE_BROKER__URL (not yet a setting) and runs its embedded broker.
cluster_mode=""
redis_clients=0
for _ in $(seq 1 20); do
  redis_clients="$(redis-cli -p "$redis_port" info clients | tr -d '\r' | sed -n 's/^connected_clients://p')"
  ((redis_clients > 1)) && { cluster_mode=1; break; }
  sleep 0.1
done
if [[ -n "$cluster_mode" ]]; then
  ok "replicas ready; cluster mode: $((redis_clients - 1)) connection(s) to redis-server"
else
  ok "replicas ready; NOT in cluster mode: no replica connected to redis-server (this build ignores OPSWIRE_BROKER__URL)"
  [[ "${CHECK_STACK_REQUIRE_CLUSTER:-0}" == 1 ]] &&
    die "CHECK_STACK_REQUIRE_CLUSTER=1, but the replicas did not connect to redis-server"
fi

step "cluster profile: real nginx in front of the replicas: /readyz, WebSocket and SSE to each replica"
nginx "${nginx_args[@]}" -g 'daemon off;' >"$lbd/nginx.out" 2>&1 &
nginx_pid=$!
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://$lb_addr$cluster_lb_health" 2>/dev/null && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$lbd/nginx.out" "$lbd/nginx/log/error.log" >&2; die "nginx exited at start"; }
  sleep 0.1
done
curl -fsS -o /dev/null "http://$lb_addr$cluster_lb_health" || die "nginx: $cluster_lb_health (the $cluster_lb healthcheck) failed"
for _ in 1 2 3 4; do
  code="$(curl -sS -o /dev/null -w '%{http_code}' "http://$lb_addr/readyz")"
  [[ "$code" == 200 ]] || die "GET /readyz through nginx answered $code"
done
ok "nginx on $lb_addr: $cluster_lb_health 200 (the compose healthcheck), /readyz 200 x4"
# One WebSocket and one SSE listener per replica, all through nginx: with
# least_conn (and nothing else open) the second of each lands on the other
# replica; lb-deliveries below proves where each one landed.
lb_read="$("$bin" token --team platform --ttl 5m --sub check-stack-lb)"
lb_ingest="$("$bin" token --team platform --scope ingest --ttl 5m --sub check-stack-lb)"
ws_files=() sse_files=()
for i in $(seq 1 "${#cluster_replicas[@]}"); do
  "$py" scripts/ws_client.py listen "$lb_addr" "$lb_read" platform --streams logs --seconds 60 \
    --out "$lbd/ws-$i.jsonl" 2>"$lbd/ws-$i.err" &
  lb_pids+=("$!")
  ws_files+=("$lbd/ws-$i.jsonl")
  for _ in $(seq 1 50); do grep -q '"type":"subscribed"' "$lbd/ws-$i.jsonl" 2>/dev/null && break; sleep 0.1; done
  grep -q '"type":"subscribed"' "$lbd/ws-$i.jsonl" 2>/dev/null ||
    { cat "$lbd/ws-$i.err" >&2; die "WebSocket listener $i through nginx: no subscribed reply"; }
done
for i in $(seq 1 "${#cluster_replicas[@]}"); do
  # EventSource style: the token in the query string (it must not reach nginx's log).
  curl -s -N --max-time 60 "http://$lb_addr/sse?team=platform&streams=logs&access_token=$lb_read" \
    >"$lbd/sse-$i.out" 2>/dev/null &
  lb_pids+=("$!")
  sse_files+=("$lbd/sse-$i.out")
  for _ in $(seq 1 50); do grep -q '^event: subscribed' "$lbd/sse-$i.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^event: subscribed' "$lbd/sse-$i.out" 2>/dev/null || die "SSE listener $i through nginx: no subscribed event"
done
ok "${#ws_files[@]} WebSocket and ${#sse_files[@]} SSE listeners (team platform, logs) subscribed through nginx"
run="$(date +%s%N)"
post_log() { # URL MESSAGE
  curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $lb_ingest" \
    -H 'Content-Type: application/json' --data "{\"level\":\"info\",\"message\":\"$2\"}" "$1/api/v1/logs?team=platform"
}
for r in "${cluster_replicas[@]}"; do
  code="$(post_log "http://127.0.0.1:${rport[$r]}" "check-stack-lb-$r-$run")"
  [[ "$code" == 200 ]] || die "POST /api/v1/logs to $r answered $code"
done
code="$(post_log "http://$lb_addr" "check-stack-lb-via-lb-$run")"
[[ "$code" == 200 ]] || die "POST /api/v1/logs through nginx answered $code"
deliveries=(--listeners "ws=$(IFS=,; echo "${ws_files[*]}")" --listeners "sse=$(IFS=,; echo "${sse_files[*]}")")
for r in "${cluster_replicas[@]}"; do deliveries+=(--replica "$r"); done
[[ -n "$cluster_mode" ]] && deliveries+=(--cluster)
"$py" scripts/stack_live.py lb-deliveries "$run" "${deliveries[@]}" ||
  die "log lines posted to each replica and through nginx did not reach the listeners behind nginx as they should"
if [[ -n "$cluster_mode" ]]; then
  ok "every line reached every listener: each replica serves what the others publish"
else
  ok "each replica's line reached exactly the WebSocket and the SSE listener nginx put on that replica; the line posted through nginx reached one of each"
fi
# (After the listeners are placed: least_conn counts these connections too.)
"$py" scripts/stack_live.py lb-origin "$lb_addr" "$lb_read" ||
  die "a browser's same-origin WebSocket through nginx (Host passed on?)"
# Close the listeners: nginx writes an access-log line when a request ends.
for pid in "${lb_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${lb_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
lb_pids=()
sleep 0.3
"$py" - "$lbd/nginx/log/access.log" "$lb_read" "${rport[@]}" <<'PY' || die "nginx access log"
import re, sys
path, token, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
log = open(path).read()
problems = []
if token in log or "access_token" in log:
    problems.append("the access log holds a token (?access_token=): log $uri, not $request")
for uri, status in (("/ws", "101"), ("/sse", "200")):
    seen = set(re.findall(rf'"GET {uri} HTTP/1\.1" {status} .*upstream=127\.0\.0\.1:(\d+)', log))
    if seen != set(ports):
        problems.append(f"GET {uri} ({status}) went to replica ports {sorted(seen)}, want every replica {sorted(ports)}")
    else:
        print(f"   GET {uri} -> {status} from every replica ({', '.join(sorted(seen))})")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
print(f"   {len(log.splitlines())} access-log lines, no token in them")
PY
if grep -E '\[(error|crit|alert|emerg)\]' "$lbd/nginx/log/error.log" >"$lbd/nginx-errors" 2>/dev/null; then
  sed 's/^/   /' "$lbd/nginx-errors"
  die "nginx logged errors (above)"
fi
ok "access log: WebSocket and SSE through nginx to every replica, no token; no error in nginx's error log"

if [[ -n "$cluster_mode" ]]; then
  # The pair as compose runs it, through alerting/alertmanager-entrypoint.sh
  # with the compose environment (names -> local ports, this run's webhook
  # token, Slack and PagerDuty empty): it rewrites the opswire URL to nginx's.
  # Test-only flags, after the entrypoint's: gossip slowed to hours (the
  # first member's notification log cannot reach the other before it sends:
  # BOTH notify, as a pair that cannot gossip does), peer timeout 1 s (the
  # second member sends 1 s after the first; 15 s by default), settled after
  # 1 s. The alert, posted to both, must reach each WebSocket subscriber
  # behind nginx exactly once.
  step "cluster profile: the Alertmanager pair ${cluster_ams[*]} (entrypoint, compose environment) -> nginx -> replicas"
  t_pair=$SECONDS
  pd="$lbd/pair"
  declare -A am_web=() am_gossip=()
  for a in "${cluster_ams[@]}"; do am_web[$a]="$(free_port)"; am_gossip[$a]="$(free_port)"; done
  # One after the other, each ready before the next starts: the first
  # cannot join anyone (it retries), every later one joins it at once.
  for a in "${cluster_ams[@]}"; do
    mkdir -p "$pd/$a"
    maps=("$cluster_lb:$cluster_lb_port=$lb_addr" "0.0.0.0:${cluster_am_gossip[$a]}=127.0.0.1:${am_gossip[$a]}")
    for o in "${cluster_ams[@]}"; do maps+=("$o:${cluster_am_gossip[$o]}=127.0.0.1:${am_gossip[$o]}"); done
    mapfile -t aenv < <("$py" -c '
import re, sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]].get("environment") or {}
maps = dict(m.split("=", 1) for m in sys.argv[3:])
for k, v in sorted(env.items()):
    v = str(v)
    for old, new in maps.items():
        v = re.sub(r"(?<![\w.-])" + re.escape(old) + r"(?![\w.-])", new, v)
    print(f"{k}={v}")' "$tmp/compose.resolved.yml" "$a" "${maps[@]}")
    sed "s#/secrets/#$pd/$a/secrets/#g" alerting/alertmanager.yml >"$pd/$a/alertmanager.yml"
    env -i PATH="$PATH" HOME="$pd/$a" "${aenv[@]}" OPSWIRE_WEBHOOK_TOKEN="$webhook_token" SLACK_WEBHOOK_URL= \
      PAGERDUTY_ROUTING_KEY= ALERTMANAGER_EXTERNAL_URL="http://127.0.0.1:${am_web[$a]}" \
      ALERTMANAGER_BIN="$am_bin" ALERTMANAGER_CONFIG="$pd/$a/alertmanager.yml" ALERTMANAGER_SECRETS_DIR="$pd/$a/secrets" \
      ALERTMANAGER_STORAGE_PATH="$pd/$a/data" ALERTMANAGER_WEB_LISTEN_ADDRESS="127.0.0.1:${am_web[$a]}" \
      sh alerting/alertmanager-entrypoint.sh --cluster.gossip-interval=1h --cluster.probe-interval=1h \
      --cluster.pushpull-interval=1h --cluster.settle-timeout=1s --cluster.peer-timeout=1s \
      >"$pd/$a.log" 2>&1 &
    pair_pids+=("$!")
    for _ in $(seq 1 100); do
      curl -fsS -o /dev/null "http://127.0.0.1:${am_web[$a]}/-/ready" 2>/dev/null && break
      kill -0 "${pair_pids[-1]}" 2>/dev/null || { cat "$pd/$a.log" >&2; die "$a exited at start"; }
      sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:${am_web[$a]}/-/ready" || { tail -5 "$pd/$a.log" >&2; die "$a: not ready"; }
    grep -q "^ *- url: http://$lb_addr$cluster_hook_path\$" "$pd/$a/secrets/alertmanager.yml" ||
      die "$a: the entrypoint's copy does not post to nginx (http://$lb_addr$cluster_hook_path)"
    echo "   $a: API 127.0.0.1:${am_web[$a]}, gossip 127.0.0.1:${am_gossip[$a]}; $(grep -o 'opswire receiver -> .*' "$pd/$a.log" | sed "s#$pd/##")"
  done
  # Both settled, each seeing every member.
  n_ams=${#cluster_ams[@]}
  for a in "${cluster_ams[@]}"; do
    st=""
    for _ in $(seq 1 100); do
      st="$(curl -fsS "http://127.0.0.1:${am_web[$a]}/api/v2/status" 2>/dev/null |
        "$py" -c 'import json, sys; c = json.load(sys.stdin)["cluster"]; print(c["status"], len(c.get("peers") or []))' 2>/dev/null || true)"
      [[ "$st" == "ready $n_ams" ]] && break
      sleep 0.1
    done
    [[ "$st" == "ready $n_ams" ]] || die "$a: cluster status '$st', want 'ready $n_ams' (the pair does not gossip)"
  done
  ok "${cluster_ams[*]}: each sees $n_ams members (gossip), settled; their copies post to http://$lb_addr$cluster_hook_path"
  pair_read="$("$bin" token --team search --ttl 5m --sub check-stack-pair)"
  pair_ws=()
  for i in $(seq 1 "${#cluster_replicas[@]}"); do
    "$py" scripts/ws_client.py listen "$lb_addr" "$pair_read" search --streams alerts --seconds 60 \
      --out "$pd/ws-$i.jsonl" 2>"$pd/ws-$i.err" &
    lb_pids+=("$!")
    pair_ws+=("$pd/ws-$i.jsonl")
    for _ in $(seq 1 50); do grep -q '"type":"subscribed"' "$pd/ws-$i.jsonl" 2>/dev/null && break; sleep 0.1; done
    grep -q '"type":"subscribed"' "$pd/ws-$i.jsonl" 2>/dev/null ||
      { cat "$pd/ws-$i.err" >&2; die "WebSocket listener $i through nginx: no subscribed reply"; }
  done
  hooks_before="$(grep -c "\"POST $cluster_hook_path " "$lbd/nginx/log/access.log" || true)"
  pair_run="pair-$(date +%s%N)"
  starts="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  posts=()
  for a in "${cluster_ams[@]}"; do
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' "http://127.0.0.1:${am_web[$a]}/api/v2/alerts" \
      --data '[{"labels":{"alertname":"CheckStackPair","team":"search","severity":"warning","check_run":"'"$pair_run"'"},
               "annotations":{"summary":"posted to both Alertmanagers of the pair"},"startsAt":"'"$starts"'"}]' &
    posts+=("$!")
  done
  for pid in "${posts[@]}"; do wait "$pid" || die "POST /api/v2/alerts to a member of the pair failed"; done
  # Each member notifies opswire once (group_wait 5 s; the second 1 s later).
  am_metric() { # MEMBER METRIC: the webhook integration's count
    curl -fsS "http://127.0.0.1:${am_web[$1]}/metrics" |
      awk -v m="$2" '$1 ~ "^" m "\\{" && $1 ~ /integration="webhook"/ { s += $NF } END { print s + 0 }'
  }
  all_sent=""
  for _ in $(seq 1 200); do
    all_sent=1
    for a in "${cluster_ams[@]}"; do
      (( $(am_metric "$a" alertmanager_notifications_total) >= 1 )) || { all_sent=""; break; }
    done
    [[ -n "$all_sent" ]] && break
    sleep 0.1
  done
  sleep 1
  for a in "${cluster_ams[@]}"; do
    echo "   $a: webhook notifications $(am_metric "$a" alertmanager_notifications_total), failed $(am_metric "$a" alertmanager_notifications_failed_total)"
  done
  [[ -n "$all_sent" ]] || { grep -hE 'level=(warn|error)' "$pd"/*.log | grep -v -i slack | tail -5 >&2 || true
    die "not every member of the pair notified opswire within 20 s"; }
  for a in "${cluster_ams[@]}"; do
    (( $(am_metric "$a" alertmanager_notifications_failed_total) == 0 )) || die "$a: a webhook notification to nginx failed"
  done
  "$py" - "$pair_run" "$lbd/nginx/log/access.log" "$hooks_before" "$cluster_hook_path" "${#cluster_ams[@]}" \
      "${pair_ws[@]}" <<'PY' || die "the alert posted by both Alertmanagers did not reach each subscriber behind nginx exactly once"
import json, re, sys
run, log, before, path, n_ams, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6:]
problems = []
posts = [l for l in open(log) if f'"POST {path} ' in l][before:]
ups = [re.search(r"upstream=(\S+)", l).group(1) for l in posts]
codes = [l.split('"')[2].split()[0] for l in posts]
print(f"   nginx: {len(posts)} webhook POSTs -> status {', '.join(codes)}, replicas {', '.join(ups)}")
if len(posts) != n_ams or set(codes) != {"200"}:
    problems.append(f"{len(posts)} webhook POSTs through nginx ({codes}), want {n_ams} (one per member), all 200")
if len(posts) == n_ams and len(set(ups)) != len(ups):
    problems.append(f"the members' POSTs went to the same replica ({ups}): nginx should spread them")
for f in files:
    frames = []
    for line in open(f):
        try:
            fr = json.loads(line)
        except ValueError:
            continue
        d = fr.get("data") or {}
        if fr.get("type") == "alert" and (d.get("labels") or {}).get("check_run") == run:
            frames.append(d.get("status"))
    print(f"   subscriber {f.rsplit('/', 1)[-1]}: {len(frames)} alert frame(s) {frames}")
    if frames != ["firing"]:
        problems.append(f"{f.rsplit('/', 1)[-1]}: alert frames {frames}, want exactly one firing")
if problems:
    print("\n".join("   " + p for p in problems)); sys.exit(1)
PY
  ok "both members notified (through nginx, to different replicas); each subscriber got ONE alert frame ($((SECONDS - t_pair)) s)"
  for pid in "${lb_pids[@]}" "${pair_pids[@]}"; do stop_pid "$pid"; done
  lb_pids=() pair_pids=()
else
  echo "   SKIPPED until cluster mode is in the build: the Alertmanager pair -> nginx -> replicas (one frame per alert)"
fi

if [[ -n "$cluster_mode" ]]; then
  step "cluster profile: without Redis, every replica's /readyz answers 503 (broker unavailable)"
  stop_pid "$redis_pid"; redis_pid=""
  for r in "${cluster_replicas[@]}"; do
    body=""
    for _ in $(seq 1 100); do
      body="$(curl -sS --max-time 2 "http://127.0.0.1:${rport[$r]}/readyz" -w ' %{http_code}' 2>/dev/null || true)"
      [[ "$body" == *"broker unavailable"*" 503" ]] && break
      sleep 0.1
    done
    [[ "$body" == *"broker unavailable"*" 503" ]] || die "$r: /readyz without Redis answered: $body"
    curl -fsS -o "$lbd/$r.metrics" "http://127.0.0.1:${rport[$r]}/metrics" || die "$r: GET /metrics failed"
    grep -qx 'opswire_broker_up 0' "$lbd/$r.metrics" || die "$r: opswire_broker_up is not 0 without Redis"
    ok "$r: /readyz 503 ($body), opswire_broker_up 0"
  done
else
  echo "   SKIPPED until cluster mode is in the build (CHECK_STACK_REQUIRE_CLUSTER=1 makes it fatal):"
  echo "     - each line, posted to one replica or through nginx, reaches every listener (all replicas)"
  echo "     - without Redis, every replica's /readyz answers 503 \"broker unavailable: ...\", opswire_broker_up 0"
fi
for pid in "$nginx_pid" "${replica_pids[@]}" "$redis_pid"; do stop_pid "$pid"; done
nginx_pid="" redis_pid="" replica_pids=()
ok "nginx, replicas and redis-server stopped (cluster profile checks: $((SECONDS - t_lb)) s)"

printf '\n== stack checks passed\n'
