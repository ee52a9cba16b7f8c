#!/usr/bin/env python3
"""Summarizes tools/bench/router_vs_direct.sh: builds one sweep JSON per path (the format
`gka bench plot` overlays), decides which rates each path sustained, and prints the markdown
table at the direct path's highest sustainable rate, with the router's own handler time at
that rate from the difference of two /metrics scrapes around its run.

  python3 tools/bench/router_vs_direct.py OUT_DIR RATES(1,2,3) DURATION_S [NAME]

Sustainable: every request succeeded, achieved throughput >= 95 % of the offered rate, and TTFT
p99 did not grow over the run (count-weighted mean of the per-second bins' p99 in the last
third <= 1.5 x the first third's + 50 ms). "Offered" is what was sent per second of the
schedule (sent / DURATION_S): a Poisson schedule of R req/s for 30 s sends R*30 +- sqrt(R*30)
requests, and both paths draw the same schedule from the same seed."""
import json
import re
import sys

OUT, RATES, DURATION = sys.argv[1], [float(r) for r in sys.argv[2].split(",")], float(sys.argv[3])
NAME = sys.argv[4] if len(sys.argv) > 4 else "router_vs_direct"
PATHS = ("router", "direct")


def name(rate):
    return f"{rate:g}"


def load(path, rate):
    with open(f"{OUT}/{NAME}_{path}_r{name(rate)}.json") as f:
        return json.load(f)


def third_p99(report, which):
    bins = [b for b in report["timeline"] if b["ttft_ms"]["count"] > 0]
    if len(bins) < 3:
        return None
    n = len(bins) // 3
    part = bins[:n] if which == "first" else bins[-n:]
    weight = sum(b["ttft_ms"]["count"] for b in part)
    return sum(b["ttft_ms"]["p99"] * b["ttft_ms"]["count"] for b in part) / weight


def verdict(report, rate):
    o = report["overall"]
    why = []
    if o["requests"]["failed"] > 0:
        why.append(f"{o['requests']['failed']} failed")
    offered = o["requests"]["sent"] / DURATION
    if o["request_throughput"] < 0.95 * offered:
        why.append(f"throughput {o['request_throughput']:.2f} < 95 % of {offered:.2f} sent/s")
    first, last = third_p99(report, "first"), third_p99(report, "last")
    if first is not None and last > 1.5 * first + 50:
        why.append(f"TTFT p99 grew {first:.0f} -> {last:.0f} ms")
    return (not why), "; ".join(why) or "yes", first, last


def histogram(path):
    """gka_router_overhead_seconds buckets summed over tiers: {le: count}, and _sum, _count."""
    buckets, total, count = {}, 0.0, 0.0
    for line in open(path):
        m = re.match(r'gka_router_overhead_seconds_(bucket|sum|count)\{?(.*?)\}? ([0-9.e+-]+|\+Inf)$',
                     line.strip())
        if not m:
            continue
        kind, labels, value = m.group(1), m.group(2), float(m.group(3))
        if kind == "bucket":
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets[le] = buckets.get(le, 0.0) + value
        elif kind == "sum":
            total += value
        else:
            count += value
    return buckets, total, count


def quantile(buckets, q):
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    bounds = sorted(((float("inf") if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    total = bounds[-1][1] if bounds else 0
    if total <= 0:
        return float("nan")
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in bounds:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return prev_le


sweeps, ok = {}, {}
for path in PATHS:
    points = []
    for rate in RATES:
        run = load(path, rate)
        points.append({"request_rate": rate, "report": run["report"]})
        ok[(path, rate)] = verdict(run["report"], rate)
    sweeps[path] = {"kind": "gka bench serve sweep", "label": path, "slo": {},
                    "points": points}
    with open(f"{OUT}/{NAME}_{path}_sweep.json", "w") as f:
        json.dump(sweeps[path], f, indent=1)

print("| offered req/s | path | sustainable? | ok / sent | req/s | TTFT p50 / p99 ms | "
      "TTFT p99 first / last third ms | ITL p50 / p99 ms | E2E p50 ms |")
print("|---|---|---|---|---|---|---|---|---|")
for rate in RATES:
    for path in PATHS:
        o = next(p for p in sweeps[path]["points"] if p["request_rate"] == rate)["report"]["overall"]
        good, why, first, last = ok[(path, rate)]
        print(f"| {rate:g} | {path} | {why} | {o['requests']['ok']} / {o['requests']['sent']} | "
              f"{o['request_throughput']:.2f} | {o['ttft_ms']['p50']:.1f} / {o['ttft_ms']['p99']:.1f} | "
              f"{first or 0:.0f} / {last or 0:.0f} | {o['itl_ms']['p50']:.2f} / {o['itl_ms']['p99']:.2f} | "
              f"{o['e2e_ms']['p50']:.1f} |")

sustained = [r for r in RATES if ok[("direct", r)][0]]
if not sustained:
    print("\nThe direct path sustained none of the swept rates.")
    sys.exit(0)
rate = max(sustained)
r = next(p for p in sweeps["router"]["points"] if p["request_rate"] == rate)["report"]["overall"]
d = next(p for p in sweeps["direct"]["points"] if p["request_rate"] == rate)["report"]["overall"]
print(f"\nAt {rate:g} req/s (the direct path's highest sustainable rate; the router "
      f"{'sustained it too' if ok[('router', rate)][0] else 'did NOT sustain it: ' + ok[('router', rate)][1]}):\n")
print("| metric | router | direct | router - direct |")
print("|---|---|---|---|")
for label, key, q in (("TTFT p50 ms", "ttft_ms", "p50"), ("TTFT p99 ms", "ttft_ms", "p99"),
                      ("ITL p50 ms", "itl_ms", "p50"), ("ITL p99 ms", "itl_ms", "p99"),
                      ("E2E p50 ms", "e2e_ms", "p50")):
    a, b = r[key][q], d[key][q]
    print(f"| {label} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
print(f"| throughput req/s | {r['request_throughput']:.2f} | {d['request_throughput']:.2f} | "
      f"{r['request_throughput'] - d['request_throughput']:+.2f} |")
b0, s0, c0 = histogram(f"{OUT}/{NAME}_router_r{name(rate)}_metrics_0.txt")
b1, s1, c1 = histogram(f"{OUT}/{NAME}_router_r{name(rate)}_metrics_1.txt")
delta = {le: b1[le] - b0.get(le, 0.0) for le in b1}
n = c1 - c0
if n > 0:
    print(f"\nThe router's own handler time before the first token at {rate:g} req/s "
          f"(gka_router_overhead_seconds, scraped before and after the run: {n:.0f} requests): "
          f"mean {1000 * (s1 - s0) / n:.2f} ms, p50 {1000 * quantile(delta, 0.5):.2f} ms, "
          f"p99 {1000 * quantile(delta, 0.99):.2f} ms (bucket-interpolated)."
          "\n\n| le (s) | requests |\n|---|---|")
    for le in sorted(delta, key=lambda x: float("inf") if x == "+Inf" else float(x)):
        print(f"| {le} | {delta[le]:.0f} |")
