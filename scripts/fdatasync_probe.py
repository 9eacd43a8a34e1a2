#!/usr/bin/env python3
"""Latency and CPU of write+fdatasync into a file that grows, into space reserved with
fallocate, and into space already written with zeros: the probe behind the WAL's zeroer.

    SZ=10000 python3 scripts/fdatasync_probe.py append|falloc|zero [N] [DIR]

SZ is the bytes per write (default 200), N the writes (default 3000), DIR where the file
goes (default the current directory: put it on the disk the data dirs use). Used for issue 12.
"""
import os
import resource
import sys
import time

mode = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
path = os.path.join(sys.argv[3] if len(sys.argv) > 3 else ".", "fdatasync_probe.dat")
buf = b"x" * int(os.environ.get("SZ", "200"))
size = n * len(buf) + 40960
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
try:
    if mode == "zero":
        os.write(fd, b"\0" * size)
        os.fsync(fd)
        os.lseek(fd, 0, 0)
    elif mode == "falloc":
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    elif mode != "append":
        sys.exit("mode is append, falloc or zero")
    time.sleep(1)  # let the set-up's writeback settle
    lat = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1e6
print(f"{mode:7s} {len(buf)} B: p50 {lat[n // 2] * 1e6:6.0f} us  p99 {lat[int(n * .99)] * 1e6:6.0f} us  cpu/op {cpu:5.1f} us")
