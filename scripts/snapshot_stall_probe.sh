#!/usr/bin/env bash
# Write latency while snapshots are taken: three release replicas, 800,000 keys, 64 clients x
# pipeline 16 (CLIENTS, PIPE) of 100-byte SETs for SECS (default 45) with the default snapshot threshold.
#
#   scripts/snapshot_stall_probe.sh BINARY [SECS]
#
# Prints loadgen's JSON line (p99.9 and max are the stall figures), the leader's RSS and key
# count (sampled every 100 ms during the load, and at the end), and the snapshot lines of the
# leader's log. KEEP=1 leaves the cluster running. LOADGEN as in leader_cpu_probe.sh.
# EXTRA adds server flags (EXTRA="--snapshot-threshold 100000000000" for a run without snapshots).
BIN=$1; SECS=${2:-45}
. "$(dirname "$0")/probe_cluster.sh"
# shellcheck disable=SC2086 # EXTRA is a list of flags
probe_cluster stalltest 36380 37380 /tmp/prof/s /tmp/prof/slog "$BIN" $EXTRA
PORT=$((36380+LEADER)); LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
# The leader's RSS every 100 ms while the load runs, so the peak of a snapshot's window (its
# held-aside writes, a second or so) shows; a reading once a second missed it.
(while kill -0 "$LPID" 2>/dev/null; do grep VmRSS /proc/$LPID/status | tr -s " " | cut -d" " -f2; sleep 0.1; done > /tmp/prof/rss_samples) &
SAMPLER=$!
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$PORT --clients ${CLIENTS:-64} --pipeline ${PIPE:-16} --duration $SECS --ops 100000000 --value-size 100 --keys 800000 --write-ratio 1
kill $SAMPLER 2>/dev/null
sort -n /tmp/prof/rss_samples | awk '{a[NR]=$1; s+=$1} END {if (NR) printf "leader RSS during the load (kB, %d samples): mean %d, median %d, max %d\n", NR, s/NR, a[int((NR+1)/2)], a[NR]}'
echo "leader RSS at the end: $(grep VmRSS /proc/$LPID/status)  keys: $(redis-cli -p $PORT info | grep "^keys:")"; sleep 10; echo "leader RSS 10 s later: $(grep VmRSS /proc/$LPID/status); followers: $(for p in $(pgrep -f "cluster-name stalltest" | grep -v "^$LPID$"); do grep VmRSS /proc/$p/status | tr -s " " | cut -d" " -f2; done | paste -sd" ") kB"
grep -h "snapshot at index" /tmp/prof/slog$LEADER | grep taken | sed 's/.*snapshot/snapshot/' | head -5
[ -n "$KEEP" ] || pkill -f "cluster-name stalltest"
