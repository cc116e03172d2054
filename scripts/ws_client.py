#!/usr/bin/env python3
"""A minimal WebSocket client (python3 stdlib only): scripts/check-stack.sh's,
and one for trying opswire by hand (see the README):

  python3 scripts/ws_client.py listen 127.0.0.1:8080 - default --streams metrics,logs,alerts

  ws_client.py exercise ADDR TOKEN TEAM
      Subscribe to TEAM (all streams), send a `ping` op and one invalid
      message, read frames for ~1.5 s, close with 1000. Exercises the WS
      paths so lazily created series exist before `promtool check metrics`.

  ws_client.py listen ADDR TOKEN TEAM [--out FILE] [--streams alerts,metrics]
                      [--seconds 90] [--ping-every 2] [--bad-frame]
      Subscribe to TEAM and append every text frame the server sends to
      FILE (default -, standard output), one JSON document per line
      (flushed at once, so the caller can poll the file). Sends a `ping` op every --ping-every seconds (inbound
      traffic for the message histograms) and, with --bad-frame, one invalid
      message (an `error` frame, websocket_errors_total). Answers WebSocket
      Pings. Ends after --seconds or on SIGTERM/SIGINT, closing with 1000.

ADDR is host:port of opswire. The token goes in the upgrade's
Authorization header; `-` sends none (dev mode needs none). Exit status: 0 when the session ran and closed
normally, 1 when the handshake or subscription failed.
"""
import argparse
import base64
import json
import os
import signal
import socket
import struct
import sys
import time


class WS:
    def __init__(self, addr, token):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n"
                + ("" if token == "-" else f"Authorization: Bearer {token}\r\n")
                + "\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed during the handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n")[0]
        if b" 101 " not in status:
            raise SystemExit(f"no upgrade: {status[:80]!r}")
        self.closed = False
        self.frames = 0

    def send(self, op, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = bytes([0x80 | op, 0x80 | n])
        elif n < 65536:
            hdr = bytes([0x80 | op, 0x80 | 126]) + struct.pack("!H", n)
        else:
            hdr = bytes([0x80 | op, 0x80 | 127]) + struct.pack("!Q", n)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_json(self, obj):
        self.send(1, json.dumps(obj).encode())

    def pump(self, until, on_text=None):
        """Reads frames until `until` (epoch seconds) or the close."""
        self.s.settimeout(0.2)
        while time.time() < until and not self.closed:
            while len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) < 4:
                        break
                    n = struct.unpack("!H", self.buf[2:4])[0]
                    off = 4
                elif n == 127:
                    if len(self.buf) < 10:
                        break
                    n = struct.unpack("!Q", self.buf[2:10])[0]
                    off = 10
                if len(self.buf) < off + n:
                    break
                op = self.buf[0] & 0x0F
                payload = self.buf[off:off + n]
                self.buf = self.buf[off + n:]
                self.frames += 1
                if op == 8:
                    self.closed = True
                elif op == 9:  # Ping -> Pong with the same payload
                    self.send(10, payload)
                elif op == 1 and on_text:
                    on_text(payload.decode("utf-8", "replace"))
            try:
                chunk = self.s.recv(65536)
                if not chunk:
                    self.closed = True
                self.buf += chunk
            except socket.timeout:
                pass

    def close(self):
        if not self.closed:
            try:
                self.send(8, struct.pack("!H", 1000))
                self.pump(time.time() + 1.0)
            except OSError:
                pass
        self.s.close()


def exercise(a):
    ws = WS(a.addr, a.token)
    ws.send_json({"op": "subscribe", "id": 1, "team": a.team, "streams": ["metrics", "logs", "alerts"]})
    ws.send_json({"op": "ping", "id": 2})
    ws.send(1, b"this is not json")
    ws.pump(time.time() + 1.5)
    ws.close()
    print(f"   WebSocket: subscribed, pinged, sent an invalid message, read {ws.frames} frames, closed with 1000")


def listen(a):
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = sys.stdout if a.out == "-" else open(a.out, "a", buffering=1)
    ws = WS(a.addr, a.token)
    subscribed = {"ok": False}

    def on_text(text):
        out.write(text.replace("\n", " ") + "\n")
        out.flush()
        try:
            doc = json.loads(text)
        except ValueError:
            return
        if doc.get("type") == "subscribed" and doc.get("id") == 1:
            subscribed["ok"] = True
        if doc.get("type") == "error" and doc.get("id") == 1:
            print(f"ws_client: subscribe refused: {text}", file=sys.stderr)
            stop["now"] = True

    ws.send_json({"op": "subscribe", "id": 1, "team": a.team, "streams": a.streams.split(",")})
    if a.bad_frame:
        ws.send(1, b"{this is not json")
    deadline = time.time() + a.seconds
    next_ping, n = time.time() + a.ping_every, 100
    while not stop["now"] and not ws.closed and time.time() < deadline:
        ws.pump(min(next_ping, deadline), on_text)
        if time.time() >= next_ping and not ws.closed:
            n += 1
            ws.send_json({"op": "ping", "id": n})
            next_ping = time.time() + a.ping_every
    server_closed = ws.closed
    ws.close()
    if out is not sys.stdout:
        out.close()
    if not subscribed["ok"]:
        print(f"ws_client: team {a.team}: no `subscribed` reply", file=sys.stderr)
        return 1
    if server_closed:
        print(f"ws_client: team {a.team}: the server closed the connection", file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("exercise")
    e.add_argument("addr")
    e.add_argument("token")
    e.add_argument("team")
    l = sub.add_parser("listen")
    l.add_argument("addr")
    l.add_argument("token")
    l.add_argument("team")
    l.add_argument("--out", default="-", help="file to append frames to; - for standard output [-]")
    l.add_argument("--streams", default="alerts")
    l.add_argument("--seconds", type=float, default=90)
    l.add_argument("--ping-every", type=float, default=2)
    l.add_argument("--bad-frame", action="store_true")
    a = p.parse_args()
    if a.cmd == "exercise":
        exercise(a)
        return 0
    return listen(a)


if __name__ == "__main__":
    sys.exit(main())
