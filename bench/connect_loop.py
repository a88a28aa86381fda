"""Times connect() in a loop; prints microseconds per call.

usage: connect_loop.py tcp|udp PORT COUNT
TCP connects to a listener on 127.0.0.1:PORT and closes; UDP only connects
(no packet is sent), so its figure is the syscall and the hooks alone.
"""
import socket
import struct
import sys
import time

proto, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
LINGER_RESET = struct.pack("ii", 1, 0)


def loop(n):
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:
            # Close with a reset: no TIME_WAIT piles up to slow later runs.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        s.connect(("127.0.0.1", port))
        s.close()


loop(max(count // 10, 100))  # warm-up
start = time.perf_counter()
loop(count)
print(f"{(time.perf_counter() - start) / count * 1e6:.2f}")
