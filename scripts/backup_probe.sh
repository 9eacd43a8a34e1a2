#!/usr/bin/env bash
# Times a backup and a restore of a large state: a local cluster is loaded with about
# KEYS x VALUE bytes (default 100,000 x 10,000 B = 1 GB), `quorumkv-cli snapshot save` takes the
# backup, `quorumkv-server restore` makes three data dirs of a new cluster from it, and the new
# cluster is started until every member shows the saved state_digest.
# Usage: scripts/backup_probe.sh [BIN_DIR] [KEYS] [VALUE_BYTES]   (after cargo build --release)
set -euo pipefail
BIN=${1:-target/release}
KEYS=${2:-100000}
VALUE=${3:-10000}
WORK=$(mktemp -d /tmp/qkv-backup-probe.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
field() { "$BIN/quorumkv-cli" --servers "$1" info | tr -d '\r' | sed -n "s/^$2://p"; }

"$BIN/quorumkv-server" --snapshot-threshold 8000000000 local --base-port 26380 --data-dir "$WORK/source" \
    > "$WORK/source.log" 2>&1 &
PIDS+=($!)
SRC=127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382
until "$BIN/quorumkv-cli" --servers "$SRC" set ready 1 >/dev/null 2>&1; do
    kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/source.log"; exit 1; }
    sleep 0.2
done
echo "loading $KEYS keys of $VALUE bytes..."
"$BIN/quorumkv-cli" bench --servers "$SRC" --clients 16 --pipeline 8 --keys "$KEYS" --value-size "$VALUE" \
    --write-ratio 1 --ops $((KEYS * 3)) --json > "$WORK/load.json"
LEADER=$(field 127.0.0.1:26380 leader_client_addr)
echo "keys: $(field "$LEADER" keys), leader RSS: $(ps -o rss= -p "${PIDS[0]}") KiB (the whole local process)"

T=$(now)
"$BIN/quorumkv-cli" --servers "$SRC" snapshot save "$WORK/backup.qkv"
SAVE=$(since "$T")
SIZE=$(stat -c %s "$WORK/backup.qkv")
DIGEST=$(field "$LEADER" state_digest)

PEERS=1=127.0.0.1:27390,2=127.0.0.1:27391,3=127.0.0.1:27392
T=$(now)
for i in 1 2 3; do
    "$BIN/quorumkv-server" restore "$WORK/backup.qkv" --data-dir "$WORK/new$i" --id "$i" --peers "$PEERS" >/dev/null 2>&1
done
RESTORE=$(since "$T")
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

T=$(now)
for i in 1 2 3; do
    "$BIN/quorumkv-server" --id "$i" --data-dir "$WORK/new$i" --peers "$PEERS" --client-addr "127.0.0.1:2739$((i + 2))" \
        > "$WORK/new$i.log" 2>&1 &
    PIDS+=($!)
done
for port in 27393 27394 27395; do
    until [ "$(field 127.0.0.1:$port state_digest 2>/dev/null)" = "$DIGEST" ]; do sleep 0.2; done
done
START=$(since "$T")
printf '| backup size | snapshot save | restore x3 (sequential) | restored cluster up, digest %s on all 3 |\n' "$DIGEST"
printf '|---:|---:|---:|---:|\n'
printf '| %s MB | %.1f s | %.1f s | %.1f s |\n' $((SIZE / 1000000)) "$SAVE" "$RESTORE" "$START"
