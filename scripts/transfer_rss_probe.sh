#!/usr/bin/env bash
# The leader's memory while it sends a snapshot to a follower: three release replicas, KEYS keys
# of 100-byte values written (64 clients x pipeline 16), one follower stopped, as many writes
# again (so the leader snapshots past it), then the follower restarted; the leader's RSS is read
# every 20 ms from before the restart until the follower has applied the leader's index, and
# the follower's from its start. Prints the leader's RSS before the restart and the most each
# reached during the catch-up, and the transfer's lines from the leader's log. LOADGEN as in leader_cpu_probe.sh.
#
#   scripts/transfer_rss_probe.sh BINARY [KEYS]
BIN=$1; KEYS=${2:-700000}
. "$(dirname "$0")/probe_cluster.sh"
D=/tmp/prof/transfer; rm -rf $D; mkdir -p $D
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
probe_cluster transferprobe 46390 47390 $D/r $D/log "$BIN"
[ -n "$LEADER" ] || { echo "no leader"; exit 1; }
FOLLOWER=$(( LEADER % 3 + 1 ))
info() { redis-cli -p $((46390 + $1)) info 2>/dev/null | grep "^$2:" | tr -d '\r' | cut -d: -f2; }
write_keys() {
  $LG --target resp --addr 127.0.0.1:$((46390 + LEADER)) --clients 64 --pipeline 16 --duration 600 \
    --ops "$KEYS" --value-size 100 --keys "$KEYS" --write-ratio 1 > /dev/null
}
write_keys
echo "leader $LEADER: $(info $LEADER keys) keys, snapshot at $(info $LEADER snapshot_index)"
# The follower's command line, to start it again on the same data dir.
FPID=$(pgrep -f "cluster-name transferprobe" | while read -r p; do
  tr '\0' ' ' < /proc/$p/cmdline | grep -q -- "--id $FOLLOWER " && echo "$p"; done)
FCMD=$(tr '\0' '\n' < /proc/$FPID/cmdline)
kill "$FPID"; sleep 1
BEFORE=$(info $LEADER snapshot_index)
write_keys
until [ "$(info $LEADER snapshot_index)" -gt "$BEFORE" ]; do sleep 0.2; done
LPID=$(pgrep -f "cluster-name transferprobe" | while read -r p; do
  tr '\0' ' ' < /proc/$p/cmdline | grep -q -- "--id $LEADER " && echo "$p"; done)
TARGET=$(info $LEADER applied_index)
rss() { grep VmRSS "/proc/$1/status" 2>/dev/null | tr -s ' ' | cut -d' ' -f2; }
echo "leader RSS before the restart: $(rss $LPID) kB (applied $TARGET, snapshot $(info $LEADER snapshot_index))"
mapfile -t ARGS <<< "$FCMD"
nohup "${ARGS[@]}" >> $D/log$FOLLOWER 2>&1 &
FPID=$!
(while [ ! -f $D/done ]; do echo "$(rss $LPID) $(rss $FPID)"; sleep 0.02; done > $D/rss) &
T0=$(date +%s.%N)
until [ "$(info $FOLLOWER applied_index 2>/dev/null || echo 0)" -ge "$TARGET" ] 2>/dev/null; do sleep 0.05; done
T1=$(date +%s.%N)
touch $D/done; sleep 0.1
echo "follower $FOLLOWER caught up in $(echo "$T1 - $T0" | bc) s; RSS max during it: leader" \
  "$(cut -d' ' -f1 $D/rss | sort -n | tail -1) kB, follower $(cut -d' ' -f2 $D/rss | sort -n | tail -1) kB" \
  "(follower at the end: $(rss $FPID) kB)"
grep -h "delivered to\|sending snapshot" $D/log$LEADER | tail -2
pkill -f "cluster-name transferprobe"
