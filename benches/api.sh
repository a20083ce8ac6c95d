#!/usr/bin/env bash
# API benchmarks behind docs/benchmarks.md (issue 4), loopback only, bounded:
#   1. the same closed sweep (127.0.0.1-127.0.0.4 × 1-65535) through `porthawk scan` and
#      through `POST /v1/sweeps`, probes/s of each;
#   2. GET /v1/sweeps/{id} latency at 500 requests/s while a rate-limited sweep runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p porthawk-cli >/dev/null
ph=$PWD/target/release/porthawk
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$ph serve --listen 127.0.0.1:$port --data "$data" >"$data/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
api=http://127.0.0.1:$port/v1

# Polls cheaply (curl and grep, no interpreter start-up competing for the 2 cores) until the
# sweep has ended.
wait_done() {
  for _ in $(seq 600); do
    curl -fs "$api/sweeps/$1" | grep -Eq '"state":"(running|queued)"' || return 0
    sleep 0.2
  done
  return 1
}

echo "== 1. the same sweep through scan and through the API (262,140 probes)"
for i in 1 2 3; do
  $ph scan 127.0.0.1-127.0.0.4 -p 1-65535 --format jsonl >/dev/null 2>"$data/scan.err"
  echo "scan: $(grep -o '[0-9]* probes/s' "$data/scan.err")"
  id=$(curl -fs -X POST "$api/sweeps" -H 'content-type: application/json' \
    -d '{"targets":["127.0.0.1-127.0.0.4"],"ports":"1-65535"}' | grep -o '[0-9][0-9]*')
  wait_done "$id"
  # The server's own clock: from the sweep's creation to its end.
  curl -fs "$api/sweeps/$id" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["total"]/(d["finished_at"]-d["created_at"]); print("api:  %.0f probes/s (created to finished, server clock)" % r)'
done

echo "== 2. GET /v1/sweeps/{id} at 500 req/s during a sweep"
id=$(curl -fs -X POST "$api/sweeps" -H 'content-type: application/json' \
  -d '{"targets":["127.0.0.1-127.0.0.4"],"ports":"1-65535","rate":20000}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
python3 benches/api_load.py "$api/sweeps/$id" 500 10 8
curl -fs "$api/sweeps/$id" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("sweep while loaded:", d["state"], d["done"], "of", d["total"])'
curl -fs -X DELETE "$api/sweeps/$id" >/dev/null || true
