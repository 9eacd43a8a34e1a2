#!/usr/bin/env bash
# Issue 13's figure: the cost of metrics on the hot path. One local cluster (3 replicas in one
# process, fsync on); quorumkv-cli bench writes then reads at 64 clients, first with nobody
# scraping /metrics, then with all three replicas scraped every second; alternated twice.
# Usage: scripts/metrics_cost.sh TARGET_DIR [SECS]
set -u
BIN=${1:-target/release}
SECS=${2:-6}
BIN=$(cd "$BIN" && pwd)
dir=$(mktemp -d)
cd "$dir"
"$BIN/quorumkv-server" local --base-port 16480 > server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; kill $scraper 2>/dev/null' EXIT
scraper=
for _ in $(seq 100); do
  curl -sf 127.0.0.1:18480/health >/dev/null && break
  sleep 0.1
done
leader=$(for p in 16480 16481 16482; do redis-cli -p $p info replication | grep -q role:leader && echo $p; done | head -1)
bench() {  # $1 label, $2 write ratio
  "$BIN/quorumkv-cli" --servers 127.0.0.1:$leader bench --clients 64 --duration "$SECS" --keys 10000 \
    --value-size 100 --write-ratio "$2" --json |
    python3 -c "import json,sys; r=json.load(sys.stdin); l=r['all']['latency_ms']; print('$1: %.0f ops/s, p50 %.2f ms, p99 %.2f ms, errors %d' % (r['ops_per_sec'], l['p50'] or 0, l['p99'] or 0, r['errors']))"
}
for round in 1 2; do
  bench "round $round writes, not scraped" 1.0
  bench "round $round reads,  not scraped" 0.0
  ( while true; do for p in 18480 18481 18482; do curl -sf 127.0.0.1:$p/metrics >/dev/null; done; sleep 1; done ) &
  scraper=$!
  bench "round $round writes, scraped 1/s" 1.0
  bench "round $round reads,  scraped 1/s" 0.0
  kill $scraper; scraper=
done
