#!/usr/bin/env bash
# Which slow writes fall inside a snapshot: three release replicas, 64 unpipelined clients of
# 100-byte SETs over 800,000 keys for SECS (default 40) with a snapshot every few seconds, beside
# scripts/slow_write_timeline.py (one SET at a time, every write over LINE ms timestamped).
#
#   scripts/snapshot_window_probe.sh BINARY [SECS]
#
# Prints loadgen's figures, then the timeline's slow writes split by whether they overlap a
# snapshot window on any replica (from its start to 1 s after it ends, from the replicas' logs,
# which carry millisecond timestamps). LINE sets that line in ms (default 30). THRESH sets
# --snapshot-threshold (default 16 MiB; pass 100000000000 for a run without snapshots, the
# machine's own noise); PIPE pipelines the 64 clients (default 1). LOADGEN as in
# leader_cpu_probe.sh.
BIN=$1; SECS=${2:-40}
HERE=$(dirname "$0")
. "$HERE/probe_cluster.sh"
probe_cluster windowtest 38380 39380 /tmp/prof/w /tmp/prof/wlog "$BIN" --snapshot-threshold "${THRESH:-16777216}"
PORT=$((38380+LEADER))
python3 "$HERE/slow_write_timeline.py" $PORT "$SECS" "${LINE:-30}" > /tmp/prof/window_timeline &
TIMELINE=$!
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$PORT --clients 64 --pipeline "${PIPE:-1}" --duration "$SECS" --ops 100000000 --value-size 100 --keys 800000 --write-ratio 1
wait $TIMELINE
LINE=${LINE:-30} python3 - /tmp/prof/window_timeline /tmp/prof/wlog1 /tmp/prof/wlog2 /tmp/prof/wlog3 <<'PY'
import datetime, os, re, sys
windows = []
for log in sys.argv[2:]:
    for m in re.finditer(r"T(\d\d):(\d\d):([\d.]+)Z .*snapshot at index \d+ term \d+ taken: \d+ bytes in (\d+) ms", open(log).read()):
        end = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        windows.append((end - int(m.group(4)) / 1000, end + 1.0))
timeline = open(sys.argv[1]).read()
print(timeline.splitlines()[0] if timeline else "no timeline")
inside, outside = [], []
for m in re.finditer(r"\(unix ([\d.]+)\): (\d+) ms", timeline):
    at = datetime.datetime.fromtimestamp(float(m.group(1)), datetime.timezone.utc)
    start = at.hour * 3600 + at.minute * 60 + at.second + at.microsecond / 1e6
    ms = int(m.group(2))
    (inside if any(a <= start + ms / 1000 and start <= b for a, b in windows) else outside).append(ms)
print("%d snapshots; writes over %s ms inside a snapshot window: %s; outside: %s" % (len(windows), os.environ["LINE"], sorted(inside), sorted(outside)))
PY
pkill -f "cluster-name windowtest"
