#!/usr/bin/env python3
"""Times `palisade checkpoint --pid` and `palisade restore` of a process
holding N MiB of touched anonymous memory beside the copy floors of the
same bytes, measured in the same round; prints a markdown table.

usage: checkpoint_runs.py PALISADE BENCH_MEM COPY_FLOOR WORKDIR SIZES_MIB RUNS
(as root; bench/checkpoint.sh compiles the programs and makes WORKDIR on
tmpfs). This process is a child subreaper: the workload is its child, and
the restored process (whose restoring helper exits) is re-parented to it,
so both are reaped here and their pids freed.
"""
import ctypes
import os
import statistics
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
# CRIU 4.2's figures for the same sizes, quoted from the issue (not
# measured here: Debian's criu 3.17 does not run on this kernel).
CRIU = {
    "dump": {64: (0.08, 0.08), 256: (0.15, 0.19), 1024: (1.7, 2.9)},
    "restore": {64: (0.06, 0.06), 256: (0.15, 0.15), 1024: (0.47, 0.47)},
}


def wait_for(pred, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            sys.exit(f"checkpoint bench: timed out waiting for {what}")
        time.sleep(0.01)


def run_checked(cmd):
    t0 = time.monotonic()
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"checkpoint bench: {' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return took, out.stdout, out.stderr


def floor(copy_floor, path, mib, mode):
    out = subprocess.run([copy_floor, mode, path, str(mib)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def one_round(palisade, bench_mem, copy_floor, work, mib, tag):
    """One checkpoint and restore of an N MiB workload, and both floors."""
    fl = os.path.join(work, "floor.bin")
    write_floor = floor(copy_floor, fl, mib, "write")
    read_floor = floor(copy_floor, fl, mib, "read")
    os.unlink(fl)

    d = os.path.join(work, tag)
    os.makedirs(d)
    pidfile, trigger, log, image = (os.path.join(d, n) for n in ("pid", "trigger", "log", "image"))
    # setsid(1) execs in place: the workload is its own session leader,
    # holding only stdin/out/err (close_fds), as a checkpoint needs.
    child = subprocess.Popen(
        ["setsid", bench_mem, pidfile, trigger, log, str(mib)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: os.path.exists(pidfile), "the workload's pid file")
    pid = int(open(pidfile).read())
    restored = False
    try:
        # The checkpoint waits for the original's pid to be freed: reap it
        # meanwhile.
        reaper = threading.Thread(target=child.wait)
        reaper.start()
        dump, report, _ = run_checked([palisade, "checkpoint", "--pid", str(pid), "--dir", image])
        reaper.join()
        restore, out, restore_report = run_checked([palisade, "restore", "--dir", image])
        if int(out.split()[0]) != pid:
            sys.exit(f"checkpoint bench: restored as pid {out.split()[0]}, expected {pid}")
        restored = True
        with open(trigger + ".tmp", "w") as f:
            f.write("exit")
        os.rename(trigger + ".tmp", trigger)
        _, status = os.waitpid(pid, 0)
        restored = False
        text = open(log).read()
        if status != 0 or f"PASS {pid}" not in text:
            sys.exit(f"checkpoint bench: the restored workload failed its check: {text!r}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if restored:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        subprocess.run(["rm", "-rf", d], check=True)
    return {"dump": dump, "restore": restore, "write_floor": write_floor,
            "read_floor": read_floor, "report": report.strip() + "\n#   " + restore_report.strip()}


def main():
    palisade, bench_mem, copy_floor, work = sys.argv[1:5]
    sizes = [int(s) for s in sys.argv[5].split(",")]
    runs = int(sys.argv[6])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("checkpoint bench: PR_SET_CHILD_SUBREAPER failed")

    # Warm-up: the VM's memory balloon makes the first touches of memory
    # slow; one round of the largest size, not counted.
    one_round(palisade, bench_mem, copy_floor, work, max(sizes), "warm-up")

    results = {}
    for mib in sizes:
        results[mib] = [one_round(palisade, bench_mem, copy_floor, work, mib, f"{mib}-{i}") for i in range(runs)]
        print(f"# {mib} MiB, last run: {results[mib][-1]['report']}", file=sys.stderr)

    print(f"| MiB | op | palisade s (median of {runs}; min–max) | palisade MB/s | floor MB/s | % of floor | CRIU 4.2 s (quoted) | x faster than CRIU |")
    print("|---|---|---|---|---|---|---|---|")
    for mib in sizes:
        mb = mib * (1 << 20) / 1e6
        for op, fl in (("dump", "write_floor"), ("restore", "read_floor")):
            ours = [r[op] for r in results[mib]]
            floors = [r[fl] for r in results[mib]]
            med, fmed = statistics.median(ours), statistics.median(floors)
            # Each run's ratio to the floor of the same round, then the median.
            pct = statistics.median(f / o * 100 for f, o in zip(floors, ours))
            lo, hi = CRIU[op].get(mib, (None, None))
            if lo is None:
                criu, faster = "–", "–"
            else:
                criu = f"{lo}" if lo == hi else f"{lo}–{hi}"
                faster = f"{lo / med:.1f}" if lo == hi else f"{lo / med:.1f}–{hi / med:.1f}"
            print(f"| {mib} | {op} | {med:.3f} ({min(ours):.3f}–{max(ours):.3f}) | {mb / med:.0f} | "
                  f"{mb / fmed:.0f} | {pct:.0f} | {criu} | {faster} |")


if __name__ == "__main__":
    main()
