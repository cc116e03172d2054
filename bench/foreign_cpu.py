#!/usr/bin/env python3
"""CPU used by processes that are not this benchmark's, while it runs.

    python3 bench/foreign_cpu.py ROOT_PID OUT_FILE &   # until killed (SIGTERM)

Every half second it reads /proc/*/stat; a process is the benchmark's when
ROOT_PID is among its ancestors (bench/run.sh: its servers, agents, Redis
and the generator). The CPU time every other process used between two
readings is added up (a process first seen is counted from its start, so
a short compile job that came and went between two readings is missed,
one that lived across a reading is not). Kernel threads are left out:
under load the loopback traffic of the benchmark itself runs partly in
ksoftirqd. On SIGTERM it writes one JSON line to OUT_FILE: the mean, in %
of one core, the highest 1 s, and the busiest other commands; and, when
the generator's report (OUT_FILE without `.foreign`) is there by then,
each core's busy share over its measurement window (`/proc/stat`).
"""
import json
import os
import signal
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")


def read():
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        # state ppid ... utime(14) stime(15) ... starttime(22)
        comm = s[s.find("(") + 1 : s.rfind(")")]
        procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19]), comm)
    return procs


def cores():
    """(busy, total) ticks of each core."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                out.append((sum(v) - v[3] - v[4], sum(v)))
    return out


def window_cores(samples, report):
    """Each core's busy % between the samples nearest the report's window."""
    try:
        with open(report) as f:
            c = json.load(f)["config"]
    except (OSError, ValueError, KeyError):
        return None
    start = c["window_start_unix_s"]
    end = start + c["duration_s"]
    a = min(samples, key=lambda x: abs(x[0] - start))
    b = min(samples, key=lambda x: abs(x[0] - end))
    if b[0] - a[0] < 1:
        return None
    return [round(100 * (cb[0] - ca[0]) / max(1, cb[1] - ca[1]), 1) for ca, cb in zip(a[1], b[1])]


def ours(pid, procs, root, cache):
    seen = []
    while pid > 1 and pid in procs:
        if pid in cache:
            r = cache[pid]
            break
        if pid == root:
            r = True
            break
        seen.append(pid)
        pid = procs[pid][0]
    else:
        r = False
    for p in seen:
        cache[p] = r
    return r


def main():
    root, out = int(sys.argv[1]), sys.argv[2]
    me = os.getpid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    prev, t_prev = read(), time.monotonic()
    t0 = t_prev
    total, worst, window, by_comm = 0, 0.0, [], {}
    samples = [(time.time(), cores())]
    while not stop:
        time.sleep(0.5)
        cur, t = read(), time.monotonic()
        cache = {}
        ticks = 0
        for pid, (ppid, cpu, start, comm) in cur.items():
            if pid in (me, 2) or ppid == 2 or ours(pid, cur, root, cache):
                continue
            old = prev.get(pid)
            used = cpu - old[1] if old and old[2] == start else cpu
            ticks += used
            by_comm[comm] = by_comm.get(comm, 0) + used
        total += ticks
        window.append((t, ticks))
        while window and window[0][0] < t - 1.0:
            window.pop(0)
        span = t - min(w[0] for w in window) + 0.5
        worst = max(worst, sum(w[1] for w in window) / TCK / span * 100)
        prev, t_prev = cur, t
        samples.append((time.time(), cores()))
    wall = max(time.monotonic() - t0, 1e-3)
    with open(out, "w") as f:
        top = sorted(by_comm.items(), key=lambda x: -x[1])[:3]
        per_core = None
        if out.endswith(".foreign.json"):
            per_core = window_cores(samples, out[: -len(".foreign.json")] + ".json")
        json.dump({"mean_pct": round(total / TCK / wall * 100, 1), "max_1s_pct": round(worst, 1),
                   "seconds": round(wall, 1),
                   "top": {c: round(t / TCK / wall * 100, 1) for c, t in top if t},
                   "cores_pct": per_core}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
