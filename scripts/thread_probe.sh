#!/usr/bin/env bash
# Syscalls, thread switches and page faults per thread of the leader and one follower, or a
# system-wide profile, while three release replicas take the benchmark kit's load.
#
#   scripts/thread_probe.sh BINARY WRITE_RATIO CLIENTS [stat|perf]
#
# Same cluster and load as scripts/leader_cpu_probe.sh (ports 26381-27383, data under
# /tmp/prof, 8 s of loadgen, 100-byte values, 10,000 keys). `stat` (the default) counts, from
# 2 s into the load for 4 s, with `perf stat --per-thread` into /tmp/prof/stat.leader and
# /tmp/prof/stat.follower, and saves each replica's /metrics (fsync histogram) to
# /tmp/prof/metrics1..3. `perf` records every CPU (`perf record -a -e cpu-clock`, 4 s) into
# /tmp/prof/sys.data: `perf report -i /tmp/prof/sys.data --no-children --sort pid,comm` (or
# `--sort pid,sym`). PIPE=n pipelines the clients. Used for issue 12 (figures in its notes).
BIN=$1; WR=$2; CL=$3; MODE=${4:-stat}
. "$(dirname "$0")/probe_cluster.sh"
probe_cluster proftest 26380 27380 /tmp/prof/d /tmp/prof/log "$BIN" --metrics-addr 127.0.0.1:0
LPID=$(pgrep -f "client-addr 127.0.0.1:$((26380+LEADER))")
F=$(( LEADER % 3 + 1 )); FPID=$(pgrep -f "client-addr 127.0.0.1:$((26380+F))")
EVENTS=raw_syscalls:sys_enter,sched:sched_switch,page-faults
for s in write sendto recvfrom epoll_wait fdatasync futex; do EVENTS=$EVENTS,syscalls:sys_enter_$s; done
WAITS=""
if [ "$MODE" = perf ]; then
  ( sleep 2; perf record -e cpu-clock -a -o /tmp/prof/sys.data -- sleep 4 >/dev/null 2>&1 ) & WAITS="$!"
else
  for who in leader:$LPID follower:$FPID; do
    ( sleep 2; perf stat -e "$EVENTS" --per-thread -p "${who#*:}" -o "/tmp/prof/stat.${who%%:*}" -- sleep 4 ) &
    WAITS="$WAITS $!"
  done
  ( sleep 7; for i in 1 2 3; do
      a=$(grep -o "http://[0-9.:]*" /tmp/prof/log$i | head -1); curl -s "$a/metrics" > /tmp/prof/metrics$i
    done ) & WAITS="$WAITS $!"
fi
PRE=""; [ "$WR" = 0 ] && PRE=--preload
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$((26380+LEADER)) \
  --clients "$CL" --pipeline "${PIPE:-1}" --duration 8 --ops 100000000 --value-size 100 --keys 10000 --write-ratio "$WR" $PRE
# Only the probes: the replicas are children of this shell too.
wait $WAITS
pkill -f "cluster-name proftest"
[ "$MODE" = perf ] || grep -hv '^$' /tmp/prof/stat.leader /tmp/prof/stat.follower | awk '$2 ~ /^[0-9]+$/ && $2 > 0'
