#!/usr/bin/env bash
# The host-wide tax of palisade's accounting tracepoints (issue 18), side
# by side in one run: a pipe ping-pong (PIPE_TRIPS round trips, two context
# switches each) and a first-touch fault loop (FAULT_MIB MiB mappings,
# FAULT_ROUNDS times), both pinned to CPU $CPU (bench/host_tax.c), in
# three states, interleaved over ROUNDS rounds:
#
#   none      no palisade state on the host (nothing pinned, no tracepoint)
#   host      one palisade container running; the benchmark on the host,
#             in no container
#   inside    the benchmark in that container (`palisade exec`)
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
WORK=$(mktemp -d /tmp/palisade-bench-tax.XXXXXX)
export PALISADE_ROOT="$WORK/state"
# Under the repository's target/, which a container on the host's root
# sees (its /tmp is its own).
BIN_DIR="$HERE/../target/bench"
BIN="$BIN_DIR/host_tax"

cleanup() {
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

measure() { # STATE: one line "STATE pipe_ns fault_ns"
  local state=$1; shift
  local p f
  p=$("$@" taskset -c "$CPU" "$BIN" pipe "$PIPE_TRIPS")
  f=$("$@" taskset -c "$CPU" "$BIN" fault "$FAULT_MIB" "$FAULT_ROUNDS")
  echo "$state $p $f"
}

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  [ "$(pinned)" = 0 ] || { echo "host_tax: pins left before round $round" >&2; exit 1; }
  measure none >>"$WORK/results"
  "$PALISADE" run -d --name tax -- sleep 100000 >/dev/null
  measure host >>"$WORK/results"
  measure inside "$PALISADE" exec tax -- >>"$WORK/results"
  "$PALISADE" rm -f tax >/dev/null
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null
done

python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for col, name, unit in ((1, "pipe round trip", "ns"), (2, "first-touch fault", "ns")):
    print(f"{name} ({unit}), {len(rows) // 3} rounds:")
    base = None
    for state in ("none", "host", "inside"):
        vals = [float(r[col]) for r in rows if r[0] == state]
        med = statistics.median(vals)
        base = base or med
        print(f"  {state:<7} median {med:8.1f}  x none {med / base:6.3f}   rounds: {' '.join(f'{v:.0f}' for v in vals)}")
PY
