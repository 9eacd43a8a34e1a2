#!/bin/bash
# CPU per op of leader and followers for several binaries, alternated N times so drift hits
# all alike; steal (ticks taken by the host) is printed because it inflates every figure.
#
#   scripts/ab_probe.sh WRITE_RATIO CLIENTS N BINARY...
#
# Ends with each binary's mean over its N rounds and the spread of the paired differences
# against the first binary (rounds pair up in order), since a few per cent is within the noise
# of any one round here.
WR=$1; CL=$2; N=$3; shift 3
ROUNDS=$(mktemp)
for i in $(seq 1 $N); do for b in "$@"; do
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  out=$(bash "$(dirname "$0")/leader_cpu_probe.sh" $b $WR $CL 2>&1)
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  ops=$(echo "$out" | grep -o '"ops":[0-9]*' | cut -d: -f2)
  ps=$(echo "$out" | grep -o '"ops_per_sec":[0-9.]*' | cut -d: -f2)
  p50=$(echo "$out" | grep -o '"p50_us":[0-9]*' | cut -d: -f2)
  p99=$(echo "$out" | grep -o '"p99_us":[0-9]*' | cut -d: -f2)
  t=$(echo "$out" | grep "cpu ticks" | sed 's/.*before: //')
  python3 - "$b" "$ops" "$ps" "$p50" "$p99" "$t" $((s1-s0)) <<'P' | tee -a "$ROUNDS"
import sys
b,ops,ps,p50,p99,t,steal=sys.argv[1:]
v=t.replace(' after:','').split()
before=list(map(int,v[:3])); after=list(map(int,v[3:]))
ops=int(ops); d=[(a-b_)*10000/ops for a,b_ in zip(after,before)]
print(f"{b:20s} ops/s {float(ps):8.0f} p50 {p50:>5} p99 {p99:>6}  cpu us/op leader {d[0]:5.1f} followers {d[1]:5.1f} {d[2]:5.1f} total {sum(d):5.1f} steal {steal}")
P
done; done
python3 - "$ROUNDS" "$@" <<'P'
import statistics, sys
path, bins = sys.argv[1], sys.argv[2:]
rows = {b: [] for b in bins}
for line in open(path):
    f = line.split()
    rows[f[0]].append((float(f[2]), float(f[4]), float(f[f.index("total") + 1])))
def spread(xs):
    # Mean and a rough 95 % interval of the mean (2 standard errors) of paired differences.
    m = statistics.mean(xs)
    e = 2 * statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return f"{m:+.1f} ± {e:.1f}"
base = rows[bins[0]]
for b in bins:
    r = rows[b]
    line = f"{b:20s} mean ops/s {statistics.mean(x[0] for x in r):8.0f} p50 {statistics.mean(x[1] for x in r):7.0f} cpu us/op {statistics.mean(x[2] for x in r):5.1f}"
    if b != bins[0] and len(r) == len(base):
        ops = [100 * (x[0] / y[0] - 1) for x, y in zip(r, base)]
        p50 = [100 * (x[1] / y[1] - 1) for x, y in zip(r, base)]
        line += f"  against {bins[0]}: ops/s {spread(ops)} %, p50 {spread(p50)} %"
    print(line)
P
rm -f "$ROUNDS"
