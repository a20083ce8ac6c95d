#!/usr/bin/env bash
# Fleet mode measurements behind docs/benchmarks.md ("Fleet"), on one machine, loopback only:
#   agent   one `porthawk agent` vs `porthawk serve` running the same sweep locally
#           (127.0.0.1-127.0.0.8 x 1-65535, closed ports), paired alternating runs;
#   ingest  the coordinator's ingest: the frames of a synthetic fleet sweep
#           (127.0.0.0/12 x 4 ports = 4,194,304 records, 1,024 frames) published straight into
#           the results stream while the coordinator is stopped (SIGSTOP), then timed from
#           SIGCONT to the sweep's end, with store=open and store=all;
#   dead    two agents (--rate 20000 each, ack_wait 10s); in every other run one of them is
#           killed (kill -9) mid-slice and started again at once; extra seconds and the
#           positions probed twice (records of losing attempts in the ledger).
# Each run starts its own nats-server (-p -1, a throwaway store) and `porthawk serve` (a
# throwaway config and data dir), and stops what it started by pid.
# Usage: bash benches/fleet.sh [agent|ingest|dead|all] [pairs]
# (FLEET_STORES=open limits the ingest runs to store=open; store=all takes minutes per run.)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
pairs=${2:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p porthawk-cli -p porthawk-fleet --example ingest_load >/dev/null
ph=$target/release/porthawk
load=$target/release/examples/ingest_load
work=$(mktemp -d /tmp/ph-fleet-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, kernel $(uname -r), $(nats-server --version)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# nats-server on a random loopback port; sets NATS_URL and NATS_PID.
start_nats() {
  local dir=$work/nats-$RANDOM
  mkdir -p "$dir"
  nats-server -js -sd "$dir/js" -a 127.0.0.1 -p -1 --ports_file_dir "$dir" >"$dir/log" 2>&1 &
  NATS_PID=$!
  pids+=("$NATS_PID")
  for _ in $(seq 100); do
    if ls "$dir"/*.ports >/dev/null 2>&1; then break; fi
    sleep 0.05
  done
  NATS_URL=$(jq -r '.nats[0]' "$dir"/*.ports)
}

# porthawk serve with [fleet] (extra lines in $1); sets API, SERVE_PID and DATA.
start_serve() {
  local dir=$work/serve-$RANDOM
  mkdir -p "$dir"
  printf '[fleet]\nnats = "%s"\npools = ["lab"]\n%b' "$NATS_URL" "${1:-}" >"$dir/porthawk.toml"
  DATA=$dir/data
  RUST_LOG=warn "$ph" serve --listen 127.0.0.1:0 --data "$DATA" --config "$dir/porthawk.toml" 2>"$dir/log" &
  SERVE_PID=$!
  pids+=("$SERVE_PID")
  API=
  for _ in $(seq 200); do
    API=$(grep -o 'listening on http://[0-9.:]*' "$dir/log" | head -1 | sed 's/.*http:\/\///') || true
    if [ -n "$API" ] && curl -s "http://$API/v1/fleet/agents" | jq -e '.connected' >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "serve did not start: $(cat "$dir/log")" >&2
  exit 1
}

# porthawk agent NAME [args...]; prints its pid.
start_agent() {
  local name=$1
  shift
  RUST_LOG=warn "$ph" agent --nats "$NATS_URL" --pool lab --name "$name" --heartbeat 500ms "$@" \
    >/dev/null 2>"$work/agent-$name-$RANDOM.log" &
  echo $!
}

# Waits (bounded) until the registry lists N agents.
wait_agents() {
  for _ in $(seq 200); do
    [ "$(curl -s "http://$API/v1/fleet/agents" | jq '.agents | length')" -ge "$1" ] && return
    sleep 0.1
  done
  echo "agents never listed" >&2
  exit 1
}

post() { curl -s -H 'content-type: application/json' -d "$1" "http://$API/v1/sweeps" | jq -r .id; }

# Waits (bounded, 600 s) for sweep $1 to end; prints its status.
wait_end() {
  for _ in $(seq 6000); do
    s=$(curl -s "http://$API/v1/sweeps/$1")
    if [ "$(echo "$s" | jq -r .state)" != running ]; then echo "$s"; return; fi
    sleep 0.1
  done
  echo "sweep $1 did not end" >&2
  exit 1
}

# probes/s of a finished sweep: done / (finished_at - created_at).
rate_of() { echo "$1" | jq '.done / (.finished_at - .created_at) | floor'; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

stop_all() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

if [ "$mode" = agent ] || [ "$mode" = all ]; then
  echo "== one agent vs local: 127.0.0.1-127.0.0.8 x 1-65535 (524,280 probes), $pairs pairs"
  start_nats
  start_serve ""
  pids+=("$(start_agent a1)")
  wait_agents 1
  body='{"targets":["127.0.0.1-127.0.0.8"],"ports":"1-65535"}'
  fbody='{"targets":["127.0.0.1-127.0.0.8"],"ports":"1-65535","from":"lab"}'
  : >"$work/local" && : >"$work/fleet"
  for i in $(seq "$pairs"); do
    l=$(rate_of "$(wait_end "$(post "$body")")")
    f=$(rate_of "$(wait_end "$(post "$fbody")")")
    echo "pair $i: local $l probes/s, fleet $f probes/s, ratio $(echo "scale=3; $f / $l" | bc)"
    echo "$l" >>"$work/local"
    echo "$f" >>"$work/fleet"
  done
  ml=$(median <"$work/local")
  mf=$(median <"$work/fleet")
  echo "median: local $ml probes/s, fleet (one agent) $mf probes/s, ratio $(echo "scale=3; $mf / $ml" | bc)"
  stop_all
fi

if [ "$mode" = ingest ] || [ "$mode" = all ]; then
  echo "== coordinator ingest: 4,194,304 records in 1,024 frames of 4,096 (1 % open)"
  for store in ${FLEET_STORES:-open all}; do
    for i in $(seq "$(( (pairs + 1) / 2 ))"); do
      start_nats
      start_serve 'slice_len = 1048576\n'
      id=$(post "{\"targets\":[\"127.0.0.0/12\"],\"ports\":\"1-4\",\"store\":\"$store\",\"from\":\"lab\"}")
      # Its four slices are claimed (no agent: a window of 4) and its spec stored.
      for _ in $(seq 100); do
        [ "$(sqlite3 "$DATA/porthawk.db" "SELECT COUNT(*) FROM fleet_slices WHERE sweep_id = $id")" -ge 4 ] && break
        sleep 0.1
      done
      kill -STOP "$SERVE_PID"
      pub=$("$load" "$NATS_URL" "$id" 1048576 100)
      t0=$(date +%s.%N)
      kill -CONT "$SERVE_PID"
      s=$(wait_end "$id")
      t1=$(echo "$s" | jq .finished_at)
      secs=$(echo "$t1 - $t0" | bc)
      frames=$(echo "$pub" | jq .frames)
      dups=$(curl -s "http://$API/metrics" | awk '/^porthawk_fleet_duplicate_frames_total/ {print $2}')
      echo "store=$store run $i: publish $(echo "$pub" | jq .publish_s) s ($(echo "$pub" | jq .bytes) bytes); drained in $secs s: $(echo "$frames / $secs" | bc) frames/s, $(echo "4194304 / $secs" | bc) records/s; state $(echo "$s" | jq -r .state), rows $(sqlite3 "$DATA/porthawk.db" "SELECT COUNT(*) FROM results WHERE sweep_id = $id"), frames delivered twice ${dups:-0}"
      stop_all
    done
  done
fi

if [ "$mode" = dead ] || [ "$mode" = all ]; then
  echo "== cost of a dead agent: two agents at --rate 20000, ack_wait 10s, 127.0.0.1-127.0.0.8 x 1-65535"
  for i in $(seq "$(( (pairs + 1) / 2 ))"); do
    for kill in no yes; do
      start_nats
      start_serve 'ack_wait = "10s"\n'
      a1=$(start_agent a1 --rate 20000)
      a2=$(start_agent a2 --rate 20000)
      pids+=("$a1" "$a2")
      wait_agents 2
      id=$(post '{"targets":["127.0.0.1-127.0.0.8"],"ports":"1-65535","from":"lab"}')
      if [ $kill = yes ]; then
        # Mid-sweep and mid-slice: a third of the sweep done, a2 running a slice.
        for _ in $(seq 600); do
          s=$(curl -s "http://$API/v1/sweeps/$id")
          running=$(curl -s "http://$API/v1/fleet/agents" | jq '[.agents[] | select(.name == "a2") | .running[]] | length')
          [ "$(echo "$s" | jq '.done * 3 >= .total')" = true ] && [ "$running" -gt 0 ] && break
          sleep 0.1
        done
        kill -9 "$a2"
        pids+=("$(start_agent a2 --rate 20000)")
      fi
      s=$(wait_end "$id")
      secs=$(echo "$s" | jq '.finished_at - .created_at')
      again=$(sqlite3 "$DATA/porthawk.db" "SELECT COALESCE(SUM(f.records), 0) FROM fleet_frames f JOIN fleet_slices l
          ON l.sweep_id = f.sweep_id AND l.slice = f.slice
          WHERE f.sweep_id = $id AND NOT (f.work_seq = l.winner_seq AND f.delivered = l.winner_delivered)")
      superseded=$(curl -s "http://$API/metrics" | awk '/^porthawk_fleet_superseded_frames_total/ {print $2}')
      echo "run $i kill=$kill: $secs s, state $(echo "$s" | jq -r .state), done $(echo "$s" | jq .done), re-probed positions (losing attempts in the ledger) $again, superseded frames ${superseded:-0}"
      stop_all
    done
  done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
