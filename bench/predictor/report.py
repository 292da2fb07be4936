"""Prints the benchmark table and ratios from the load generator's JSON lines.

Usage: report.py RESULTS.jsonl
"""

import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    ceiling = next((r for r in rows if r.get("label") == "ceiling"), None)
    runs = [r for r in rows if r.get("label") in ("hone", "hone-onnx", "kserve", "fastapi")]
    by = {(r["label"], r["concurrency"]): r for r in runs}
    levels = sorted({r["concurrency"] for r in runs})
    print(f"{'server':8} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for label in ("hone", "hone-onnx", "kserve", "fastapi"):
        for c in levels:
            r = by.get((label, c))
            if r:
                print(f"{label:8} {c:4d} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:6d}")
    print()
    print(f"{'conc':>4} {'hone/kserve rps':>16} {'hone/fastapi rps':>17} {'p99 hone/kserve':>16} {'p99 hone/fastapi':>17}")
    for c in levels:
        h, k, f = by.get(("hone", c)), by.get(("kserve", c)), by.get(("fastapi", c))
        ratio = lambda a, b, key: f"{a[key] / b[key]:.2f}x" if a and b and b[key] else "-"
        print(f"{c:4d} {ratio(h, k, 'rps'):>16} {ratio(h, f, 'rps'):>17} {ratio(h, k, 'p99_ms'):>16} {ratio(h, f, 'p99_ms'):>17}")
    if any(label == "hone-onnx" for label, _ in by):
        print()
        print(f"{'conc':>4} {'onnx/torch rps':>15} {'p99 onnx/torch':>15}   (the same weights, ONNX Runtime vs libtorch)")
        for c in levels:
            h, o = by.get(("hone", c)), by.get(("hone-onnx", c))
            if h and o:
                print(f"{c:4d} {o['rps'] / h['rps']:14.2f}x {o['p99_ms'] / h['p99_ms']:14.2f}x")
    if ceiling:
        print()
        print(f"ceiling: {ceiling['samples_per_second_batched']:.1f} samples/s in-process at batch {ceiling['batch']}"
              f" ({ceiling['samples_per_second_batch_1']:.1f} at batch 1)")
        for c in levels:
            h = by.get(("hone", c))
            if h:
                print(f"  hone at concurrency {c}: {100 * h['rps'] / ceiling['samples_per_second_batched']:.0f}% of the ceiling")
    router = [r for r in rows if r.get("label", "").startswith("router")]
    direct = {r["concurrency"]: r for r in rows if r.get("label") == "direct"}
    for r in router:
        if r["label"] == "router-hop" and r["concurrency"] in direct:
            d = direct[r["concurrency"]]
            print(f"router hop at concurrency {r['concurrency']}: p50 +{r['p50_ms'] - d['p50_ms']:.2f} ms, "
                  f"p99 +{r['p99_ms'] - d['p99_ms']:.2f} ms ({r['rps']:.0f} vs {d['rps']:.0f} req/s direct)")
        if r["label"] == "router-split":
            total = sum(r["variants"].values())
            share = 100 * r["variants"].get("b", 0) / max(total, 1)
            print(f"router split 90/10 over {total} requests: b got {share:.2f}% (off by {abs(share - 10):.2f} points), "
                  f"errors {r['errors']}")


if __name__ == "__main__":
    main()
