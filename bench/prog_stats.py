#!/usr/bin/env python3
"""A pinned BPF program's run count and total run time, as the kernel
keeps them while `kernel.bpf_stats_enabled` is 1 (fdinfo's run_cnt and
run_time_ns).

  prog_stats.py PIN    prints "RUN_TIME_NS RUN_CNT"
"""
import ctypes
import os
import sys

SYS_BPF = 321  # x86_64
BPF_OBJ_GET = 7


class ObjGet(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("rest", ctypes.c_uint64 * 8),
    ]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    libc = ctypes.CDLL(None, use_errno=True)
    path = ctypes.create_string_buffer(sys.argv[1].encode())
    attr = ObjGet(pathname=ctypes.cast(path, ctypes.c_void_p).value)
    fd = libc.syscall(SYS_BPF, BPF_OBJ_GET, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        sys.exit(f"{sys.argv[1]}: BPF_OBJ_GET: {os.strerror(ctypes.get_errno())}")
    fields = {}
    for line in open(f"/proc/self/fdinfo/{fd}"):
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    print(fields.get("run_time_ns", "0"), fields.get("run_cnt", "0"))


if __name__ == "__main__":
    main()
