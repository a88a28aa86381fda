#!/usr/bin/env bash
# The host-wide tax of palisade's accounting (issue 18), side by side in
# one run: a pipe ping-pong (PIPE_TRIPS round trips, two context switches
# each), a first-touch fault loop (FAULT_MIB MiB mappings, FAULT_ROUNDS
# times) and a fork-exit-reap loop (SPAWNS children; palisade's exit
# program runs at each exit), all pinned to CPU $CPU (bench/host_tax.c),
# in six states, interleaved over ROUNDS rounds:
#
#   none      no palisade state on the host (nothing pinned, no tracepoint)
#   floor     no palisade; a BPF program that does nothing attached to
#             sched_switch: what any per-switch program costs at least
#             (the alternative to reading /proc that issue 18 weighed)
#   host      one palisade container running; the benchmark on the host,
#             in no container
#   inside    the benchmark in that container (`palisade exec`)
#   nsenter   the benchmark in that container's cgroups and namespaces,
#             entered with nsenter: "inside" without palisade's default
#             seccomp filter and dropped capabilities
#   cgroup    the benchmark in bare cgroups at the same depth in the same
#             hierarchies as the container's (bench/peer_cgroup.py: no
#             palisade program, no namespace): what the kernel's cgroups
#             cost by themselves, the peer "inside" is compared with
#
# Then, once, the exit program's own cost per run (the kernel's BPF
# statistics, kernel.bpf_stats_enabled, on only for this): SPAWNS
# children on the host, then in the container.
#
# Prints each state's median and every round's figure, and the ratio of
# the medians to "none". "none" needs a host with no other palisade state
# root: if one is pinned, the script says so and stops.
#
# usage: bench/host_tax.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: host_tax.sh PALISADE_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-8}
CPU=${CPU:-1}
PIPE_TRIPS=${PIPE_TRIPS:-200000}
FAULT_MIB=${FAULT_MIB:-8}
FAULT_ROUNDS=${FAULT_ROUNDS:-50}
SPAWNS=${SPAWNS:-2000}
WORK=$(mktemp -d /tmp/palisade-bench-tax.XXXXXX)
export PALISADE_ROOT="$WORK/state"
# Under the repository's target/, which a container on the host's root
# sees (its /tmp is its own).
BIN_DIR="$HERE/../target/bench"
BIN="$BIN_DIR/host_tax"

FLOOR_PID=
cleanup() {
  [ ! -f "$WORK/peer.dirs" ] || python3 "$HERE/peer_cgroup.py" remove "$WORK/peer.dirs"
  [ -z "$FLOOR_PID" ] || kill "$FLOOR_PID" 2>/dev/null || true
  "$PALISADE" rm -f tax >/dev/null 2>&1 || true
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$BIN_DIR"
gcc -O2 -o "$BIN" "$HERE/host_tax.c"

pinned() { ls /sys/fs/bpf/palisade 2>/dev/null | grep -c . || true; }
if [ "$(pinned)" != 0 ]; then
  echo "host_tax: other palisade state is pinned on this host (/sys/fs/bpf/palisade); the \"none\" state cannot be measured" >&2
  exit 1
fi

measure() { # STATE [PREFIX...]: one line "STATE pipe_ns fault_ns spawn_ns"
  local state=$1; shift
  local p f s
  p=$("$@" taskset -c "$CPU" "$BIN" pipe "$PIPE_TRIPS")
  f=$("$@" taskset -c "$CPU" "$BIN" fault "$FAULT_MIB" "$FAULT_ROUNDS")
  s=$("$@" taskset -c "$CPU" "$BIN" spawn "$SPAWNS")
  echo "$state $p $f $s"
}

in_dirs() { # LISTING CMD...: runs CMD in the cgroups LISTING names
  sh -c 'while read -r d; do echo $$ >"$d/cgroup.procs"; done <"$0"; shift; exec "$@"' "$@"
}

floor() { # measures with an empty program on sched_switch, held by its pid
  local fifo="$WORK/floor.in"
  rm -f "$fifo"; mkfifo "$fifo"
  "$BIN" empty sched_switch <"$fifo" >"$WORK/floor.out" &
  FLOOR_PID=$!
  exec 9>"$fifo"
  until grep -q ready "$WORK/floor.out" 2>/dev/null; do
    kill -0 "$FLOOR_PID" 2>/dev/null || { echo "host_tax: cannot attach the empty program" >&2; exit 1; }
    sleep 0.05
  done
  measure floor >>"$WORK/results"
  exec 9>&-
  wait "$FLOOR_PID"
  FLOOR_PID=
}

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  [ "$(pinned)" = 0 ] || { echo "host_tax: pins left before round $round" >&2; exit 1; }
  measure none >>"$WORK/results"
  floor
  "$PALISADE" run -d --name tax -- sleep 100000 >/dev/null
  measure host >>"$WORK/results"
  measure inside "$PALISADE" exec tax -- >>"$WORK/results"
  pid=$("$PALISADE" ps --json | python3 -c 'import json, sys; print([c["pid"] for c in json.load(sys.stdin) if c["name"] == "tax"][0])')
  python3 "$HERE/peer_cgroup.py" own "$pid" >"$WORK/own.dirs"
  measure nsenter in_dirs "$WORK/own.dirs" - nsenter -t "$pid" -a >>"$WORK/results"
  [ -f "$WORK/peer.dirs" ] || python3 "$HERE/peer_cgroup.py" make "$pid" "palisade-peer-$$" >"$WORK/peer.dirs"
  "$PALISADE" rm -f tax >/dev/null
  measure cgroup in_dirs "$WORK/peer.dirs" - >>"$WORK/results"
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null
done

# The exit program's run time per run, for host tasks and for the
# container's (statistics on only meanwhile: they cost every program).
"$PALISADE" run -d --name tax -- sleep 100000 >/dev/null
exit_prog=$(ls -d /sys/fs/bpf/palisade/host-*/task_exit | head -1)
stats_before=$(cat /proc/sys/kernel/bpf_stats_enabled)
echo 1 >/proc/sys/kernel/bpf_stats_enabled
read -r t0 n0 < <(python3 "$HERE/prog_stats.py" "$exit_prog")
taskset -c "$CPU" "$BIN" spawn "$SPAWNS" >/dev/null
read -r t1 n1 < <(python3 "$HERE/prog_stats.py" "$exit_prog")
"$PALISADE" exec tax -- taskset -c "$CPU" "$BIN" spawn "$SPAWNS" >/dev/null
read -r t2 n2 < <(python3 "$HERE/prog_stats.py" "$exit_prog")
echo "$stats_before" >/proc/sys/kernel/bpf_stats_enabled
"$PALISADE" rm -f tax >/dev/null
echo "exit-program $(( (t1 - t0) / (n1 - n0) )) $(( n1 - n0 )) $(( (t2 - t1) / (n2 - n1) )) $(( n2 - n1 ))" >>"$WORK/results"

python3 - "$WORK/results" <<'PY'
import statistics, sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
rows = [l for l in lines if l[0] != "exit-program"]
exit_prog = [l for l in lines if l[0] == "exit-program"][0]
states = ("none", "floor", "host", "inside", "nsenter", "cgroup")
for col, name, unit in ((1, "pipe round trip", "ns"), (2, "first-touch fault", "ns"), (3, "fork, exit and reap", "ns")):
    print(f"{name} ({unit}), {len(rows) // len(states)} rounds:")
    base = None
    for state in states:
        vals = [float(r[col]) for r in rows if r[0] == state]
        med = statistics.median(vals)
        base = base or med
        print(f"  {state:<7} median {med:8.1f}  x none {med / base:6.3f}   rounds: {' '.join(f'{v:.0f}' for v in vals)}")
    median = lambda s: statistics.median([float(r[col]) for r in rows if r[0] == s])
    print(f"  inside x nsenter {median('inside') / median('nsenter'):6.3f} (seccomp, capabilities)   nsenter x cgroup {median('nsenter') / median('cgroup'):6.3f} (namespaces)   cgroup x none {median('cgroup') / median('none'):6.3f} (cgroups)")
spawn = statistics.median([float(r[3]) for r in rows if r[0] == "none"])
for label, ns, runs in (("host tasks", exit_prog[1], exit_prog[2]), ("the container's", exit_prog[3], exit_prog[4])):
    print(f"exit program, {label}: {ns} ns per run ({runs} runs), {float(ns) / spawn * 100:.2f}% of a fork, exit and reap")
PY
