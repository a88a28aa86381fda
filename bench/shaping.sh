#!/usr/bin/env bash
# Outbound rate limiting, side by side, in one run on this machine.
#
# Accuracy, at 1, 10, 100 and 1000 Mbit/s, of TCP goodput (iperf3, one
# flow, 12 s, the first 2 s a warm-up) as the receiving server counts it:
#   tbf         `tc qdisc add … tbf rate R` by hand on the sending end of a
#               veth pair into a network namespace made for the benchmark
#   htb         `tc … htb` class of rate R by hand on the same veth
#   palisade-br a palisade container on --net bridge with --egress-rate R
#               (its eth0 is a veth too), to the bridge address 10.88.0.1
#   palisade-lo a palisade container on --net host with --egress-rate R,
#               to a server on 127.0.0.1
# Columns: average % of R, lowest and highest second %, Mbit/s.
# tbf and htb count R on the link (Ethernet, IP and TCP headers included),
# so their goodput is ~95.6 % of R on a 1500-byte MTU; palisade counts R as
# payload (see docs/policy.md), so ~100 % is its target.
#
# Tax on an unlimited container: iperf3 over loopback, a host process vs a
# --net host palisade container with every program attached and no rate,
# ROUNDS interleaved rounds of THROUGHPUT_SECONDS, the median Gbit/s of
# each and the median of the rounds' ratios.
#
# usage: bench/shaping.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: shaping.sh PALISADE_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
RATES=${RATES:-"1 10 100 1000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-12}
ROUNDS=${ROUNDS:-7}
THROUGHPUT_SECONDS=${THROUGHPUT_SECONDS:-5}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
export PALISADE_ROOT="$WORK/state"
NS="plbench$$"
VETH="plb$$"
HOST_ADDR=10.211.$(( $$ % 250 )).1
NS_ADDR=10.211.$(( $$ % 250 )).2
SERVER_PID=

cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  for c in bench-br bench-lo bench-free; do "$PALISADE" rm -f "$c" >/dev/null 2>&1 || true; done
  ip link del "$VETH" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  # What the state root pins (programs, maps) goes with it.
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# iperf3 server on $1 (one test), its JSON report into $2; once it
# listens, runs the client command given after them once.
measure() {
  local addr=$1 report=$2; shift 2
  local port; port=$(free_port)
  iperf3 -s -1 -J -B "$addr" -p "$port" >"$report" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.05
  done
  "$@" -c "$addr" -p "$port" -t "$SECONDS_PER_RUN" >/dev/null 2>&1 \
    || echo "warning: the iperf3 client failed ($*)" >&2
  wait "$SERVER_PID" || true
  SERVER_PID=
}

ip netns add "$NS"
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip addr add "$HOST_ADDR/24" dev "$VETH"
ip link set "$VETH" up
ip -n "$NS" addr add "$NS_ADDR/24" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up

"$PALISADE" run -d --name bench-br --net bridge -- sleep 100000 >/dev/null
"$PALISADE" run -d --name bench-lo --net host -- sleep 100000 >/dev/null
empty="$WORK/empty.toml"
printf '[network]\n' >"$empty"

printf '%-12s %6s %9s %9s %9s %10s\n' config Mbit avg% min-s% max-s% Mbit/s
for rate in $RATES; do
  burst=$(( rate * 1000000 / 8 / 500 )); [ "$burst" -lt 65536 ] && burst=65536
  for config in tbf htb palisade-br palisade-lo; do
    report="$WORK/$config-$rate.json"
    case $config in
      tbf)
        ip netns exec "$NS" tc qdisc replace dev eth0 root tbf rate "${rate}mbit" burst "$burst" latency 50ms
        measure "$HOST_ADDR" "$report" ip netns exec "$NS" iperf3
        ip netns exec "$NS" tc qdisc del dev eth0 root ;;
      htb)
        ip netns exec "$NS" tc qdisc replace dev eth0 root handle 1: htb default 1
        ip netns exec "$NS" tc class add dev eth0 parent 1: classid 1:1 htb rate "${rate}mbit" burst "$burst" cburst "$burst" quantum 200000
        measure "$HOST_ADDR" "$report" ip netns exec "$NS" iperf3
        ip netns exec "$NS" tc qdisc del dev eth0 root ;;
      palisade-br)
        printf '[network]\negress_rate = "%smbit"\n' "$rate" >"$WORK/rate.toml"
        "$PALISADE" policy apply bench-br "$WORK/rate.toml"
        measure 10.88.0.1 "$report" "$PALISADE" exec bench-br -- iperf3
        "$PALISADE" policy apply bench-br "$empty" ;;
      palisade-lo)
        printf '[network]\negress_rate = "%smbit"\n' "$rate" >"$WORK/rate.toml"
        "$PALISADE" policy apply bench-lo "$WORK/rate.toml"
        measure 127.0.0.1 "$report" "$PALISADE" exec bench-lo -- iperf3
        "$PALISADE" policy apply bench-lo "$empty" ;;
    esac
    read -r avg lo hi mbit < <(python3 "$HERE/iperf_summary.py" "$report" "$rate")
    printf '%-12s %6s %9s %9s %9s %10s\n' "$config" "$rate" "$avg" "$lo" "$hi" "$mbit"
  done
done

echo
echo "unlimited, iperf3 over loopback, ${ROUNDS} interleaved rounds of ${THROUGHPUT_SECONDS} s (median Gbit/s):"
host=(); pal=(); ratios=()
for _ in $(seq "$ROUNDS"); do
  report="$WORK/free-host.json"
  SECONDS_PER_RUN=$THROUGHPUT_SECONDS measure 127.0.0.1 "$report" iperf3
  h=$(python3 "$HERE/iperf_summary.py" "$report" 1000 1 | awk '{print $4 / 1000}')
  report="$WORK/free-pal.json"
  SECONDS_PER_RUN=$THROUGHPUT_SECONDS measure 127.0.0.1 "$report" "$PALISADE" exec bench-lo -- iperf3
  p=$(python3 "$HERE/iperf_summary.py" "$report" 1000 1 | awk '{print $4 / 1000}')
  host+=("$h"); pal+=("$p"); ratios+=("$(echo "scale=3; $p / $h" | bc)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-34s %8s Gbit/s  (rounds: %s)\n' "host process, no programs" "$(median "${host[@]}")" "${host[*]}"
printf '%-34s %8s Gbit/s  (rounds: %s)\n' "palisade --net host, no rate" "$(median "${pal[@]}")" "${pal[*]}"
printf '%-34s %8s  (rounds: %s)\n' "median ratio palisade / host" "$(median "${ratios[@]}")" "${ratios[*]}"
