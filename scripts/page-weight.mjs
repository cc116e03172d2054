// Page weight and cold load of the dashboard, in headless Chromium (Debian's,
// via playwright-core and CDP), against a real opswire binary.
//
//   node scripts/page-weight.mjs [--bin PATH] [--runs N]
//
// Starts the binary (default: $CARGO_TARGET_DIR or target, debug/opswire) in
// dev mode with the browser tests' configuration, waits until it has
// compressed its assets (a one-time cost at startup, printed apart), then
// for each run opens a fresh Chromium profile (an empty cache) and loads `/`.
// It prints, per run and as the median:
// * bytes on the wire (CDP Network.loadingFinished encodedDataLength:
//   headers and body as received) of the page and its assets (document,
//   scripts, stylesheets, the favicon), and of /api/v1/info apart;
// * navigation start → load event, and → the first chart drawn (the mark
//   `opswire:first-chart`; a page without it: `opswire:first-host`, which the
//   old canvas page set right after drawing its sparklines).
import { parseArgs } from "node:util";
import * as H from "../tests/web/harness.mjs";

const { values: args } = parseArgs({
  options: { bin: { type: "string" }, runs: { type: "string", default: "5" } },
});
const bin = args.bin || H.BIN;
const runs = Number(args.runs);

const ops = new H.Opswire({ port: await H.freePort(), name: "page-weight", bin });
await ops.start();

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const ASSET_TYPES = new Set(["Document", "Script", "Stylesheet", "Image"]);

try {
  // The server compresses every body once, on a thread at startup, and
  // sends bodies as they are until then: wait for that (an old binary
  // never compresses), and print how long it took after /readyz.
  const t0 = performance.now();
  const html = await (await fetch(ops.url("/"), { headers: { "accept-encoding": "identity" } })).text();
  const paths = ["/", ...new Set([...html.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map((m) => m[1]))];
  const encoding = async (p) => (await fetch(ops.url(p), { headers: { "accept-encoding": "br, gzip" } })).headers.get("content-encoding");
  const compresses = (await encoding("/")) !== null || (await H.waitFor(async () => (await encoding("/")) !== null, { timeout: 3000 }).catch(() => false));
  if (compresses) {
    for (const p of paths) await H.waitFor(async () => (await encoding(p)) === "br", { timeout: 60000, what: `${p} compressed` });
  }
  console.log(`binary: ${bin}`);
  console.log(compresses ? `every body compressed ${(performance.now() - t0).toFixed(0)} ms after the server was ready` : "this binary does not compress");

  const results = [];
  for (let i = 0; i < runs; i++) {
    const browser = await H.launchBrowser();
    try {
      const page = await browser.context.newPage();
      const cdp = await browser.context.newCDPSession(page);
      await cdp.send("Network.enable");
      const reqs = new Map();
      cdp.on("Network.requestWillBeSent", (e) => reqs.set(e.requestId, { url: e.request.url, type: e.type, bytes: 0, enc: "" }));
      cdp.on("Network.responseReceived", (e) => {
        const r = reqs.get(e.requestId);
        if (r) r.enc = e.response.headers["content-encoding"] || e.response.headers["Content-Encoding"] || "";
      });
      cdp.on("Network.loadingFinished", (e) => { const r = reqs.get(e.requestId); if (r) r.bytes = e.encodedDataLength; });
      await page.goto(ops.url("/"), { waitUntil: "load" });
      const t = await page.waitForFunction(() => {
        // The uPlot page marks its first chart drawn; the old canvas page
        // (no uPlot) drew its sparklines right before `opswire:first-host`.
        const m = performance.getEntriesByName(typeof uPlot === "undefined" ? "opswire:first-host" : "opswire:first-chart")[0];
        const n = performance.getEntriesByType("navigation")[0];
        return m && n.loadEventEnd > 0 ? { chart: m.startTime, mark: m.name, load: n.loadEventEnd, dcl: n.domContentLoadedEventEnd } : null;
      }, null, { timeout: 15000, polling: 20 }).then((h) => h.jsonValue());
      const done = [...reqs.values()].filter((r) => r.bytes > 0);
      const assets = done.filter((r) => ASSET_TYPES.has(r.type));
      const info = done.filter((r) => r.url.includes("/api/v1/info"));
      const run = {
        wire: assets.reduce((s, r) => s + r.bytes, 0),
        info: info.reduce((s, r) => s + r.bytes, 0),
        load: t.load, chart: t.chart, dcl: t.dcl, mark: t.mark,
        detail: assets.map((r) => `${new URL(r.url).pathname} ${r.bytes}${r.enc ? ` (${r.enc})` : ""}`).join(", "),
      };
      results.push(run);
      console.log(`run ${i + 1}: ${run.wire} bytes on the wire for the page and its ${assets.length} assets [${run.detail}]; ` +
        `/api/v1/info ${run.info} bytes; DOMContentLoaded ${run.dcl.toFixed(0)} ms, load ${run.load.toFixed(0)} ms, first chart ${run.chart.toFixed(0)} ms (${run.mark})`);
    } finally {
      await browser.close();
    }
  }
  const m = (k) => median(results.map((r) => r[k]));
  console.log(`median of ${runs} cold loads: ${m("wire")} bytes on the wire (page + assets), load event ${m("load").toFixed(0)} ms, ` +
    `first chart ${m("chart").toFixed(0)} ms (min–max load ${Math.min(...results.map((r) => r.load)).toFixed(0)}–${Math.max(...results.map((r) => r.load)).toFixed(0)} ms, ` +
    `chart ${Math.min(...results.map((r) => r.chart)).toFixed(0)}–${Math.max(...results.map((r) => r.chart)).toFixed(0)} ms)`);
} finally {
  await ops.stop();
  ops.cleanup();
}
