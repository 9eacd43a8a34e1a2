#!/usr/bin/env bash
# What the disk was doing while an fsync was slow: runs COMMAND with the kernel's ext4 fsync,
# discard and block-request events traced (ftrace; root, /sys/kernel/tracing), then lists every
# fsync or fdatasync over LONG ms (default 30): which other threads sat in one at the same time,
# the device requests that completed while it waited, and how long before it the last discard
# and the last large (>= 512 KiB) write were issued.
#
#   LONG=30 scripts/fsync_trace.sh COMMAND...
#   e.g. PIPE=16 THRESH=33554432 scripts/fsync_trace.sh scripts/snapshot_window_probe.sh BIN 40
#
# Also prints, per request kind (FF flush, DS discard, W large write), the count and the p50 /
# p99 / max from issue to completion. The raw trace stays in /tmp/prof/fsync_trace.txt; the
# tracing settings it changes are put back when it ends, however it ends. Used for issue 12 (the
# rare pipelined stalls: figures in its notes and the README).
T=/sys/kernel/tracing
OUT=/tmp/prof/fsync_trace.txt; mkdir -p /tmp/prof
if [ ! -w $T/tracing_on ]; then
  echo "fsync_trace.sh: cannot write $T (needs root and tracefs)" >&2
  exit 2
fi
EVENTS="ext4/ext4_sync_file_enter ext4/ext4_sync_file_exit ext4/ext4_discard_blocks block/block_rq_complete block/block_rq_issue"
OLD_CLOCK=$(sed 's/.*\[\(.*\)\].*/\1/' $T/trace_clock)
OLD_SIZE=$(cat $T/buffer_size_kb)
OLD_ON=$(cat $T/tracing_on)
restore() {
  echo 0 > $T/tracing_on
  for e in $EVENTS; do echo 0 > $T/events/$e/enable; done
  echo 0 > $T/events/block/block_rq_issue/filter
  echo > $T/trace
  echo "$OLD_CLOCK" > $T/trace_clock; echo "$OLD_SIZE" > $T/buffer_size_kb; echo "$OLD_ON" > $T/tracing_on
}
trap restore EXIT
trap 'exit 130' INT TERM
echo 0 > $T/tracing_on; echo > $T/trace; echo mono > $T/trace_clock; echo 262144 > $T/buffer_size_kb
# Flushes, discards and large writes when issued; every request when it completes (a completion
# carries no byte count to filter on).
echo 'rwbs == "FF" || rwbs ~ "*D*" || (rwbs ~ "W*" && bytes >= 524288)' > $T/events/block/block_rq_issue/filter
for e in $EVENTS; do echo 1 > $T/events/$e/enable; done
echo 1 > $T/tracing_on
"$@"
echo 0 > $T/tracing_on; cat $T/trace > $OUT
LONG=${LONG:-30} python3 - $OUT <<'PY'
import collections, os, re, sys
header = open(sys.argv[1]).read(4096)
counts = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", header)
if counts and counts[1] != counts[2]:
    print("warning: the trace buffer overflowed (%s of %s events kept): figures are partial" % (counts[1], counts[2]))
line_re = re.compile(r"^\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
# Sorted by time only: events of one microsecond keep the order the kernel wrote them in.
events = sorted(((float(m[3]), int(m[2]), m[4], m[5]) for m in map(line_re.match, open(sys.argv[1])) if m), key=lambda e: e[0])
long_ms = float(os.environ["LONG"])
open_syncs, syncs, issued, requests, done = {}, [], {}, [], []
def kind_of(rwbs):
    return "FF" if rwbs == "FF" else "DS" if "D" in rwbs else "W" if rwbs.startswith("W") else None
for t, tid, name, rest in events:
    f = rest.split()
    if name == "ext4_sync_file_enter":
        open_syncs[(tid, f[3])] = (t, "fdatasync" if f[7] == "1" else "fsync")
    elif name == "ext4_sync_file_exit" and (tid, f[3]) in open_syncs:
        start, call = open_syncs.pop((tid, f[3]))
        syncs.append((start, t, tid, call))
    elif name == "block_rq_issue" and kind_of(f[1]):
        # Flushes carry no sector: matched first in, first out, per device.
        key = (f[0], "FF") if f[1] == "FF" else (f[0], f[1], f[4])
        issued.setdefault(key, []).append((t, kind_of(f[1])))
    elif name == "block_rq_complete":
        if f[1] == "FF" or f[5] != "0":  # a flush's data-less write completes with it
            done.append((t, f[1]))
        q = issued.get((f[0], "FF") if f[1] == "FF" else (f[0], f[1], f[3]))
        if q:
            start, kind = q.pop(0)
            requests.append((start, t, kind))
by_kind = collections.defaultdict(list)
for start, end, kind in requests:
    by_kind[kind].append(end - start)
for kind, d in sorted(by_kind.items()):
    d.sort()
    print("%-2s %7d requests: p50 %.2f p99 %.2f max %.2f ms" % (kind, len(d), d[len(d) // 2] * 1e3, d[int(len(d) * 0.99)] * 1e3, d[-1] * 1e3))
if not syncs:
    print("no fsync was traced (is the file system ext4?)")
slow = [s for s in syncs if (s[1] - s[0]) * 1e3 > long_ms]
print("fsyncs and fdatasyncs over %.0f ms: %d of %d" % (long_ms, len(slow), len(syncs)))
for start, end, tid, call in slow:
    others = sorted({t for s, e, t, _ in syncs if t != tid and s < end and e > start})
    kinds = collections.Counter(k for t, k in done if start < t <= end)
    def ago(kind):
        last = max((s for s, e, k in requests if k == kind and s < start), default=None)
        return "none" if last is None else "%.0f ms" % ((start - last) * 1e3)
    print("  %.3f: %s %.1f ms (thread %d; threads also in one: %s); completed meanwhile: %s; last discard %s before, last large write %s before" % (
        start, call, (end - start) * 1e3, tid, others or "none", dict(kinds) or "nothing", ago("DS"), ago("W")))
PY
