#!/usr/bin/env bash
# Rule-based classification: how long after its exec a host process is
# moved into its container, and how long it runs unclassified, with and
# without `hold`, beside the cost of the exec itself, in one run.
#
# One container (`sleep`), one agent with two rules, and a C launcher
# (bench/exec_probe.c) that forks, sets the child's uid and execs a probe
# that, from its first instruction, reads /proc/self/cgroup until it shows
# the container (the uid no rule names runs a probe that reads it once):
#   uid 1101  rule with hold = true   (stopped by the kernel until moved)
#   uid 1102  rule with hold = false  (runs while the agent moves it)
#   uid 1103  no rule                 (filtered out in the kernel: the peer)
# Figures, medians over ROUNDS interleaved rounds of RUNS execs each:
#   latency   exec (bpf_ktime_get_ns in the tracepoint) to the move done,
#             as the agent journals it (`latency_us` of `classified`)
#             (without hold: the window in which the process runs
#             unclassified, since it is runnable from its exec on)
#   saw host  how many probes' first read (in main, after the dynamic
#             loader) found them still outside the container
#   exec      fork+exec+exit of the probe as the launcher sees it, for
#             each uid, against fork+exec+exit of /bin/true with no agent
#             attached (the peer, measured between the agent's rounds)
#
# usage: bench/classify.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: classify.sh PALISADE_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-50}
ROUNDS=${ROUNDS:-6}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
chmod 755 "$WORK"
STATE="$WORK/state"
NAME=bench-cls-$$
AGENT=
cleanup() {
  [ -n "$AGENT" ] && kill -TERM "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  "$PALISADE" --root "$STATE" rm -f "$NAME" >/dev/null 2>&1 || true
  "$PALISADE" --root "$STATE" system prune >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cc -O2 -o "$WORK/exec_probe" "$HERE/exec_probe.c"
PROBE="$WORK/exec_probe"

"$PALISADE" --root "$STATE" run -d --name "$NAME" -- sleep 3600 >/dev/null
cat > "$WORK/agent.toml" <<TOML
[[classify]]
uid = 1101
hold = true
container = "$NAME"

[[classify]]
uid = 1102
container = "$NAME"
TOML

# The agent: `agent --config` where this build has it. Started and stopped
# each round, so that the no-agent peer is measured between the others.
start_agent() {
  : >"$WORK/agent.log"
  if "$PALISADE" agent --help 2>/dev/null | grep -q -- '--config'; then
    "$PALISADE" --root "$STATE" agent --metrics-addr 127.0.0.1:0 --config "$WORK/agent.toml" \
      >"$WORK/agent.out" 2>"$WORK/agent.log" &
  else
    "$PALISADE" --root "$STATE" debug classify --config "$WORK/agent.toml" \
      >"$WORK/agent.out" 2>"$WORK/agent.log" &
  fi
  AGENT=$!
  for _ in $(seq 400); do
    grep -q "classifying host processes at exec" "$WORK/agent.log" && return 0
    sleep 0.05
  done
  cat "$WORK/agent.log"
  exit 1
}
stop_agent() {
  kill -TERM "$AGENT"
  wait "$AGENT" || true
  AGENT=
}

start_agent
# Warm up (page cache, the container's cgroups).
for uid in 1101 1102; do "$PROBE" run 5 "$uid" "$PROBE" probe >/dev/null; done
"$PROBE" run 5 1103 "$PROBE" check >/dev/null
"$PROBE" run 5 1103 /bin/true >/dev/null
stop_agent
: >"$STATE/.journal/events"

for round in $(seq "$ROUNDS"); do
  "$PROBE" run "$RUNS" 1103 /bin/true | sed "s/^/true-noagent /" >>"$WORK/out"
  start_agent
  "$PROBE" run "$RUNS" 1101 "$PROBE" probe | sed "s/^/hold /" >>"$WORK/out"
  "$PROBE" run "$RUNS" 1102 "$PROBE" probe | sed "s/^/nohold /" >>"$WORK/out"
  "$PROBE" run "$RUNS" 1103 "$PROBE" check | sed "s/^/nomatch /" >>"$WORK/out"
  "$PROBE" run "$RUNS" 1103 /bin/true | sed "s/^/true /" >>"$WORK/out"
  stop_agent
done

python3 - "$WORK/out" "$STATE/.journal/events" <<'PY'
import json, statistics, sys
runs, probes = {}, {}
for line in open(sys.argv[1]):
    mode, kind, *vals = line.split()
    if kind == "run":
        runs.setdefault(mode, []).append(int(vals[0]) / 1000)
    else:
        probes.setdefault(mode, []).append((int(vals[0]), int(vals[1])))
lat = {True: [], False: []}
for line in open(sys.argv[2]):
    r = json.loads(line)
    if r.get("kind") == "classified":
        lat[r["held"]].append(r["latency_us"])
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
peer = statistics.median(runs["true-noagent"])
print(f"peer: fork+exec+exit of /bin/true, no agent: median {peer:.0f} us")
print()
print("| rule | moved | exec to moved, us: p50 / p90 / p99 | probe's main saw the host first | fork+exec+exit of the probe, us (p50) | vs the peer |")
print("|---|---|---|---|---|---|")
for mode, held, label in [("hold", True, "uid, hold = true"), ("nohold", False, "uid, hold = false"), ("nomatch", None, "none (uid no rule names)")]:
    ex = statistics.median(runs[mode])
    ps = probes.get(mode, [])
    moved = sum(1 for ns, _ in ps if ns >= 0)
    if held is None:
        print(f"| {label} | {moved}/{len(ps)} | - | - | {ex:.0f} | {ex / peer:.2f}x |")
        continue
    l = lat[held]
    outside = [ns / 1000 for ns, reads in ps if reads > 0]
    saw = f"{len(outside)}/{len(ps)} runs" + (f" (for up to {max(outside):.0f} us)" if outside else "")
    print(f"| {label} | {moved}/{len(ps)} | {q(l, .5)} / {q(l, .9)} / {q(l, .99)} | {saw} | {ex:.0f} | {ex / peer:.2f}x |")
t = statistics.median(runs["true"])
print()
print(f"/bin/true as a uid no rule names, agent attached: median {t:.0f} us, {t / peer:.3f}x the peer")
print("Without hold the unclassified window is the whole exec-to-moved latency: the process is runnable from its exec.")
PY
