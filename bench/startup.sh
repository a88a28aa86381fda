#!/usr/bin/env bash
# Start-to-exit latency of /bin/true in a full container, side by side, in
# one hyperfine run:
#   unshare   `unshare -pmuif --mount-proc /bin/true`: namespaces only, the floor
#   runc      `runc run` on an OCI bundle of the same busybox rootfs
#   palisade  `palisade run --rootfs` of that rootfs: pid, mount, uts, ipc,
#             cgroup and time namespaces, cgroups on every hierarchy, the
#             connect policy attached (programs pinned: the first run of a
#             build loads them, every later run only attaches), the
#             hardening (caps, seccomp, no_new_privs, the re-exec from a
#             private read-only overlay of its own binary)
#   palisade-ro  the same binary on a read-only bind mount, where it runs
#             in place, with no re-exec
#
# usage: [BASELINE=OTHER_PALISADE] bench/startup.sh PALISADE_BINARY ROOTFS
#        (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=${1:?usage: startup.sh PALISADE_BINARY ROOTFS}
ROOTFS=${2:?usage: startup.sh PALISADE_BINARY ROOTFS}
RUNS=${RUNS:-50}
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
STATE="$WORK/state"
cleanup() {
  umount "$WORK/ro" 2>/dev/null || true
  # What the state root pins (programs, maps) goes with it.
  for root in "$STATE" "$WORK/state-net"; do
    "$PALISADE" --root "$root" system prune >/dev/null 2>&1 || true
  done
  if [ -n "${BASELINE:-}" ]; then
    "$BASELINE" --root "$WORK/state-base" system prune >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

printf '[network]\nconnect = ["allow tcp 127.0.0.1/32", "deny any"]\n' > "$WORK/policy.toml"
mkdir -p "$WORK/bundle"
cp -a "$ROOTFS" "$WORK/bundle/rootfs"
(cd "$WORK/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open("config.json", "w"), indent=1)
PY
)
# palisade installed on a read-only mount (as on a read-only /usr): it
# needs no re-exec to be safe from /proc/PID/exe writes.
mkdir -p "$WORK/ro"
cp "$PALISADE" "$WORK/ro/palisade"
mount --bind "$WORK/ro" "$WORK/ro"
mount -o remount,bind,ro "$WORK/ro"

# First palisade run of this build pins the programs; not part of the figure.
"$PALISADE" --root "$STATE" run --rootfs "$ROOTFS" --policy "$WORK/policy.toml" -- /bin/true

hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$WORK/startup.md" \
  -n unshare "unshare -pmuif --mount-proc /bin/true" \
  -n runc "runc --root $WORK/runc run -b $WORK/bundle bench-$$" \
  -n palisade "$PALISADE --root $STATE run --name bench-$$ --rootfs $ROOTFS --policy $WORK/policy.toml -- /bin/true" \
  -n palisade-ro "$WORK/ro/palisade --root $STATE run --name bench-ro-$$ --rootfs $ROOTFS --policy $WORK/policy.toml -- /bin/true"
cat "$WORK/startup.md"

# The same on a pure cgroup v2 layout, as palisade sees one in a private
# mount namespace where only cgroup2 is mounted at /sys/fs/cgroup: the
# process is born in its cgroup (CLONE_INTO_CGROUP) and nothing migrates.
echo
echo "pure cgroup v2 layout (simulated in a private mount namespace):"
V2STATE="$WORK/state-v2"
unshare --mount --propagation private bash -c "
  set -e
  umount -l /sys/fs/cgroup
  mount -t cgroup2 none /sys/fs/cgroup
  '$PALISADE' --root '$V2STATE' run --rootfs '$ROOTFS' -- /bin/true
  hyperfine -N --warmup 5 --runs $RUNS --export-markdown '$WORK/startup-v2.md' \
    -n unshare 'unshare -pmuif --mount-proc /bin/true' \
    -n palisade '$PALISADE --root $V2STATE run --name bench-v2-$$ --rootfs $ROOTFS --policy $WORK/policy.toml -- /bin/true' \
    -n palisade-ro '$WORK/ro/palisade --root $V2STATE run --name bench-v2ro-$$ --rootfs $ROOTFS --policy $WORK/policy.toml -- /bin/true' >/dev/null
"
cat "$WORK/startup-v2.md"
"$PALISADE" --root "$V2STATE" system prune >/dev/null

# Networked starts: --net bridge (a veth pair on palisade0, made over
# rtnetlink) and the same with an HTB class (--egress-rate). With
# BASELINE=/path/to/another/palisade, that build runs the same commands in
# the same hyperfine run, interleaved, to tell a regression from noise.
echo
echo "networked starts:"
NETSTATE="$WORK/state-net"
BASESTATE="$WORK/state-base"
net_cmds=(
  -n bridge "$PALISADE --root $NETSTATE run --net bridge --rootfs $ROOTFS -- /bin/true"
  -n bridge-shaped "$PALISADE --root $NETSTATE run --net bridge --egress-rate 10mbit --rootfs $ROOTFS -- /bin/true"
)
"$PALISADE" --root "$NETSTATE" run --net bridge --rootfs "$ROOTFS" -- /bin/true
if [ -n "${BASELINE:-}" ]; then
  "$BASELINE" --root "$BASESTATE" run --net bridge --rootfs "$ROOTFS" -- /bin/true
  net_cmds+=(
    -n baseline-bridge "$BASELINE --root $BASESTATE run --net bridge --rootfs $ROOTFS -- /bin/true"
    -n baseline-bridge-shaped "$BASELINE --root $BASESTATE run --net bridge --egress-rate 10mbit --rootfs $ROOTFS -- /bin/true"
  )
fi
hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/startup-net.md" "${net_cmds[@]}" >/dev/null
cat "$WORK/startup-net.md"
"$PALISADE" --root "$NETSTATE" system prune >/dev/null
if [ -n "${BASELINE:-}" ]; then
  "$BASELINE" --root "$BASESTATE" system prune >/dev/null
fi
