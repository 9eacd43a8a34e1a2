#!/usr/bin/env bash
# Restart time of a replica whose log holds about GIB GiB (no snapshot): one release replica,
# 1,000-byte SETs over 100,000 keys (64 clients x pipeline 16) until its WAL passes the size,
# kill -9, restart, and time until it answers a GET. LOADGEN as in leader_cpu_probe.sh.
#
#   scripts/recovery_probe.sh BINARY [GIB]
BIN=$1; GIB=${2:-1}
D=/tmp/prof/recovery; pkill -f "cluster-name recoverytest"; sleep 0.5; rm -rf $D; mkdir -p $D
start() {
  nohup $BIN --snapshot-threshold 100000000000 --id 1 --client-addr 127.0.0.1:46381 --peer-addr 127.0.0.1:47381 \
    --peers 1=127.0.0.1:47381 --data-dir $D/data --cluster-name recoverytest >> $D/log 2>&1 &
  echo $!
}
PID=$(start)
until redis-cli -p 46381 set probe 1 2>/dev/null | grep -q OK; do sleep 0.1; done
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
WANT=$((GIB * 1024 * 1024 * 1024))
while [ "$(du -sb $D/data | cut -f1)" -lt $WANT ]; do
  $LG --target resp --addr 127.0.0.1:46381 --clients 64 --pipeline 16 --duration 10 --ops 100000000 \
    --value-size 1000 --keys 100000 --write-ratio 1 > /dev/null
done
echo "data dir: $(du -sh $D/data | cut -f1); applied: $(redis-cli -p 46381 info | grep -E '^(applied_index|keys):' | tr -d '\r' | paste -sd' ')"
kill -9 $PID; sleep 0.5
T0=$(date +%s.%N)
PID=$(start)
until redis-cli -p 46381 get probe 2>/dev/null | grep -q 1; do sleep 0.05; done
T1=$(date +%s.%N)
echo "restart to first answer: $(echo "$T1 - $T0" | bc) s; RSS $(grep VmRSS /proc/$PID/status | tr -s ' ' | cut -d' ' -f2) kB"
grep -h "recovered" $D/log | tail -1
kill $PID
