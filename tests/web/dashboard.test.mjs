// The dashboard in real headless Chromium against a real opswire (and a
// real Alertmanager). Run with `bash scripts/test-web.sh`.
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as H from "./harness.mjs";

const HOST = "web-test-host";
const RUN = Date.now().toString(36);
const T = { timeout: 40000 };
// Nothing listens there: the page only builds links to it.
const GRAFANA_URL = "http://127.0.0.1:3000/grafana";

const card = (page, host) => page.locator(`[data-testid="host-card"][data-host="${host}"]`);
const logLine = (page, message) =>
  page.getByTestId("log-line").filter({ has: page.getByTestId("log-message").getByText(message, { exact: true }) });
const alertRow = (page, name) => page.locator(`[data-testid="alert"][data-alertname="${name}"]`);

/** Fails on console errors and page errors since `from`, except those matching `allowed`. */
function assertNoConsoleErrors(rec, from = 0, allowed = []) {
  const errors = rec.errors.slice(from).filter((e) => !allowed.some((re) => re.test(e)));
  assert.deepEqual(errors, [], `console errors:\n${errors.join("\n")}`);
}

async function connState(page) {
  return page.getByTestId("conn-state").getAttribute("data-state");
}

/** Waits for `n` more metrics frames of `team` to reach the page. */
async function metricsFrames(rec, team, n) {
  const start = rec.received.filter((f) => f.type === "metrics" && f.team === team).length;
  await H.waitFor(() => rec.received.filter((f) => f.type === "metrics" && f.team === team).length >= start + n, {
    timeout: 5000, what: `${n} metrics frames of ${team}`,
  });
}

/** The last op the page sent that satisfies `pred`, once its reply has arrived. */
async function sentAndAnswered(rec, from, pred, what) {
  const op = await H.waitFor(() => rec.sent.slice(from).find(pred), { what });
  await H.waitFor(() => rec.received.some((f) => f.id === op.id && f.type !== "error"), { what: `the reply to ${what}` });
  return op;
}

const webhookAlert = (name, severity, status, fingerprint, team = "alpha") => ({
  status, labels: { alertname: name, severity, team, instance: HOST }, annotations: { summary: `${name} summary` },
  startsAt: new Date(Date.now() - 60000).toISOString(),
  endsAt: status === "resolved" ? new Date().toISOString() : "0001-01-01T00:00:00Z",
  generatorURL: "", fingerprint,
});

/**
 * For the README's screenshot only (UPDATE_DOCS_SCREENSHOT=1): a minute of
 * chart history, an agent host with moving values, and realistic logs.
 */
async function fillForDocs(page, rec, pub) {
  const logs = [
    ["info", "checkout-api", "pay-api-1", "POST /v1/charges 201 38ms", "4bf92f3577b34da6a3ce929d0e0e4736"],
    ["info", "deploy", "", "rolled out checkout-api v2.14.1 (3/3 pods ready)"],
    ["warn", "checkout-api", "pay-api-1", "upstream bank-gw slow: 812ms (budget 500ms)", "0af7651916cd43dd8448eb211c80319c"],
    ["info", "ledger", "pay-db-1", "checkpoint complete: wrote 1842 buffers (11.2%)"],
    ["error", "payments-worker", "pay-api-1", "charge ch_3Pq9 failed: card_declined (insufficient_funds)", "5b8aa5a2d2c872e8321cf37308d69df2"],
    ["info", "checkout-api", "pay-api-1", "GET /healthz 200 1ms"],
    ["warn", "search-indexer", "pay-api-2", "queue depth 1204 above 1000; scaling out"],
    ["info", "checkout-api", "pay-api-2", "POST /v1/refunds 200 51ms", "9c3e2b7a41d05f6e8a7b2c1d0e9f8a7b"],
    ["debug", "ledger", "pay-db-1", "vacuum: removed 3120 dead tuples in charges"],
    ["info", "checkout-api", "pay-api-1", "POST /v1/charges 201 41ms"],
  ];
  for (let i = 0; i < 60; i++) {
    const now = Date.now() * 1000;
    const wave = (p, a, b) => a + b * Math.sin(i / p);
    const reply = await pub.op({
      op: "publish", team: "alpha", stream: "metrics",
      data: {
        host: "pay-api-1", sampled_at: now,
        cpu: { usage_pct: Math.round(wave(5, 38, 22) * 10) / 10, cores_pct: [0, 0, 0, 0], load: [1.21, 1.05, 0.98] },
        memory: { used_bytes: Math.round(5.1 * 2 ** 30), total_bytes: 8 * 2 ** 30, usage_pct: Math.round(wave(20, 63, 3) * 10) / 10 },
        disks: [{ mount: "/", used_bytes: 31 * 2 ** 30, total_bytes: 50 * 2 ** 30, usage_pct: Math.round(620 + i / 3) / 10 }],
        network: [{ iface: "eth0", rx_bytes_per_s: Math.round(wave(3, 900e3, 400e3)), tx_bytes_per_s: Math.round(wave(4, 300e3, 150e3)) }],
        processes: 214, uptime_s: 1_204_000 + i,
      },
    });
    assert.equal(reply.type, "published", JSON.stringify(reply));
    if (i % 6 === 0 && logs.length) {
      const [level, source, host, message, trace_id] = logs.shift();
      await pub.log("alpha", { level, source, host, message, ...(trace_id ? { trace_id } : {}) });
    }
    await metricsFrames(rec, "alpha", 1);
  }
  await card(page, "pay-api-1").waitFor();
}

describe("dashboard in dev mode (no secret), with a real Alertmanager", () => {
  let ops, am, browser, page, rec, pub;
  const navTiming = {};

  before(async () => {
    const [port, amPort] = [await H.freePort(), await H.freePort()];
    ops = new H.Opswire({ port, amPort, name: "opswire-dev", grafanaUrl: `${GRAFANA_URL}/` });
    am = new H.Alertmanager({ port: amPort, opswireBase: ops.base });
    await Promise.all([ops.start(), am.start()]);
    browser = await H.launchBrowser();
    pub = await H.Publisher.connect(ops);
    ({ page, rec } = await H.openPage(browser.context));
  });

  /** Each test also runs alone (--test-name-pattern): open the page if needed. */
  async function ensurePage() {
    if (!page.url().startsWith(ops.base)) await page.goto(`${ops.base}/`);
    await card(page, HOST).getByTestId("cpu-value").waitFor({ timeout: 5000 });
    await H.waitFor(async () => (await connState(page)) === "live", { what: "live" });
  }

  after(async () => {
    pub?.close();
    await browser?.close();
    await am?.stop();
    await ops?.stop();
    ops?.cleanup();
  });

  it("connects at once and shows this host's CPU within 3 s", T, async () => {
    const t0 = Date.now();
    await page.goto(`${ops.base}/`);
    const cpu = card(page, HOST).getByTestId("cpu-value");
    await H.waitFor(async () => /^\d+(\.\d)?%$/.test((await cpu.textContent({ timeout: 3000 })) || ""), {
      timeout: 3000, interval: 20, what: "the CPU value of this host",
    });
    const ms = Date.now() - t0;
    console.log(`# CPU of ${HOST} shown ${ms} ms after navigation started`);
    assert.ok(ms < 3000, `CPU shown after ${ms} ms`);
    assert.equal(await connState(page), "live");
    assert.ok(await page.getByTestId("signin").isHidden(), "no sign-in in dev mode");
    assert.equal(rec.sent[0].op, "subscribe", "dev mode: no auth op, subscribe right after welcome");
    const c = card(page, HOST);
    for (const id of ["mem-value", "disk-value", "net-value", "load", "uptime"]) {
      assert.notEqual((await c.getByTestId(id).textContent()).trim(), "–", `${id} is shown`);
    }
    assert.deepEqual(await page.getByTestId("team-switcher").getByRole("button").allTextContents(), ["alpha", "beta"]);
    await H.waitFor(async () => (await page.getByTestId("subscribers-team").textContent()) === "1", { what: "team subscriber count 1" });
    assert.match(await page.getByTestId("subscribers-total").textContent(), /^\d+$/);
    await H.waitFor(async () => (await page.getByTestId("freshness").getAttribute("data-stale")) === "false", { what: "fresh data" });
    Object.assign(navTiming, await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      const mark = (name) => performance.getEntriesByName(name)[0]?.startTime;
      return {
        dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,
        info: mark("opswire:info"), welcome: mark("opswire:welcome"), host: mark("opswire:first-host"),
      };
    }));
    const f = (x) => (x === undefined ? "?" : x.toFixed(0));
    console.log(`# in the page (ms since navigation start): DOMContentLoaded ${f(navTiming.dcl)}, /api/v1/info ${f(navTiming.info)}, ` +
      `welcome ${f(navTiming.welcome)}, first host card ${f(navTiming.host)}`);
    assertNoConsoleErrors(rec);
  });

  it("charts have a time axis, unit scales and a hover read-out of every series", T, async () => {
    await ensurePage();
    const errorsFrom = rec.errors.length;
    const host = `chart-host-${RUN}`; // sorts before web-test-host: the first card
    const GiB = 2 ** 30;
    const sample = (v) => ({
      host, sampled_at: Date.now() * 1000,
      cpu: { usage_pct: v.cpu, cores_pct: [v.cpu, v.cpu], load: v.load },
      memory: { used_bytes: v.mem, total_bytes: 8 * GiB, usage_pct: (v.mem / (8 * GiB)) * 100, swap_used_bytes: 0, swap_total_bytes: 0 },
      disks: [{ mount: "/", fs_type: "ext4", used_bytes: 10 * GiB, total_bytes: 40 * GiB, usage_pct: v.disk },
        { mount: "/data", fs_type: "xfs", used_bytes: 1 * GiB, total_bytes: 100 * GiB, usage_pct: 1 }],
      network: [{ iface: "eth0", rx_bytes_per_s: v.rx, tx_bytes_per_s: v.tx }],
      processes: 12, uptime_s: 3600,
    });
    /** Publishes a sample; resolves with the ts (s) of the first frame that carries it. */
    const publish = async (v) => {
      const data = sample(v);
      const reply = await pub.op({ op: "publish", team: "alpha", stream: "metrics", data });
      assert.equal(reply.type, "published", JSON.stringify(reply));
      const frame = await H.waitFor(() => rec.received.find((f) => f.type === "metrics" && f.team === "alpha" &&
        (f.data.hosts || []).some((h) => h.host === host && h.sampled_at === data.sampled_at)), { what: `the frame with ${host}` });
      return frame.ts / 1e6;
    };
    // A, then (a frame later) B: B is the newest point, A a tick or two before it.
    await publish({ cpu: 10, load: [0.25, 0.5, 1], mem: 1 * GiB, disk: 50, rx: 100, tx: 200 });
    await metricsFrames(rec, "alpha", 1);
    const tB = await publish({ cpu: 42.5, load: [1.25, 0.75, 0.5], mem: 2 * GiB, disk: 25, rx: 1536, tx: 700 });
    const expected = {
      cpu: { cpu: "42.5%" },
      load: { load1: "1.25", load5: "0.75", load15: "0.50" },
      mem: { memUsed: "2.0 GiB" },
      disk: { disk: "25.0%" },
      net: { rx: "1.5 KiB/s", tx: "700 B/s" },
    };
    const yTick = {
      cpu: /^\d+(\.\d)?%$/, disk: /^\d+(\.\d)?%$/, load: /^\d+(\.\d+)?$/,
      mem: /^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)$/, net: /^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)\/s$/,
    };
    const c = card(page, host);
    await c.waitFor({ timeout: 5000 });
    await c.scrollIntoViewIfNeeded();
    const time = await page.evaluate((t) => {
      const d = new Date(t * 1000);
      const p = (n) => String(n).padStart(2, "0");
      return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    }, tB);
    for (const [key, series] of Object.entries(expected)) {
      const fig = c.locator(`[data-testid="chart"][data-chart="${key}"]`);
      // The chart has drawn B and a few seconds after it (room to point
      // right of B, where B is the nearest point), with both axes.
      await H.waitFor(async () => Number(await fig.getAttribute("data-x-max")) >= tB + 5, { timeout: 10000, what: `${key} drawn 5 s past B` });
      assert.equal(await fig.locator(".u-axis").count(), 2, `${key}: a time axis and a value axis`);
      const xTicks = (await fig.getAttribute("data-x-ticks")).split("|");
      assert.ok(xTicks.length >= 2 && xTicks.every((t) => /^\d\d:\d\d(:\d\d)?$/.test(t)), `${key} time ticks: ${xTicks}`);
      const yTicks = (await fig.getAttribute("data-y-ticks")).split("|");
      assert.ok(yTicks.length >= 2 && yTicks.every((t) => yTick[key].test(t)), `${key} value ticks with the unit: ${yTicks}`);
      if (key === "cpu" || key === "disk") assert.equal(yTicks.at(-1), "100%", `${key} scale ends at 100%`);
      // Hover: entering holds the chart still, then point at B.
      const over = fig.locator(".u-over");
      const box = await over.boundingBox();
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await fig.getByTestId("chart-readout").waitFor({ timeout: 2000 });
      const [min, max] = [Number(await fig.getAttribute("data-x-min")), Number(await fig.getAttribute("data-x-max"))];
      // A second right of B (at least a pixel): nothing is nearer than B.
      const pxPerS = box.width / (max - min);
      const x = box.x + (tB - min) * pxPerS + Math.max(1, pxPerS);
      await page.mouse.move(Math.min(x, box.x + box.width - 1), box.y + box.height / 2);
      const tip = fig.getByTestId("chart-readout");
      await H.waitFor(async () => (await tip.getByTestId("readout-time").textContent()) === time, {
        what: `${key} read-out at ${time} (shows ${await tip.getByTestId("readout-time").textContent().catch(() => "?")})`,
      });
      const shown = Object.fromEntries(await tip.getByTestId("readout-series").evaluateAll((rows) =>
        rows.map((r) => [r.dataset.series, r.querySelector('[data-testid="readout-value"]').textContent])));
      assert.deepEqual(shown, series, `${key} read-out of every series at ${time}`);
      await page.mouse.move(0, 0);
      await tip.waitFor({ state: "hidden", timeout: 2000 });
    }
    // Every disk in the disk chart's title, with its filesystem type.
    assert.equal(await c.locator('[data-testid="chart"][data-chart="disk"]').getAttribute("title"),
      "/ (ext4) 25.0% of 40.0 GiB\n/data (xfs) 1.0% of 100 GiB");
    await page.screenshot({ path: path.join(H.artifactsDir(), "charts.png"), clip: await c.boundingBox() });
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("links older lines to Grafana Explore with the team's Loki query", T, async () => {
    await ensurePage();
    const errorsFrom = rec.errors.length;
    const msg = `grafana-link-${RUN}`;
    await pub.log("alpha", { level: "info", source: "web-a", message: msg });
    await logLine(page, msg).waitFor({ timeout: 5000 });
    const link = page.getByTestId("grafana-link");
    assert.ok(await link.isVisible(), "the link is shown with web.grafana_url");
    assert.equal(await link.textContent(), "older lines in Grafana");
    assert.equal(await link.getAttribute("target"), "_blank");
    assert.match(await link.getAttribute("rel"), /\bnoopener\b/);
    await link.hover(); // refreshes the range's end
    const before = Date.now();
    const href = await link.getAttribute("href");
    const u = new URL(href);
    assert.equal(`${u.origin}${u.pathname}`, `${GRAFANA_URL}/explore`);
    assert.equal(u.searchParams.get("schemaVersion"), "1");
    assert.equal(u.searchParams.get("orgId"), "1");
    const panes = JSON.parse(u.searchParams.get("panes"));
    const pane = Object.values(panes)[0];
    assert.equal(pane.datasource, "loki");
    assert.deepEqual(pane.queries, [{ refId: "A", datasource: { type: "loki", uid: "loki" }, expr: '{service_name="opswire-teams", opswire_team="alpha"}' }]);
    assert.equal(pane.range.to, "now");
    // From the earlier of an hour ago and 15 minutes before the oldest line shown.
    const oldest = await page.getByTestId("log-line").last().getAttribute("data-ts");
    const want = Math.min(before - 3600e3, Number(oldest) / 1000 - 900e3);
    assert.ok(Math.abs(Number(pane.range.from) - want) < 5000, `range.from ${pane.range.from} ≈ ${want}`);
    assert.match(pane.range.from, /^\d{13}$/);
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("is small, cacheable and loads in well under a second", T, async () => {
    // Node's fetch decodes what it is sent: Content-Length is the size on
    // the wire, the body the decoded size. Chromium asks for br too.
    const ae = { "accept-encoding": "gzip, deflate, br, zstd" };
    // The server compresses on a thread at startup (bodies go out as they
    // are until then); the license is the last it does.
    await H.waitFor(async () => (await fetch(`${ops.base}/vendor/uPlot.LICENSE`, { headers: ae })).headers.get("content-encoding") === "br", {
      timeout: 30000, what: "the server to have compressed its assets",
    });
    const index = await fetch(`${ops.base}/`, { headers: ae });
    const html = await index.text();
    assert.match(index.headers.get("content-type"), /^text\/html; charset=utf-8/);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    assert.equal(index.headers.get("content-encoding"), "br");
    assert.equal(index.headers.get("vary"), "Accept-Encoding");
    assert.ok(index.headers.get("content-security-policy"), "CSP header");
    const etag = index.headers.get("etag");
    assert.equal((await fetch(`${ops.base}/`, { headers: { ...ae, "if-none-match": etag } })).status, 304);
    const assets = [...html.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map((m) => m[1]);
    const types = { js: /^text\/javascript/, css: /^text\/css/, svg: /^image\/svg\+xml/ };
    const sizes = { "/": Buffer.byteLength(html) };
    const wire = { "/": Number(index.headers.get("content-length")) };
    for (const a of new Set(assets)) {
      const r = await fetch(ops.base + a, { headers: ae });
      assert.equal(r.status, 200, a);
      const ext = a.split("?")[0].split(".").pop();
      assert.match(r.headers.get("content-type"), types[ext], a);
      assert.equal(r.headers.get("cache-control"), "public, max-age=31536000, immutable", a);
      assert.equal(r.headers.get("content-encoding"), "br", a);
      const key = a.split("?")[0];
      sizes[key] = Buffer.from(await r.arrayBuffer()).length;
      wire[key] = Number(r.headers.get("content-length"));
      const unversioned = await fetch(ops.base + a.split("?")[0]);
      assert.equal(unversioned.headers.get("cache-control"), "no-cache", `${a} without its version`);
    }
    const sum = (o) => Object.values(o).reduce((x, y) => x + y, 0);
    const total = sum(sizes);
    const onWire = sum(wire);
    console.log(`# page size: ${total} bytes decoded, ${onWire} bytes of brotli bodies (${Object.entries(wire).map(([k, v]) => `${k} ${v}/${sizes[k]}`).join(", ")})`);
    // Cold load (fresh profile) measured by the first test; now a warm load
    // in a second tab (the first keeps its chart history).
    const second = await H.openPage(browser.context);
    await second.page.goto(`${ops.base}/`);
    await card(second.page, HOST).getByTestId("cpu-value").waitFor();
    const warm = await second.page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      return { dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd };
    });
    await second.page.close();
    assertNoConsoleErrors(second.rec);
    const f = (x) => x.toFixed(1);
    console.log(`# load time on localhost: cold DOMContentLoaded ${f(navTiming.dcl)} ms, load ${f(navTiming.load)} ms; ` +
      `warm DOMContentLoaded ${f(warm.dcl)} ms, load ${f(warm.load)} ms`);
    assert.ok(onWire < 48 * 1024, `page and assets are ${onWire} bytes compressed`);
    assert.ok(navTiming.load > 0 && navTiming.load < 1000, `cold load took ${navTiming.load} ms`);
    assert.ok(warm.load < 1000, `warm load took ${warm.load} ms`);
    await H.waitFor(async () => (await connState(page)) === "live", { what: "live again" });
    assertNoConsoleErrors(rec);
  });

  it("tails logs with trace links, server-side level and source filters, and pause", T, async () => {
    await ensurePage();
    const errorsFrom = rec.errors.length;
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const info1 = `info-before-filter-${RUN}`;
    await pub.log("alpha", { level: "info", source: "web-a", host: "h1", message: info1, trace_id: traceId });
    await logLine(page, info1).waitFor({ timeout: 5000 });
    assert.equal(await logLine(page, info1).getByTestId("trace-link").getAttribute("href"), `${H.JAEGER_URL}/trace/${traceId}`);
    assert.equal(await logLine(page, info1).getAttribute("data-level"), "INFO");

    // Level filter: sent as a subscription filter, answered, then applied by the server.
    let from = rec.sent.length;
    await page.getByTestId("log-level").selectOption("error");
    const sub = await sentAndAnswered(rec, from, (f) => f.op === "subscribe" && f.filter?.logs?.min_level === "error",
      "subscribe with filter.logs.min_level = error");
    assert.equal(sub.team, "alpha");
    assert.deepEqual(sub.streams, ["logs"]);
    await logLine(page, info1).waitFor({ state: "detached", timeout: 2000 });
    const info2 = `info-after-filter-${RUN}`;
    const error2 = `error-after-filter-${RUN}`;
    await pub.log("alpha", { level: "info", source: "web-a", message: info2 });
    await pub.log("alpha", { level: "error", source: "web-a", message: error2 });
    await logLine(page, error2).waitFor({ timeout: 5000 });
    // Logs are ordered: had the server sent info2, it would have come before error2.
    assert.ok(!rec.received.some((f) => f.type === "log" && f.data.message === info2), "the server sent a filtered-out log");
    assert.equal(await logLine(page, info2).count(), 0);

    // Source filter (and level back to all).
    await page.getByTestId("log-level").selectOption("");
    from = rec.sent.length;
    await page.getByTestId("log-source").fill("web-b");
    await page.getByTestId("log-source").press("Enter");
    const sub2 = await sentAndAnswered(rec, from, (f) => f.op === "subscribe" && f.filter?.logs?.source === "web-b",
      "subscribe with filter.logs.source = web-b");
    assert.equal(sub2.filter.logs.min_level, undefined);
    const fromA = `from-source-a-${RUN}`;
    const fromB = `from-source-b-${RUN}`;
    await pub.log("alpha", { level: "warn", source: "web-a", message: fromA });
    await pub.log("alpha", { level: "warn", source: "web-b", message: fromB });
    await logLine(page, fromB).waitFor({ timeout: 5000 });
    assert.ok(!rec.received.some((f) => f.type === "log" && f.data.message === fromA), "the server sent a log of another source");
    from = rec.sent.length;
    await page.getByTestId("log-source").fill("");
    await page.getByTestId("log-source").press("Enter");
    await sentAndAnswered(rec, from, (f) => f.op === "subscribe" && f.filter?.logs && !f.filter.logs.source && !f.filter.logs.min_level,
      "subscribe with an empty filter");
    await logLine(page, info1).waitFor({ timeout: 2000 }); // shown again from memory

    // Pause holds the tail; resume shows what arrived meanwhile.
    await page.getByTestId("logs-pause").click();
    assert.equal(await page.getByTestId("logs-pause").getAttribute("aria-pressed"), "true");
    const paused = `while-paused-${RUN}`;
    await pub.log("alpha", { level: "info", source: "web-a", message: paused });
    await H.waitFor(() => rec.received.some((f) => f.type === "log" && f.data.message === paused), { what: "the paused log to arrive" });
    await H.waitFor(async () => /1 new/.test(await page.getByTestId("logs-pause").textContent()), { what: "the unseen count" });
    assert.equal(await logLine(page, paused).count(), 0);
    await page.getByTestId("logs-pause").click();
    await logLine(page, paused).waitFor({ timeout: 2000 });
    assertNoConsoleErrors(rec, errorsFrom);
  });

  const docs = process.env.UPDATE_DOCS_SCREENSHOT === "1";
  it("shows alerts from Alertmanager, firing first by severity, and the Silence button creates the silence", docs ? { timeout: 120000 } : T, async () => {
    await ensurePage();
    const errorsFrom = rec.errors.length;
    await am.postAlert({ alertname: "WebDiskFull", team: "alpha", severity: "warning", instance: HOST }, { summary: "disk / is 91% full" });
    await am.postAlert({ alertname: "WebCpuHot", team: "alpha", severity: "critical", instance: HOST }, { summary: "CPU above 95% for 5 minutes" });
    await H.postWebhook(ops, [webhookAlert("WebNightlyBackup", "info", "firing", "web-info-fp")]);
    await H.postWebhook(ops, [webhookAlert("WebOldIncident", "critical", "firing", "web-old-fp")]);
    await alertRow(page, "WebOldIncident").waitFor({ timeout: 5000 });
    await H.postWebhook(ops, [webhookAlert("WebOldIncident", "critical", "resolved", "web-old-fp")]);
    const order = ["WebCpuHot", "WebDiskFull", "WebNightlyBackup", "WebOldIncident"];
    await H.waitFor(async () => {
      const names = await page.locator('[data-testid="alert"]').evaluateAll((els) => els.map((e) => e.dataset.alertname));
      return JSON.stringify(names) === JSON.stringify(order);
    }, { timeout: 8000, what: `alerts in the order ${order}` });
    const old = alertRow(page, "WebOldIncident");
    assert.equal(await old.getAttribute("data-status"), "resolved");
    assert.ok(await old.getByTestId("silence-open").isHidden(), "no Silence on a resolved alert");
    await H.waitFor(async () => Number(await old.evaluate((e) => getComputedStyle(e).opacity)) < 0.99, { what: "the resolved alert fading" });
    assert.equal(await alertRow(page, "WebCpuHot").getAttribute("data-severity"), "critical");

    const row = alertRow(page, "WebDiskFull");
    await row.getByTestId("silence-open").click();
    await row.getByTestId("silence-duration").selectOption("3600");
    await row.getByTestId("silence-comment").fill("web test: on it");
    const from = rec.sent.length;
    await row.getByTestId("silence-submit").click();
    const op = await H.waitFor(() => rec.sent.slice(from).find((f) => f.op === "silence"), { what: "the silence op" });
    assert.equal(op.team, "alpha");
    assert.equal(op.duration_s, 3600);
    assert.equal(op.comment, "web test: on it");
    const result = row.getByTestId("silence-result");
    const id = await H.waitFor(() => result.getAttribute("data-silence-id"), { timeout: 5000, what: "the silenced reply" });
    assert.match(await result.textContent(), /Silenced for 1 hour/);
    const silence = (await am.silences()).find((s) => s.id === id);
    assert.ok(silence, `Alertmanager lists silence ${id}`);
    assert.equal(silence.comment, "web test: on it");
    assert.equal(silence.createdBy, "anonymous");
    assert.equal(silence.status.state, "active");
    assert.ok(silence.matchers.some((m) => m.name === "alertname" && m.value === "WebDiskFull" && m.isEqual && !m.isRegex));

    // The screenshot of this run (kept by CI), with hosts, logs and alerts on screen.
    if (docs) await fillForDocs(page, rec, pub);
    await page.mouse.move(0, 0);
    const shot = path.join(H.artifactsDir(), "dashboard.png");
    await page.screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);
    if (docs) {
      copyFileSync(shot, path.join(H.ROOT, "docs", "dashboard.png"));
      console.log("# copied to docs/dashboard.png");
    }
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("is responsive and keyboard reachable", T, async () => {
    await ensurePage();
    // Something behind every kind of control: a firing alert, a traced log line.
    await H.postWebhook(ops, [webhookAlert("WebKeyboard", "info", "firing", "web-keyboard-fp")]);
    const traced = `keyboard-traced-${RUN}`;
    await pub.log("alpha", { level: "info", source: "web-a", message: traced, trace_id: "0af7651916cd43dd8448eb211c80319c" });
    await alertRow(page, "WebKeyboard").waitFor({ timeout: 5000 });
    await logLine(page, traced).waitFor({ timeout: 5000 });
    const errorsFrom = rec.errors.length;
    for (const [width, height] of [[390, 844], [1280, 800], [2560, 1440]]) {
      await page.setViewportSize({ width, height });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px at ${width}x${height}`);
      assert.ok(await card(page, HOST).isVisible(), `host card visible at ${width}x${height}`);
      await page.screenshot({ path: path.join(H.artifactsDir(), `dashboard-${width}x${height}.png`) });
    }
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.evaluate(() => document.activeElement?.blur());
    const reached = new Set();
    let outline = null;
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press("Tab");
      const f = await page.evaluate(() => {
        const a = document.activeElement;
        const s = a && getComputedStyle(a);
        return a ? { id: a.dataset.testid || a.tagName, outline: s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0 } : null;
      });
      if (!f) continue;
      reached.add(f.id);
      if (f.id === "team-beta") outline = f.outline;
    }
    for (const id of ["team-alpha", "team-beta", "silence-open", "log-level", "log-source", "logs-pause", "trace-link"]) {
      assert.ok(reached.has(id), `${id} is reachable with Tab (reached: ${[...reached]})`);
    }
    assert.equal(outline, true, "the focused team button shows a focus outline");
    // Enter on a focused team button switches teams.
    await page.getByTestId("team-beta").focus();
    await page.keyboard.press("Enter");
    await H.waitFor(async () => (await page.getByTestId("team-beta").getAttribute("aria-pressed")) === "true", { what: "beta selected" });
    await page.getByTestId("team-alpha").focus();
    await page.keyboard.press("Enter");
    await card(page, HOST).waitFor({ timeout: 3000 });
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("reconnects by itself after opswire restarts; logs published while it was down appear exactly once", T, async () => {
    await ensurePage();
    const errorsFrom = rec.errors.length;
    const beforeRestart = [`before-restart-1-${RUN}`, `before-restart-2-${RUN}`];
    for (const m of beforeRestart) await pub.log("alpha", { level: "warn", source: "restart", message: m });
    await logLine(page, beforeRestart[1]).waitFor({ timeout: 5000 });
    const epoch1 = (await ops.json("/api/v1/teams")).epoch;
    pub.close();

    await ops.stop(); // SIGTERM: the page gets close 1012
    await H.waitFor(async () => (await connState(page)) === "reconnecting", { what: "the page to notice" });
    await H.waitFor(async () => (await page.getByTestId("freshness").getAttribute("data-stale")) === "true", {
      timeout: 6000, what: "the freshness indicator to turn stale",
    });
    // Let the page back off until its next attempt is ≥ 1.8 s away, so the
    // logs below reach the new server before the page reconnects.
    await H.waitFor(async () => {
      const at = Number(await page.getByTestId("conn-state").getAttribute("data-retry-at"));
      return at - Date.now() > 1800;
    }, { timeout: 20000, interval: 20, what: "a retry at least 1.8 s away" });

    await ops.start(); // same port, new epoch
    const pub2 = await H.Publisher.connect(ops);
    const whileDown = [1, 2, 3].map((i) => `while-down-${i}-${RUN}`);
    for (const m of whileDown) await pub2.log("alpha", { level: "warn", source: "restart", message: m });
    const teams = await ops.json("/api/v1/teams");
    assert.notEqual(teams.epoch, epoch1, "a new epoch after the restart");
    assert.equal(teams.teams.find((t) => t.name === "alpha").subscribers, 0,
      "the page must not have reconnected before the logs were published (test timing)");

    await H.waitFor(async () => (await connState(page)) === "live", { timeout: 10000, what: "the page to reconnect by itself" });
    const resub = rec.sent.findLast((f) => f.op === "subscribe" && f.streams.length === 3);
    assert.deepEqual(resub.resume.logs, { epoch: teams.epoch, seq: 0 }, "resume from the start of the new epoch");
    const sentinel = `after-reconnect-${RUN}`;
    await pub2.log("alpha", { level: "warn", source: "restart", message: sentinel });
    await logLine(page, sentinel).waitFor({ timeout: 5000 });
    pub2.close();
    const messages = await page.getByTestId("log-message").allTextContents();
    for (const m of [...beforeRestart, ...whileDown, sentinel]) {
      assert.equal(messages.filter((x) => x === m).length, 1, `"${m}" appears exactly once`);
    }
    await H.waitFor(async () => (await page.getByTestId("freshness").getAttribute("data-stale")) === "false", { what: "fresh again" });
    await card(page, HOST).getByTestId("cpu-value").waitFor();
    // While the server was down, Chromium itself reports each refused
    // connection attempt on the console; nothing else is allowed.
    const refused = [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/, /ERR_CONNECTION_REFUSED/];
    const seen = rec.errors.slice(errorsFrom);
    if (seen.length) console.log(`# refused connection attempts reported by Chromium while down: ${seen.length} (e.g. ${seen[0]})`);
    assertNoConsoleErrors(rec, errorsFrom, refused);
  });
});

describe("dashboard with authentication (keyed run)", () => {
  let ops, browser, page, rec, pub;

  before(async () => {
    ops = new H.Opswire({ port: await H.freePort(), secret: H.SECRET, name: "opswire-keyed" });
    await ops.start();
    browser = await H.launchBrowser();
    ({ page, rec } = await H.openPage(browser.context));
    pub = await H.Publisher.connect(ops, ops.token(["alpha", "beta"], "ingest"));
  });

  /** Each test also runs alone (--test-name-pattern): sign in if needed. */
  async function ensureSignedIn() {
    if (page.url().startsWith(ops.base) && (await connState(page)) === "live") return;
    if (!page.url().startsWith(ops.base)) await page.goto(`${ops.base}/`);
    await page.getByTestId("token-input").fill(ops.token(["alpha", "beta"], "read"));
    await page.getByTestId("token-submit").click();
    await card(page, HOST).waitFor({ timeout: 5000 });
  }

  after(async () => {
    pub?.close();
    await browser?.close();
    await ops?.stop();
    ops?.cleanup();
  });

  it("asks for a token, refuses a bad one, and signs in with a pasted one", T, async () => {
    await page.goto(`${ops.base}/`);
    await page.getByTestId("signin").waitFor({ timeout: 3000 });
    assert.equal(await connState(page), "signed-out");
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "token-input", "the token field has focus");

    await page.getByTestId("token-input").fill("not-a-jwt");
    await page.getByTestId("token-submit").click();
    await H.waitFor(async () => /refused the token/.test(await page.getByTestId("signin-error").textContent()), { what: "the refusal" });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("opswire.token")), null, "a refused token is forgotten");

    const token = ops.token(["alpha", "beta"], "read");
    await page.getByTestId("token-input").fill(token);
    await page.getByTestId("token-submit").click();
    await card(page, HOST).getByTestId("cpu-value").waitFor({ timeout: 3000 });
    assert.equal(await connState(page), "live");
    assert.ok(await page.getByTestId("signin").isHidden());
    const auth = rec.sent.filter((f) => f.op === "auth");
    assert.equal(auth.at(-1).token, token, "the token goes in the first frame");
    assert.ok(!page.url().includes(token), "never in the URL");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("opswire.token")), token);
    assert.match(await page.getByTestId("whoami").textContent(), /web-test-read \(read\)/);
    // No web.grafana_url here: no link to Grafana.
    assert.ok(await page.getByTestId("grafana-older").isHidden(), "no Grafana link without web.grafana_url");
    assert.equal(await page.getByTestId("grafana-link").getAttribute("href"), null);

    // A reload signs in again from session storage.
    await page.reload();
    await card(page, HOST).getByTestId("cpu-value").waitFor({ timeout: 3000 });
    assert.ok(await page.getByTestId("signin").isHidden());
    assertNoConsoleErrors(rec);
  });

  it("switching team shows only that team's hosts and logs", T, async () => {
    await ensureSignedIn();
    const errorsFrom = rec.errors.length;
    await pub.host("beta", "beta-web-host");
    const alphaLog = `alpha-only-${RUN}`;
    const betaLog = `beta-only-${RUN}`;
    await pub.log("alpha", { level: "info", source: "iso", message: alphaLog });
    await pub.log("beta", { level: "info", source: "iso", message: betaLog });
    // Record every host card and log line ever shown, with the team on screen.
    await page.evaluate(() => {
      window.__seen = new Set();
      const note = () => {
        const team = document.body.dataset.team;
        for (const c of document.querySelectorAll('[data-testid="host-card"]')) window.__seen.add(`${team}|host|${c.dataset.host}`);
        for (const m of document.querySelectorAll('[data-testid="log-message"]')) window.__seen.add(`${team}|log|${m.textContent}`);
      };
      note();
      new MutationObserver(note).observe(document.querySelector('[data-testid="dashboard"]'), { childList: true, subtree: true });
    });
    await logLine(page, alphaLog).waitFor({ timeout: 5000 });
    await metricsFrames(rec, "alpha", 2);
    assert.equal(await card(page, "beta-web-host").count(), 0);

    let from = rec.sent.length;
    await page.getByTestId("team-beta").click();
    await card(page, "beta-web-host").getByTestId("cpu-value").waitFor({ timeout: 5000 });
    assert.equal(await card(page, "beta-web-host").getByTestId("cpu-value").textContent(), "42.5%");
    await logLine(page, betaLog).waitFor({ timeout: 5000 });
    assert.ok(rec.sent.slice(from).some((f) => f.op === "unsubscribe" && f.team === "alpha"), "unsubscribed from alpha");
    assert.ok(rec.sent.slice(from).some((f) => f.op === "subscribe" && f.team === "beta"), "subscribed to beta");
    await metricsFrames(rec, "beta", 2);
    assert.equal(await card(page, HOST).count(), 0);
    assert.equal(await logLine(page, alphaLog).count(), 0);
    assert.equal(await page.getByTestId("hosts").getAttribute("data-team"), "beta");

    await page.getByTestId("team-alpha").click();
    await card(page, HOST).waitFor({ timeout: 5000 });
    await metricsFrames(rec, "alpha", 2);
    assert.equal(await card(page, "beta-web-host").count(), 0);
    const seen = await page.evaluate(() => [...window.__seen]);
    assert.ok(seen.includes("alpha|host|web-test-host") && seen.includes("beta|host|beta-web-host"), seen.join(", "));
    const leaks = seen.filter((s) => s === "alpha|host|beta-web-host" || s === "beta|host|web-test-host" ||
      s === `alpha|log|${betaLog}` || s === `beta|log|${alphaLog}`);
    assert.deepEqual(leaks, [], "a team's view showed another team's data");
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("shows the error when a silence cannot be created", T, async () => {
    await ensureSignedIn();
    const errorsFrom = rec.errors.length;
    await H.postWebhook(ops, [webhookAlert("WebKeyedAlert", "warning", "firing", "web-keyed-fp")]);
    const row = alertRow(page, "WebKeyedAlert");
    await row.waitFor({ timeout: 5000 });
    await row.getByTestId("silence-open").click();
    await row.getByTestId("silence-submit").click();
    await H.waitFor(async () => /Could not silence: .*no Alertmanager is configured.*\(unavailable\)/.test(await row.getByTestId("silence-result").textContent()), {
      what: "the error message",
    });
    assertNoConsoleErrors(rec, errorsFrom);
  });

  it("offers only the teams of the token", T, async () => {
    await ensureSignedIn();
    const errorsFrom = rec.errors.length;
    await pub.host("beta", "beta-web-host");
    await page.getByTestId("sign-out").click();
    await page.getByTestId("signin").waitFor({ timeout: 2000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("opswire.token")), null);
    await page.getByTestId("token-input").fill(ops.token(["beta"], "read"));
    await page.getByTestId("token-input").press("Enter");
    await card(page, "beta-web-host").waitFor({ timeout: 5000 });
    assert.deepEqual(await page.getByTestId("team-switcher").getByRole("button").allTextContents(), ["beta"]);
    assert.equal(await card(page, HOST).count(), 0);
    assertNoConsoleErrors(rec, errorsFrom);
  });
});
