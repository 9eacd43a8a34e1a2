#!/usr/bin/env bash
# What the disk was doing while an fdatasync was slow: runs COMMAND with the kernel's ext4
# fsync, discard and block-request events traced (ftrace; root, /sys/kernel/tracing), then lists
# every fsync over LONG ms (default 30): which other processes sat in one at the same time, the
# device requests that completed while it waited, and how long before it the last discard and
# the last large (>= 512 KiB) write were issued.
#
#   LONG=30 scripts/fsync_trace.sh COMMAND...
#   e.g. PIPE=16 THRESH=33554432 scripts/fsync_trace.sh scripts/snapshot_window_probe.sh BIN 40
#
# Also prints, per request kind (FF flush, DS discard, W large write), the count and the p50 /
# p99 / max from issue to completion. The raw trace stays in /tmp/prof/fsync_trace.txt. Used for
# issue 12 (the rare pipelined stalls: figures in its notes and the README).
T=/sys/kernel/tracing
OUT=/tmp/prof/fsync_trace.txt; mkdir -p /tmp/prof
echo 0 > $T/tracing_on; echo > $T/trace; echo mono > $T/trace_clock; echo 262144 > $T/buffer_size_kb
for e in ext4/ext4_sync_file_enter ext4/ext4_sync_file_exit ext4/ext4_discard_blocks block/block_rq_complete; do
  echo 1 > $T/events/$e/enable
done
echo 'rwbs ~ "*D*" || rwbs ~ "*F*" || bytes >= 524288' > $T/events/block/block_rq_issue/filter
echo 1 > $T/events/block/block_rq_issue/enable
echo 1 > $T/tracing_on
"$@"
echo 0 > $T/tracing_on; cat $T/trace > $OUT; echo 0 > $T/events/enable; echo 0 > $T/events/block/block_rq_issue/filter; echo > $T/trace
LONG=${LONG:-30} python3 - $OUT <<'PY'
import collections, os, re, sys
line_re = re.compile(r"^\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
events = sorted((float(m[3]), m[1], int(m[2]), m[4], m[5]) for m in map(line_re.match, open(sys.argv[1])) if m)
long_ms = float(os.environ["LONG"])
open_syncs, syncs, issued, requests, done = {}, [], {}, [], []
for t, comm, pid, name, rest in events:
    f = rest.split()
    if name == "ext4_sync_file_enter":
        open_syncs[(pid, f[3])] = t
    elif name == "ext4_sync_file_exit" and (pid, f[3]) in open_syncs:
        syncs.append((open_syncs.pop((pid, f[3])), t, pid))
    elif name == "block_rq_issue":
        kind = "FF" if "F" in f[1] else "DS" if "D" in f[1] else "W"
        # Flushes carry no sector: they are matched first in, first out.
        issued.setdefault("FF" if kind == "FF" else (f[1], f[4]), []).append((t, kind))
    elif name == "block_rq_complete":
        done.append((t, f[1]))
        q = issued.get("FF" if f[1] == "FF" else (f[1], f[3]))
        if q:
            start, kind = q.pop(0)
            requests.append((start, t, kind))
by_kind = collections.defaultdict(list)
for start, end, kind in requests:
    by_kind[kind].append(end - start)
for kind, d in sorted(by_kind.items()):
    d.sort()
    print("%-2s %7d requests: p50 %.2f p99 %.2f max %.2f ms" % (kind, len(d), d[len(d) // 2] * 1e3, d[int(len(d) * 0.99)] * 1e3, d[-1] * 1e3))
slow = [s for s in syncs if (s[1] - s[0]) * 1e3 > long_ms]
print("fsyncs over %.0f ms: %d of %d" % (long_ms, len(slow), len(syncs)))
for start, end, pid in slow:
    others = sorted({p for s, e, p in syncs if p != pid and s < end and e > start})
    kinds = collections.Counter(k for t, k in done if start < t <= end)
    before = lambda kind: max((s for s, e, k in requests if k == kind and s < start), default=None)
    ago = lambda t: "none" if t is None else "%.0f ms" % ((start - t) * 1e3)
    print("  %.3f: %.1f ms (thread %d; threads also in an fsync: %s); completed meanwhile: %s; last discard %s before, last large write %s before" % (
        start, (end - start) * 1e3, pid, others or "none", dict(kinds) or "nothing", ago(before("DS")), ago(before("W"))))
PY
