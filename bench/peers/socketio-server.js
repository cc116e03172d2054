// A Socket.IO v4 peer for the side-by-side runs of docs/benchmarks.md, in the
// style of the classic Socket.IO "DashboardServer": each client names its team
// in the handshake auth payload and joins that team's room; one setInterval
// publishes every team at the same moment with one `io.to(team).emit(...)`
// per team (Socket.IO encodes a room broadcast once and sends the same packet
// to every member). The frame object has opswire's wire shape and key order,
// so on the wire an event is `42["metrics-update",{"type":"metrics",...}]`.
//
//   node bench/peers/socketio-server.js --port 18092 [--host 127.0.0.1]
//     [--teams t0,...,t9 | --team-prefix t --team-count 10] [--tick-ms 1000]

import { Server } from "socket.io";
import { parseCli, createFrames, createHttpServer, listen, nowMicros, onShutdown } from "./common.js";

const NAME = "socket.io peer";
const { port, host, teams, tickMs } = parseCli("socketio-server");
const known = new Set(teams);
const frames = createFrames(teams);

// The HTTP routes must be registered before Socket.IO attaches: it takes over
// the existing `request` listeners and only hands them what is not /socket.io/.
const server = createHttpServer(NAME, tickMs);
const io = new Server(server, { serveClient: false, transports: ["websocket"] });

io.on("connection", (socket) => {
  const team = socket.handshake.auth?.team;
  if (typeof team === "string" && known.has(team)) socket.join(team);
  else socket.disconnect(true);
});

const timer = setInterval(() => {
  const ts = nowMicros();
  const total = io.engine.clientsCount;
  const rooms = io.sockets.adapter.rooms;
  for (const team of teams) {
    const members = rooms.get(team)?.size ?? 0;
    io.to(team).emit("metrics-update", frames.build(team, ts, members, total));
  }
}, tickMs);

listen(server, host, port);

onShutdown((done) => {
  clearInterval(timer);
  io.close(() => done()); // closes every client and the HTTP server
});
