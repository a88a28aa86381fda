#!/usr/bin/env python3
"""Plots bench/scale.sh's CSV: command times and memory against the
number of running containers.

  scale_plot.py CSV SVG [RUNC_CSV]

With RUNC_CSV (the peer: runc containers), its memory is drawn beside.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TIMES = [
    ("start_ms", "run -d (one more)"),
    ("rm_ms", "rm -f (one)"),
    ("ps_ms", "ps (all)"),
    ("stats_one_ms", "stats NAME"),
    ("stats_all_ms", "stats (all)"),
    ("show_ms", "policy show NAME"),
    ("apply_ms", "policy apply NAME"),
    ("events_ms", "events --since 1h"),
    ("scrape_ms", "/metrics scrape (all)"),
]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    n = [int(r["containers"]) for r in rows]
    col = lambda key: [float(r[key]) for r in rows]
    fig, (times, memory, connect) = plt.subplots(1, 3, figsize=(16, 5))
    for key, label in TIMES:
        times.plot(n, col(key), marker="o", label=label)
    times.set_xlabel("running containers")
    times.set_ylabel("ms")
    times.set_yscale("log")
    times.set_title("command time")
    times.legend(fontsize="small")
    memory.plot(n, col("used_mb"), marker="o", label="used, palisade")
    memory.plot(n, col("shmem_mb"), marker="o", label="Shmem")
    if len(sys.argv) == 4:
        peer = list(csv.DictReader(open(sys.argv[3])))
        memory.plot(
            [int(r["containers"]) for r in peer],
            [float(r["used_mb"]) for r in peer],
            marker="o",
            label="used, runc (peer)",
        )
    memory.set_xlabel("running containers")
    memory.set_ylabel("MB")
    memory.set_title("host memory")
    memory.legend()
    connect.plot(n, col("connect_us"), marker="o", label="in a container, 100 rules")
    connect.plot(n, col("connect_host_us"), marker="o", label="on the host (peer)")
    connect.set_xlabel("running containers")
    connect.set_ylabel("µs per connect()+close")
    connect.set_ylim(bottom=0)
    connect.set_title("connect latency")
    connect.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
