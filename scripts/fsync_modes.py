#!/usr/bin/env python3
"""Time of a small write + fdatasync when the file grows, and when its space was reserved.

    python3 scripts/fsync_modes.py [DIR]

4,000 writes of 200 bytes each way, twice, in DIR (default /tmp): `append` (the file grows
with each write), `keep` (fallocate with KEEP_SIZE: blocks reserved, size still grows),
`falloc` (fallocate: blocks and size reserved, what the WAL does). Prints p50, p90 and mean in
microseconds. Used for issue 12 (why the WAL reserves its active segment's space).
"""
import ctypes, os, sys, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 1


def run(where, mode, n=4000, size=200):
    path = os.path.join(where, "fsync_modes." + mode)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    if mode == "keep":
        assert libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 << 20) == 0
    if mode == "falloc":
        os.posix_fallocate(fd, 0, 4 << 20)
    os.fsync(fd)
    times, offset = [], 0
    for _ in range(n):
        start = time.perf_counter()
        os.pwrite(fd, b"x" * size, offset)
        os.fdatasync(fd)
        times.append(time.perf_counter() - start)
        offset += size
    os.close(fd)
    os.unlink(path)
    times.sort()
    return f"{mode:7s} p50 {times[n // 2] * 1e6:4.0f} p90 {times[n * 9 // 10] * 1e6:4.0f} mean {sum(times) / n * 1e6:4.0f}"


where = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
for _ in range(2):
    for mode in ["append", "keep", "falloc"]:
        print(run(where, mode))
