#!/usr/bin/env bash
# Policy compile time against the number of rules. For N in 5k, 10k, 20k,
# 40k and 100k, a policy whose connect list holds N rules for distinct
# IPv4 hosts, then `deny any`:
#   check  `palisade policy apply NOSUCH FILE`: the file read, parsed,
#          validated and compiled, then refused (no such container): the
#          compile alone
#   run    `palisade run --policy FILE -- /bin/true`: everything to the
#          container's exit, or to the refusal of a list over the
#          per-container bound (16384 address prefixes per list: N >= 20k)
# and `run` of a policy with all three lists at the bound (49149 prefixes
# written to the kernel's map and deleted again).
# Goal: 100k rules in under a second, in both figures. Before the n log n
# compile (main at 369b624) they took 0.16, 0.61, 2.44, 9.8 and 65 s.
#
# usage: bench/policy_compile.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: policy_compile.sh PALISADE_BINARY}
RUNS=${RUNS:-5}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
STATE="$WORK/state"
PINS=$("$PALISADE" --root "$STATE" debug pin-dir)
cleanup() {
  rm -rf "$PINS" "$WORK"
}
trap cleanup EXIT

# N rules in the connect list (or, with a list of lists, N in each).
policy() {
  python3 - "$@" <<'PY'
import sys
n, lists = int(sys.argv[1]), sys.argv[2].split(",")
out = ["[network]"]
for l in lists:
    out.append(f"{l} = [")
    out += [f'  "allow tcp 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32:443",' for i in range(n)]
    out += ['  "deny any",', "]"]
print("\n".join(out))
PY
}

SIZES="5000 10000 20000 40000 100000"
for n in $SIZES; do policy "$n" connect > "$WORK/p$n.toml"; done
policy 16382 connect,bind,accept > "$WORK/bound.toml"
# The first run of a build loads and pins the programs: not part of a figure.
"$PALISADE" --root "$STATE" run -- /bin/true

args=()
for n in $SIZES; do
  args+=(-n "check $n" "$PALISADE --root $STATE policy apply bench-nosuch $WORK/p$n.toml")
done
for n in $SIZES; do
  args+=(-n "run $n" "$PALISADE --root $STATE run --policy $WORK/p$n.toml -- /bin/true")
done
args+=(-n "run 3x16384" "$PALISADE --root $STATE run --policy $WORK/bound.toml -- /bin/true")
hyperfine -N -i --warmup 1 --runs "$RUNS" --export-json "$WORK/compile.json" \
  --export-markdown "$WORK/compile.md" "${args[@]}" >/dev/null
cat "$WORK/compile.md"

python3 - "$WORK/compile.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
missed = [c for c in ("check 100000", "run 100000") if results[c]["mean"] >= 1.0]
for c in ("check 100000", "run 100000"):
    print(f"{c}: {results[c]['mean']:.3f} s (goal: under 1 s)")
if missed:
    sys.exit(f"goal missed: {', '.join(missed)}")
print("goal met: 100k rules in under a second")
PY
