#!/usr/bin/env bash
# Checkpoint and restore of one process holding N MiB of touched anonymous
# memory (tests/workloads/bench_mem.c), N = 64, 256, 1024, images on tmpfs
# (a fresh directory under /dev/shm), RUNS rounds each after a warm-up
# round. Each round times, as wall time:
#   dump      `palisade checkpoint --pid` (freeze, read, write the image,
#             end the original)
#   restore   `palisade restore` (read, authenticate and validate the
#             image, recreate the process with its pid, refill its
#             memory, let it go)
# beside the floors of the same bytes measured in that round
# (bench/copy_floor.c, timed inside, so only the copy counts):
#   write floor   a touched N MiB buffer written to a tmpfs file, write(2)
#   read floor    that file read into a fresh buffer, read(2), then touched
# and beside CRIU 4.2 (`criu dump -t PID` and `criu restore -d` of the same
# workload, its images on tmpfs too), in the same round, the two tools in
# alternating order from round to round. Every restored workload, palisade's
# and CRIU's, verifies every word of its memory before it exits; a failed
# check fails the benchmark.
#
# CRIU is the binary in ../shared/peers/criu (built from source: Debian's
# criu 3.17 does not run on this kernel), or $CRIU; the Debian libraries it
# needs are installed here if missing.
#
# usage: bench/checkpoint.sh PALISADE_BINARY   (as root; `cargo xtask bench` runs it)
set -euo pipefail
PALISADE=$(realpath "${1:?usage: checkpoint.sh PALISADE_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
SIZES=${SIZES:-64,256,1024}
WORK=$(mktemp -d /dev/shm/palisade-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# Images are signed and verified with a key of the bench's own (made by
# the first checkpoint), not the host's /etc/palisade/image.key.
export PALISADE_IMAGE_KEY="$WORK/image.key"

CRIU=${CRIU:-$HERE/../../shared/peers/criu}
if [ ! -x "$CRIU" ]; then
    echo "checkpoint bench: no CRIU binary at $CRIU (set CRIU=/path/to/criu 4.x)" >&2
    exit 1
fi
CRIU=$(realpath "$CRIU")
if ldd "$CRIU" | grep -q "not found"; then
    echo "checkpoint bench: installing the libraries $CRIU needs" >&2
    apt-get install -y -q libbsd0 libgnutls30 libnet1 libnftables1 libprotobuf-c1 libuuid1 libnl-3-200 >&2
fi
"$CRIU" check >/dev/null 2>&1 || { echo "checkpoint bench: '$CRIU check' fails on this machine:" >&2; "$CRIU" check >&2; exit 1; }

cc -O1 -static -pthread -o "$WORK/bench_mem" "$HERE/../tests/workloads/bench_mem.c"
cc -O2 -o "$WORK/copy_floor" "$HERE/copy_floor.c"
python3 "$HERE/checkpoint_runs.py" "$PALISADE" "$CRIU" "$WORK/bench_mem" "$WORK/copy_floor" "$WORK" "$SIZES" "$RUNS"
