#!/usr/bin/env bash
# The tax of accounting, side by side, in one run on this machine. Every
# palisade container has the accounting programs attached (they are the
# same programs that enforce its policy); "none" is the same work done by a
# process in no palisade container.
#
#   loopback   iperf3 to 127.0.0.1: a host process vs `palisade exec` in a
#              --net host container with no policy and no rate
#   veth       iperf3 to 10.88.0.1 from a --net bridge container's network
#              namespace: a process that only joined the namespace (nsenter,
#              no palisade cgroup, no programs) vs `palisade exec` into the
#              container (its cgroup, every program), same veth and bridge
#   connect    TCP connect()+close to a loopback listener, 20 000 per run
#              (bench/connect_loop.py): host vs the --net host container
# ROUNDS interleaved rounds (THROUGHPUT_SECONDS each for iperf3); medians of
# each figure and of each round's ratio (palisade / none).
#
# Then the agent at rest: N_CONTAINERS running containers, `palisade agent
# --metrics-addr` with nobody scraping, its CPU time over IDLE_SECONDS; and
# one scrape of /metrics for all of them, timed.
#
# usage: bench/accounting.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: accounting.sh PALISADE_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-5}
THROUGHPUT_SECONDS=${THROUGHPUT_SECONDS:-5}
TCP_COUNT=${TCP_COUNT:-20000}
N_CONTAINERS=${N_CONTAINERS:-50}
IDLE_SECONDS=${IDLE_SECONDS:-10}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
export PALISADE_ROOT="$WORK/state"
SERVER_PID= AGENT_PID= LISTENER_PID=

cleanup() {
  for p in $SERVER_PID $AGENT_PID $LISTENER_PID; do kill "$p" 2>/dev/null || true; done
  for d in "$PALISADE_ROOT"/*/; do
    [ -d "$d" ] && "$PALISADE" rm -f "$(basename "$d")" >/dev/null 2>&1 || true
  done
  # What the state root pins (programs, maps) goes with it.
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Gbit/s of one iperf3 run to $1 by the client command after it.
gbits() {
  local addr=$1; shift
  local port; port=$(free_port)
  iperf3 -s -1 -B "$addr" -p "$port" >/dev/null 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.05; done
  "$@" iperf3 -c "$addr" -p "$port" -t "$THROUGHPUT_SECONDS" -f g 2>/dev/null \
    | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1) }'
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

"$PALISADE" run -d --name acct-host --net host -- sleep 100000 >/dev/null
"$PALISADE" run -d --name acct-br --net bridge -- sleep 100000 >/dev/null
BR_PID=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pid'])" "$PALISADE_ROOT/acct-br/state.json")

PORT=$(free_port)
python3 "$HERE/listener.py" "$PORT" &
LISTENER_PID=$!
sleep 0.3

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  echo "$round|loopback|none|$(gbits 127.0.0.1)" >>"$WORK/results"
  echo "$round|loopback|palisade|$(gbits 127.0.0.1 "$PALISADE" exec acct-host --)" >>"$WORK/results"
  echo "$round|veth|none|$(gbits 10.88.0.1 nsenter --net=/proc/$BR_PID/ns/net)" >>"$WORK/results"
  echo "$round|veth|palisade|$(gbits 10.88.0.1 "$PALISADE" exec acct-br --)" >>"$WORK/results"
  echo "$round|connect|none|$(python3 "$HERE/connect_loop.py" tcp "$PORT" "$TCP_COUNT")" >>"$WORK/results"
  echo "$round|connect|palisade|$("$PALISADE" exec acct-host -- python3 "$HERE/connect_loop.py" tcp "$PORT" "$TCP_COUNT")" >>"$WORK/results"
done

python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
val = {(r, t, c): float(v) for r, t, c, v in rows if v}
rounds = sorted({r for r, *_ in rows})
print(f"{'test':<10} {'none':>12} {'palisade':>12} {'ratio':>8}   rounds (palisade / none)")
for test, unit, higher_better in (("loopback", "Gbit/s", True), ("veth", "Gbit/s", True), ("connect", "us/conn", False)):
    none = [val[(r, test, "none")] for r in rounds if (r, test, "none") in val]
    pal = [val[(r, test, "palisade")] for r in rounds if (r, test, "palisade") in val]
    ratios = [val[(r, test, "palisade")] / val[(r, test, "none")] for r in rounds
              if (r, test, "none") in val and (r, test, "palisade") in val]
    # For throughput the ratio is palisade/none (1.0 = no loss); for
    # connect it is the rate ratio, none/palisade in time.
    if not higher_better:
        ratios = [1 / x for x in ratios]
    print(f"{test:<10} {statistics.median(none):>9.2f} {unit:<3} {statistics.median(pal):>8.2f} {'':<3} "
          f"{statistics.median(ratios):>8.3f}   {' '.join(f'{x:.3f}' for x in ratios)}")
PY

echo
echo "agent at rest with $N_CONTAINERS containers:"
for i in $(seq "$N_CONTAINERS"); do
  "$PALISADE" run -d --name "idle-$i" -- sleep 100000 >/dev/null
done
"$PALISADE" agent --metrics-addr 127.0.0.1:0 >"$WORK/agent.out" &
AGENT_PID=$!
for _ in $(seq 100); do grep -q serving "$WORK/agent.out" && break; sleep 0.05; done
URL=$(sed -n 's/^serving metrics on //p' "$WORK/agent.out")
ticks() { awk '{ print $14 + $15 }' "/proc/$AGENT_PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks); sleep "$IDLE_SECONDS"; t1=$(ticks)
echo "  CPU while idle: $(( t1 - t0 )) ticks of 1/${HZ} s in ${IDLE_SECONDS} s = $(echo "scale=3; ($t1 - $t0) * 100 / $HZ / $IDLE_SECONDS" | bc) % of one core"
start=$(date +%s%N)
series=$(curl -s "$URL" | grep -c '^palisade_container_' || true)
end=$(date +%s%N)
echo "  one scrape of /metrics: $(( (end - start) / 1000000 )) ms, $series series"
