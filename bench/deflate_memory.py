#!/usr/bin/env python3
"""Idle-connection memory with and without permessage-deflate.

Publishes 30 hosts to team `alpha` of a dev-mode opswire (no secret), opens
N raw WebSocket subscribers to its metrics, offering permessage-deflate or
not, waits until each has a metrics frame of more than 512 bytes (RSV1 set
when compressed), and reports the server's RSS growth per connection. Run it
against a fresh server each time, e.g. with this config:

    bind = "127.0.0.1:47811"
    [[teams]]
    name = "alpha"
    hosts = ["*"]
    [sampler]
    team = "alpha"
    stale_after_ticks = 600

    python3 bench/deflate_memory.py PID N deflate|plain [PORT]
"""
import json, socket, struct, sys, time, select
pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ADDR = ("127.0.0.1", int(sys.argv[4]) if len(sys.argv) > 4 else 47811)
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def frame(payload, b0=0x81):
    h = bytes([b0]); L = len(payload)
    if L < 126: h += bytes([0x80 | L])
    elif L < 65536: h += bytes([0x80 | 126]) + struct.pack(">H", L)
    else: h += bytes([0x80 | 127]) + struct.pack(">Q", L)
    return h + b"\0\0\0\0" + payload
def connect(offer):
    s = socket.create_connection(ADDR)
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer else ""
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + ext + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf: buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (b"permessage-deflate" in head) == offer, head
    return s, rest
# Publisher: 30 hosts.
p, _ = connect(False)
for i in range(30):
    snap = {"host": f"mem-{i:02d}", "sampled_at": int(time.time()*1e6), "cpu": {"usage_pct": 10.0 + i, "cores_pct": [1.5*i, 2.5], "load": [0.1*i, 0.2, 0.3]},
            "memory": {"used_bytes": 1000000 + i*7919, "total_bytes": 8000000000, "usage_pct": 12.5 + i},
            "disks": [{"mount": "/", "used_bytes": 5000 + i, "total_bytes": 10000, "usage_pct": 50.0}],
            "network": [{"iface": "eth0", "rx_bytes_per_s": 100.0 + i, "tx_bytes_per_s": 7.0 * i}]}
    p.sendall(frame(json.dumps({"op": "publish", "id": i, "team": "alpha", "stream": "metrics", "data": snap}).encode()))
time.sleep(1.5)
before = rss()
socks = []
sub = frame(json.dumps({"op": "subscribe", "id": 1, "team": "alpha", "streams": ["metrics"]}).encode())
for _ in range(n):
    s, rest = connect(mode == "deflate")
    s.sendall(sub)
    socks.append(s)
# Wait until each has a big metrics frame (a compressed one has RSV1 set).
pending = {s: b"" for s in socks}; rsv1 = 0; got = set()
ep = select.epoll(); byfd = {}
for s in socks: ep.register(s.fileno(), select.EPOLLIN); byfd[s.fileno()] = s
deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    ev = ep.poll(1)
    for fd, _ in ev:
        s = byfd[fd]
        if s in got: continue
        pending[s] += s.recv(1 << 20)
        b = pending[s]
        while len(b) >= 2:
            L = b[1] & 0x7f; at = 2
            if L == 126: L = struct.unpack(">H", b[2:4])[0]; at = 4
            elif L == 127: L = struct.unpack(">Q", b[2:10])[0]; at = 10
            if len(b) < at + L: break
            if L > 512 and (b[0] & 0x0f) == 1 and s not in got:
                got.add(s); rsv1 += bool(b[0] & 0x40)
            b = b[at + L:]
        pending[s] = b
time.sleep(2)
after = rss()
print(f"{mode}: {n} subscribers got a >512-byte frame: {len(got)} (compressed: {rsv1}); RSS {before} -> {after} KiB: {(after-before)*1024/n:.0f} bytes per connection")
