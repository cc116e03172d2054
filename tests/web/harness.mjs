// Test harness of the browser tests: a real opswire (the debug binary), a
// real Alertmanager, a WebSocket publisher, and Debian's Chromium driven by
// playwright-core. Nothing here sleeps in place of an event: everything
// waits on a condition with a deadline.
import { spawn, execFileSync } from "node:child_process";
import { createWriteStream, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN =
  process.env.OPSWIRE_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/opswire");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = process.env.TEST_ARTIFACTS || path.join(ROOT, "test-artifacts");
export const SECRET = "web-test-secret-0123456789abcdef0123456789";
export const WEBHOOK_TOKEN = "web-test-webhook-token-0123456789";
export const JAEGER_URL = "http://127.0.0.1:16686";

/** A free loopback port (kept for restarts on the same port). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; fails after `timeout` ms. */
export async function waitFor(fn, { timeout = 5000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The environment without stray OPSWIRE_* variables (opswire reads them all). */
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toUpperCase().startsWith("OPSWIRE_")) env[k] = v;
  return { ...env, RUST_LOG: "warn", ...extra };
}

/** The TOML configuration of a test server. */
export function configToml({ port, amPort, grafanaUrl = null }) {
  let toml = `bind = "127.0.0.1:${port}"
shutdown_timeout_s = 2

[[teams]]
name = "alpha"
hosts = ["*"]

[[teams]]
name = "beta"
hosts = []

[sampler]
team = "alpha"
host_name = "web-test-host"
tick_ms = 1000
stale_after_ticks = 60

[web]
jaeger_url = "${JAEGER_URL}"
${grafanaUrl ? `grafana_url = "${grafanaUrl}"\n` : ""}
[alertmanager]
webhook_token = "${WEBHOOK_TOKEN}"
`;
  if (amPort) toml += `url = "http://127.0.0.1:${amPort}"\n`;
  return toml;
}

/** A real opswire process on a fixed port, restartable on the same port. */
export class Opswire {
  constructor({ port, amPort = null, secret = null, name = "opswire", grafanaUrl = null, bin = BIN }) {
    this.port = port;
    this.bin = bin;
    this.secret = secret;
    this.dir = mkdtempSync(path.join(tmpdir(), `${name}-`));
    this.config = path.join(this.dir, "opswire.toml");
    writeFileSync(this.config, configToml({ port, amPort, grafanaUrl }));
    this.log = path.join(this.dir, "opswire.log");
    this.child = null;
    this.starts = 0;
  }

  get base() { return `http://127.0.0.1:${this.port}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/ws`; }
  url(p) { return this.base + p; }

  env() { return cleanEnv(this.secret ? { OPSWIRE_JWT_SECRET: this.secret } : {}); }

  async start() {
    this.starts++;
    const out = createWriteStream(this.log, { flags: "a" });
    const child = spawn(this.bin, ["serve", "--config", this.config], { env: this.env(), stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.pipe(out);
    child.stderr.pipe(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    let dead = null;
    this.exited.then((e) => { dead = e; });
    // Ready: listening, and the sampler has produced a sample.
    await waitFor(async () => {
      if (dead) throw new Error(`opswire exited (${JSON.stringify(dead)}); see ${this.log}`);
      const r = await fetch(this.url("/readyz"));
      return r.status === 200;
    }, { timeout: 15000, what: `opswire ready on ${this.base}` });
  }

  /** Stops the process (SIGTERM: clients get close 1012) and waits for its exit. */
  async stop(signal = "SIGTERM") {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 8000);
    await this.exited;
    clearTimeout(timer);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /** Mints a token with `opswire token` and the server's secret. */
  token(teams, scope = "read", ttl = "1h") {
    const args = ["token", "--ttl", ttl, "--scope", scope, "--sub", `web-test-${scope}`];
    for (const t of teams) args.push("--team", t);
    return execFileSync(this.bin, args, { env: this.env(), encoding: "utf8" }).trim();
  }

  async json(p, token) {
    const r = await fetch(this.url(p), { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return r.json();
  }

  cleanup() { rmSync(this.dir, { recursive: true, force: true }); }
}

/** A real Alertmanager (Debian's prometheus-alertmanager) that sends its webhook to opswire. */
export class Alertmanager {
  constructor({ port, opswireBase }) {
    this.port = port;
    this.dir = mkdtempSync(path.join(tmpdir(), "alertmanager-"));
    this.file = path.join(this.dir, "alertmanager.yml");
    writeFileSync(this.file, `route:
  receiver: opswire
  group_by: ['alertname', 'team', 'instance']
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: opswire
    webhook_configs:
      - url: ${opswireBase}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: ${WEBHOOK_TOKEN}
`);
  }

  get base() { return `http://127.0.0.1:${this.port}`; }

  async start() {
    execFileSync("amtool", ["check-config", this.file], { stdio: "pipe" });
    this.child = spawn("prometheus-alertmanager", [
      `--config.file=${this.file}`,
      `--storage.path=${path.join(this.dir, "data")}`,
      `--web.listen-address=127.0.0.1:${this.port}`,
      "--cluster.listen-address=",
    ], { stdio: ["ignore", "ignore", "pipe"] });
    this.stderr = "";
    this.child.stderr.on("data", (b) => { this.stderr = (this.stderr + b).slice(-4000); });
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
    await waitFor(async () => (await fetch(`${this.base}/-/ready`)).status === 200, {
      timeout: 15000, what: "alertmanager ready",
    });
  }

  /** Posts one alert to Alertmanager's API; it reaches opswire through the webhook. */
  async postAlert(labels, annotations = {}, endsAt = null) {
    const alert = { labels, annotations, startsAt: new Date().toISOString(), generatorURL: "http://prometheus/graph" };
    if (endsAt) alert.endsAt = endsAt;
    const r = await fetch(`${this.base}/api/v2/alerts`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([alert]),
    });
    if (r.status !== 200) throw new Error(`alertmanager refused the alert: ${r.status} ${await r.text()}`);
  }

  async silences() {
    const r = await fetch(`${this.base}/api/v2/silences`);
    return r.json();
  }

  async stop() {
    if (!this.child) return;
    this.child.kill("SIGTERM");
    await this.exited;
    this.child = null;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Posts an Alertmanager webhook payload (version 4) straight to opswire. */
export async function postWebhook(opswire, alerts) {
  const body = {
    version: "4", groupKey: "{}", truncatedAlerts: 0, status: "firing", receiver: "opswire",
    groupLabels: {}, commonLabels: {}, commonAnnotations: {}, externalURL: "http://am", alerts,
  };
  const r = await fetch(opswire.url("/api/v1/alerts/alertmanager"), {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${WEBHOOK_TOKEN}` },
    body: JSON.stringify(body),
  });
  const json = await r.json();
  if (r.status !== 200) throw new Error(`webhook refused: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/** A protocol client for publishing (ingest scope, or anonymous in dev mode). */
export class Publisher {
  static async connect(opswire, token = null) {
    const p = new Publisher();
    p.ws = new WebSocket(opswire.wsUrl, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    p.nextId = 1;
    p.waiting = new Map();
    p.welcome = new Promise((resolve, reject) => {
      p.ws.on("message", (raw) => {
        const f = JSON.parse(String(raw));
        if (f.type === "welcome") resolve(f);
        const w = f.id != null && p.waiting.get(f.id);
        if (w) { p.waiting.delete(f.id); w(f); }
      });
      p.ws.on("error", reject);
    });
    await p.welcome;
    return p;
  }

  op(body) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(body)}`)), 5000);
      this.waiting.set(id, (f) => { clearTimeout(timer); resolve(f); });
      this.ws.send(JSON.stringify({ ...body, id }));
    });
  }

  async log(team, data) {
    const r = await this.op({ op: "publish", team, stream: "logs", data });
    if (r.type !== "published") throw new Error(`publish refused: ${JSON.stringify(r)}`);
    return r.seq;
  }

  async host(team, host) {
    const now = Date.now() * 1000;
    const r = await this.op({
      op: "publish", team, stream: "metrics",
      data: {
        host, sampled_at: now,
        cpu: { usage_pct: 42.5, cores_pct: [40, 45], load: [0.5, 0.4, 0.3] },
        memory: { used_bytes: 2 * 2 ** 30, total_bytes: 8 * 2 ** 30, usage_pct: 25, swap_used_bytes: 0, swap_total_bytes: 0 },
        disks: [{ mount: "/", used_bytes: 10 * 2 ** 30, total_bytes: 40 * 2 ** 30, usage_pct: 25 }],
        network: [{ iface: "eth0", rx_bytes_per_s: 1500, tx_bytes_per_s: 700 }],
        processes: 99, uptime_s: 7200,
      },
    });
    if (r.type !== "published") throw new Error(`publish refused: ${JSON.stringify(r)}`);
  }

  close() {
    if (this.ws) this.ws.close();
  }
}

export const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run",
];

/** Debian's Chromium with a fresh profile. */
export async function launchBrowser() {
  const profile = mkdtempSync(path.join(tmpdir(), "opswire-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1440, height: 900 },
    timeout: 30000,
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/**
 * A page that records console errors, page errors and every WebSocket frame
 * it sends and receives (parsed).
 */
export async function openPage(context) {
  const page = await context.newPage();
  const rec = { errors: [], sent: [], received: [], sockets: 0 };
  page.on("console", (m) => {
    if (m.type() === "error") rec.errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => rec.errors.push(`pageerror: ${e.message}`));
  // A CSP violation (an inline style uPlot might set, say) is an error too,
  // whether or not Chromium also prints it.
  await page.exposeFunction("__opswireCspViolation", (v) => rec.errors.push(`csp violation: ${v}`));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__opswireCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
  });
  page.on("websocket", (ws) => {
    rec.sockets++;
    ws.on("framesent", ({ payload }) => { try { rec.sent.push(JSON.parse(payload)); } catch { /* binary */ } });
    ws.on("framereceived", ({ payload }) => { try { rec.received.push(JSON.parse(payload)); } catch { /* binary */ } });
  });
  return { page, rec };
}

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}
