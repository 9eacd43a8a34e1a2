#!/usr/bin/env bash
# Where one client's write spends its time: three release replicas, 1 client of 100-byte SETs,
# `perf trace` of the leader and one follower for SECS (default 2) seconds, then each write
# followed across threads and processes, from the leader reading the request to it sending the
# reply (stage p50/p90 in µs).
#
#   scripts/write_chain_probe.sh BINARY [SECS]
#
# Tracing slows every syscall (a traced p50 of ~800 µs against ~420 µs untraced here): read the
# stages as proportions. Threads are told apart by what they do: the leader's consensus sends
# the entries, its disk writer fsyncs, the follower's consensus reads them and fsyncs.
# LOADGEN as in leader_cpu_probe.sh. Used for issue 12 (figures in its notes).
BIN=$1; SECS=${2:-2}
HERE=$(dirname "$0")
. "$HERE/probe_cluster.sh"
probe_cluster chaintest 48380 49380 /tmp/prof/c /tmp/prof/clog "$BIN"
PORT=$((48380+LEADER))
LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
F=$(( LEADER % 3 + 1 )); FPID=$(pgrep -f "client-addr 127.0.0.1:$((48380+F))")
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$PORT --clients 1 --pipeline 1 --duration $((SECS + 4)) --ops 100000000 --value-size 100 --keys 10000 --write-ratio 1 > /tmp/prof/chain_load.json &
LOAD=$!
sleep 2
timeout "$SECS" perf trace -p "$LPID,$FPID" -e read,write,writev,sendto,recvfrom,fdatasync,epoll_wait,pwrite64 -o /tmp/prof/chain_trace.txt 2>/dev/null
wait $LOAD
echo "untraced and traced together: $(cut -c1-160 /tmp/prof/chain_load.json)"
python3 - /tmp/prof/chain_trace.txt "$LPID" "$FPID" <<'PY'
import collections, re, statistics, sys
path, leader, follower = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line_re = re.compile(r"^\s*([\d.]+) \(\s*([\d.]+)? ?(?:ms)?\s*\): \S+/(\d+) (.*?)\s*(?:= (-?\d+))?\s*(\.\.\.)?$")
events = []  # (start ms, duration ms, tid, syscall, args, return value)
for line in open(path):
    m = line_re.match(line)
    if not m:
        continue
    t, dur, tid, call, ret, _ = m.groups()
    t, tid, ret = float(t), int(tid), int(ret) if ret else None
    if "[continued]" in call:
        name = re.search(r"\[continued\]: (\w+)", call).group(1)
        events.append((t + float(dur or 0), 0.0, tid, name + "_end", "", ret))
        continue
    m = re.match(r"(\w+)\((.*)", call)
    if not m:
        continue
    events.append((t, float(dur) if dur else None, tid, m.group(1), m.group(2), ret))
    if m.group(1) == "fdatasync" and dur:
        events.append((t + float(dur), 0.0, tid, "fdatasync_end", "", ret))
events.sort(key=lambda e: e[0])
def tasks(pid):
    import os
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}
ltasks, ftasks = tasks(leader), tasks(follower)
def busiest(tids, test):
    counts = collections.Counter(e[2] for e in events if e[2] in tids and test(e))
    return counts.most_common(1)[0][0] if counts else None
sends = ("sendto", "write", "writev")
big_send = lambda e: e[3] in sends and (e[5] or 0) > 100
l_cons = busiest(ltasks - {leader}, big_send)
l_disk = busiest(ltasks, lambda e: e[3] == "fdatasync")
f_cons = busiest(ftasks, lambda e: e[3] == "fdatasync")
fd = lambda e: int(m.group(1)) if (m := re.search(r"fd: (\d+)", e[4])) else None
end = lambda e: e[0] + (e[1] or 0)
def first(after, before, test):
    return next((e for e in events if after <= e[0] < before and test(e)), None)
stages = collections.defaultdict(list)
names = [
    ("request read -> entries sent (leader main -> consensus)", "a"),
    ("entries sent -> follower read done", "b"),
    ("follower read -> its fsync done", "c"),
    ("follower fsync done -> ack sent", "d"),
    ("ack sent -> leader consensus read done", "e"),
    ("ack read -> reply sent (commit, apply, waiter, reply)", "f"),
    ("whole write, traced", "total"),
]
requests = [e for e in events if e[2] == leader and e[3] == "recvfrom" and (e[5] or 0) > 100]
for r in requests:
    t0, client = end(r), fd(r)
    reply = first(t0, t0 + 5, lambda e: e[2] == leader and e[3] in sends and fd(e) == client)
    if not reply:
        continue
    t1 = reply[0]
    sent = first(t0, t1, lambda e: e[2] == l_cons and big_send(e))
    got = sent and first(sent[0], t1, lambda e: e[2] == f_cons and e[3] in ("recvfrom", "read") and (e[5] or 0) > 100)
    synced = got and first(end(got), t1, lambda e: e[2] == f_cons and e[3] == "fdatasync_end")
    acked = synced and first(synced[0], t1, lambda e: e[2] == f_cons and e[3] in sends and (e[5] or 0) > 0)
    heard = acked and first(acked[0], t1, lambda e: e[2] == l_cons and e[3] in ("recvfrom", "read") and (e[5] or 0) > 0)
    if not heard:
        continue
    marks = [t0, sent[0], end(got), synced[0], acked[0], end(heard), t1]
    for (_, key), a, b in zip(names, marks, marks[1:]):
        stages[key].append(b - a)
    stages["total"].append(t1 - t0)
print(f"threads: leader consensus {l_cons}, leader disk {l_disk}, follower consensus {f_cons}")
print(f"writes followed end to end: {len(stages['total'])} of {len(requests)}")
for label, key in names:
    v = sorted(stages[key])
    if v:
        print(f"  {label:58s} p50 {statistics.median(v) * 1000:6.0f} µs  p90 {v[int(len(v) * 0.9)] * 1000:6.0f} µs")
PY
pkill -f "cluster-name chaintest"
