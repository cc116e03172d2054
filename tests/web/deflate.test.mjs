// permessage-deflate with real clients: Chromium (whose WebSocket always
// offers it) and the `ws` package (which offers it and compresses its own
// messages from 1 KiB up) get the server's compressed frames and read them,
// and the server reads a compressed op. The byte-level checks (RSV1, the
// same bytes to every subscriber, the inflation limit) are in
// tests/api/deflate.rs; this is the interop half.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import * as H from "./harness.mjs";

const ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

describe("permessage-deflate with real clients", () => {
  let ops, browser, publisher;

  before(async () => {
    ops = new H.Opswire({ port: await H.freePort(), name: "opswire-deflate" });
    await ops.start();
    publisher = await H.Publisher.connect(ops);
    // Enough hosts for a metrics frame well past the 512-byte threshold.
    for (let i = 0; i < 30; i++) await publisher.host("alpha", `deflate-${String(i).padStart(2, "0")}`);
    browser = await H.launchBrowser();
  });

  after(async () => {
    publisher?.ws.close();
    await browser?.close();
    await ops?.stop();
  });

  it("Chromium negotiates it and reads compressed metrics frames", async () => {
    const page = await browser.context.newPage();
    await page.goto(ops.url("/healthz"));
    const got = await page.evaluate(async (url) => {
      const ws = new WebSocket(url);
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no metrics frame with 30 hosts")), 8000);
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.type === "welcome") ws.send(JSON.stringify({ op: "subscribe", id: 1, team: "alpha", streams: ["metrics"] }));
          if (f.type === "metrics" && f.data.hosts.length > 30) {
            clearTimeout(timer);
            resolve({ extensions: ws.extensions, hosts: f.data.hosts.length, bytes: e.data.length });
            ws.close();
          }
        };
        ws.onerror = () => reject(new Error("websocket error"));
      });
    }, ops.wsUrl);
    await page.close();
    assert.equal(got.extensions, ANSWER);
    assert.ok(got.bytes > 512, `a frame of ${got.bytes} bytes is one the server compresses`);
  });

  it("the ws package reads compressed frames and its compressed ops are read", async () => {
    const ws = new WebSocket(ops.wsUrl, { perMessageDeflate: { threshold: 0 } });
    const frames = [];
    const next = (pred, what) => H.waitFor(() => frames.find(pred), { what, timeout: 8000 });
    ws.on("message", (raw) => frames.push(JSON.parse(String(raw))));
    let answer = null;
    ws.on("upgrade", (res) => { answer = res.headers["sec-websocket-extensions"]; });
    await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
    assert.equal(answer, ANSWER);
    assert.equal(ws.extensions, "permessage-deflate", "ws took the answer");
    await next((f) => f.type === "welcome", "welcome");
    // threshold 0: this op goes compressed (RSV1), padded past 1 KiB.
    ws.send(JSON.stringify({ op: "subscribe", id: 2, team: "alpha", streams: ["metrics"] }) + " ".repeat(2000));
    await next((f) => f.type === "subscribed" && f.id === 2, "subscribed to a compressed op");
    const m = await next((f) => f.type === "metrics" && f.data.hosts.length > 30, "a compressed metrics frame");
    assert.ok(m.data.hosts.some((h) => h.host === "deflate-29"));
    ws.close();
  });
});
