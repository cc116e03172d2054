#!/usr/bin/env python3
"""Markdown tables from the JSON reports bench/run.sh leaves in a directory.

    python3 bench/summarize.py target/bench/<run>

Files are named CASE-SERVER-N-rREP.json (e.g. table-opswire-10000-r1.json).
"""
import glob
import json
import os
import re
import sys

NAME = re.compile(r"^(?P<case>[a-z]+)-(?P<server>[a-z]+)-(?P<n>\d+)-r(?P<rep>\d+)\.json$")
SERVERS = {"opswire": 0, "actixws": 1, "raw": 2, "ws": 3, "socketio": 4}


def load(d):
    rows = []
    for path in glob.glob(os.path.join(d, "*.json")):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            try:
                r = json.load(f)
            except json.JSONDecodeError:
                continue
        rows.append((m["case"], m["server"], int(m["n"]), int(m["rep"]), r))
    rows.sort(key=lambda x: (x[0], SERVERS.get(x[1], 9), x[2], x[3]))
    return rows


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def row(server, n, rep, r):
    h, s, c = r["healthy"], r.get("server") or {}, r["connect"]
    m = h.get("metrics") or {}
    lag = h["lag_ms"]["all"]
    age = h.get("data_age_ms") or {}
    missing = m.get("expected", 0) - m.get("received", 0)
    rss = s.get("rss_kib_end")
    return (
        f"| {server} | {n:,} | {rep} | {c['connected']:,} | {m.get('received', 0):,} / {m.get('expected', 0):,} "
        f"| {missing + h.get('loss', 0):,} | {fmt(lag['p50'])} | {fmt(lag['p99'])} | {fmt(lag['max'])} "
        f"| {fmt(age.get('p99') if age.get('count') else None)} | {fmt(s.get('cpu_pct'))} "
        f"| {fmt(rss / 1024 if rss else None)} | {fmt(s.get('rss_per_conn_kib'))} "
        f"| {fmt(r['generator']['cpu_pct'])} |"
    )


HEAD = (
    "| server | N | run | connected | metrics rx / expected | missing | lag p50 ms | p99 ms | max ms "
    "| data age p99 ms | server CPU % | RSS MiB | RSS / conn KiB | generator CPU % |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    rows = load(d)
    if not rows:
        print(f"no reports in {d}")
        return
    for case in sorted({r[0] for r in rows}):
        print(f"\n### {case}\n")
        if case == "idle":
            print("| server | N | run | connected | RSS before MiB | RSS end MiB | RSS / conn KiB |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for c, server, n, rep, r in rows:
                if c == case:
                    s = r["server"]
                    print(
                        f"| {server} | {n:,} | {rep} | {r['connect']['connected']:,} "
                        f"| {s['rss_kib_before'] / 1024:.1f} | {s['rss_kib_end'] / 1024:.1f} "
                        f"| {s['rss_per_conn_kib']:.2f} |"
                    )
            continue
        print(HEAD)
        for c, server, n, rep, r in rows:
            if c == case:
                print(row(server, n, rep, r))
        if case == "stalled":
            for c, server, n, rep, r in rows:
                if c == case:
                    st = r["stalled"]
                    print(
                        f"\nrun {rep}: stalled {st['subscribers']}, still open {st['open']}, "
                        f"closed by the server {st['closed_by_server']}, "
                        f"unread KiB mean {st['unread_kib_mean']:.1f}"
                    )
    table = [x for x in rows if x[0] == "table"]
    if table:
        print("\n### largest N with p99 ≤ 100 ms and nothing missing (every run)\n")
        for server in sorted({x[1] for x in table}, key=lambda s: SERVERS.get(s, 9)):
            ok = {}
            for _, sv, n, _, r in table:
                if sv != server:
                    continue
                h = r["healthy"]
                m = h.get("metrics") or {}
                good = (
                    r["connect"]["connected"] == n
                    and m.get("expected", 0) == m.get("received", 0)
                    and m.get("received", 0) > 0
                    and h["lag_ms"]["all"]["p99"] <= 100
                )
                ok[n] = ok.get(n, True) and good
            best = max([n for n, g in ok.items() if g], default=None)
            print(f"- {server}: {best if best is not None else 'none'} (of {sorted(ok)})")
    for name in ("sampler.txt",) + tuple(sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "tracing-sink-*.txt")))):
        p = os.path.join(d, name)
        if os.path.exists(p):
            print(f"\n{name}: {open(p).read().strip()}")


if __name__ == "__main__":
    main()
