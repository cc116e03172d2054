// Shared pieces of the two Node peers (ws-server.js, socketio-server.js) that
// docs/benchmarks.md runs side by side with opswire: CLI parsing, the plain
// HTTP routes, the metrics frame in opswire's wire shape, and clean shutdown.

import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

const OPTIONS = {
  port: { type: "string" },
  host: { type: "string", default: "127.0.0.1" },
  teams: { type: "string" },
  "team-prefix": { type: "string" },
  "team-count": { type: "string" },
  "tick-ms": { type: "string", default: "1000" },
};

/** Parses `--port N [--host H] [--teams a,b | --team-prefix p --team-count n] [--tick-ms ms]`. */
export function parseCli(name) {
  const fail = (msg) => {
    console.error(`${name}: ${msg}`);
    process.exit(2);
  };
  let values;
  try {
    ({ values } = parseArgs({ options: OPTIONS }));
  } catch (err) {
    fail(err.message);
  }
  const port = Number(values.port);
  if (values.port === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    fail("--port N is required (0 picks a free port)");
  }
  const tickMs = Number(values["tick-ms"]);
  if (!(tickMs > 0)) fail("--tick-ms must be a positive number");

  let teams;
  if (values.teams !== undefined) {
    teams = values.teams.split(",").map((t) => t.trim()).filter(Boolean);
  } else if (values["team-prefix"] !== undefined || values["team-count"] !== undefined) {
    const prefix = values["team-prefix"] ?? "t";
    const count = Number(values["team-count"] ?? "10");
    if (!Number.isInteger(count) || count < 1) fail("--team-count must be a positive integer");
    teams = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  } else {
    teams = Array.from({ length: 10 }, (_, i) => `t${i}`);
  }
  if (teams.length === 0) fail("no teams");
  return { port, host: values.host, teams: [...new Set(teams)], tickMs };
}

/** A random lowercase string of `n` letters (the epoch, session ids). */
export function randomName(n) {
  const bytes = randomBytes(n);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(97 + (b % 26));
  return s;
}

/** Unix time in integer microseconds. */
export function nowMicros() {
  return Math.round(performance.timeOrigin * 1000 + performance.now() * 1000);
}

const HOST = JSON.parse(readFileSync(new URL("./metrics-host.json", import.meta.url), "utf8"));

/**
 * Per-team metrics frames in opswire's wire shape and key order
 * (type, team, epoch, seq, ts, data): the generator scans the first keys.
 */
export function createFrames(teams) {
  const epoch = randomName(8);
  const seqs = new Map(teams.map((t) => [t, 0]));
  return {
    epoch,
    build(team, ts, teamCount, total) {
      const seq = seqs.get(team) + 1;
      seqs.set(team, seq);
      return {
        type: "metrics",
        team,
        epoch,
        seq,
        ts,
        data: {
          // Spread keeps the snapshot's key order; host and sampled_at are overwritten in place.
          hosts: [{ ...HOST, host: `peer-${team}`, sampled_at: ts }],
          connections: { team: teamCount, total },
        },
      };
    },
  };
}

/** The plain HTTP server: /api/v1/info, /healthz, 404 for the rest. */
export function createHttpServer(serverName, tickMs) {
  const info = JSON.stringify({ server: serverName, tick_ms: tickMs, auth_required: false });
  return createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/api/v1/info") {
      res.writeHead(200, { "content-type": "application/json" }).end(info);
    } else if (req.method === "GET" && path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
  });
}

/** Listens, then prints the one `listening on` line. */
export function listen(server, host, port) {
  server.listen(port, host, () => {
    const addr = server.address();
    const shown = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    console.log(`listening on http://${shown}:${addr.port}`);
  });
}

/** On SIGTERM/SIGINT: run `close(done)`, exit 0 when done (or after 2 s regardless). */
export function onShutdown(close) {
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), 2000).unref();
    close(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
