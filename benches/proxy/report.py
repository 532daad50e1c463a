"""The tables of benches/proxy/run.sh, from the lines it collected.

    report.py RESULTS CLK_TCK

Lines (space-separated):
    wrk NAME ROUND REQ/S REQUESTS CPU_TICKS P50 P99 APP_CONNS_OPENED
    oha NAME P50_MS P99_MS P999_MS            (or "- - -")
    rss NAME PEAK_KIB
    allocs NAME ALLOCATIONS REQUESTS
    idle NAME RSS_BEFORE_KIB RSS_AFTER_KIB ANSWERED APP_CONNS_HELD
    scale NAME CONNECTIONS REQ/S P99
"""

import collections
import statistics
import sys


def ms(v):
    """wrk's latency ("870.00us", "1.20ms", "1.01s") in milliseconds."""
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def load(path):
    by_kind = collections.defaultdict(list)
    for line in open(path):
        fields = line.split()
        if fields:
            by_kind[fields[0]].append(fields[1:])
    return by_kind


def overhead(rows, hz):
    wrk = collections.defaultdict(list)
    for r in rows["wrk"]:
        wrk[r[0]].append(r[2:])
    oha = {r[0]: r[1:] for r in rows["oha"]}
    rss = {r[0]: int(r[1]) for r in rows["rss"]}
    rps = {n: statistics.mean(float(x[0]) for x in runs) for n, runs in wrk.items()}
    cpu = {
        n: statistics.mean(int(x[2]) / hz * 1e6 / max(int(x[1]), 1) for x in runs)
        for n, runs in wrk.items()
    }
    direct, nginx = rps.get("direct"), rps.get("nginx")
    print(
        f"\n{'target':<18} {'req/s':>9} {'× direct':>9} {'× nginx':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU µs/req':>11} {'× nginx':>8} {'peak RSS':>10} {'fixed rate p50/p99/p99.9 ms':>28}"
        f" {'app conns opened':>17}"
    )
    for n, runs in wrk.items():
        p50 = statistics.median(ms(x[3]) for x in runs)
        p99 = statistics.median(ms(x[4]) for x in runs)
        proxy = n != "direct"
        cpu_s = f"{cpu[n]:.1f}" if proxy else "-"
        cpu_x = f"{cpu[n] / cpu['nginx']:.2f}" if proxy and "nginx" in cpu else "-"
        o = oha.get(n)
        o_s = "-" if not o or o[0] == "-" else " / ".join(f"{float(v):.2f}" for v in o)
        opened = max(int(x[5]) for x in runs)
        print(
            f"{n:<18} {rps[n]:>9.0f} {rps[n] / direct if direct else 0:>9.2f}"
            f" {rps[n] / nginx if nginx else 0:>8.2f} {p50:>7.2f} {p99:>7.2f} {cpu_s:>11} {cpu_x:>8}"
            f" {mib(rss.get(n, 0)) if proxy else '-':>10} {o_s:>28} {opened:>17}"
        )


def allocations(rows):
    if not rows["allocs"]:
        return
    print(f"\n{'allocations per request (libc uprobes)':<40} {'allocs/req':>10}")
    for name, allocs, reqs in rows["allocs"]:
        print(f"{name.replace('_', ' '):<40} {int(allocs) / max(int(reqs), 1):>10.1f}")


def idle(rows):
    if not rows["idle"]:
        return
    print(
        f"\n{'idle keep-alive conns':<18} {'RSS before':>11} {'RSS after':>11}"
        f" {'KiB/conn':>9} {'answered':>9} {'app conns held':>15}"
    )
    for name, before, after, ok, held in rows["idle"]:
        per = (int(after) - int(before)) / max(int(ok), 1)
        print(
            f"{name:<18} {mib(int(before)):>11} {mib(int(after)):>11} {per:>9.1f}"
            f" {ok:>9} {held:>15}"
        )


def scaling(rows):
    if not rows["scale"]:
        return
    table = {(r[0], int(r[1])): (float(r[2] or 0), ms(r[3] or "0")) for r in rows["scale"]}
    names = list(dict.fromkeys(r[0] for r in rows["scale"]))
    conns = sorted({c for _, c in table})
    print("\nscaling: req/s (× nginx) and p99 ms at each number of connections")
    print(f"{'target':<18}" + "".join(f" {f'{c} conns':>28}" for c in conns))
    for n in names:
        cells = []
        for c in conns:
            r, p99 = table.get((n, c), (0.0, 0.0))
            base = table.get(("nginx", c), (0.0, 0.0))[0]
            ratio = f"{r / base:.2f}" if base else "-"
            cells.append(f" {f'{r:.0f} ({ratio}) {p99:.2f}':>28}")
        print(f"{n:<18}" + "".join(cells))


def main():
    rows = load(sys.argv[1])
    overhead(rows, float(sys.argv[2]))
    allocations(rows)
    idle(rows)
    scaling(rows)


if __name__ == "__main__":
    main()
