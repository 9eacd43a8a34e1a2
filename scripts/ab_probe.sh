#!/bin/bash
# CPU per op of leader and followers for several binaries, alternated N times so drift hits
# all alike; steal (ticks taken by the host) is printed because it inflates every figure.
#
#   scripts/ab_probe.sh WRITE_RATIO CLIENTS N BINARY...
WR=$1; CL=$2; N=$3; shift 3
for i in $(seq 1 $N); do for b in "$@"; do
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  out=$(bash "$(dirname "$0")/leader_cpu_probe.sh" $b $WR $CL 2>&1)
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  ops=$(echo "$out" | grep -o '"ops":[0-9]*' | cut -d: -f2)
  ps=$(echo "$out" | grep -o '"ops_per_sec":[0-9.]*' | cut -d: -f2)
  p50=$(echo "$out" | grep -o '"p50_us":[0-9]*' | cut -d: -f2)
  p99=$(echo "$out" | grep -o '"p99_us":[0-9]*' | cut -d: -f2)
  t=$(echo "$out" | grep "cpu ticks" | sed 's/.*before: //')
  python3 - "$b" "$ops" "$ps" "$p50" "$p99" "$t" $((s1-s0)) <<'P'
import sys
b,ops,ps,p50,p99,t,steal=sys.argv[1:]
v=t.replace(' after:','').split()
before=list(map(int,v[:3])); after=list(map(int,v[3:]))
ops=int(ops); d=[(a-b_)*10000/ops for a,b_ in zip(after,before)]
print(f"{b:20s} ops/s {float(ps):8.0f} p50 {p50:>5} p99 {p99:>6}  cpu us/op leader {d[0]:5.1f} followers {d[1]:5.1f} {d[2]:5.1f} total {sum(d):5.1f} steal {steal}")
P
done; done
