#!/usr/bin/env bash
# What a read-index heartbeat round costs: three release replicas, CLIENTS (default 64) reading
# the leader; over 4 s of the load, the rounds (a follower's `sendto` calls, one answer per
# round, counted with `perf stat`) and the CPU ticks of each leader thread and each follower in
# the same 4 s, printed per round.
#
#   scripts/read_round_probe.sh BINARY [CLIENTS]
#
# LOADGEN as in leader_cpu_probe.sh. Used for issue 12 (figures in its notes and the README).
BIN=$1; CL=${2:-64}
. "$(dirname "$0")/probe_cluster.sh"
probe_cluster roundtest 46380 47380 /tmp/prof/r /tmp/prof/rlog "$BIN"
PORT=$((46380+LEADER)); LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
FPIDS=$(for i in 1 2 3; do [ $i != "$LEADER" ] && pgrep -f "client-addr 127.0.0.1:$((46380+i))"; done)
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
$LG --target resp --addr 127.0.0.1:$PORT --clients "$CL" --duration 9 --ops 100000000 --value-size 100 \
  --keys 10000 --write-ratio 0 --preload > /tmp/prof/round_load.json &
LOAD=$!
sleep 3
# Each leader thread (id, name, ticks) and each follower process (pid, "follower", ticks).
ticks() {
  thread_ticks "$LPID"
  for p in $FPIDS; do echo "$p follower $(awk '{print $14+$15}' /proc/$p/stat)"; done
}
ticks | sort > /tmp/prof/round_t0
ROUNDS=$(perf stat -x, -e syscalls:sys_enter_sendto -p "${FPIDS%%[[:space:]]*}" -- sleep 4 2>&1 | cut -d, -f1)
ticks | sort > /tmp/prof/round_t1
wait $LOAD
cat /tmp/prof/round_load.json
echo "rounds in 4 s: $ROUNDS"
join /tmp/prof/round_t0 /tmp/prof/round_t1 | awk -v r="$ROUNDS" \
  '$5 > $3 { printf "%-8s %-18s %5d ticks, %6.1f us per round\n", $1, $2, $5 - $3, ($5 - $3) * 10000 / r }'
pkill -f "cluster-name roundtest"
