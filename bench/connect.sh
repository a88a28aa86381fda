#!/usr/bin/env bash
# Side-by-side cost of connect() policing, in one run on this machine:
#   host            no policy at all (the baseline every ratio is against)
#   nft N           the same loop in a cgroup of its own, policed by an
#                   nftables output chain of the same meaning as the
#                   palisade policy of N rules: N-1 `socket cgroupv2` rules
#                   accepting other /32s on port 443, one accepting the
#                   listener, then a drop for that cgroup (a straight
#                   translation: every packet walks the chain)
#   palisade N      inside a palisade container whose connect policy has N
#                   rules (the connect is allowed by a /32 rule; the others
#                   are distinct /32s so the LPM trie holds N+ entries)
# Each figure is the median of ROUNDS interleaved rounds, in microseconds
# per connect(); "x host" is the median of each round's ratio to the host
# baseline measured in that round.
#
# usage: bench/connect.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: connect.sh PALISADE_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-5}
UDP_COUNT=${UDP_COUNT:-200000}
TCP_COUNT=${TCP_COUNT:-100000}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
STATE="$WORK/state"
NFT_TABLE="palisade_bench_$$"
CG2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
NFT_CGROUP="palisade-bench-$$"
# nft finds the cgroup by its path under /sys/fs/cgroup (where a pure v2
# host mounts cgroup2; on a hybrid host that is `unified/...`).
NFT_PATH="${CG2#/sys/fs/cgroup}/$NFT_CGROUP"
NFT_PATH="${NFT_PATH#/}"
LISTENER_PID=

cleanup() {
  [ -n "$LISTENER_PID" ] && kill "$LISTENER_PID" 2>/dev/null || true
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  rmdir "$CG2/$NFT_CGROUP" 2>/dev/null || true
  # What the state root pins (programs, maps) goes with it.
  "$PALISADE" --root "$STATE" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$HERE/listener.py" "$PORT" &
LISTENER_PID=$!
sleep 0.3

# A policy of N rules: N-1 distinct /32s elsewhere in 10/8, the one that
# allows the benchmark's listener, and the default.
policy() {
  local n=$1 f="$WORK/policy-$1.toml"
  python3 - "$n" "$f" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
rules = [f'"allow tcp 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32:443"' for i in range(n - 1)]
rules += ['"allow 127.0.0.1/32"', '"deny any"']
open(path, "w").write("[network]\nconnect = [\n" + ",\n".join(rules) + "\n]\n")
PY
  echo "$f"
}

nft_rules() {
  local n=$1
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  {
    echo "table inet $NFT_TABLE {"
    echo "  chain out { type filter hook output priority 0; policy accept;"
    python3 -c "
n, cg = $n, '$NFT_PATH'
m = f'socket cgroupv2 level 1 \\\"{cg}\\\"'
for i in range(n - 1):
    print(f'    {m} ip daddr 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256} tcp dport 443 accept')
print(f'    {m} ip daddr 127.0.0.1 accept')
print(f'    {m} drop')
"
    echo "  }"
    echo "}"
  } > "$WORK/nft-$n.nft"
  nft -f "$WORK/nft-$n.nft"
}

measure() { # proto cmd-prefix...
  local proto=$1; shift
  local count=$UDP_COUNT; [ "$proto" = tcp ] && count=$TCP_COUNT
  # A linear chain of 10 000 rules makes each TCP connect ~50x slower:
  # fewer iterations give the same per-connect figure in bearable time.
  [ "$proto" = tcp ] && [ "${SLOW:-}" = 1 ] && count=$((count / 20))
  "$@" python3 "$HERE/connect_loop.py" "$proto" "$PORT" "$count"
}

# The loop in the nftables configurations runs in this cgroup.
mkdir "$CG2/$NFT_CGROUP"
in_cgroup() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG2/$NFT_CGROUP" "$@"; }

P10=$(policy 10); P10K=$(policy 10000)
configs=("host" "nft 10" "nft 10000" "palisade 0" "palisade 10" "palisade 10000")
for round in $(seq "$ROUNDS"); do
  for proto in udp tcp; do
    for cfg in "${configs[@]}"; do
      case "$cfg" in
        host) v=$(measure "$proto") ;;
        "nft 10000") nft_rules 10000; v=$(SLOW=1 measure "$proto" in_cgroup); nft delete table inet "$NFT_TABLE" ;;
        "nft "*) nft_rules "${cfg#nft }"; v=$(measure "$proto" in_cgroup); nft delete table inet "$NFT_TABLE" ;;
        "palisade 0") v=$(measure "$proto" "$PALISADE" --root "$STATE" run --name "bench-$$" --) ;;
        "palisade 10") v=$(measure "$proto" "$PALISADE" --root "$STATE" run --name "bench-$$" --policy "$P10" --) ;;
        "palisade 10000") v=$(measure "$proto" "$PALISADE" --root "$STATE" run --name "bench-$$" --policy "$P10K" --) ;;
      esac
      echo "$round|$proto|$cfg|$v" >> "$WORK/results"
    done
  done
done

# Medians of the figures, and of each round's ratio to that round's host run.
python3 - "$WORK/results" "${configs[@]}" <<'PY'
import statistics, sys
rows = [l.strip().split("|") for l in open(sys.argv[1])]
configs = sys.argv[2:]
val = {(r, p, c): float(v) for r, p, c, v in rows}
rounds = sorted({r for r, _, _, _ in rows})
print(f"\n{'config':<16} {'udp us/conn':>12} {'x host':>8} {'tcp us/conn':>12} {'x host':>8}")
for c in configs:
    cells = []
    for p in ("udp", "tcp"):
        figures = [val[(r, p, c)] for r in rounds]
        ratios = [val[(r, p, c)] / val[(r, p, "host")] for r in rounds]
        cells += [f"{statistics.median(figures):>12.2f}", f"{statistics.median(ratios):>8.2f}"]
    print(f"{c:<16} " + " ".join(cells))
PY
