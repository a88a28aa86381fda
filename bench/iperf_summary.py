#!/usr/bin/env python3
"""Summarises an iperf3 server's JSON report against a target rate.

usage: iperf_summary.py REPORT.json TARGET_MBIT [WARM_UP_SECONDS]
Prints: average % of target, lowest and highest full second %, and the
average in Mbit/s, over the seconds after the warm-up (the server's
per-interval byte counts: what actually arrived).
"""
import json
import sys

report = json.load(open(sys.argv[1]))
target = float(sys.argv[2]) * 1e6
warm_up = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
seconds = [
    i["sum"]
    for i in report["intervals"]
    if i["sum"]["start"] >= warm_up and i["sum"]["seconds"] > 0.9
]
if not seconds:
    print("no-data - - -")
    sys.exit(0)
bits = sum(s["bytes"] * 8 for s in seconds)
time = sum(s["seconds"] for s in seconds)
each = [s["bytes"] * 8 / s["seconds"] / target * 100 for s in seconds]
print(f"{bits / time / target * 100:.1f} {min(each):.1f} {max(each):.1f} {bits / time / 1e6:.2f}")
