"""Times connect() in a loop; prints microseconds per call.

usage: connect_loop.py tcp|udp PORT COUNT
TCP connects to a listener on 127.0.0.1:PORT and closes; UDP only connects
(no packet is sent), so its figure is the syscall and the hooks alone.
"""
import socket
import sys
import time

proto, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM


def loop(n):
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.connect(("127.0.0.1", port))
        s.close()


loop(max(count // 10, 100))  # warm-up
start = time.perf_counter()
loop(count)
print(f"{(time.perf_counter() - start) / count * 1e6:.2f}")
