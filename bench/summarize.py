#!/usr/bin/env python3
"""Summarizes bench/compare.sh results (JSON lines) as Markdown: each target's figure for both
systems (median over rounds, every round listed), the ratio, and whether the target is met."""
import json
import statistics
import sys
from collections import defaultdict


def read_runs(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                v = json.loads(line)
                runs[(v["load"], v["system"])].append(v)
    return runs


def get(v, path):
    for k in path.split("."):
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v


def med(runs, load, system, path):
    vals = [get(v, path) for v in runs.get((load, system), [])]
    vals = [x for x in vals if isinstance(x, (int, float))]
    return (statistics.median(vals) if vals else None), vals


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"
    return f"{int(x):,}"


def main():
    runs = read_runs(sys.argv[1])
    rows = []

    def target(name, load, ours, theirs, path, want, bound):
        a, av = med(runs, load, ours, path)
        b, bv = med(runs, load, theirs, path)
        ratio = (a / b) if a is not None and b not in (None, 0) else None
        met = None
        if ratio is not None:
            met = ratio >= bound if want == ">=" else ratio <= bound
        rows.append((name, ours, fmt(a), " / ".join(fmt(x) for x in av), theirs,
                     fmt(b), " / ".join(fmt(x) for x in bv),
                     "–" if ratio is None else f"{ratio:.2f}×", f"{want} {bound}×",
                     "–" if met is None else ("met" if met else "NOT met")))

    target("jobs/s, closed loop 50×10", "jobs-closed", "jobcast-redis", "reference",
           "completedPerSec", ">=", 5)
    target("jobs/s, closed loop 50×10", "jobs-closed", "jobcast-embedded", "reference",
           "completedPerSec", ">=", 10)
    target("completion p99 (ms), open loop 2,000/s", "jobs-open", "jobcast-redis", "reference",
           "completionMs.p99", "<=", 0.2)
    target("completion p99.9 (ms), open loop 2,000/s", "jobs-open", "jobcast-redis", "reference",
           "completionMs.p999", "<=", 0.2)
    target("completion p99 (ms), open loop 2,000/s", "jobs-open", "jobcast-embedded", "reference",
           "completionMs.p99", "<=", 0.2)
    for shape in ("1000x500", "10000x30"):
        load = f"fanout-{shape}"
        target(f"fan-out {shape}: deliveries/s", load, "jobcast", "bun-native",
               "deliveredPerSec", ">=", 1)
        target(f"fan-out {shape}: delivery p99 (ms)", load, "jobcast", "bun-native",
               "latencyMs.p99", "<=", 0.5)
    idle = [k[0] for k in runs if k[0].startswith("idle-")]
    for load in sorted(set(idle)):
        target(f"{load}: server bytes per connection", load, "jobcast", "bun-native",
               "bytesPerConnection", "<=", 0.8)

    scale_rows = []
    for (load, system), vs in sorted(runs.items()):
        if not load.startswith("scale-"):
            continue
        for v in vs:
            est, n = v.get("established"), v.get("connections")
            rss = get(v, "serverRssKiB.connected")
            ok = (isinstance(est, int) and est >= 250_000 and est == n
                  and not v.get("dropped") and not v.get("failed"))
            scale_rows.append(
                f"| {load}: connections held {fmt(v.get('holdS'))} s over {v.get('servers')} "
                f"gateways on one Redis | {fmt(est)} of {fmt(n)} established, "
                f"{fmt(v.get('dropped'))} dropped, {fmt(v.get('failed'))} failed | "
                f"gateways' total resident memory {fmt(rss / 1024 if rss else None)} MiB "
                f"({fmt(v.get('bytesPerConnection'))} B per connection) | "
                f"≥ 250,000, none dropped | {'met' if ok else 'NOT met'} |")

    print("| target | ours | median | rounds | theirs | median | rounds | ratio | wanted | |")
    print("| --- | --- | ---: | --- | --- | ---: | --- | ---: | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")

    if scale_rows:
        print()
        print("| scale | result | memory | wanted | |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(scale_rows))

    machine = runs.get(("intrinsic", "machine"), [])
    if machine:
        print()
        print("The machine's own latency floor (`jobcast bench intrinsic`, no server: how late a "
              f"thread sleeping {fmt(machine[0].get('tickUs'))} µs woke), before and after the rounds:")
        print()
        print("| when | p99 late (ms) | p99.9 late (ms) | max (ms) | stalls ≥ 1 ms | ≥ 2 ms | ≥ 4 ms | over |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for v in machine:
            when = "before" if v["round"] == 1 else "after"
            stalls = v.get("stallsFrom", {})
            print(f"| {when} | {fmt(get(v, 'lateMs.p99'))} | {fmt(get(v, 'lateMs.p999'))} | "
                  f"{fmt(get(v, 'lateMs.max'))} | {fmt(stalls.get('1ms'))} | {fmt(stalls.get('2ms'))} | "
                  f"{fmt(stalls.get('4ms'))} | {fmt(v.get('durationS'))} s |")

    print()
    print("Losses and errors (every run):")
    print()
    print("| load | system | round | lost | errors | dropped/failed |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for (load, system), vs in sorted(runs.items()):
        if load == "intrinsic":
            continue
        for v in vs:
            errors = v.get("errors") or v.get("publishFailed") or v.get("error") or ""
            dropped = v.get("droppedConnections", v.get("dropped", ""))
            if "failed" in v:
                dropped = f"{v.get('dropped')}/{v.get('failed')}"
            print(f"| {load} | {system} | {v['round']} | {v.get('lost', '–')} | "
                  f"{json.dumps(errors) if errors else 'none'} | {dropped if dropped != '' else '–'} |")


if __name__ == "__main__":
    main()
