#!/usr/bin/env bash
# Side-by-side start-to-exit time of a container running `true`:
#   unshare     util-linux unshare with the same namespaces (pid, mount with a
#               private /proc, uts, ipc) and no cgroup or policy: the floor
#   palisade    palisade run: cgroups on every hierarchy, the eBPF object
#               loaded and verified, connect4/6 attached, policy written,
#               namespaces, exec, wait, cleanup
# Runs are interleaved; the figure is the median in milliseconds.
#
# usage: bench/startup.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: startup.sh PALISADE_BINARY}
RUNS=${RUNS:-30}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
printf '[network]\nconnect = ["allow tcp 127.0.0.1/32", "deny any"]\n' > "$WORK/policy.toml"

ms() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
for _ in $(seq "$RUNS"); do
  echo "unshare $(ms unshare --pid --fork --mount-proc --uts --ipc true)"
  echo "palisade $(ms "$PALISADE" run --name "bench-start-$$" --policy "$WORK/policy.toml" -- true)"
done > "$WORK/times"

median() { awk -v k="$1" '$1 == k {print $2}' "$WORK/times" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
u=$(median unshare); p=$(median palisade)
printf '\n%-10s %10s %9s\n' "runtime" "median ms" "x unshare"
printf '%-10s %10.2f %9.2f\n' unshare "$(echo "$u / 1000" | bc -l)" 1
printf '%-10s %10.2f %9.2f\n' palisade "$(echo "$p / 1000" | bc -l)" "$(echo "$p / $u" | bc -l)"
