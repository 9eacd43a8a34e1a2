#!/usr/bin/env bash
# User-space instructions per operation of a whole `local` cluster (three replicas in one
# process) under callgrind: repeatable where times on this shared machine are not.
#
#   scripts/callgrind_probe.sh BINARY WRITE_RATIO CLIENTS OPS
#
# Warms up with 2,000 unmeasured ops, zeroes the counters, runs OPS ops (100-byte values,
# 10,000 keys) with the kit's loadgen (LOADGEN as in leader_cpu_probe.sh), dumps, and prints
# Ir/op (PIPE=n pipelines the measured ops). The profile stays in /tmp/cgrun/cg.out.1 for `callgrind_annotate --inclusive=yes`.
BIN=$1; WR=$2; CL=$3; OPS=$4
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
D=/tmp/cgrun; rm -rf $D; mkdir -p $D; cd $D || exit 1
valgrind --tool=callgrind --callgrind-out-file=$D/cg.out --dump-instr=no "$BIN" local --base-port 36380 \
  --data-dir $D/data > $D/log 2>&1 &
VP=$!
LP=""
for t in $(seq 1 300); do
  for p in 36380 36381 36382; do redis-cli -p $p info 2>/dev/null | grep -q "role:leader" && LP=$p; done
  [ -n "$LP" ] && break; sleep 0.5
done
PRE=""; [ "$WR" = 0 ] && PRE=--preload
$LG --target resp --addr 127.0.0.1:$LP --clients $CL --duration 30 --ops 2000 --value-size 100 --keys 10000 --write-ratio $WR $PRE > /dev/null
callgrind_control -z $VP > /dev/null
$LG --target resp --addr 127.0.0.1:$LP --clients $CL --pipeline ${PIPE:-1} --duration 300 --ops $OPS --value-size 100 --keys 10000 --write-ratio $WR > $D/lg.json
callgrind_control -d $VP > /dev/null
kill $VP; wait $VP 2>/dev/null
IR=$(grep -E "^totals" $D/cg.out.1 | awk '{print $2}')
echo "$(basename "$BIN") write_ratio=$WR clients=$CL ops=$OPS Ir/op=$((IR / OPS))"
