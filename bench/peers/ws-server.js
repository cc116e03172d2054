// A plain `ws` peer for the side-by-side runs of docs/benchmarks.md: the
// classic Node fan-out (one setInterval, every team published at the same
// moment, each frame serialized once per team and sent to every subscriber)
// speaking the subset of opswire's protocol the load generator uses:
// `welcome`, the `subscribe` op, `subscribed`, `error`, and `metrics` frames.
//
//   node bench/peers/ws-server.js --port 18091 [--host 127.0.0.1]
//     [--teams t0,...,t9 | --team-prefix t --team-count 10] [--tick-ms 1000]

import { WebSocketServer } from "ws";
import { parseCli, createFrames, createHttpServer, listen, nowMicros, onShutdown, randomName } from "./common.js";

const NAME = "ws peer";
const { port, host, teams, tickMs } = parseCli("ws-server");
const known = new Set(teams);
const subscribers = new Map(teams.map((t) => [t, new Set()]));
const frames = createFrames(teams);

const server = createHttpServer(NAME, tickMs);
const wss = new WebSocketServer({ server, path: "/ws" });

function reply(ws, frame) {
  if (ws.readyState === 1) ws.send(JSON.stringify(frame));
}

function badRequest(ws, id, message) {
  reply(ws, { type: "error", ...(id !== undefined && { id }), code: "bad_request", message });
}

wss.on("connection", (ws) => {
  ws.on("error", () => {}); // a reset peer must not crash the server; `close` follows.
  ws.on("close", () => {
    for (const set of subscribers.values()) set.delete(ws);
  });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return badRequest(ws, undefined, "binary frames are not supported");
    let op;
    try {
      op = JSON.parse(data.toString());
    } catch {
      return badRequest(ws, undefined, "not JSON");
    }
    if (op === null || typeof op !== "object") return badRequest(ws, undefined, "not a JSON object");
    const id = Number.isInteger(op.id) ? op.id : undefined;
    if (op.op !== "subscribe") return badRequest(ws, id, `unsupported op \`${op.op}\``);
    if (typeof op.team !== "string") return badRequest(ws, id, "`team` must be a string");
    if (!known.has(op.team)) {
      return reply(ws, { type: "error", id, code: "unknown_team", message: `unknown team \`${op.team}\`` });
    }
    subscribers.get(op.team).add(ws);
    reply(ws, { type: "subscribed", id, team: op.team, streams: ["metrics"] });
  });
  reply(ws, { type: "welcome", session: `s-${randomName(10)}`, teams, server: NAME });
});
wss.on("error", (err) => console.error("ws-server:", err.message));

// Every team at once, each frame stringified once and sent as is to every subscriber.
const timer = setInterval(() => {
  const ts = nowMicros();
  const total = wss.clients.size;
  for (const team of teams) {
    const set = subscribers.get(team);
    const frame = JSON.stringify(frames.build(team, ts, set.size, total));
    for (const ws of set) if (ws.readyState === 1) ws.send(frame);
  }
}, tickMs);

listen(server, host, port);

onShutdown((done) => {
  clearInterval(timer);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(done);
});
