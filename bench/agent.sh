#!/usr/bin/env bash
# The resident agent, side by side with its peers in one run:
#
#   idle     N_CONTAINERS running containers; the agent (metrics server,
#            API socket, journal watch, kernel ring reader) with nobody
#            scraping or subscribed: its CPU time over IDLE_SECONDS. Peer,
#            in the same window: containerd 1.6 started on a scratch root
#            with no containers (the resident daemon of the fleets that
#            would run palisade as their runtime).
#   events   FLOODERS containers each refusing RATE connects a second for
#            FLOOD_SECONDS (together about 10,000 denials a second), read
#            by two `events --follow --json` subscribers through the agent.
#            Every event the kernel emitted (connect denials minus
#            events_dropped, from `stats`) must reach both. Peer: the same
#            flood read without an agent, by one `events --follow` reading
#            the kernel's ring directly (the only reader it can have).
#
# usage: bench/agent.sh PALISADE_BINARY ROOTFS   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: agent.sh PALISADE_BINARY ROOTFS}")
ROOTFS=$(realpath "${2:?usage: agent.sh PALISADE_BINARY ROOTFS}")
N_CONTAINERS=${N_CONTAINERS:-50}
IDLE_SECONDS=${IDLE_SECONDS:-30}
FLOODERS=${FLOODERS:-12}
RATE=${RATE:-800}
FLOOD_SECONDS=${FLOOD_SECONDS:-5}
WORK=$(mktemp -d /tmp/palisade-bench-agent.XXXXXX)
export PALISADE_ROOT="$WORK/state"
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "$PALISADE_ROOT"/*/; do
    [ -d "$d" ] && "$PALISADE" rm -f "$(basename "$d")" >/dev/null 2>&1 || true
  done
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
pct() { echo "scale=3; $1 * 100 / $HZ / $IDLE_SECONDS" | bc; }

start_agent() {
  "$PALISADE" agent --metrics-addr 127.0.0.1:0 >"$WORK/agent.out" 2>"$WORK/agent.err" &
  AGENT=$!
  PIDS+=("$AGENT")
  for _ in $(seq 200); do grep -q "serving metrics" "$WORK/agent.out" && return; sleep 0.05; done
  echo "the agent did not start: $(cat "$WORK/agent.err")" >&2
  exit 1
}

echo "== agent at rest: $N_CONTAINERS containers, ${IDLE_SECONDS} s"
for i in $(seq "$N_CONTAINERS"); do
  "$PALISADE" run -d --name "idle-$i" --rootfs "$ROOTFS" -- sleep 100000 >/dev/null
done
start_agent
mkdir -p "$WORK/ctrd"
containerd --root "$WORK/ctrd/root" --state "$WORK/ctrd/state" \
  --address "$WORK/ctrd/sock" --config /dev/null >"$WORK/ctrd/log" 2>&1 &
CTRD=$!
PIDS+=("$CTRD")
sleep 3
a0=$(ticks "$AGENT"); c0=$(ticks "$CTRD")
sleep "$IDLE_SECONDS"
a1=$(ticks "$AGENT"); c1=$(ticks "$CTRD")
agent_idle=$((a1 - a0)); ctrd_idle=$((c1 - c0))
echo "  palisade agent: $agent_idle ticks of 1/$HZ s = $(pct $agent_idle) % of one core"
echo "  containerd (no containers): $ctrd_idle ticks = $(pct $ctrd_idle) % of one core"
echo "  agent RSS: $(awk '/VmRSS/ { print $2, $3 }' "/proc/$AGENT/status")"
kill "$CTRD" 2>/dev/null || true
for i in $(seq "$N_CONTAINERS"); do "$PALISADE" rm -f "idle-$i" >/dev/null; done

# A container refusing RATE connects a second (to 127.0.0.2, which its
# policy denies) for FLOOD_SECONDS.
cat >"$WORK/flood.py" <<'PY'
import socket, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
n = 0
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    due = start + n / rate
    if due > now:
        time.sleep(due - now)
    s = socket.socket()
    try:
        s.connect(("127.0.0.2", 9))
    except OSError:
        pass
    s.close()
    n += 1
print(n, flush=True)
time.sleep(100000)  # kept alive so its counters can be read
PY
printf '[network]\nconnect = ["deny tcp 127.0.0.2/32", "allow any"]\n' >"$WORK/deny.toml"

# Runs the flood; prints "emitted" (denied - dropped) summed over flooders.
flood() {
  local tag=$1 names=()
  for i in $(seq "$FLOODERS"); do
    names+=("$tag-$i")
    "$PALISADE" run -d --name "$tag-$i" --policy "$WORK/deny.toml" -- \
      python3 -c "$(cat "$WORK/flood.py")" "$RATE" "$FLOOD_SECONDS" >/dev/null
  done
  sleep "$FLOOD_SECONDS"
  for n in "${names[@]}"; do
    for _ in $(seq 200); do [ -n "$("$PALISADE" logs "$n")" ] && break; sleep 0.05; done
  done
  "$PALISADE" stats --json "${names[@]}" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
print(sum(r["denied"]["connect_denied"] - r["denied"]["events_dropped"] for r in rows),
      sum(r["denied"]["connect_denied"] for r in rows))'
}

count_denials() { grep -c '"kind":"denial"' "$1" || true; }

echo
echo "== events: $FLOODERS containers x $RATE denials/s for ${FLOOD_SECONDS} s"
"$PALISADE" events --follow --json >"$WORK/sub1" 2>/dev/null &
S1=$!; PIDS+=("$S1")
"$PALISADE" events --follow --json >"$WORK/sub2" 2>/dev/null &
S2=$!; PIDS+=("$S2")
sleep 0.5
a0=$(ticks "$AGENT")
t0=$(date +%s%N)
read -r emitted denied < <(flood agent)
sleep 1
t1=$(date +%s%N)
a1=$(ticks "$AGENT")
got1=$(count_denials "$WORK/sub1"); got2=$(count_denials "$WORK/sub2")
secs=$(echo "scale=2; ($t1 - $t0) / 1000000000" | bc)
echo "  through the agent: denied $denied, emitted by the kernel $emitted; subscriber 1 got $got1, subscriber 2 got $got2"
echo "  lost: $((emitted - got1)) and $((emitted - got2)); agent CPU $((a1 - a0)) ticks in $secs s"
kill "$S1" "$S2" 2>/dev/null || true
kill -TERM "$AGENT"; wait "$AGENT" 2>/dev/null || true
for i in $(seq "$FLOODERS"); do "$PALISADE" rm -f "agent-$i" >/dev/null 2>&1 || true; done

"$PALISADE" events --follow --json >"$WORK/direct" 2>/dev/null &
D=$!; PIDS+=("$D")
sleep 0.5
d0=$(ticks "$D")
read -r emitted denied < <(flood direct)
sleep 1
d1=$(ticks "$D")
got=$(count_denials "$WORK/direct")
echo "  peer, the ring read directly (no agent, one reader): emitted $emitted, got $got, lost $((emitted - got)); reader CPU $((d1 - d0)) ticks"
kill "$D" 2>/dev/null || true
