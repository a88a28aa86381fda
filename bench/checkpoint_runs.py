#!/usr/bin/env python3
"""Times `palisade checkpoint --pid` and `palisade restore` of a process
holding N MiB of touched anonymous memory beside CRIU's `dump` and
`restore` of the same workload and the copy floors of the same bytes, all
measured in the same round; prints a markdown table.

usage: checkpoint_runs.py PALISADE CRIU BENCH_MEM COPY_FLOOR WORKDIR SIZES_MIB RUNS
(as root; bench/checkpoint.sh compiles the programs and makes WORKDIR on
tmpfs). This process is a child subreaper: the workload is its child, and
the restored process (whose restoring helper or CRIU exits) is re-parented
to it, so both are reaped here and their pids freed.
"""
import ctypes
import os
import statistics
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


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


def start_workload(bench_mem, d, mib):
    """Starts bench_mem in directory d; returns (child, pid, trigger, log)."""
    os.makedirs(d)
    pidfile, trigger, log = (os.path.join(d, n) for n in ("pid", "trigger", "log"))
    # setsid(1) execs in place: the workload is its own session leader,
    # holding only stdin/out/err (close_fds), as a checkpoint needs.
    child = subprocess.Popen(
        ["setsid", bench_mem, pidfile, trigger, log, str(mib)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: os.path.exists(pidfile), "the workload's pid file")
    return child, int(open(pidfile).read()), trigger, log


def dump_and_restore(tool, bench_mem, d, mib):
    """Checkpoints and restores one fresh N MiB workload with `tool`
    (("palisade", PATH) or ("criu", PATH)); the restored process must pass
    its check of every word. Returns (dump s, restore s, report)."""
    kind, binary = tool
    child, pid, trigger, log = start_workload(bench_mem, d, mib)
    image = os.path.join(d, "image")
    restored = False
    try:
        # The checkpoint waits for (palisade) or needs (CRIU's restore)
        # the original's pid freed: reap it meanwhile.
        reaper = threading.Thread(target=child.wait)
        reaper.start()
        if kind == "palisade":
            dump_cmd = [binary, "checkpoint", "--pid", str(pid), "--dir", image]
            restore_cmd = [binary, "restore", "--dir", image]
        else:
            os.makedirs(image)
            dump_cmd = [binary, "dump", "-t", str(pid), "-D", image, "--shell-job",
                        "-o", "dump.log"]
            restore_cmd = [binary, "restore", "-D", image, "--shell-job", "-d",
                           "-o", "restore.log"]
        dump, report, _ = run_checked(dump_cmd)
        reaper.join()
        restore, out, restore_report = run_checked(restore_cmd)
        if kind == "palisade" and int(out.split()[0]) != pid:
            sys.exit(f"checkpoint bench: restored as pid {out.split()[0]}, expected {pid}")
        restored = True
        with open(trigger + ".tmp", "w") as f:
            f.write("exit")
        os.rename(trigger + ".tmp", trigger)
        _, status = os.waitpid(pid, 0)
        restored = False
        text = open(log).read()
        if status != 0 or f"PASS {pid}" not in text:
            sys.exit(f"checkpoint bench: {kind}: the restored workload failed its check: {text!r}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if restored:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        subprocess.run(["rm", "-rf", d], check=True)
    return dump, restore, (report.strip() + "\n#   " + restore_report.strip())


def one_round(palisade, criu, bench_mem, copy_floor, work, mib, tag):
    """One checkpoint and restore of an N MiB workload by each tool (in
    alternating order from round to round), and both floors."""
    fl = os.path.join(work, "floor.bin")
    write_floor = floor(copy_floor, fl, mib, "write")
    read_floor = floor(copy_floor, fl, mib, "read")
    os.unlink(fl)
    r = {"write_floor": write_floor, "read_floor": read_floor}
    tools = [("palisade", palisade), ("criu", criu)]
    if tag[-1].isdigit() and int(tag.rsplit("-", 1)[-1]) % 2:
        tools.reverse()
    for kind, binary in tools:
        dump, restore, report = dump_and_restore((kind, binary), bench_mem,
                                                 os.path.join(work, f"{tag}-{kind}"), mib)
        r[kind] = {"dump": dump, "restore": restore}
        if kind == "palisade":
            r["report"] = report
    return r


def main():
    palisade, criu, bench_mem, copy_floor, work = sys.argv[1:6]
    sizes = [int(s) for s in sys.argv[6].split(",")]
    runs = int(sys.argv[7])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("checkpoint bench: PR_SET_CHILD_SUBREAPER failed")

    # Warm-up: the VM's memory balloon makes the first touches of memory
    # slow; one round of the largest size, not counted.
    one_round(palisade, criu, bench_mem, copy_floor, work, max(sizes), "warm-up")

    results = {}
    for mib in sizes:
        results[mib] = [one_round(palisade, criu, bench_mem, copy_floor, work, mib, f"{mib}-{i}")
                        for i in range(runs)]
        print(f"# {mib} MiB, last run: {results[mib][-1]['report']}", file=sys.stderr)

    print(f"| MiB | op | palisade s (median of {runs}; min–max) | CRIU 4.2 s (median; min–max) "
          "| x faster than CRIU (median of rounds) | palisade MB/s | floor MB/s | % of floor |")
    print("|---|---|---|---|---|---|---|---|")
    for mib in sizes:
        mb = mib * (1 << 20) / 1e6
        for op, fl in (("dump", "write_floor"), ("restore", "read_floor")):
            rounds = results[mib]
            ours = [r["palisade"][op] for r in rounds]
            theirs = [r["criu"][op] for r in rounds]
            floors = [r[fl] for r in rounds]
            med, cmed, fmed = (statistics.median(x) for x in (ours, theirs, floors))
            # Each round's ratio (same round, same machine state), then the median.
            faster = statistics.median(c / o for c, o in zip(theirs, ours))
            pct = statistics.median(f / o * 100 for f, o in zip(floors, ours))
            print(f"| {mib} | {op} | {med:.3f} ({min(ours):.3f}–{max(ours):.3f}) | "
                  f"{cmed:.3f} ({min(theirs):.3f}–{max(theirs):.3f}) | {faster:.2f} | "
                  f"{mb / med:.0f} | {mb / fmed:.0f} | {pct:.0f} |")


if __name__ == "__main__":
    main()
