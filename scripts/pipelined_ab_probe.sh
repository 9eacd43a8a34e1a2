#!/usr/bin/env bash
# Writes per second of several server binaries, alternated ROUNDS times on fresh three-process
# clusters (probe_cluster.sh): the kit's load generator on the leader, 64 clients pipelining 16
# for 6 s, then 64 unpipelined clients for 6 s, 100-byte values over 10,000 keys. For telling a
# change in the code from a change in the host's hour. LOADGEN as in leader_cpu_probe.sh.
#
#   scripts/pipelined_ab_probe.sh ROUNDS BINARY...
ROUNDS=$1; shift
. "$(dirname "$0")/probe_cluster.sh"
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
D=/tmp/prof/pipeab; mkdir -p $D
ops() { grep -o '"ops_per_sec":[0-9.]*' | cut -d: -f2; }
for round in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do
    probe_cluster pipeab 46490 47490 $D/r $D/log "$b"
    [ -n "$LEADER" ] || { echo "$b: no leader"; continue; }
    load() {
      $LG --target resp --addr 127.0.0.1:$((46490 + LEADER)) --clients 64 --pipeline "$1" \
        --duration 6 --value-size 100 --keys 10000 --write-ratio 1 2>/dev/null | tail -1 | ops
    }
    echo "$b pipelined $(load 16) unpipelined $(load 1)"
    pkill -f "cluster-name pipeab"; sleep 1
  done
done
