#!/usr/bin/env bash
# /proc/meminfo inside a container, read whole 10,000 times (open, read,
# close: what `cat` costs without its fork), side by side in one run:
#   bare     the kernel's own file (a container without a view)
#   lxcfs    lxcfs's meminfo (Debian's lxcfs, mounted on a scratch
#            directory and bound into the container)
#   palisade the container's view, served by `palisade agent`
# The three alternate for ROUNDS rounds; each figure is the median round's
# median (and 99th percentile) of one read, in microseconds. The reader
# is bench/read_loop.c, static, in a busybox container with --memory 256M.
#
# usage: bench/view.sh PALISADE_BINARY ROOTFS   (as root; installs lxcfs
#        with apt-get if it is missing; N=10000 ROUNDS=5 by default)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: view.sh PALISADE_BINARY ROOTFS}")
ROOTFS=$(realpath "${2:?usage: view.sh PALISADE_BINARY ROOTFS}")
N=${N:-10000}
ROUNDS=${ROUNDS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/palisade-bench-view.XXXXXX)
STATE="$WORK/state"
P() { "$PALISADE" --root "$STATE" "$@"; }
AGENT_PID=
LXCFS_PID=
cleanup() {
  for name in viewbench-view viewbench-bare; do P rm -f "$name" >/dev/null 2>&1 || true; done
  if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  if [ -n "$LXCFS_PID" ]; then kill "$LXCFS_PID" 2>/dev/null || true; wait "$LXCFS_PID" 2>/dev/null || true; fi
  umount -l "$WORK/lxcfs" 2>/dev/null || true
  P system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v lxcfs >/dev/null; then
  echo "installing lxcfs (Debian's) for the comparison" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lxcfs >/dev/null
fi
mkdir -p "$WORK/bin" "$WORK/lxcfs" "$STATE"
cc -O2 -static -o "$WORK/bin/read_loop" "$HERE/read_loop.c"

lxcfs -f -p "$WORK/lxcfs.pid" "$WORK/lxcfs" >"$WORK/lxcfs.log" 2>&1 &
LXCFS_PID=$!
"$PALISADE" --root "$STATE" agent >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
  grep -q "agent serving" "$WORK/agent.log" && [ -e "$WORK/lxcfs/proc/meminfo" ] && break
  sleep 0.1
done
grep -q "agent serving" "$WORK/agent.log" || { cat "$WORK/agent.log"; exit 1; }
[ -e "$WORK/lxcfs/proc/meminfo" ] || { echo "lxcfs did not mount:"; cat "$WORK/lxcfs.log"; exit 1; }

common=(--rootfs "$ROOTFS" --memory 256M --mount "$WORK/bin:/bench:ro" --mount "$WORK/lxcfs:/lxcfs:ro")
P run -d --name viewbench-view --proc-view "${common[@]}" -- sleep 100000 >/dev/null
P run -d --name viewbench-bare "${common[@]}" -- sleep 100000 >/dev/null
sleep 0.5

# The three files say the same limit (lxcfs and palisade), or the host's.
total() { P exec "$1" -- grep MemTotal "$2" | awk '{print $2}'; }
echo "MemTotal kB: bare $(total viewbench-bare /proc/meminfo), lxcfs $(total viewbench-view /lxcfs/proc/meminfo), palisade $(total viewbench-view /proc/meminfo)"

declare -A med p99
for kind in bare lxcfs palisade; do med[$kind]=""; p99[$kind]=""; done
for round in $(seq "$ROUNDS"); do
  for kind in bare lxcfs palisade; do
    case $kind in
      bare) out=$(P exec viewbench-bare -- /bench/read_loop /proc/meminfo "$N") ;;
      lxcfs) out=$(P exec viewbench-view -- /bench/read_loop /lxcfs/proc/meminfo "$N") ;;
      palisade) out=$(P exec viewbench-view -- /bench/read_loop /proc/meminfo "$N") ;;
    esac
    read -r m p b <<<"$out"
    med[$kind]+="$m "
    p99[$kind]+="$p "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-10s %12s %12s %10s\n" "reader" "median_us" "p99_us" "x_bare"
base=$(median "${med[bare]}")
for kind in bare lxcfs palisade; do
  m=$(median "${med[$kind]}")
  p=$(median "${p99[$kind]}")
  printf "%-10s %12s %12s %10.1f\n" "$kind" "$m" "$p" "$(echo "$m / $base" | bc -l)"
done
pal=$(median "${med[palisade]}")
lx=$(median "${med[lxcfs]}")
printf "palisade / lxcfs: %.2f\n" "$(echo "$pal / $lx" | bc -l)"
