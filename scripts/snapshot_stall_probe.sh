#!/usr/bin/env bash
# Write latency while snapshots are taken: three release replicas, 800,000 keys, 64 clients x
# pipeline 16 of 100-byte SETs for SECS (default 45) with the default snapshot threshold.
#
#   scripts/snapshot_stall_probe.sh BINARY [SECS]
#
# Prints loadgen's JSON line (p99.9 and max are the stall figures), the leader's RSS and key
# count, and the snapshot lines of the leader's log. LOADGEN as in leader_cpu_probe.sh.
# EXTRA adds server flags (EXTRA="--snapshot-threshold 100000000000" for a run without snapshots).
BIN=$1; SECS=${2:-45}
pkill -f "cluster-name stalltest"; sleep 0.5
for i in 1 2 3; do rm -rf /tmp/prof/s$i; mkdir -p /tmp/prof/s$i
  nohup $BIN --id $i --client-addr 127.0.0.1:$((36380+i)) --peer-addr 127.0.0.1:$((37380+i)) \
   --peers 1=127.0.0.1:37381,2=127.0.0.1:37382,3=127.0.0.1:37383 --data-dir /tmp/prof/s$i/data \
   --cluster-name stalltest $EXTRA > /tmp/prof/slog$i 2>&1 &
done
LEADER=""
for t in $(seq 1 100); do
  for i in 1 2 3; do redis-cli -p $((36380+i)) info 2>/dev/null | grep -q "role:leader" && LEADER=$i; done
  [ -n "$LEADER" ] && break; sleep 0.2
done
PORT=$((36380+LEADER)); LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$PORT --clients 64 --pipeline 16 --duration $SECS --ops 100000000 --value-size 100 --keys 800000 --write-ratio 1
echo "leader RSS at the end: $(grep VmRSS /proc/$LPID/status)  keys: $(redis-cli -p $PORT info | grep "^keys:")"; sleep 10; echo "leader RSS 10 s later: $(grep VmRSS /proc/$LPID/status); followers: $(for p in $(pgrep -f "cluster-name stalltest" | grep -v "^$LPID$"); do grep VmRSS /proc/$p/status | tr -s " " | cut -d" " -f2; done | paste -sd" ") kB"
grep -h "snapshot at index" /tmp/prof/slog$LEADER | grep taken | sed 's/.*snapshot/snapshot/' | head -5
pkill -f "cluster-name stalltest"
