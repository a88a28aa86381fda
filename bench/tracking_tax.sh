#!/usr/bin/env bash
# What a live pre-dump chain costs the rest of the host: the time of a
# system call (getppid, 5 000 000 of them, by a process in no container
# and not tracked) with no chain, and while a chain tracks a 64 MiB
# process (tests/workloads/bench_dirty.c), per backend, ROUNDS (5)
# interleaved rounds; the ratio of the medians. The ebpf recorder puts a
# program on `sys_enter` (every system call of the host) only where the
# kernel keeps a moved mapping's write-protection; the page-fault
# programs cost nothing to system calls.
#
# usage: bench/tracking_tax.sh PALISADE_BINARY   (as root)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: tracking_tax.sh PALISADE_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-5}
WORK=$(mktemp -d /dev/shm/palisade-tax.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ] && [ "$(readlink "/proc/$PID/exe" 2>/dev/null)" = "$WORK/bench_dirty" ]; then
        kill -9 "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export PALISADE_IMAGE_KEY="$WORK/image.key" PALISADE_ROOT="$WORK/state"

cc -O2 -static -pthread -o "$WORK/bench_dirty" "$HERE/../tests/workloads/bench_dirty.c"
cat >"$WORK/calls.c" <<'C'
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    const long n = 5000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
C
cc -O2 -o "$WORK/calls" "$WORK/calls.c"

cd "$WORK"
setsid ./bench_dirty pid trigger log answer 64 </dev/null >/dev/null 2>&1 &
while [ ! -s pid ]; do sleep 0.1; done
PID=$(cat pid)

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "| backend | no chain ns/call (median of $ROUNDS) | chain live ns/call | ratio |"
echo "|---|---|---|---|"
for backend in ebpf pagemap-scan; do
    : >off; : >on
    for r in $(seq "$ROUNDS"); do
        ./calls >>off
        "$PALISADE" checkpoint --pid "$PID" --pre-dump --track "$backend" --dir "img-$backend-$r" >/dev/null
        ./calls >>on
        "$PALISADE" checkpoint --pid "$PID" --stop-tracking >/dev/null
        rm -rf "img-$backend-$r"
    done
    a=$(median <off); b=$(median <on)
    echo "| $backend | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}') |"
done
