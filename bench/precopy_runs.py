#!/usr/bin/env python3
"""Measures palisade's incremental checkpoint (pre-dump chains) for each
dirty-tracking backend; prints a markdown table per measurement, with its
goal. bench/precopy.sh says what is measured and how.

usage: precopy_runs.py PALISADE CRIU BENCH_DIRTY WORKDIR SIZES_MIB RUNS
(as root; bench/precopy.sh compiles the workload, makes WORKDIR on tmpfs
and sets PALISADE_ROOT and PALISADE_IMAGE_KEY inside it). This process is
a child subreaper: every workload is its child, and a restored one (whose
restoring helper or CRIU exits) is re-parented to it, so each is reaped
here. Every pid started is also listed in WORKDIR/pids, for the shell
script's trap.
"""
import ctypes
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
BACKENDS = ("ebpf", "pagemap-scan", "full")
FRACTIONS = (0.001, 0.01, 0.1)
PAGES_PER_MIB = 256
# Slowdown: windows of WINDOW_S seconds each way, at 1 GiB.
WINDOWS = int(os.environ.get("WINDOWS", "3"))
WINDOW_S = float(os.environ.get("WINDOW_S", "2"))
SLOW_MIB = 1024
FINAL_MIB = 1024

PRE_DUMP = re.compile(
    r"generation (\d+), backend (\S+): (\d+) pages written since the parent"
    r"(?: \(in [\d.]+ ms: \d+ pages/s\))?, (\d+) copied "
    r"\(([\d.]+) MiB\)(?:, \d+ hot \(written in the last two intervals\) left for a later step)?;"
    r" stopped ([\d.]+) ms, detect ([\d.]+) ms, copy ([\d.]+) ms, "
    r"write ([\d.]+) ms; tracking goes on(.*)$")
FINAL = re.compile(
    r"into \S+: ([\d.]+) MiB \((\d+) pages in (\d+) vmas(.*)\); freeze ([\d.]+) ms, "
    r"dump ([\d.]+) ms, write ([\d.]+) ms; original killed$")


def fail(msg):
    sys.exit(f"precopy bench: {msg}")


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_for(pred, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.002)


class Failed(Exception):
    """A command failed: the bench reports it (a failed pre-dump step in
    the iteration table) and exits non-zero."""


def run(cmd):
    """Runs cmd; returns (wall s, stdout); raises Failed, with the command
    and everything it said, if it fails."""
    t0 = time.monotonic()
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.monotonic() - t0
    reap_strays()
    if out.returncode != 0:
        raise Failed(f"`{' '.join(cmd)}` failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return took, out.stdout.strip()


# Pids started here (workloads, and a restored one under the same pid)
# and not yet reaped.
LIVE = set()


def reap_strays():
    """Reaps our zombie children that are not workloads: the tracking
    holders palisade forks, re-parented here when their command exits."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in LIVE:
            continue
        try:
            fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                pass


def mem_available_mib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


class Bench:
    def __init__(self, palisade, criu, binary, work):
        self.palisade, self.criu, self.binary, self.work = palisade, criu, binary, work
        self.serial = 0

    def fresh_dir(self, tag):
        self.serial += 1
        d = os.path.join(self.work, f"{self.serial:03d}-{tag}")
        os.makedirs(d)
        return d

    def cleanup(self):
        for pid in sorted(LIVE):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap(pid)
        LIVE.clear()
        reap_strays()


def reap(pid, timeout=10.0):
    """Waits for pid, our child or, if palisade left it elsewhere, any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}"):
                return
        time.sleep(0.005)
    fail(f"pid {pid} did not end within {timeout:.0f} s")


class Workload:
    """One bench_dirty process, our child, in a directory of its own."""

    def __init__(self, bench, mib, pace=False):
        self.bench, self.mib, self.pages = bench, mib, mib * PAGES_PER_MIB
        self.dir = bench.fresh_dir(f"{mib}-{'pace' if pace else 'dirty'}")
        self.pidfile, self.trigger, self.log, self.answer = (
            os.path.join(self.dir, n) for n in ("pid", "trigger", "log", "answer"))
        # setsid(1) execs in place: the workload is its own session
        # leader, holding only stdin/out/err (close_fds) and its log.
        self.child = subprocess.Popen(
            ["setsid", bench.binary, self.pidfile, self.trigger, self.log, self.answer, str(mib)]
            + (["pace"] if pace else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.child.pid
        LIVE.add(self.pid)
        with open(os.path.join(bench.work, "pids"), "a") as f:
            f.write(f"{self.pid}\n")
        wait_for(lambda: os.path.exists(self.pidfile) or self.child.poll() is not None,
                 f"the {mib} MiB workload's pid file")
        if self.child.poll() is not None:
            fail(f"the {mib} MiB workload exited at once ({self.child.returncode})")
        if int(open(self.pidfile).read()) != self.pid:
            fail("the workload's pid is not its child's")

    def send(self, cmd):
        with open(self.trigger + ".tmp", "w") as f:
            f.write(cmd)
        os.rename(self.trigger + ".tmp", self.trigger)

    def ask(self, cmd, timeout=120.0):
        self.send(cmd)
        wait_for(lambda: os.path.exists(self.answer), f"the workload's answer to {cmd!r}", timeout)
        text = open(self.answer).read().strip()
        os.unlink(self.answer)
        return text

    def dirty(self, n):
        got = self.ask(f"dirty {n}")
        if not got.startswith(f"dirty {n} "):
            fail(f"workload answered {got!r} to 'dirty {n}'")

    def count(self):
        _, units, mono, cpu, _ = self.ask("count").split()
        return int(units), int(mono) / 1e9, int(cpu) / 1e9

    def checkpoint(self, args):
        """A checkpoint that ends the original: reaps it meanwhile (the
        command waits for its pid to be freed)."""
        reaper = threading.Thread(target=self.child.wait)
        reaper.start()
        try:
            return run(args)
        finally:
            reaper.join()

    def verify_restored(self, what):
        """The restored process (same pid, re-parented here) checks every
        word against its writes, then exits."""
        got = self.ask("check")
        if not got.startswith(f"PASS {self.pid} "):
            fail(f"{what}: the restored workload failed its check: {got!r}")
        self.send("exit")
        reap(self.pid)
        LIVE.discard(self.pid)

    def end(self):
        if self.pid in LIVE:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.child.returncode is None:
                self.child.wait()
            else:
                reap(self.pid)  # the restored process
            LIVE.discard(self.pid)
        shutil.rmtree(self.dir, ignore_errors=True)


def pre_dump(b, w, out_dir, parent=None, track=None):
    cmd = [b.palisade, "checkpoint", "--pid", str(w.pid), "--pre-dump", "--dir", out_dir]
    cmd += ["--parent", parent] if parent else ["--track", track]
    wall, out = run(cmd)
    m = PRE_DUMP.search(out)
    if not m:
        fail(f"cannot parse the pre-dump line: {out!r}")
    g = m.groups()
    if g[9]:
        note(f"# note: {out}")
    return {"wall": wall * 1e3, "backend": g[1], "written": int(g[2]), "copied": int(g[3]),
            "stopped": float(g[5]), "detect": float(g[6]), "copy": float(g[7]),
            "write": float(g[8]), "line": out}


def stop_tracking(b, w):
    run([b.palisade, "checkpoint", "--pid", str(w.pid), "--stop-tracking"])


def med(xs):
    return statistics.median(xs)


def spread(xs, fmt="{:.1f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


# 1. Iteration time.

def iterations(b, backend, mib, runs):
    """A chain's first pre-dump, one warm-up iteration, then RUNS rounds of
    the three fractions: dirty N, pre-dump --parent. Only the last image
    is kept (a pre-dump reads only its parent). Returns the first
    pre-dump, the iterations by fraction, and the error that ended the
    chain early (None if none did)."""
    w = Workload(b, mib)
    chain = b.fresh_dir(f"chain-{backend}-{mib}")
    try:
        parent = os.path.join(chain, "0")
        first = pre_dump(b, w, parent, track=backend)
        if first["backend"] != backend:
            fail(f"--track {backend} gave backend {first['backend']}: {first['line']}")
        results = {f: [] for f in FRACTIONS}
        steps = [(None, 0.01)] + [(r, f) for r in range(runs) for f in FRACTIONS]
        for i, (r, frac) in enumerate(steps, 1):
            n = round(w.pages * frac)
            w.dirty(n)
            nxt = os.path.join(chain, str(i))
            try:
                it = pre_dump(b, w, nxt, parent=parent)
            except Failed as e:
                why = (f"step {i} (round {r}, {frac * 100:g} % written; "
                       f"{i - 1} steps after the first pre-dump): {' '.join(str(e).split())}")
                note(f"# {backend} {mib} MiB: FAILED at {why}")
                return first, results, why
            shutil.rmtree(parent)
            parent = nxt
            if it["written"] < n:
                fail(f"{backend}: {n} pages written, the pre-dump found {it['written']}: {it['line']}")
            it["n"] = n
            if r is not None:
                results[frac].append(it)
        stop_tracking(b, w)
        note(f"# {backend} {mib} MiB: first {first['line']}\n#   last  {it['line']}")
        return first, results, None
    finally:
        w.end()
        shutil.rmtree(chain, ignore_errors=True)


# 2. Slowdown.

def window(w):
    u0, m0, c0 = w.count()
    time.sleep(WINDOW_S)
    u1, m1, c1 = w.count()
    return (u1 - u0) / (m1 - m0), (u1 - u0) / (c1 - c0), u1 - u0


def slowdown(b, backend):
    """Units of work per second untracked, then tracked (a fresh chain's
    first pre-dump), interleaved, WINDOWS windows each way. A pre-dump
    after each tracked window must find at least the window's writes (one
    a unit, distinct pages): tracking was on."""
    w = Workload(b, SLOW_MIB, pace=True)
    pairs = []
    try:
        time.sleep(0.5)
        for i in range(WINDOWS):
            untracked = window(w)
            d = b.fresh_dir(f"slow-{backend}-{i}")
            pre_dump(b, w, os.path.join(d, "0"), track=backend)
            tracked = window(w)
            it = pre_dump(b, w, os.path.join(d, "1"), parent=os.path.join(d, "0"))
            if it["written"] < tracked[2]:
                fail(f"{backend}: {tracked[2]} pages written in the tracked window, the "
                     f"next pre-dump found {it['written']}: {it['line']}")
            stop_tracking(b, w)
            shutil.rmtree(d)
            pairs.append((untracked, tracked))
        return pairs
    finally:
        w.end()


# 3. Final freeze.

def final_chained(b, backend):
    w = Workload(b, FINAL_MIB)
    d = b.fresh_dir(f"final-{backend}")
    try:
        n = round(w.pages * 0.01)
        parent = os.path.join(d, "0")
        pre_dump(b, w, parent, track=backend)
        for i in (1, 2):
            w.dirty(n)
            nxt = os.path.join(d, str(i))
            pre_dump(b, w, nxt, parent=parent)
            parent = nxt
        w.dirty(n)
        final = os.path.join(d, "final")
        wall, out = w.checkpoint([b.palisade, "checkpoint", "--pid", str(w.pid),
                                  "--parent", parent, "--dir", final])
        r = parse_final(out, f"the chained ({backend}) checkpoint")
        r["wall"] = wall * 1e3
        r["restore"] = restore_palisade(b, w, final, f"{backend} chain")
        return r
    finally:
        w.end()
        shutil.rmtree(d, ignore_errors=True)


def final_plain(b):
    w = Workload(b, FINAL_MIB)
    d = b.fresh_dir("final-plain")
    try:
        img = os.path.join(d, "image")
        wall, out = w.checkpoint([b.palisade, "checkpoint", "--pid", str(w.pid), "--dir", img])
        r = parse_final(out, "the plain checkpoint")
        r["wall"] = wall * 1e3
        r["restore"] = restore_palisade(b, w, img, "plain")
        return r
    finally:
        w.end()
        shutil.rmtree(d, ignore_errors=True)


def final_criu(b):
    w = Workload(b, FINAL_MIB)
    d = b.fresh_dir("final-criu")
    try:
        img = os.path.join(d, "image")
        os.makedirs(img)
        wall, _ = w.checkpoint([b.criu, "dump", "-t", str(w.pid), "-D", img, "--shell-job",
                                "-o", "dump.log"])
        LIVE.add(w.pid)
        t, _ = run([b.criu, "restore", "-D", img, "--shell-job", "-d", "-o", "restore.log"])
        w.verify_restored("criu")
        return {"wall": wall * 1e3, "restore": t * 1e3}
    finally:
        w.end()
        shutil.rmtree(d, ignore_errors=True)


def parse_final(out, what):
    m = FINAL.search(out)
    if not m:
        fail(f"cannot parse {what}'s line: {out!r}")
    g = m.groups()
    return {"mib": float(g[0]), "pages": int(g[1]), "freeze": float(g[4]), "dump": float(g[5]),
            "write": float(g[6]), "stopped": float(g[4]) + float(g[5]) + float(g[6]),
            "line": out}


def restore_palisade(b, w, img, what):
    LIVE.add(w.pid)
    t, out = run([b.palisade, "restore", "--dir", img])
    if out.split()[0] != str(w.pid):
        fail(f"{what}: restored as pid {out.split()[0]}, expected {w.pid}")
    w.verify_restored(what)
    return t * 1e3


def main():
    palisade, criu, binary, work = sys.argv[1:5]
    sizes = [int(s) for s in sys.argv[5].split(",")]
    runs = int(sys.argv[6])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        fail(f"PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())}")
    b = Bench(palisade, criu, binary, work)
    try:
        ok = measure(b, sizes, runs)
    except Failed as e:
        fail(str(e).strip())
    finally:
        b.cleanup()
    if not ok:
        fail("a pre-dump failed (above)")


def measure(b, sizes, runs):
    t_start = time.monotonic()
    # 1. Iteration time.
    iters, skipped = {}, []
    for mib in sizes:
        for backend in BACKENDS:
            # The workload, its first pre-dump, and (full) a whole copy
            # beside its parent, all in RAM; plus 1 GiB to spare.
            need = mib * (3 if backend == "full" else 2) + 1024
            have = mem_available_mib()
            if have < need:
                msg = f"{backend} at {mib} MiB skipped: needs {need} MiB free, MemAvailable is {have} MiB"
                note(f"# {msg}")
                skipped.append(msg)
                continue
            iters[(backend, mib)] = iterations(b, backend, mib, runs)
    print(f"\n### 1. Pre-dump iteration (dirty N pages, then `--pre-dump --parent`), median of {runs} (min–max)\n")
    print("Goal: ebpf `detect` (the iteration excluding the copy) ≤ 2 ms at 1 GiB with 1 % written.\n")
    print("| backend | MiB | written | N pages | found written | detect ms | copy ms | write ms | command wall ms | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = []
    for (backend, mib), (first, res, why) in iters.items():
        if why:
            failures.append(f"**{backend} at {mib} MiB failed** at {why}")
        for frac in FRACTIONS:
            its = res[frac]
            if not its:
                print(f"| {backend} | {mib} | {frac * 100:g} % | {round(mib * PAGES_PER_MIB * frac)} "
                      f"| failed (below) | | | | | |")
                continue
            goal = ""
            if backend == "ebpf" and mib == 1024 and frac == 0.01:
                goal = "**met**" if med([i["detect"] for i in its]) <= 2.0 else "**not met**"
            if len(its) < runs:
                goal += f" (only {len(its)} of {runs}: failed, below)"
            print(f"| {backend} | {mib} | {frac * 100:g} % | {its[0]['n']} | "
                  f"{med([i['written'] for i in its]):.0f} | {spread([i['detect'] for i in its])} | "
                  f"{spread([i['copy'] for i in its])} | {spread([i['write'] for i in its])} | "
                  f"{spread([i['wall'] for i in its])} | {goal} |")
    print("\nEach chain's first pre-dump (all pages), for scale:\n")
    print("| backend | MiB | stopped ms | copy ms | write ms | command wall ms |")
    print("|---|---|---|---|---|---|")
    for (backend, mib), (first, _, _) in iters.items():
        print(f"| {backend} | {mib} | {first['stopped']:.1f} | {first['copy']:.1f} | "
              f"{first['write']:.1f} | {first['wall']:.0f} |")
    for msg in failures + skipped:
        print(f"\n{msg}")
    note(f"# iterations done in {time.monotonic() - t_start:.0f} s")

    # 2. Slowdown.
    slow = {backend: slowdown(b, backend) for backend in BACKENDS}
    print(f"\n### 2. Slowdown of a process writing one random page per ~1 ms unit of CPU work, "
          f"{SLOW_MIB} MiB, tracked (after a pre-dump) vs untracked, {WINDOWS} interleaved "
          f"windows of {WINDOW_S:g} s each way\n")
    print("Goal: ≤ 5 % at 1 write/ms. Slowdown = 1 − tracked/untracked units per second, each "
          "pair of adjacent windows, median (min–max); per wall second (the goal's measure) "
          "and per CPU second of the workload (the same, without the other load on this "
          "shared machine).\n")
    print("| backend | untracked units/s (wall) | tracked units/s (wall) | slowdown % (wall) | "
          "untracked units/CPU-s | tracked units/CPU-s | slowdown % (CPU) | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, pairs in slow.items():
        uw = [u[0] for u, _ in pairs]
        tw = [t[0] for _, t in pairs]
        uc = [u[1] for u, _ in pairs]
        tc = [t[1] for _, t in pairs]
        sw = [(1 - t / u) * 100 for u, t in zip(uw, tw)]
        sc = [(1 - t / u) * 100 for u, t in zip(uc, tc)]
        goal = "met" if med(sw) <= 5 else "not met"
        print(f"| {backend} | {spread(uw, '{:.0f}')} | {spread(tw, '{:.0f}')} | {spread(sw)} | "
              f"{spread(uc, '{:.0f}')} | {spread(tc, '{:.0f}')} | {spread(sc)} | {goal} |")
    note(f"# slowdown done at {time.monotonic() - t_start:.0f} s")

    # 3. Final freeze.
    rounds = []
    for r in range(runs):
        order = [("chain", bk) for bk in BACKENDS] + [("plain", None), ("criu", None)]
        if r % 2:
            order.reverse()
        got = {}
        for kind, bk in order:
            if kind == "chain":
                got[bk] = final_chained(b, bk)
            elif kind == "plain":
                got["plain"] = final_plain(b)
            else:
                got["criu"] = final_criu(b)
        rounds.append(got)
        note(f"# final round {r}: plain: {got['plain']['line']}\n#   ebpf chain: {got['ebpf']['line']}")
    print(f"\n### 3. Final checkpoint at {FINAL_MIB} MiB after 3 pre-dumps with 1 % written before "
          f"each later step and before the final, vs a plain dump; median of {runs} rounds (min–max)\n")
    print("Goal: the final's stopped time (freeze + dump + write) ≤ 10 % of a plain dump's. "
          "CRIU 4.2's figure is the wall time of `criu dump` (it stops the process for about "
          "all of it). Every image was restored once and the restored process checked every "
          "word against its writes.\n")
    print("| dump | stopped ms (freeze+dump+write) | freeze ms | dump ms | write ms | command wall ms | "
          "image MiB | % of plain palisade's stopped (median of rounds) | restore wall ms | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, label in [("plain", "palisade plain"), ("criu", "CRIU 4.2 plain")] + \
            [(bk, f"palisade after pre-dumps ({bk})") for bk in BACKENDS]:
        rs = [g[key] for g in rounds]
        pct = [g[key].get("stopped", g[key]["wall"]) / g["plain"]["stopped"] * 100 for g in rounds]
        goal = ""
        if key in BACKENDS:
            goal = "met" if med(pct) <= 10 else "not met"
        if key == "criu":
            print(f"| {label} | {spread([x['wall'] for x in rs])} (wall) | | | | "
                  f"{spread([x['wall'] for x in rs])} | | {spread(pct, '{:.0f}')} | "
                  f"{spread([x['restore'] for x in rs], '{:.0f}')} | |")
            continue
        print(f"| {label} | {spread([x['stopped'] for x in rs])} | {spread([x['freeze'] for x in rs])} | "
              f"{spread([x['dump'] for x in rs])} | {spread([x['write'] for x in rs])} | "
              f"{spread([x['wall'] for x in rs], '{:.0f}')} | {med([x['mib'] for x in rs]):.1f} | "
              f"{spread(pct, '{:.1f}')} | {spread([x['restore'] for x in rs], '{:.0f}')} | {goal} |")
    note(f"# all done in {time.monotonic() - t_start:.0f} s")
    return not failures


if __name__ == "__main__":
    main()
