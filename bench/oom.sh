#!/usr/bin/env bash
# OOM action latency: a memory hog (bench/oom_hog.c, a heartbeat after
# each MiB touched) in a container, one agent, side by side in one run:
#   kernel OOM kill       no [oom]: the kernel's OOM killer alone, the peer
#   kill at oom           [oom] action = "kill" (the kernel kills too)
#   kill at memory_high   the agent ends it before the limit
#   freeze at memory_high the agent freezes it
#   notify at oom         the agent only reports
# Columns: the agent's own figure (wake-up on the eventfd or inotify to
# the action done: every process gone, the cgroup frozen, the record
# made), the hog's last heartbeat to the oom_action record, and to the
# monitor's exited record. The floor: an eventfd write-to-wake between
# two threads of one process, measured in the same run.
#
# usage: bench/oom.sh PALISADE_BINARY ROOTFS   (as root; RUNS=10 by default)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: oom.sh PALISADE_BINARY ROOTFS}")
ROOTFS=$(realpath "${2:?usage: oom.sh PALISADE_BINARY ROOTFS}")
RUNS=${RUNS:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/palisade-bench-oom.XXXXXX)
cleanup() {
  for d in "$WORK"/state/oombench-*; do
    [ -d "$d" ] && "$PALISADE" --root "$WORK/state" rm -f "${d##*/}" >/dev/null 2>&1 || true
  done
  "$PALISADE" --root "$WORK/state" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cc -O2 -static -pthread -o "$WORK/oom_hog" "$HERE/oom_hog.c"
python3 "$HERE/oom_runs.py" "$PALISADE" "$ROOTFS" "$WORK/oom_hog" "$WORK" "$RUNS"
read -r median p99 < <("$WORK/oom_hog" eventfd 1000)
echo "floor: eventfd write->wake between two threads: median ${median} us (p99 ${p99} us)"
