#!/usr/bin/env bash
# Why the leader's and a follower's threads leave the CPU: three release replicas under the
# benchmark kit's load, `perf record -e sched:sched_switch -g` of both processes for 2 s, then
# per thread the switches counted by the state it left in (S: waiting, D: waiting on the disk,
# R: preempted) and the calls on its kernel stack (epoll_wait, fdatasync's waits, send, recv).
#
#   scripts/switch_probe.sh BINARY WRITE_RATIO CLIENTS
#
# Ports 52381-53383, data under /tmp/prof/x*, 7 s of loadgen (LOADGEN as in
# leader_cpu_probe.sh). Used for issue 12 (figures in its notes).
BIN=$1; WR=$2; CL=$3
. "$(dirname "$0")/probe_cluster.sh"
probe_cluster switchtest 52380 53380 /tmp/prof/x /tmp/prof/xlog "$BIN"
LPID=$(pgrep -f "client-addr 127.0.0.1:$((52380+LEADER))")
F=$(( LEADER % 3 + 1 )); FPID=$(pgrep -f "client-addr 127.0.0.1:$((52380+F))")
PRE=""; [ "$WR" = 0 ] && PRE=--preload
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$((52380+LEADER)) \
  --clients "$CL" --pipeline "${PIPE:-1}" --duration 7 --ops 100000000 --value-size 100 --keys 10000 \
  --write-ratio "$WR" $PRE > /tmp/prof/switch_load.json &
LOAD=$!
sleep 3
perf record -e sched:sched_switch -g -p "$LPID,$FPID" -o /tmp/prof/switch.data -- sleep 2 > /dev/null 2>&1
wait $LOAD
cut -c1-160 /tmp/prof/switch_load.json
: > /tmp/prof/switch_tids
for who in leader:$LPID follower:$FPID; do
  for t in /proc/${who#*:}/task/*; do echo "$(basename "$t") ${who%%:*} $(cat "$t/comm")" >> /tmp/prof/switch_tids; done
done
pkill -f "cluster-name switchtest"
perf script -i /tmp/prof/switch.data 2> /dev/null | python3 -c '
import collections, re, sys
names = dict(l.split(None, 1) for l in open("/tmp/prof/switch_tids"))
calls = ["epoll_wait", "fdatasync", "folio_wait_bit", "bit_wait_io", "submit_bio_wait", "__send",
         "__libc_recv", "futex_wait", "irqentry_exit_to_user_mode", "exit_to_user_mode_loop"]
counts = collections.defaultdict(collections.Counter)
tid = state = None; frames = []
def done():
    if tid is not None:
        seen = [c for c in calls if any(f.startswith(c) for f in frames)]
        counts[tid][state + ":" + "/".join(seen)] += 1
for line in sys.stdin:
    if line.strip() and not line[0].isspace():
        m = re.search(r"\s(\d+)\s+\[\d+\]", line); s = re.search(r"prev_state=(\S+)", line)
        tid, state, frames = (m.group(1) if m else "?"), (s.group(1) if s else "?"), []
    elif line.strip():
        frames.append(line.split()[1] if len(line.split()) > 1 else "")
    else:
        done(); tid = None
done()
for t, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
    print(t, names.get(t, "? ?").strip(), sum(c.values()), "switches in 2 s")
    for k, v in c.most_common(6):
        print("   ", v, k)
'
