#!/usr/bin/env python3
"""Compares two capacity searches (results/capacity.json of examples/k6/capacity.js), e.g.
before and after a change, so the change's effect on capacity is a number.

    python3 scripts/capacity-diff.py before/capacity.json after/capacity.json

Prints the sustained rates, their ratio and how many levels apart they are (a search that
held up to MAX_RATE gives only a lower bound: the ratio says >= or <=), whether capacity
moved by more than one level (the same build varies within one), whether the first bound
to break moved, and the headroom of every bound at each run's sustained rate. Exit 0; 2 on
unreadable input."""
import json
import math
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"capacity-diff: cannot read {path}: {e}", file=sys.stderr)
        sys.exit(2)


def bound(c):
    f = c.get("first_broken")
    if not f:
        return "none (MAX_RATE reached)" if c.get("verdict") == "max_reached" else "none"
    if f.get("side") == "client":
        return f"client {f.get('metric')}"
    return f"{f.get('title')} ({f.get('source') or 'no source'})"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = load(sys.argv[1]), load(sys.argv[2])
    ra, rb = a.get("sustained_rate"), b.get("sustained_rate")
    sa, sb = a.get("settings", {}), b.get("settings", {})
    print(f"sustained: {ra} -> {rb} events/s", end="")
    if ra and rb:
        # A search that held up to MAX_RATE only bounds its rate from below.
        low_a, low_b = a.get("verdict") == "max_reached", b.get("verdict") == "max_reached"
        op = "" if low_a == low_b else (">=" if low_b else "<=")
        extra = ""
        if sa == sb and sa.get("step", 0) > 1 and not (low_a and low_b):
            levels = round(math.log(rb / ra) / math.log(sa["step"]))
            extra = f", {levels:+d} level{'s' if abs(levels) != 1 else ''}{' or more' if op else ''}"
        print(f" ({op}{rb / ra:.2f}x{extra})")
        if low_a and low_b:
            print("note: both searches held up to MAX_RATE: raise it to compare")
        elif sa == sb and sa.get("step", 0) > 1:
            moved = abs(levels) > 1 or (op == ">=" and levels >= 1) or (op == "<=" and levels <= -1)
            print(
                "capacity moved: more than one level"
                if moved
                else "capacity moved: no (within one level, what the same build varies by)"
            )
    else:
        print()
    if sa != sb:
        print(f"note: the searches used different settings: {sa} vs {sb}")
    print(f"first broken: {bound(a)}")
    print(f"          ->  {bound(b)}")
    ha = {(h["section"], h["name"]): h["peak_use"] for h in a.get("headroom_at_sustained", [])}
    hb = {(h["section"], h["name"]): h["peak_use"] for h in b.get("headroom_at_sustained", [])}
    for key in sorted(set(ha) | set(hb)):
        x, y = ha.get(key), hb.get(key)
        fmt = lambda v: "-" if v is None else f"{v * 100:.0f}%"
        print(f"  {key[0]} {key[1]}: peak use {fmt(x)} at {ra} -> {fmt(y)} at {rb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
