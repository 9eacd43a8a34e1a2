#!/usr/bin/env bash
# CPU per operation on the leader and the followers of three release replicas on loopback.
#
#   scripts/leader_cpu_probe.sh BINARY WRITE_RATIO CLIENTS [perf]
#
# Starts three replicas of BINARY (fresh dirs under /tmp/prof), drives the leader for 8 s with
# the benchmark kit's loadgen (LOADGEN=path, default /tmp/bench/loadgen/target/release/loadgen;
# see ../shared/bench/README.md), 100-byte values, 10,000 keys, and prints loadgen's JSON line
# and the CPU ticks (1/100 s) each replica used. With `perf`, records the leader with
# `perf record -e cpu-clock` into /tmp/prof/perf.data (PERFG="--call-graph dwarf" for call
# graphs, PERFSECS=n, PERFWHO=follower for a follower instead), PIPE=n requests per batch.
# EXTRA="--no-fsync" passes flags to every replica. THREADS=1 also prints the leader's CPU per
# thread over the load (ticks, share of a core, µs per op): is one thread the bound, or does the
# work wait? WAITS=1 prints, for every thread of the three replicas that ran over the load, its
# share of a core running and waiting runnable for a CPU (and that wait per time it was put on
# one), from /proc's schedstat, and the machine's CPU split (softirq is loopback TCP's receive
# work, charged to no thread). DRIVE=follower sends the load to a follower instead (which forwards
# its writes and read-index requests to the leader). Used for issue 12.
BIN=$1; WR=$2; CL=$3; PERF=${4:-}
. "$(dirname "$0")/probe_cluster.sh"
# shellcheck disable=SC2086 # EXTRA is a list of flags
probe_cluster proftest 26380 27380 /tmp/prof/d /tmp/prof/log "$BIN" $EXTRA
PORT=$((26380+LEADER)); LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
FPIDS=$(for i in 1 2 3; do [ $i != $LEADER ] && pgrep -f "client-addr 127.0.0.1:$((26380+i))"; done)
LG=${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen}
LOAD_PORT=$PORT; [ "${DRIVE:-}" = follower ] && LOAD_PORT=$((26380 + LEADER % 3 + 1))
PRE=""; [ "$WR" = 0 ] && PRE=--preload
c0=$(for p in $LPID $FPIDS; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd' ')
[ -n "${THREADS:-}" ] && { thread_ticks "$LPID" > /tmp/prof/threads_before; T0=$(date +%s.%N); }
# shellcheck disable=SC2086 # FPIDS is a list
[ -n "${WAITS:-}" ] && { thread_waits $LPID $FPIDS > /tmp/prof/waits_before; S0=$(cpu_split); W0=$(date +%s.%N); }
# PERFWHO=follower records the follower driven (DRIVE=follower), or else the first follower.
DPID=$(pgrep -f "client-addr 127.0.0.1:$LOAD_PORT"); FIRST=${FPIDS%%[[:space:]]*}
if [ -n "$PERF" ]; then PP_PID=$LPID; [ "${PERFWHO:-}" = follower ] && PP_PID=$([ "$DPID" = "$LPID" ] && echo "$FIRST" || echo "$DPID"); perf record -e cpu-clock ${PERFG:--g} -p $PP_PID -o /tmp/prof/perf.data -- sleep ${PERFSECS:-8} > /dev/null 2>&1 & PP=$!; fi
$LG --target resp --addr 127.0.0.1:$LOAD_PORT --clients $CL --pipeline ${PIPE:-1} --duration 8 --ops 100000000 --value-size 100 --keys 10000 --write-ratio $WR $PRE | tee /tmp/prof/load.json
if [ -n "${THREADS:-}" ]; then
  OPS=$(grep -o '"ops":[0-9]*' /tmp/prof/load.json | cut -d: -f2)
  SECS=$(echo "$(date +%s.%N) - $T0" | bc)
  thread_ticks "$LPID" | join /tmp/prof/threads_before - | awk -v ops="$OPS" -v secs="$SECS" \
    '$5 > $3 { d = $5 - $3; printf "leader thread %-8s %-18s %5d ticks, %5.1f%% of a core, %6.2f us/op\n", $1, $2, d, d / secs, d * 10000 / ops }'
fi
if [ -n "${WAITS:-}" ]; then
  SECS=$(echo "$(date +%s.%N) - $W0" | bc)
  # shellcheck disable=SC2086 # FPIDS is a list
  thread_waits $LPID $FPIDS > /tmp/prof/waits_after; join /tmp/prof/waits_before /tmp/prof/waits_after | awk -v secs="$SECS" -v leader="$LPID" \
    '$7 - $3 > 1e7 { run = $7 - $3; wait = $8 - $4; n = $9 - $5; split($2, w, ":"); \
      printf "%-8s thread %-8s %-18s run %5.1f%%, waits for a CPU %5.1f%%, %7d times on a CPU, %6.1f us waited each\n", \
        (w[1] == leader ? "leader" : "follower"), $1, w[2], run / secs / 1e7, wait / secs / 1e7, n, wait / (n > 0 ? n : 1) / 1e3 }'
  echo "$S0 $(cpu_split)" | awk -v cpus="$(nproc)" '{ for (i = 1; i <= 8; i++) { d[i] = $(i + 8) - $i; t += d[i] }
    s = 100 * cpus / t
    printf "machine (%% of one CPU, %d CPUs): user %.0f, system %.0f, softirq %.0f, idle %.0f, iowait %.0f, steal %.0f\n",
      cpus, d[1] * s, d[3] * s, d[7] * s, d[4] * s, d[5] * s, d[8] * s }'
fi
c1=$(for p in $LPID $FPIDS; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd' ')
echo "cpu ticks leader,f1,f2 before: $c0 after: $c1"
for p in $LPID $FPIDS; do grep -E "voluntary_ctxt" /proc/$p/status | paste -sd' '; done
[ -n "$PERF" ] && wait $PP
pkill -f "cluster-name proftest"
