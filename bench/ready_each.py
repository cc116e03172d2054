#!/usr/bin/env python3
"""Waits until every one of several opswire processes sharing one port
(reuse_port) answers GET /readyz with 200, and optionally until each sees
a host in every team. Used by bench/run.sh for the cluster cases.

    python3 bench/ready_each.py --port 18090 --pids 11,12,13 [--hosts 10] [--timeout 60]

With SO_REUSEPORT the kernel picks the process for each new connection
(by a hash of the addresses and ports), so a request cannot be sent to a
chosen process. Instead each request goes out on a fresh connection from
another loopback source address, and, while that connection is still
open (HTTP/1.1 keep-alive), `ss -tnp` says which process accepted it.
Requests go on until every process has answered. --hosts N also asks
each process for /api/v1/teams (token from OPSWIRE_BENCH_READ_TOKEN) and
wants N teams with at least one host.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time


def request(sock, path, token):
    head = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    sock.sendall((head + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if m:
        want = int(m.group(1))
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, body


def owner(port, local):
    """The pid of the process holding the server side of a connection
    whose client end is `local` (ip, port)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} and dst {local[0]}:{local[1]} )"],
        capture_output=True, text=True, check=False,
    ).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pids", required=True)
    ap.add_argument("--hosts", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    pids = {int(p) for p in a.pids.split(",")}
    token = os.environ.get("OPSWIRE_BENCH_READ_TOKEN")
    ready, last = set(), {}
    deadline = time.monotonic() + a.timeout
    i = 0
    while ready != pids:
        if time.monotonic() > deadline:
            print(f"ready_each: not ready: {sorted(pids - ready)}; last answers {last}", file=sys.stderr)
            return 1
        i += 1
        src = f"127.0.0.{2 + i % 253}"
        try:
            with socket.create_connection(("127.0.0.1", a.port), timeout=3, source_address=(src, 0)) as s:
                status, body = request(s, "/readyz", None)
                pid = owner(a.port, s.getsockname())
                if pid is None or pid in ready:
                    continue
                ok = status == 200
                why = body[:120].decode(errors="replace")
                if ok and a.hosts:
                    status, body = request(s, "/api/v1/teams", token)
                    teams = json.loads(body).get("teams", []) if status == 200 else []
                    have = sum(1 for t in teams if t.get("hosts"))
                    ok = have >= a.hosts
                    why = f"{have} of {a.hosts} teams have a host (HTTP {status})"
                last[pid] = why
                if ok:
                    ready.add(pid)
        except (OSError, ValueError):
            pass
        if ready != pids:
            time.sleep(0.05)
    print(f"ready_each: {len(pids)} processes ready after {i} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
