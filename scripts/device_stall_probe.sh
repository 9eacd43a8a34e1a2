#!/usr/bin/env bash
# Does the disk itself stall small fdatasyncs while large files are written beside them? Three
# fio jobs loop 4 KiB write + fdatasync (as three replicas' WALs would) for SECS (default 120)
# while a writer does, every 1.5 s, what MODE says with a 90 MB file (about the image of 800,000
# 100-byte keys):
#
#   scripts/device_stall_probe.sh idle|burst|paced|cut|inplace [SECS]
#
#   idle     nothing beside the loop (the disk's own noise)
#   burst    the file written whole, then fsynced (the page cache flushed in one go), unlinked
#   paced    written 1 MiB at a time, each step's writeback started and the one before waited
#            for (as SnapshotFileWriter does), fsynced, unlinked in one go
#   cut      paced, then cut down 4 MiB at a time with 5 ms pauses before the unlink (as
#            SnapshotStore::remove_older does)
#   inplace  paced over the same file each time: no block is allocated or freed
#
# PAUSE_MS adds a pause after each 1 MiB step of the paced modes. Prints the loop's fdatasync
# count, mean, p99.9, p99.99 and maximum. Needs fio; files go to a fresh directory under DIR
# (default /tmp), on the file system under test, removed at the end (the loop's three 256 MB
# files are written once before the run). Unlike a replica, which cuts the previous image after
# writing the next, `cut` cuts the file it just wrote. Used for issue 12 (figures in its notes
# and the README).
set -euo pipefail
MODE=${1:?idle|burst|paced|cut|inplace}; SECS=${2:-120}
case $MODE in idle|burst|paced|cut|inplace) ;; *) echo "unknown mode $MODE" >&2; exit 2;; esac
command -v fio >/dev/null || { echo "device_stall_probe.sh needs fio (apt-get install fio)" >&2; exit 2; }
DIR=$(mktemp -d "${DIR:-/tmp}/devstall.XXXXXX")
WRITER=
trap '[ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null; rm -rf "$DIR"' EXIT
# The loop's files written whole first, so its writes overwrite written blocks from the start.
fio --name=loop --directory="$DIR" --rw=write --bs=1m --size=256m --numjobs=3 --end_fsync=1 > /dev/null
sleep 5
MODE=$MODE SECS=$SECS DIR=$DIR PAUSE_MS=${PAUSE_MS:-0} python3 - <<'PY' &
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
sfr = libc.sync_file_range
sfr.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
def sync_range(fd, start, length, flags):
    if sfr(fd, start, length, flags) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")
WAIT_BEFORE, WRITE, WAIT_AFTER = 1, 2, 4
mode, d = os.environ["MODE"], os.environ["DIR"]
pause = float(os.environ["PAUSE_MS"]) / 1000
end = time.time() + float(os.environ["SECS"])
step = os.urandom(1 << 20)
i = 0
time.sleep(1)
while mode != "idle" and time.time() < end:
    i += 1
    path = os.path.join(d, "big.inplace" if mode == "inplace" else "big.%d" % i)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if mode == "inplace" else os.O_TRUNC))
    for s in range(90):
        os.write(fd, step)
        if mode != "burst":
            sync_range(fd, s << 20, 1 << 20, WRITE)
            if s:
                sync_range(fd, 0, s << 20, WAIT_BEFORE | WRITE | WAIT_AFTER)
            if pause:
                time.sleep(pause)
    os.fsync(fd)
    if mode == "cut":
        n = 90 << 20
        while n > 0:
            n = max(0, n - (4 << 20))
            os.ftruncate(fd, n)
            time.sleep(0.005)
    os.close(fd)
    if mode != "inplace":
        os.unlink(path)
    time.sleep(1.5)
PY
WRITER=$!
fio --name=loop --directory="$DIR" --rw=write --bs=4k --size=256m --fdatasync=1 --numjobs=3 \
  --runtime="$SECS" --time_based --group_reporting --output-format=json --lat_percentiles=1 > "$DIR/fio.json"
wait "$WRITER" || { echo "the writer failed: no figures for $MODE" >&2; exit 1; }
WRITER=
python3 - "$DIR/fio.json" "$MODE" <<'PY'
import json, sys
lat = json.load(open(sys.argv[1]))["jobs"][0]["sync"]["lat_ns"]
pct = {float(k): v / 1e6 for k, v in lat["percentile"].items()}
print("%s: %d fdatasyncs, mean %.0f us, p99.9 %.2f ms, p99.99 %.2f ms, max %.1f ms" % (
    sys.argv[2], lat["N"], lat["mean"] / 1e3, pct[99.9], pct[99.99], lat["max"] / 1e6))
PY
