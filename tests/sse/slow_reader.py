#!/usr/bin/python3
"""A client that opens an event stream and never reads it (until told to).
Usage: slow_reader.py HOST PORT PATH TOKEN GO_FILE
Connects with a tiny receive buffer, sends the request, waits for GO_FILE to
exist, then reads what the server sent until the connection ends: prints
"closed BYTES" when the server closed it within 20 s, "open BYTES" if not."""
import os, socket, sys, time

host, port, path, token, go = sys.argv[1:6]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, int(port)))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
print("sent", flush=True)
while not os.path.exists(go):
    time.sleep(0.1)
s.settimeout(20)
n = 0
try:
    while True:
        b = s.recv(65536)
        if not b:
            print(f"closed {n}", flush=True)
            break
        n += len(b)
except socket.timeout:
    print(f"open {n}", flush=True)
except ConnectionResetError:
    print(f"closed {n}", flush=True)
