#!/usr/bin/env bash
# A replica's memory at a restart from a snapshot: one release replica, KEYS keys of 100-byte
# values written (64 clients x pipeline 16), then writes until a snapshot covers them, kill -9,
# restart, and its RSS and peak RSS (VmHWM) once it answers a GET. LOADGEN as in
# leader_cpu_probe.sh.
#
#   scripts/restart_rss_probe.sh BINARY [KEYS]
BIN=$1; KEYS=${2:-700000}
D=/tmp/prof/restartrss; pkill -f "cluster-name restartrsstest"; sleep 0.5; rm -rf $D; mkdir -p $D
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
start() {
  nohup "$BIN" --id 1 --client-addr 127.0.0.1:46395 --peer-addr 127.0.0.1:47395 \
    --peers 1=127.0.0.1:47395 --data-dir $D/data --cluster-name restartrsstest >> $D/log 2>&1 &
  echo $!
}
info() { redis-cli -p 46395 info 2>/dev/null | grep "^$1:" | tr -d '\r' | cut -d: -f2; }
PID=$(start)
until redis-cli -p 46395 set probe 1 2>/dev/null | grep -q OK; do sleep 0.1; done
write() {
  $LG --target resp --addr 127.0.0.1:46395 --clients 64 --pipeline 16 --duration 600 --ops "$KEYS" \
    --value-size 100 --keys "$KEYS" --write-ratio 1 > /dev/null
}
write
AT=$(info applied_index)
until [ "$(info snapshot_index)" -ge "$AT" ]; do write; done
sleep 1
echo "before: $(info keys) keys, snapshot at $(info snapshot_index), $(du -sh $D/data/snap | cut -f1) of snapshot;" \
  "RSS $(grep VmRSS /proc/$PID/status | tr -s ' ' | cut -d' ' -f2) kB"
kill -9 "$PID"; sleep 0.5
T0=$(date +%s.%N)
PID=$(start)
until redis-cli -p 46395 get probe 2>/dev/null | grep -q 1; do sleep 0.05; done
T1=$(date +%s.%N)
echo "restart to first answer: $(echo "$T1 - $T0" | bc) s; RSS $(grep VmRSS /proc/$PID/status | tr -s ' ' | cut -d' ' -f2) kB," \
  "peak $(grep VmHWM /proc/$PID/status | tr -s ' ' | cut -d' ' -f2) kB"
kill "$PID"
