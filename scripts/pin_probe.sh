#!/bin/bash
# Writes or reads per second with the replicas' processes pinned by taskset after start, to see
# what placing threads on CPUs does before building it in (issue 12, stop 42; --cpu-list is the
# built-in form of pinning the request path).
#
#   scripts/pin_probe.sh none|lf|l0|f1|each BINARY WRITE_RATIO CLIENTS
#
# none: the kernel places every thread; lf: the leader's on CPU 0, both followers' on 1; l0: the
# leader's on 0 only; f1: both followers' on 1 only; each: the leader and one follower on 0, the
# other follower on 1. 8 s of the kit's loadgen on the leader (LOADGEN as in
# leader_cpu_probe.sh, PIPE=n requests per batch); prints ops/s, p50 and p99.
MODE=$1; BIN=$2; WR=$3; CL=$4
. "$(dirname "$0")/probe_cluster.sh"
probe_cluster pintest 56380 57380 /tmp/prof/p /tmp/prof/plog "$BIN" > /dev/null 2>&1
PORT=$((56380+LEADER)); LPID=$(pgrep -f "client-addr 127.0.0.1:$PORT")
FP=$(for i in 1 2 3; do [ $i != "$LEADER" ] && pgrep -f "client-addr 127.0.0.1:$((56380+i))"; done)
# shellcheck disable=SC2086 # FP is a list of pids
case $MODE in
  lf) taskset -a -p -c 0 "$LPID" > /dev/null; for p in $FP; do taskset -a -p -c 1 "$p" > /dev/null; done;;
  l0) taskset -a -p -c 0 "$LPID" > /dev/null;;
  f1) for p in $FP; do taskset -a -p -c 1 "$p" > /dev/null; done;;
  each) taskset -a -p -c 0 "$LPID" > /dev/null; set -- $FP; taskset -a -p -c 1 "$1" > /dev/null; taskset -a -p -c 0 "$2" > /dev/null;;
  none) ;;
  *) echo "mode: none, lf, l0, f1 or each" >&2; pkill -f "cluster-name pintest"; exit 2;;
esac
PRE=""; [ "$WR" = 0 ] && PRE=--preload
${LOADGEN:-/tmp/bench/loadgen/target/release/loadgen} --target resp --addr 127.0.0.1:$PORT --clients "$CL" --pipeline "${PIPE:-1}" --duration 8 --ops 100000000 --value-size 100 --keys 10000 --write-ratio "$WR" $PRE | grep -o '"ops_per_sec":[0-9.]*,"p50_us":[0-9]*,"p99_us":[0-9]*' | sed "s/^/$MODE /"
pkill -f "cluster-name pintest"; sleep 0.5
