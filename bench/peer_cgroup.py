#!/usr/bin/env python3
"""Bare cgroups mirroring a process's: the peer a container's own cost is
measured against (no BPF program, no namespace, just the kernel's cgroups
at the same depth in the same hierarchies).

  peer_cgroup.py make PID TOP    for each hierarchy PID is in below its
                                 root, makes TOP/<PID's leaf name> at the
                                 hierarchy's root; prints the leaves
  peer_cgroup.py remove FILE     removes the leaves FILE lists, and their
                                 parents (empty, or left alone)
  peer_cgroup.py own PID         prints PID's own cgroup directories (to
                                 join them: the container's, for nsenter)
"""
import os
import sys


def mounts():
    """Each controller's (or name=…) v1 mount point, and "" for cgroup2."""
    found = {}
    for line in open("/proc/self/mountinfo"):
        left, right = line.split(" - ")
        fstype, _, opts = right.split()[:3]
        point = left.split()[4]
        if fstype == "cgroup2":
            found.setdefault("", point)
        elif fstype == "cgroup":
            for opt in opts.split(","):
                found.setdefault(opt, point)
    return found


def own(pid):
    """(mount point, path) of each hierarchy PID is in below its root."""
    points = mounts()
    for line in open(f"/proc/{pid}/cgroup"):
        _, controllers, path = line.strip().split(":", 2)
        if path != "/":
            yield points[controllers.split(",")[0]], path


def make(pid, top):
    for base, path in own(pid):
        leaf = os.path.join(base, top, os.path.basename(path))
        for d in (os.path.dirname(leaf), leaf):
            os.makedirs(d, exist_ok=True)
            # A v1 cpuset cgroup starts with no CPUs or memory nodes.
            for f in ("cpuset.cpus", "cpuset.mems"):
                mine = os.path.join(d, f)
                if os.path.exists(mine) and not open(mine).read().strip():
                    with open(mine, "w") as out:
                        out.write(open(os.path.join(os.path.dirname(d), f)).read())
        print(leaf)


def remove(listing):
    for leaf in open(listing).read().split():
        for d in (leaf, os.path.dirname(leaf)):
            try:
                os.rmdir(d)
            except OSError:
                pass


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "remove":
        remove(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "own":
        for base, path in own(sys.argv[2]):
            print(base + path)
    else:
        sys.exit(__doc__)
