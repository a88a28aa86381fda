#!/usr/bin/env bash
# palisade with many containers (issue 19): starts MAX (1000) detached
# `sleep` containers in steps of STEP (100) and, at 0 and after each step,
# records into target/bench/scale/scale.csv (and plots into scale.svg):
#
#   containers      running containers (besides the probe container)
#   start_ms        median of PROBES (5) more detached starts, each removed
#   rm_ms           median of their removals
#   used_mb         host memory in use (MemTotal - MemFree - Buffers -
#                   Cached - SReclaimable), and
#   shmem_mb        the host's Shmem, both from /proc/meminfo, and where
#                   the use is: anon_mb (AnonPages), slab_mb (SUnreclaim),
#                   pagetables_mb, kstack_mb (KernelStack), percpu_mb
#   agent_rss_mb    the agent's resident memory, and
#   agent_fds       its open descriptors
#   ps_ms           `palisade ps` (every container)
#   stats_one_ms    `palisade stats NAME` (one container; samples twice,
#                   0.5 s apart, like every `stats`)
#   stats_all_ms    `palisade stats` (every container)
#   show_ms         `palisade policy show NAME --json` (one container)
#   apply_ms        `palisade policy apply NAME FILE` (one container; two
#                   100-rule policies in turn)
#   events_ms       `palisade events --since 1h --json` (the journal of
#                   the run so far: two lines per container started)
#   scrape_ms       one GET of the agent's /metrics (every container)
#   connect_us      connect()+close to a loopback listener, inside the
#                   probe container under a 100-rule connect policy
#                   (median of 5 batches of 500), and
#   connect_host_us the same on the host, in no container (the peer)
#
# Every container runs under a connect policy of 20 address prefixes, so
# the rule map all containers share holds 20 entries per container, and
# the probe container under one of 100.
#
# Then the peer, once the host's memory has settled after the removals:
# the same number of `sleep` containers from runc (found on
# PATH; the busybox rootfs of `cargo xtask rootfs`), `runc run -d` with
# no monitor process at all, in steps of STEP, into runc.csv (containers,
# start_ms, used_mb, shmem_mb); the memory per container of each is
# printed side by side. Skipped, saying so, without runc or the rootfs.
#
# Everything is removed at the end (or on interruption). Needs root, and
# python3 with matplotlib for the plot (installed into target/bench/venv
# if missing; the CSV is written either way).
#
# usage: bench/scale.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: scale.sh PALISADE_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
MAX=${MAX:-1000}
STEP=${STEP:-100}
PROBES=${PROBES:-5}
OUT=${OUT:-$HERE/../target/bench/scale}
WORK=$(mktemp -d /tmp/palisade-bench-scale.XXXXXX)
export PALISADE_ROOT="$WORK/state"
AGENT_PID=

RUNC_ROOT="$WORK/runc"
RUNC_NAMES=()

# Starts runc container NAME (detached) and records it.
runc_start() {
  runc --root "$RUNC_ROOT" run -d --bundle "$BUNDLE" "$1" </dev/null >/dev/null
  RUNC_NAMES+=("$1")
}

# Removes runc container NAME: its process killed by pid (if it is still
# that container's), then runc's record and cgroups; any cgroup directory
# runc leaves (a removal that raced the process's exit) is removed too.
runc_remove() {
  local pid
  pid=$(runc --root "$RUNC_ROOT" state "$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null || true)
  if [ -n "$pid" ] && grep -q ":/$1\$" "/proc/$pid/cgroup" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  runc --root "$RUNC_ROOT" delete -f "$1" >/dev/null 2>&1 || true
  local dir
  for dir in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
    [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
  done
}

cleanup() {
  local name
  for name in "${RUNC_NAMES[@]}"; do runc_remove "$name"; done
  [ -z "$AGENT_PID" ] || { kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; }
  for name in $("$PALISADE" ps --json 2>/dev/null | python3 -c 'import json, sys; print(" ".join(c["name"] for c in json.load(sys.stdin)))' 2>/dev/null); do
    "$PALISADE" rm -f "$name" >/dev/null 2>&1 || true
  done
  "$PALISADE" --root "$PALISADE_ROOT" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

# Milliseconds (3 decimals) that a command takes, its output discarded.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo "scale=3; ($t1 - $t0) / 1000000" | bc
}
# Waits until the host's memory in use stops falling (the kernel frees a
# removed container's cgroups and namespaces some time after it goes):
# until it moves less than 2 MB in 10 s, at most 5 minutes.
settle() {
  local before after
  for _ in $(seq 30); do
    before=$(used_mb | cut -d, -f1)
    sleep 10
    after=$(used_mb | cut -d, -f1)
    echo "$before $after" | awk '{ exit !(($1 - $2) < 2 && ($2 - $1) < 2) }' && return 0
  done
  echo "scale: memory still moving after 5 minutes ($before -> $after MB)" >&2
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# MB: in use, Shmem, then where the use is: anonymous pages, unreclaimable
# slab, page tables, kernel stacks, per-CPU allocations.
used_mb() {
  awk '/^MemTotal:/{t=$2} /^MemFree:/{f=$2} /^Buffers:/{b=$2} /^Cached:/{c=$2} /^SReclaimable:/{s=$2} /^Shmem:/{sh=$2}
       /^AnonPages:/{a=$2} /^SUnreclaim:/{u=$2} /^PageTables:/{p=$2} /^KernelStack:/{k=$2} /^Percpu:/{pc=$2}
       END { printf "%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f\n", (t - f - b - c - s) / 1024, sh / 1024, a / 1024, u / 1024, p / 1024, k / 1024, pc / 1024 }' /proc/meminfo
}

# connect()+close to a listener of its own on 127.0.0.1: median µs of 5
# batches of 500.
CONNECT='
import socket, statistics, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(512)
def serve():
    while True:
        c, _ = srv.accept(); c.close()
threading.Thread(target=serve, daemon=True).start()
port, batches = srv.getsockname()[1], []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port)); s.close()
    batches.append((time.perf_counter() - t) / 500 * 1e6)
print(f"{statistics.median(batches):.1f}")
'

# A connect policy of N rules that do not match (10.B.x.0/24 and up, port
# 443), then loopback: `connect_policy N B > FILE`.
connect_policy() {
  local i
  echo "[network]"
  echo "connect = ["
  for i in $(seq "$1"); do echo "  \"allow tcp 10.$(($2 + i / 250)).$((i % 250)).0/24:443\","; done
  echo "  \"allow tcp 127.0.0.1/32\","
  echo "  \"deny any\","
  echo "]"
}
# The probe container's: 100 rules.
POLICY="$WORK/policy.toml"
connect_policy 99 0 >"$POLICY"
# The same with the first rule changed, for `policy apply`.
POLICY2="$WORK/policy2.toml"
sed 's|10\.0\.1\.0/24:443|10.0.1.0/24:8443|' "$POLICY" >"$POLICY2"
# Every other container's: 20 rules.
SMALL="$WORK/small.toml"
connect_policy 19 200 >"$SMALL"
"$PALISADE" run -d --name probe --policy "$POLICY" -- sleep 1000000 >/dev/null

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PALISADE" agent --metrics-addr "127.0.0.1:$PORT" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do grep -q "serving metrics" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "serving metrics" "$WORK/agent.log" || { cat "$WORK/agent.log" >&2; exit 1; }

CSV="$OUT/scale.csv"
echo "containers,start_ms,rm_ms,used_mb,shmem_mb,anon_mb,slab_mb,pagetables_mb,kstack_mb,percpu_mb,agent_rss_mb,agent_fds,ps_ms,stats_one_ms,stats_all_ms,show_ms,apply_ms,events_ms,scrape_ms,connect_us,connect_host_us" >"$CSV"

measure() { # N
  local starts=() rms=() k
  for k in $(seq "$PROBES"); do
    starts+=("$(ms "$PALISADE" run -d --name "extra$k" --policy "$SMALL" -- sleep 1000000)")
  done
  for k in $(seq "$PROBES"); do
    rms+=("$(ms "$PALISADE" rm -f "extra$k")")
  done
  local start rm mem
  start=$(printf '%s\n' "${starts[@]}" | median)
  rm=$(printf '%s\n' "${rms[@]}" | median)
  sync
  mem=$(used_mb)
  local line="$1,$start,$rm,$mem"
  line+=",$(awk '/^VmRSS:/{printf "%.1f", $2 / 1024}' "/proc/$AGENT_PID/status")"
  line+=",$(ls "/proc/$AGENT_PID/fd" | wc -l)"
  line+=",$(ms "$PALISADE" ps)"
  line+=",$(ms "$PALISADE" stats probe)"
  line+=",$(ms "$PALISADE" stats)"
  line+=",$(ms "$PALISADE" policy show probe --json)"
  APPLIED=$([ "${APPLIED:-}" = "$POLICY2" ] && echo "$POLICY" || echo "$POLICY2")
  line+=",$(ms "$PALISADE" policy apply probe "$APPLIED")"
  line+=",$(ms "$PALISADE" events --since 1h --json)"
  line+=",$(ms curl -sf "http://127.0.0.1:$PORT/metrics")"
  line+=",$("$PALISADE" exec probe -- python3 -c "$CONNECT")"
  line+=",$(python3 -c "$CONNECT")"
  echo "$line" >>"$CSV"
  echo "$line"
}

echo "containers,start_ms,rm_ms,used_mb,shmem_mb,anon_mb,slab_mb,pagetables_mb,kstack_mb,percpu_mb,agent_rss_mb,agent_fds,ps_ms,stats_one_ms,stats_all_ms,show_ms,apply_ms,events_ms,scrape_ms,connect_us,connect_host_us"
n=0
settle
measure 0
while [ "$n" -lt "$MAX" ]; do
  for i in $(seq $((n + 1)) $((n + STEP))); do
    "$PALISADE" run -d --name "c$i" --policy "$SMALL" -- sleep 1000000 >/dev/null
  done
  n=$((n + STEP))
  measure "$n"
done

# The peer: runc containers, no monitor, no policy.
RUNC_CSV="$OUT/runc.csv"
ROOTFS="$HERE/../target/rootfs/busybox"
rm -f "$RUNC_CSV"
for name in $("$PALISADE" ps --json | python3 -c 'import json, sys; print(" ".join(c["name"] for c in json.load(sys.stdin)))'); do
  "$PALISADE" rm -f "$name" >/dev/null
done
if command -v runc >/dev/null && [ -x "$ROOTFS/bin/busybox" ]; then
  BUNDLE="$WORK/bundle"
  mkdir -p "$BUNDLE"
  (cd "$BUNDLE" && runc spec)
  python3 - "$BUNDLE/config.json" "$(realpath "$ROOTFS")" <<'PY'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["root"] = {"path": rootfs, "readonly": True}
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sleep", "1000000"]
json.dump(spec, open(path, "w"), indent=2)
PY
  echo "containers,start_ms,used_mb,shmem_mb" >"$RUNC_CSV"
  settle
  runc_row() { # N
    local starts=() k
    for k in $(seq "$PROBES"); do
      starts+=("$(ms runc_start "rextra$k")")
      RUNC_NAMES+=("rextra$k") # (recorded in the subshell only)
    done
    for k in $(seq "$PROBES"); do runc_remove "rextra$k"; done
    sync
    local line
    line="$1,$(printf '%s\n' "${starts[@]}" | median),$(used_mb | cut -d, -f1,2)"
    echo "$line" >>"$RUNC_CSV"
    echo "runc: $line"
  }
  n=0
  runc_row 0
  while [ "$n" -lt "$MAX" ]; do
    for i in $(seq $((n + 1)) $((n + STEP))); do
      runc_start "r$i"
    done
    n=$((n + STEP))
    runc_row "$n"
  done
else
  echo "scale: SKIPPED the runc peer (no runc on PATH or no rootfs at $ROOTFS: cargo xtask rootfs)" >&2
fi

# Per added container, from the first row to the last, beside the peer.
python3 - "$CSV" "$RUNC_CSV" <<'PY'
import csv, os, sys
def per_container(path, keys):
    rows = list(csv.DictReader(open(path)))
    a, b = rows[0], rows[-1]
    n = int(b["containers"]) - int(a["containers"])
    return {k: (float(b[k]) - float(a[k])) * 1024 / n for k in keys}
keys = ("used_mb", "shmem_mb", "anon_mb", "slab_mb", "pagetables_mb", "kstack_mb", "percpu_mb")
ours = per_container(sys.argv[1], keys)
peer = per_container(sys.argv[2], keys[:2]) if os.path.exists(sys.argv[2]) else {}
for key in keys:
    line = f"{key[:-3]} per added container: palisade {ours[key]:.0f} KB"
    if key in peer:
        line += f", runc {peer[key]:.0f} KB, palisade - runc {ours[key] - peer[key]:.0f} KB"
    print(line)
PY

VENV="$HERE/../target/bench/venv"
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q matplotlib || true
fi
if "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  if [ -f "$RUNC_CSV" ]; then
    "$VENV/bin/python" "$HERE/scale_plot.py" "$CSV" "$OUT/scale.svg" "$RUNC_CSV"
  else
    "$VENV/bin/python" "$HERE/scale_plot.py" "$CSV" "$OUT/scale.svg"
  fi
  echo "plot: $OUT/scale.svg"
else
  echo "scale: no matplotlib, no plot (the CSV is $CSV)" >&2
fi
