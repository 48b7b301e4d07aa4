#!/usr/bin/env python3
"""Print criterion medians for a group from target/criterion, optionally as ratios.

    python3 scripts/bench-medians.py queue [--vs tokio_mpsc]

Reads <target>/criterion/<group>/**/new/estimates.json (the last run of each id)."""
import json, pathlib, sys

group = sys.argv[1]
vs = sys.argv[sys.argv.index("--vs") + 1] if "--vs" in sys.argv else None
root = pathlib.Path("target/criterion") / group
rows = {}
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    rows[bench["function_id"] if bench.get("value_str") is None else f'{bench["function_id"]}/{bench["value_str"]}'] = \
        json.loads(est.read_text())["median"]["point_estimate"]

def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return f"{ns / div:.3f} {unit}"
    return f"{ns:.2f} ns"

for name, ns in rows.items():
    line = f"{group}/{name}: median {fmt(ns)}"
    if vs and not name.startswith(vs):
        base = rows.get(vs + name[name.index("/"):] if "/" in name else vs)
        if base:
            line += f"  ({base / ns:.2f}x the throughput of {vs}, time ratio {ns / base:.2f})"
    print(line)
