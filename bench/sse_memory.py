#!/usr/bin/env python3
"""Idle-stream memory of SSE with and without `Content-Encoding: gzip`.

Publishes 30 hosts to team `alpha` of a dev-mode opswire (no secret), opens
N `/sse` streams of its metrics, asking for gzip or not, waits until each
has decoded a metrics event of more than 512 bytes (so the frame's shared
compressed bytes exist), and reports the server's RSS growth per stream.
Run it against a fresh server each time, with the config of
bench/deflate_memory.py:

    python3 bench/sse_memory.py PID N gzip|plain [PORT]
"""
import json, resource, selectors, socket, sys, time, zlib

pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ADDR = ("127.0.0.1", int(sys.argv[4]) if len(sys.argv) > 4 else 47811)
GZIP = mode == "gzip"


def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def publish_hosts():
    body = []
    now = int(time.time() * 1e6)
    for i in range(30):
        body.append({"host": f"mem-{i:02}", "sampled_at": now,
                     "cpu": {"usage_pct": 10.0 + i, "cores_pct": [1, 2], "load": [0.1, 0.2, 0.3]},
                     "memory": {"used_bytes": 1 << 30, "total_bytes": 8 << 30, "usage_pct": 12.5},
                     "disks": [{"mount": "/", "fs_type": "ext4", "used_bytes": i << 30, "total_bytes": 100 << 30, "usage_pct": i}],
                     "network": [{"iface": "eth0", "rx_bytes_per_s": i * 100.0, "tx_bytes_per_s": i * 50.0}]})
    # One WebSocket publisher (dev mode: any op is allowed).
    s = socket.create_connection(ADDR)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    for snap in body:
        p = json.dumps({"op": "publish", "team": "alpha", "stream": "metrics", "data": snap}).encode()
        h = bytes([0x81]) + (bytes([0x80 | len(p)]) if len(p) < 126 else bytes([0x80 | 126]) + len(p).to_bytes(2, "big"))
        s.sendall(h + b"\0\0\0\0" + p)
    return s


class Stream:
    def __init__(self):
        self.s = socket.create_connection(ADDR)
        enc = "Accept-Encoding: gzip\r\n" if GZIP else ""
        self.s.sendall(f"GET /sse?team=alpha&streams=metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n{enc}\r\n".encode())
        self.s.setblocking(False)
        self.raw, self.head, self.text, self.done = b"", None, b"", False
        self.chunked = b""  # the chunked body not yet decoded
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self):
        try:
            data = self.s.recv(1 << 16)
        except BlockingIOError:
            return
        if self.head is None:
            self.raw += data
            if b"\r\n\r\n" not in self.raw:
                return
            self.head, _, data = self.raw.partition(b"\r\n\r\n")
            assert self.head.split(b" ")[1] == b"200", self.head
            assert b"transfer-encoding: chunked" in self.head.lower(), self.head
            assert (b"content-encoding: gzip" in self.head.lower()) == GZIP, self.head
        # Undo the chunked transfer coding, then the content coding.
        self.chunked += data
        body = b""
        while True:
            line, sep, rest = self.chunked.partition(b"\r\n")
            if not sep:
                break
            size = int(line.split(b";")[0], 16)
            if len(rest) < size + 2:
                break
            body += rest[:size]
            self.chunked = rest[size + 2:]
        self.text += self.z.decompress(body) if GZIP else body
        for ev in self.text.split(b"\n\n"):
            if b"event: metrics" in ev and len(ev) > 512 and b"mem-29" in ev:
                self.done = True
        self.text = self.text[-8192:]


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
s0 = publish_hosts()
time.sleep(1.5)  # the next tick carries the 30 hosts
before = rss()
streams = []
for i in range(n):
    streams.append(Stream())
    if i % 200 == 199:
        time.sleep(0.05)
deadline = time.time() + 60
sel = selectors.DefaultSelector()
for x in streams:
    sel.register(x.s, selectors.EVENT_READ, x)
waiting = n
while waiting:
    assert time.time() < deadline, f"{n - waiting} of {n} have a metrics event"
    for key, _ in sel.select(0.5):
        x = key.data
        x.feed()
        if x.done:
            sel.unregister(x.s)
            waiting -= 1
time.sleep(1.0)
after = rss()
print(json.dumps({"mode": mode, "streams": n, "rss_kib_before": before, "rss_kib_after": after,
                  "kib_per_stream": round((after - before) / n, 2)}))
