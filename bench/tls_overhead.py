"""What TLS costs the server: opens N WebSocket subscribers (ws://, or
wss:// with CAFILE) of the `default` team's metrics, then reports the
server's RSS growth per connection and CPU share over a window (its pid
in SERVER_PID). Stdlib only; run by bench/tls_overhead.sh.
  tls_overhead.py HOST PORT TOKEN N SECONDS [CAFILE]"""
import asyncio, base64, json, os, ssl, sys, time

host, port, token, n, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
cafile = sys.argv[6] if len(sys.argv) > 6 else None
pid = int(os.environ["SERVER_PID"])
ctx = None
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)

def frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    l = len(payload)
    if l < 126:
        head += bytes([0x80 | l])
    else:
        head += bytes([0x80 | 126]) + l.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

received = 0
async def client(i, ready):
    global received
    r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost" if ctx else None)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    w.write(frame(json.dumps({"op": "subscribe", "id": 1, "team": "default", "streams": ["metrics"]})))
    await w.drain()
    ready.set()
    while True:
        data = await r.read(65536)
        if not data:
            return
        received += len(data)

def proc():
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = int(parts[11]) + int(parts[12])
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return cpu, rss

async def main():
    global received
    cpu0, rss0 = proc()
    tasks = []
    for i in range(n):
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(client(i, ready)))
        await ready.wait()
    await asyncio.sleep(2)
    cpu1, rss1 = proc()
    received = 0
    t0 = time.time()
    await asyncio.sleep(seconds)
    cpu2, rss2 = proc()
    dt = time.time() - t0
    tick = os.sysconf("SC_CLK_TCK")
    print(json.dumps({
        "tls": bool(cafile), "connections": n,
        "rss_growth_kib_per_conn": round((rss1 - rss0) / n, 1),
        "server_cpu_pct": round(100 * (cpu2 - cpu1) / tick / dt, 1),
        "bytes_per_s_to_clients": round(received / dt),
    }))
    os._exit(0)

asyncio.run(main())
