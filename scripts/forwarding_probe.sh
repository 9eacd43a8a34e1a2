#!/usr/bin/env bash
# Any replica serves any command, measured with `quorumkv-cli bench` on three release replicas.
#
#   scripts/forwarding_probe.sh TARGET_DIR [SECS]
#
# Starts three replicas of TARGET_DIR/quorumkv-server (fsync on, fresh dirs under
# /tmp/fwdprobe), loads 10,000 keys of 100 bytes, then runs `TARGET_DIR/quorumkv-cli bench`
# (64 clients, SECS seconds per cell, default 8) for: reads on the leader only, reads spread
# over all three, writes sent to the leader, writes sent to the two followers; then 1 client
# writing to the leader and to a follower (the extra latency of a forwarded write). Prints one
# JSON summary line per cell. Used for issue 10.
set -euo pipefail
T=$1; SECS=${2:-8}
D=/tmp/fwdprobe
pkill -f "cluster-name fwdprobe" || true; sleep 0.5
rm -rf $D; mkdir -p $D
for i in 1 2 3; do
  nohup "$T/quorumkv-server" --id $i --client-addr 127.0.0.1:$((36380+i)) --peer-addr 127.0.0.1:$((37380+i)) \
    --peers 1=127.0.0.1:37381,2=127.0.0.1:37382,3=127.0.0.1:37383 --data-dir $D/d$i \
    --cluster-name fwdprobe > $D/log$i 2>&1 &
done
LEADER=""
for _ in $(seq 1 100); do
  for i in 1 2 3; do
    if "$T/quorumkv-cli" --servers 127.0.0.1:$((36380+i)) info 2>/dev/null | grep -q "role:leader"; then LEADER=$i; fi
  done
  [ -n "$LEADER" ] && break; sleep 0.2
done
L=127.0.0.1:$((36380+LEADER))
F=$(for i in 1 2 3; do [ $i != "$LEADER" ] && echo 127.0.0.1:$((36380+i)); done | paste -sd,)
ALL=127.0.0.1:36381,127.0.0.1:36382,127.0.0.1:36383
bench() { # name servers clients write_ratio [extra]
  local out
  out=$("$T/quorumkv-cli" bench --servers "$2" --clients "$3" --write-ratio "$4" --keys 10000 \
        --value-size 100 --duration "$SECS" --json ${5:-})
  python3 -c '
import json, sys
r = json.loads(sys.argv[2])
k = r["all"]
print(json.dumps({"cell": sys.argv[1], "ops_per_sec": round(r["ops_per_sec"]), "errors": r["errors"],
  "p50_ms": k["latency_ms"]["p50"], "p99_ms": k["latency_ms"]["p99"]}))' "$1" "$out"
}
"$T/quorumkv-cli" bench --servers "$L" --clients 16 --write-ratio 1 --keys 10000 --value-size 100 --ops 20000 --json > /dev/null
bench "read, 64 clients, leader only" "$L" 64 0
bench "read, 64 clients, spread over 3" "$ALL" 64 0 --spread
bench "write, 64 clients, to the leader" "$L" 64 1
bench "write, 64 clients, to the followers" "$F" 64 1 --spread
bench "write, 1 client, to the leader" "$L" 1 1
bench "write, 1 client, to a follower" "${F%%,*}" 1 1
pkill -f "cluster-name fwdprobe" || true
