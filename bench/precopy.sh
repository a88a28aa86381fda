#!/usr/bin/env bash
# Incremental checkpoint (pre-dump chains) with each dirty-tracking
# backend, ebpf, pagemap-scan and full, on a process of our own
# (tests/workloads/bench_dirty.c) holding N MiB of touched private
# anonymous memory, N in SIZES; images on tmpfs (a fresh directory under
# /dev/shm), a state root and image key of the bench's own there too.
#
# 1. Iteration time, per backend and size: a chain's first pre-dump
#    (`checkpoint --pid P --pre-dump --track B`), one warm-up iteration,
#    then RUNS rounds of: the workload writes N distinct random pages
#    (0.1 %, 1 %, 10 % of them, a word each; idle otherwise), then
#    `--pre-dump --parent`. Reported, median of RUNS: the command's
#    `detect` (finding the written pages and protecting them again: the
#    iteration excluding the copy), its copy and write, and the command's
#    wall time; and the pages it found written (never fewer than N, or the
#    bench fails). Goal: ebpf detect <= 2 ms at 1 GiB with 1 % written.
#    A size is skipped, with a message, when MemAvailable cannot hold the
#    workload and its images (2x the size, 3x for `full`, + 1 GiB).
# 2. Slowdown, per backend, at 1 GiB: the workload in pace mode loops over
#    a unit of CPU work (calibrated to ~1 ms) and ONE random page write;
#    units per second untracked (before the first pre-dump, or after
#    `--stop-tracking`) and tracked (after a chain's first pre-dump),
#    WINDOWS (3) interleaved windows of WINDOW_S (2) s each way, the same
#    process. Per wall second (the goal's measure) and per CPU second of
#    the workload (the same without the other load of a shared machine).
#    Goal: <= 5 % at 1 write/ms.
# 3. Final freeze at 1 GiB, RUNS rounds, each with, in alternating order:
#    per backend, a fresh workload pre-dumped 3 times with 1 % of its
#    pages written before the second, the third and the final checkpoint
#    (`checkpoint --pid P --parent D`); a plain `palisade checkpoint` of a
#    fresh one; CRIU 4.2's `criu dump -t` of a fresh one (its wall time).
#    palisade's stopped time is freeze + dump + write from its line. Goal:
#    after pre-dumps, <= 10 % of the plain dump's. Every image is restored
#    once (`palisade restore`, `criu restore -d`) and the restored process
#    replays its writes and checks every word before it exits; a failed
#    check fails the bench.
#
# CRIU is the binary in ../shared/peers/criu, or $CRIU (bench/checkpoint.sh
# says more).
#
# usage: bench/precopy.sh PALISADE_BINARY   (as root)
#   SIZES=1024,4096 (MiB, the default)  RUNS=3 (the default)
#   the full run: SIZES=1024,4096,16384 (16 GiB needs ~33 GiB free for the
#   tracked backends, ~49 GiB for `full`: skipped with a message if short)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: precopy.sh PALISADE_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
SIZES=${SIZES:-1024,4096}
WORK=$(mktemp -d /dev/shm/palisade-precopy.XXXXXX)
# The driver ends what it starts; should it die first, every pid it
# listed whose program is still ours is killed here, by pid.
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            case $(readlink "/proc/$pid/exe" 2>/dev/null) in
                "$WORK"/*) kill -9 "$pid" 2>/dev/null || true ;;
            esac
        done <"$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export PALISADE_IMAGE_KEY="$WORK/image.key"
export PALISADE_ROOT="$WORK/state"

CRIU=${CRIU:-$HERE/../../shared/peers/criu}
if [ ! -x "$CRIU" ]; then
    echo "precopy bench: no CRIU binary at $CRIU (set CRIU=/path/to/criu 4.x)" >&2
    exit 1
fi
CRIU=$(realpath "$CRIU")
if ldd "$CRIU" | grep -q "not found"; then
    echo "precopy bench: installing the libraries $CRIU needs" >&2
    apt-get install -y -q libbsd0 libgnutls30 libnet1 libnftables1 libprotobuf-c1 libuuid1 libnl-3-200 >&2
fi
"$CRIU" check >/dev/null 2>&1 || { echo "precopy bench: '$CRIU check' fails on this machine:" >&2; "$CRIU" check >&2; exit 1; }

cc -O2 -static -pthread -o "$WORK/bench_dirty" "$HERE/../tests/workloads/bench_dirty.c"
python3 "$HERE/precopy_runs.py" "$PALISADE" "$CRIU" "$WORK/bench_dirty" "$WORK" "$SIZES" "$RUNS"
