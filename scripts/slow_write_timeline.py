#!/usr/bin/env python3
"""When writes were slow: one SET at a time against PORT for SECS seconds, beside other load.

    python3 scripts/slow_write_timeline.py PORT SECS [THRESHOLD_MS]

Prints p50/p99/max of its own writes, then every write slower than THRESHOLD_MS (default 80)
with its start as seconds into the run and as Unix time, to match against a profile recorded
with `perf record -a -g -e cpu-clock -k realtime` (whose `perf script` times are Unix times).
"""
import socket
import sys
import time

port, secs = int(sys.argv[1]), float(sys.argv[2])
threshold_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 80.0
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"*3\r\n$3\r\nSET\r\n$5\r\nprobe\r\n$1\r\nx\r\n"
t0 = time.time()
out = []
while time.time() - t0 < secs:
    a = time.time()
    s.sendall(req)
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(100)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
    out.append((a - t0, (time.time() - a) * 1000))
lat = sorted(x[1] for x in out)
print("n %d p50 %.1f p99 %.1f max %.1f ms" % (len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]))
for t, ms in out:
    if ms > threshold_ms:
        print("at %.2f s (unix %.3f): %.0f ms" % (t, t0 + t, ms))
