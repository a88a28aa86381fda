#!/usr/bin/env bash
# Start-to-exit of /bin/true through podman, with runc, crun and palisade
# as its OCI runtime, side by side in one hyperfine run on one private
# podman storage:
#   podman run --rm --network none IMAGE /bin/true
# (podman, conmon, the runtime's create/start/delete, podman's cleanup).
# Each runtime keeps its state in a root of its own under the work dir,
# given by a one-line sh wrapper named like the runtime (podman does not
# pass --runtime-flag to its cleanup process; the wrapper costs the three
# alike). A palisade that cannot run the container under podman is
# reported and left out; runc and crun are still timed.
#
# usage: bench/oci.sh PALISADE_BINARY ROOTFS   (as root; RUNS=20 by default)
set -euo pipefail
PALISADE=${1:?usage: oci.sh PALISADE_BINARY ROOTFS}
ROOTFS=${2:?usage: oci.sh PALISADE_BINARY ROOTFS}
RUNS=${RUNS:-20}
PALISADE=$(realpath "$PALISADE")
ROOTFS=$(realpath "$ROOTFS")
WORK=$(mktemp -d /tmp/palisade-bench-oci.XXXXXX)
# The cgroup parent of every container and conmon of this run.
CGROUP=${WORK##*/}
IMAGE=localhost/palisade-bench/busybox:latest

export CONTAINERS_CONF=$WORK/containers.conf
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf
export CONTAINERS_REGISTRIES_CONF=$WORK/registries.conf
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run" --tmpdir "$WORK/tmp"
  --cgroup-manager cgroupfs --events-backend file)

cleanup() {
  set +e
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1
  "${PODMAN[@]}" rmi -af >/dev/null 2>&1
  "$PALISADE" --root "$WORK/state/palisade" system prune >/dev/null 2>&1
  # conmons (or anything else) still naming the work dir: ours, by pid.
  for pid in $(pgrep -f "$WORK"); do
    [ "$pid" != $$ ] && kill -9 "$pid" 2>/dev/null
  done
  for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$hierarchy$CGROUP" ] && find "$hierarchy$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK"/{storage,run,tmp,networks}
# conmon writes stray files (an `oom` marker) in its cwd.
cd "$WORK"
cat > "$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$WORK/run"
graphroot = "$WORK/storage"
EOF
echo 'unqualified-search-registries = []' > "$WORK/registries.conf"
ulimits=""
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if (( (0x$capeff >> 24 & 1) == 0 )); then
  # No CAP_SYS_RESOURCE: no runtime may raise podman's default RLIMIT_NOFILE.
  nofile=$(ulimit -Hn)
  ulimits="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=32768:32768\"]"
fi
cat > "$CONTAINERS_CONF" <<EOF
[containers]
$ulimits
[engine]
lock_type = "file"
runtime_supports_json = ["crun", "runc", "palisade"]
[network]
network_config_dir = "$WORK/networks"
EOF

# runtime NAME BINARY [hide]: a wrapper named NAME that gives BINARY its
# own root; with `hide`, it runs BINARY in a mount namespace where the
# cgroup2 hierarchy of a hybrid host is not mounted.
runtime() {
  local dir="$WORK/bin/$3$1"
  mkdir -p "$dir" "$WORK/state/$3$1"
  {
    echo '#!/bin/sh'
    if [ "${3:-}" = hide ]; then
      echo 'if [ -z "$BENCH_CGROUP2_HIDDEN" ]; then'
      echo '  BENCH_CGROUP2_HIDDEN=1 exec unshare -m --propagation slave "$0" "$@"'
      echo 'fi'
      echo 'umount -l /sys/fs/cgroup/unified || exit 1'
    fi
    echo "case \"\$1\" in --root|--root=*) exec '$2' \"\$@\" ;; esac"
    echo "exec '$2' --root='$WORK/state/$3$1' \"\$@\""
  } > "$dir/$1"
  chmod +x "$dir/$1"
  echo "$dir/$1"
}

"${PODMAN[@]}" import -q - "$IMAGE" < <(tar -C "$ROOTFS" --numeric-owner -cf - .) >/dev/null
RUN="run --rm --pull never --network none --cgroup-parent /$CGROUP $IMAGE /bin/true"

# crun 1.8 refuses a hybrid layout whose cgroup2 holds controllers ("drop
# all controllers from cgroupv2"): there it runs with cgroup2 hidden, and
# runc is timed the same way too, to show what the hiding costs.
rows=("runc runc" "crun crun" "palisade palisade")
if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  rows=("runc runc" "runc runc hide" "crun crun hide" "palisade palisade")
fi

cmds=()
for row in "${rows[@]}"; do
  read -r name rt hide <<< "$row"
  case $rt in
    palisade) bin=$PALISADE ;;
    *) bin=$(command -v "$rt") ;;
  esac
  label=$name${hide:+ (cgroup2 hidden)}
  wrapper=$(runtime "$rt" "$bin" "${hide:-}")
  # shellcheck disable=SC2086 # RUN is split on purpose
  if err=$("${PODMAN[@]}" --runtime "$wrapper" $RUN 2>&1); then
    cmds+=(-n "$label" "${PODMAN[*]} --runtime $wrapper $RUN")
  else
    echo "$label cannot run a container under podman; left out:" >&2
    echo "$err" | sed 's/^/  /' >&2
  fi
done
if [ ${#cmds[@]} -eq 0 ]; then
  echo "no runtime ran a container" >&2
  exit 1
fi

hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/oci.md" \
  --export-json "$WORK/oci.json" "${cmds[@]}" >/dev/null
echo "podman run --rm --network none IMAGE /bin/true ($RUNS runs, 3 warm-ups):"
cat "$WORK/oci.md"
python3 - "$WORK/oci.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
p = results.get("palisade")
if p is None:
    print("\npalisade: not measured (see above)")
    sys.exit()
def ratio(peer):
    r = results[peer]
    return f"mean {p['mean'] / r['mean']:.2f}, min {p['min'] / r['min']:.2f}"
print()
for peer in ("runc", "crun", "crun (cgroup2 hidden)"):
    if peer in results:
        print(f"palisade / {peer}: {ratio(peer)}")
hidden = results.get("runc (cgroup2 hidden)")
if hidden and "crun (cgroup2 hidden)" in results:
    # crun as it would be without the hiding, by what the hiding costs runc.
    c = results["crun (cgroup2 hidden)"]["mean"] * results["runc"]["mean"] / hidden["mean"]
    print(f"palisade / crun (hiding cost of runc taken out): mean {p['mean'] / c:.2f}")
PY
