"""Accepts and closes TCP connections on 127.0.0.1:PORT until killed."""
import socket
import sys

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(4096)
while True:
    conn, _ = srv.accept()
    conn.close()
