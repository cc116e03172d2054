#!/usr/bin/env python3
"""Markdown tables from the JSON reports bench/run.sh leaves in a directory.

    python3 bench/summarize.py target/bench/<run>

Files are named CASE-SERVER-N-rREP.json (e.g. table-opswire-10000-r1.json),
and the fleet case's fleet-VIEW-plain|deflate-N-rREP.json.
"""
import glob
import json
import os
import re
import sys

NAME = re.compile(r"^(?P<case>[a-z]+)-(?P<server>[a-z]+)-(?P<n>\d+)-r(?P<rep>\d+)\.json$")
SERVERS = {"opswire": 0, "memory": 0, "cluster": 1, "actixws": 1, "raw": 2, "ws": 3, "socketio": 4}


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
        # CPU other processes used meanwhile (bench/foreign_cpu.py).
        foreign = path[: -len(".json")] + ".foreign.json"
        if os.path.exists(foreign):
            with open(foreign) as f:
                r["foreign"] = json.load(f)
        rows.append((m["case"], m["server"], int(m["n"]), int(m["rep"]), r))
    rows.sort(key=lambda x: (x[0], SERVERS.get(x[1], 9), x[2], x[3]))
    return rows


FLEET = re.compile(r"^fleet-(?P<view>[a-z0-9]+)-(?P<mode>plain|deflate)-(?P<n>\d+)-r(?P<rep>\d+)\.json$")
VIEWS = {"1host": 0, "full": 1, "summary": 2, "hosts": 3}


def fleet_table(d):
    rows = []
    for path in glob.glob(os.path.join(d, "fleet-*.json")):
        m = FLEET.match(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            r = json.load(f)
        fp = path[: -len(".json")] + ".foreign.json"
        if os.path.exists(fp):
            with open(fp) as f:
                r["foreign"] = json.load(f)
        rows.append((VIEWS.get(m["view"], 9), m["view"], m["mode"], int(m["n"]), int(m["rep"]), r))
    if not rows:
        return
    rows.sort(key=lambda x: (x[3], x[0], x[2] == "deflate", x[4]))
    print("\n### fleet\n")
    print(
        "| hosts per team | view | deflate | N | run | connected | metrics rx / expected | missing "
        "| lag p50 ms | p99 ms | max ms | on the wire B / sub / s | JSON B / sub / s | server CPU % "
        "| RSS / conn KiB | generator CPU % | other load % |"
    )
    print("| --- " * 17 + "|")
    for _, view, mode, n, rep, r in rows:
        h, s, c, b = r["healthy"], r.get("server") or {}, r["connect"], r.get("bytes") or {}
        m = h["metrics"]
        lag = h["lag_ms"]["all"]
        hosts = (r.get("fleet") or {}).get("hosts_per_team") or 1
        dfl = f"yes ({b.get('deflate_negotiated', 0):,})" if mode == "deflate" else "no"
        print(
            f"| {hosts} | {view} | {dfl} | {n:,} | {rep} | {c['connected']:,} | {m['received']:,} / {m['expected']:,} "
            f"| {m['expected'] - m['received']:,} | {fmt(lag['p50'])} | {fmt(lag['p99'])} | {fmt(lag['max'])} "
            f"| {b.get('wire_per_sub_s', 0):,.0f} | {b.get('text_per_sub_s', 0):,.0f} | {fmt(s.get('cpu_pct'))} "
            f"| {fmt(s.get('rss_per_conn_kib'))} | {fmt(r['generator']['cpu_pct'])} | {foreign(r)} |"
        )
        f = r.get("fleet") or {}
        if f.get("errors") or c["failed"]:
            print(f"|  | fleet errors {f.get('errors')}, connect errors {c['errors']} |")


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


def cpu(r, name):
    w = (r.get("watched") or {}).get(name)
    return w["cpu_pct"] if w else None


def cores(r):
    c = (r.get("foreign") or {}).get("cores_pct")
    return " / ".join(fmt(x) for x in c) if c else "–"


def foreign(r):
    f = r.get("foreign")
    return fmt(f["mean_pct"]) if f else "–"


def other_cpu(r):
    """Machine CPU not accounted for by the server(s), the watched
    processes and the generator's workers (agents, kernel, other load)."""
    m = r.get("machine")
    if not m:
        return None
    known = (r.get("server") or {}).get("cpu_pct", 0) + r["generator"]["cpu_pct"]
    known += sum(w["cpu_pct"] for w in (r.get("watched") or {}).values())
    return m["cpu_pct"] - known


def cluster_table(rows):
    print(
        "| N | run | connected | metrics rx / expected | sources | missing | lag p50 ms | p99 ms | max ms "
        "| servers CPU % (each) | Redis CPU % | generator CPU % | machine CPU % (of 200) | rest % "
        "| core 0 / core 1 busy % | RSS / conn KiB | other load % |"
    )
    print("| --- " * 17 + "|")
    for _, _, n, rep, r in rows:
        h, s, c = r["healthy"], r.get("server") or {}, r["connect"]
        m = h["metrics"]
        lag = h["lag_ms"]["all"]
        each = " / ".join(fmt(p["cpu_pct"]) for p in s.get("processes", []))
        print(
            f"| {n:,} | {rep} | {c['connected']:,} | {m['received']:,} / {m['expected']:,} | {m.get('sources', '–')} "
            f"| {m['expected'] - m['received'] + h.get('loss', 0):,} | {fmt(lag['p50'])} | {fmt(lag['p99'])} "
            f"| {fmt(lag['max'])} | {fmt(s.get('cpu_pct'))} ({each}) | {fmt(cpu(r, 'redis'))} "
            f"| {fmt(r['generator']['cpu_pct'])} | {fmt((r.get('machine') or {}).get('cpu_pct'))} "
            f"| {fmt(other_cpu(r))} | {cores(r)} | {fmt(s.get('rss_per_conn_kib'))} | {foreign(r)} |"
        )
        if c["failed"]:
            print(f"|  | failed: {c['errors']} |")


def crossnode_table(rows):
    print(
        "| hub | N | run | logs rx / expected | lost | logs lag p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
        "| metrics p99 ms | published / acked | node B CPU % | node A CPU % | Redis CPU % | generator CPU % "
        "| other load % |"
    )
    print("| --- " * 17 + "|")
    for _, server, n, rep, r in rows:
        h = r["healthy"]
        lg = h.get("logs") or {}
        lag = h["lag_ms"]["logs"]
        p = r.get("publisher") or {}
        print(
            f"| {server} | {n:,} | {rep} | {lg.get('received', 0):,} / {lg.get('expected', 0):,} | {h.get('loss', 0):,} "
            f"| {fmt(lag['p50'], 2)} | {fmt(lag['p90'], 2)} | {fmt(lag['p99'], 2)} | {fmt(lag['p99_9'], 2)} "
            f"| {fmt(lag['max'], 2)} | {fmt(h['lag_ms']['metrics']['p99'])} | {p.get('sent', 0):,} / {p.get('acked', 0):,} "
            f"| {fmt((r.get('server') or {}).get('cpu_pct'))} | {fmt(cpu(r, 'nodea'))} | {fmt(cpu(r, 'redis'))} "
            f"| {fmt(r['generator']['cpu_pct'])} | {foreign(r)} |"
        )


def per_frame_us(r):
    """Server CPU per delivered frame (metrics and logs received in the window), µs."""
    s, h = r.get("server") or {}, r["healthy"]
    frames = h["metrics"]["received"] + (h.get("logs") or {}).get("received", 0)
    if not frames or s.get("cpu_pct") is None:
        return None
    return s["cpu_pct"] / 100 * r["config"]["duration_s"] * 1e6 / frames


def clustercost_table(rows):
    print(
        "| hub | N | run | frames delivered | missing | lag p99 ms | server CPU % | µs per frame "
        "| Redis CPU % | µs per frame with Redis | other load % |"
    )
    print("| --- " * 11 + "|")
    by = {}
    for _, server, n, rep, r in rows:
        h = r["healthy"]
        frames = h["metrics"]["received"] + (h.get("logs") or {}).get("received", 0)
        us = per_frame_us(r)
        red = cpu(r, "redis")
        with_redis = (
            (r["server"]["cpu_pct"] + red) / 100 * r["config"]["duration_s"] * 1e6 / frames
            if red is not None and frames
            else None
        )
        by[(server, rep)] = (us, with_redis)
        missing = h["metrics"]["expected"] - h["metrics"]["received"] + h.get("loss", 0)
        print(
            f"| {server} | {n:,} | {rep} | {frames:,} | {missing:,} | {fmt(h['lag_ms']['all']['p99'])} "
            f"| {fmt(r['server']['cpu_pct'])} | {fmt(us, 2)} | {fmt(red)} | {fmt(with_redis, 2)} | {foreign(r)} |"
        )
    for rep in sorted({k[1] for k in by}):
        mem, cl = by.get(("memory", rep)), by.get(("cluster", rep))
        if mem and cl and mem[0] and cl[0]:
            print(
                f"\nrun {rep}: cluster / in-memory CPU per delivered frame = {cl[0] / mem[0]:.2f}×"
                + (f" ({cl[1] / mem[0]:.2f}× with Redis's CPU)" if cl[1] else "")
            )


CLUSTER_CASES = {"cluster": cluster_table, "crossnode": crossnode_table, "clustercost": clustercost_table}


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    rows = load(d)
    fleet_table(d)
    if not rows:
        if not glob.glob(os.path.join(d, "fleet-*.json")):
            print(f"no reports in {d}")
        return
    for case in sorted({r[0] for r in rows}):
        print(f"\n### {case}\n")
        if case in CLUSTER_CASES:
            CLUSTER_CASES[case]([x for x in rows if x[0] == case])
            continue
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
