#!/usr/bin/env bash
# Issue 11's figures: redis-benchmark -t set,get,incr,mset -c 64 against a local quorumkv cluster
# (3 replicas in one process, fsync on) and a single redis-server with appendfsync always, same run.
set -u
BIN=${1:-/work/main/target/release}
N=${2:-100000}
cd "$(mktemp -d)"
$BIN/quorumkv-server local --base-port 16380 > qkv.log 2>&1 &
QKV=$!
redis-server --port 16400 --appendonly yes --appendfsync always --save '' --dir "$PWD" > redis.log 2>&1 &
RDS=$!
for _ in $(seq 100); do
  role=$(redis-cli -p 16380 info replication 2>/dev/null | grep -c role:leader)
  leader=$(for p in 16380 16381 16382; do redis-cli -p $p info replication 2>/dev/null | grep -q role:leader && echo $p; done)
  [ -n "$leader" ] && redis-cli -p 16400 ping >/dev/null 2>&1 && break
  sleep 0.1
done
follower=$(for p in 16380 16381 16382; do [ "$p" != "$leader" ] && echo $p; done | head -1)
echo "leader $leader follower $follower"
for target in "quorumkv-leader $leader" "quorumkv-follower $follower" "redis-aof-always 16400"; do
  set -- $target
  echo "== $1"
  redis-benchmark -p $2 -t set,get,incr,mset -c 64 -n $N -r 10000 -d 100 -q 2>&1 | tr '\r' '\n' | grep -E "requests per second"
done
kill $QKV $RDS; wait 2>/dev/null
