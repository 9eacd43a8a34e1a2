#!/usr/bin/env python3
"""Time of a small write + fdatasync when the file grows, and when its space was reserved.

    SIZE=10000 python3 scripts/fsync_modes.py [DIR]

4,000 writes of SIZE bytes (default 200) each way, twice, in DIR (default /tmp): `append` (the
file grows with each write), `keep` (fallocate with KEEP_SIZE: blocks reserved, size still
grows), `falloc` (fallocate: blocks and size reserved, but unwritten), `zero` (zeros written
and synced first: what the WAL's zeroer leaves ahead of the appends). Prints p50, p90, mean
and CPU per write in microseconds. Used for issue 12 (why the WAL reserves its active
segment's space, and why it then writes zeros over it).
"""
import ctypes, os, resource, sys, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 1


def run(where, mode, n=4000, size=int(os.environ.get("SIZE", "200"))):
    path = os.path.join(where, "fsync_modes." + mode)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    room = n * size + (1 << 20)
    if mode == "keep":
        assert libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, room) == 0
    if mode == "falloc":
        os.posix_fallocate(fd, 0, room)
    if mode == "zero":
        os.pwrite(fd, bytes(room), 0)
    os.fsync(fd)
    time.sleep(1)  # the set-up's writeback settles
    times, offset = [], 0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        start = time.perf_counter()
        os.pwrite(fd, b"x" * size, offset)
        os.fdatasync(fd)
        times.append(time.perf_counter() - start)
        offset += size
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    os.unlink(path)
    times.sort()
    per_write = (after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime) / n * 1e6
    return (f"{mode:7s} p50 {times[n // 2] * 1e6:4.0f} p90 {times[n * 9 // 10] * 1e6:4.0f} "
            f"mean {sum(times) / n * 1e6:4.0f} cpu {per_write:4.0f}")


where = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
for _ in range(2):
    for mode in ["append", "keep", "falloc", "zero"]:
        print(run(where, mode))
