// SSE with Content-Encoding: gzip in a real browser: Chromium's EventSource
// sends Accept-Encoding: gzip by itself, gets the stream gzip'ed (one gzip
// member the server writes event by event, with no compressor per stream)
// and must decode it live: every event in order while the stream is open.
// The byte-level checks (the WebSocket's compressed bytes in the body, the
// trailer, q-values) are in tests/api/sse_gzip.rs; this is the interop half.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as H from "./harness.mjs";

const HOSTS = 30;

describe("SSE gzip in Chromium", () => {
  let ops, browser, publisher;

  before(async () => {
    ops = new H.Opswire({ port: await H.freePort(), name: "opswire-sse-gzip" });
    await ops.start();
    publisher = await H.Publisher.connect(ops);
    // Metrics frames well past the 512-byte threshold: compressed pieces.
    for (let i = 0; i < HOSTS; i++) await publisher.host("alpha", `gz-${String(i).padStart(2, "0")}`);
    browser = await H.launchBrowser();
  });

  after(async () => {
    publisher?.close();
    await browser?.close();
    await ops?.stop();
  });

  it("an EventSource decodes the gzip'ed stream live, every event in order", async () => {
    const page = await browser.context.newPage();
    // What went over the wire, from Chromium's network stack.
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send("Network.enable");
    const net = { responseHeaders: null, id: null, decoded: 0, encoded: 0 };
    cdp.on("Network.requestWillBeSent", (e) => { if (e.request.url.includes("/sse?")) net.id = e.requestId; });
    // The raw headers (with what the network stack adds, Accept-Encoding)
    // come in an ExtraInfo event that may arrive before or after
    // requestWillBeSent: keep every request's, pick /sse's at the end.
    const extra = new Map();
    cdp.on("Network.requestWillBeSentExtraInfo", (e) => extra.set(e.requestId, e.headers));
    cdp.on("Network.responseReceived", (e) => { if (e.requestId === net.id) net.responseHeaders = e.response.headers; });
    cdp.on("Network.dataReceived", (e) => {
      if (e.requestId !== net.id) return;
      net.decoded += e.dataLength;
      net.encoded += e.encodedDataLength;
    });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(ops.url("/healthz"));
    await page.evaluate(() => {
      window.events = [];
      window.sseErrors = 0;
      const es = new EventSource("/sse?team=alpha&streams=metrics,logs");
      window.es = es;
      for (const type of ["welcome", "subscribed", "metrics", "log", "lagged", "error"]) {
        es.addEventListener(type, (e) => {
          if (e.data === undefined) { window.sseErrors++; return; } // a connection error
          window.events.push({ type, id: e.lastEventId, frame: JSON.parse(e.data) });
        });
      }
    });
    const events = () => page.evaluate(() => window.events);
    const bigMetrics = (evs) => evs.filter((e) => e.type === "metrics" && e.frame.data.hosts.length > HOSTS);
    await H.waitFor(async () => bigMetrics(await events()).length >= 3, {
      timeout: 10000, what: `three metrics events with more than ${HOSTS} hosts`,
    });
    // Server-side: this stream is counted as a compressed SSE connection.
    const metrics = await (await fetch(ops.url("/metrics"))).text();
    assert.match(metrics, /^opswire_compressed_connections\{transport="sse"\} 1$/m);

    const messages = ["first", "second", "third"].map((w) => `gzip'ed log, ${w}: ${"x".repeat(700)}`);
    const seqs = [];
    for (const message of messages) {
      seqs.push(await publisher.log("alpha", { level: "info", source: "sse-gzip", message }));
      // Decoded before the next is published: nothing waits in a buffer.
      await H.waitFor(async () => (await events()).some((e) => e.type === "log" && e.frame.seq === seqs.at(-1)), {
        what: `log seq ${seqs.at(-1)} in the page`,
      });
    }
    const evs = await events();
    const open = await page.evaluate(() => window.es.readyState);
    await page.evaluate(() => window.es.close());

    assert.equal(open, 1, "the stream is still open (EventSource.OPEN): events arrived live");
    assert.deepEqual(errors, []);
    assert.equal(await page.evaluate(() => window.sseErrors), 0, "no connection error, no reconnect");
    assert.equal(evs[0].type, "welcome");
    assert.equal(evs[1].type, "subscribed");
    assert.deepEqual(evs[1].frame.streams, ["metrics", "logs"]);
    assert.equal(evs.filter((e) => e.type === "welcome").length, 1, "one connection, never reconnected");
    const ms = evs.filter((e) => e.type === "metrics").map((e) => e.frame.seq);
    assert.ok(ms.length >= 3);
    for (let i = 1; i < ms.length; i++) assert.ok(ms[i] > ms[i - 1], `metrics seqs in order: ${ms}`);
    const big = bigMetrics(evs).at(-1);
    assert.ok(big.frame.data.hosts.some((h) => h.host === `gz-${HOSTS - 1}`));
    const logs = evs.filter((e) => e.type === "log");
    assert.deepEqual(logs.map((e) => e.frame.seq), seqs);
    assert.deepEqual(logs.map((e) => e.frame.data.message), messages);
    // `id:` lines made it through: the last log's position.
    assert.match(logs.at(-1).id, new RegExp(`^logs:[a-z0-9]{8}:${seqs.at(-1)}$`));

    // On the wire: asked for gzip, answered gzip, fewer bytes than decoded.
    const lower = (h) => Object.fromEntries(Object.entries(h || {}).map(([k, v]) => [k.toLowerCase(), v]));
    const req = lower(extra.get(net.id));
    const res = lower(net.responseHeaders);
    assert.match(req["accept-encoding"] || "", /\bgzip\b/, JSON.stringify(req));
    assert.equal(res["content-encoding"], "gzip", JSON.stringify(res));
    assert.match(res.vary || "", /accept-encoding/i);
    assert.ok(net.decoded > 0, "Chromium reported the stream's data");
    console.log(`# /sse in Chromium: ${net.decoded} bytes decoded from ${net.encoded} bytes received`);
    assert.ok(net.encoded > 0, "Chromium reported the bytes received");
    assert.ok(net.encoded * 2 < net.decoded, `${net.encoded} encoded vs ${net.decoded} decoded`);
    await page.close();
  });
});
