#!/usr/bin/env bash
# The comparison runs behind docs/benchmarks.md, in one session on one machine, paired run by
# run (the machine is noisy: only runs taken side by side compare; medians, not means):
#   1. the closed-port sweep 127.0.0.1-127.0.0.4 × ports 1-65535 (262,140 probes): porthawk at
#      its defaults, the raw-syscall floor with 2 threads doing the same probes
#      (crates/bench/examples/floor.rs), an older porthawk if given, and nmap -sT -T5,
#      alternating, PAIRS times; wall and CPU (user + system) of each whole process from
#      /usr/bin/time; medians and the median of the pair ratios;
#   2. the same with `--shards 1` against the 1-thread floor;
#   3. connect latency p50/p99 at the defaults (`porthawk bench --scenario closed`), and the
#      busy fraction and window of each shard;
#   4. a filtered sweep in a private network namespace whose nftables rules drop every TCP
#      packet to 127.0.0.0/8: probes/s at 1k/4k/16k/max in flight, 1 s timeout, 1 try, and its
#      ratio to in-flight ÷ timeout (root only; FILTERED_ROUNDS, FILTERED_PATHS: see there);
#   5. CPU and context switches of an idle `porthawk serve` over 30 s (from /proc/PID/stat and
#      /proc/PID/task/*/status), with no monitor and with one monitor at a 60 s interval;
#   6. peak RSS of a 1,048,576-probe sweep (127.1.0.0/16 × 16 ports).
# Only loopback traffic; every run is bounded.
# Usage: bash benches/compare.sh [PAIRS (default 7)] [OLD_PORTHAWK_BINARY] [PAIRS_ONE_SHARD]
# (FDPATHS=1 adds io_uring's two descriptor paths to section 1: `--fd-path direct`, `plain`.)
# (nmap runs in every other pair of section 1: at 30k-50k probes/s it is the slowest run.)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-7}
old=${2:-}
pairs1=${3:-$pairs}
sections=${SECTIONS:-123456} # e.g. SECTIONS=345 runs only those
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p porthawk-cli >/dev/null 2>&1
cargo build --release -p porthawk-bench --example floor >/dev/null 2>&1
ph=$target/release/porthawk
floor=$target/release/examples/floor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "porthawk $commit; machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), RLIMIT_NOFILE hard $(ulimit -Hn)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# run NAME COMMAND...: runs it under /usr/bin/time, appends "NAME PAIR wall cpu" to
# $tmp/runs (PAIR: the loop's $i).
run() {
  local name=$1
  shift
  /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err" || {
    echo "$name failed:"
    tail -3 "$tmp/err"
    return 1
  }
  read -r wall user sys <"$tmp/time"
  local cpu
  cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
  echo "$name ${i:-0} $wall $cpu" >>"$tmp/runs"
  local extra=""
  if grep -q 'probes/s' "$tmp/err"; then
    extra=" ($(grep -o '[0-9]* probes/s' "$tmp/err" | head -1), $(grep -o 'connect p99 [0-9.]*ms' "$tmp/err" | head -1))"
  fi
  echo "  $name: ${wall} s wall, ${cpu} s CPU$extra"
}

# summary BASE NAME...: medians of each NAME, and the median over pairs of NAME ÷ BASE.
summary() {
  python3 - "$tmp/runs" "$@" <<'EOF'
import statistics, sys
path, base, *names = sys.argv[1:]
runs = {}
for line in open(path):
    n, pair, wall, cpu = line.split()
    runs.setdefault(n, {})[pair] = (float(wall), float(cpu))
b = runs[base]
med = lambda xs: statistics.median(list(xs))
print(f"  {base}: median wall {med(w for w, _ in b.values()):.2f} s, median CPU {med(c for _, c in b.values()):.2f} s ({len(b)} runs)")
for n in names:
    r = runs.get(n, {})
    pairs = [p for p in r if p in b]
    if not pairs:
        continue
    wr = med(r[p][0] / b[p][0] for p in pairs)
    cr = med(r[p][1] / b[p][1] for p in pairs)
    print(f"  {n}: median wall {med(w for w, _ in r.values()):.2f} s, median CPU {med(c for _, c in r.values()):.2f} s; "
          f"median pair ratio to {base}: wall {wr:.3f}, CPU {cr:.3f} ({len(pairs)} pairs)")
EOF
}

sweep=(127.0.0.1-127.0.0.4 -p 1-65535 --format jsonl)
if [[ $sections == *1* ]]; then
echo "== 1. closed sweep 127.0.0.1-127.0.0.4 x 1-65535 (262,140 probes), defaults vs the 2-thread floor, $pairs pairs"
: >"$tmp/runs"
for i in $(seq "$pairs"); do
  echo " pair $i (load $(cut -d' ' -f1 /proc/loadavg))"
  run floor2 "$floor" 2 127.0.0.1 127.0.0.4 1 65535
  run porthawk "$ph" scan "${sweep[@]}"
  if [ -n "${FDPATHS:-}" ]; then
    run direct "$ph" scan "${sweep[@]}" --fd-path direct
    run plain "$ph" scan "${sweep[@]}" --fd-path plain
  fi
  if [ -n "$old" ]; then run old "$old" scan "${sweep[@]}"; fi
  if command -v nmap >/dev/null && [ $((i % 2)) = 1 ]; then
    run nmap nmap -sT -n -Pn -T5 --min-rate 50000 -p1-65535 127.0.0.1-4 -oG /dev/null
  fi
done
summary floor2 porthawk direct plain old nmap
fi

if [[ $sections == *2* ]]; then
echo "== 2. the same with --shards 1 vs the 1-thread floor, $pairs1 pairs"
: >"$tmp/runs"
for i in $(seq "$pairs1"); do
  run floor1 "$floor" 1 127.0.0.1 127.0.0.4 1 65535
  run porthawk-1 "$ph" scan "${sweep[@]}" --shards 1
  if [ -n "$old" ]; then run old-1 "$old" scan "${sweep[@]}" --shards 1; fi
done
summary floor1 porthawk-1 old-1
fi

if [[ $sections == *3* ]]; then
echo "== 3. connect latency at the defaults (porthawk bench --scenario closed, 3 pairs of 3 s)"
latency() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
c = [s for s in r["scenarios"] if s["name"] == "closed"][0]
l = c["latency_us"]
line = "  %s: p50 %.2f ms, p99 %.2f ms; %.0f probes/s" % (sys.argv[1], l["p50"] / 1000, l["p99"] / 1000, c["probes_per_s"])
if "shard_busy" in c:
    line += "; shards busy %s; windows %s" % (c["shard_busy"], c["windows"])
if r.get("paired"):
    p = r["paired"]
    line += "; paired with the floor: rate ratio %.3f, CPU ratio %.3f" % (p["rate_ratio"], p["cpu_ratio"])
print(line)
' "$1"
}
"$ph" bench --scenario closed --duration 3s --pairs 3 --json 2>/dev/null | latency new
if [ -n "$old" ]; then
  "$old" bench --scenario closed --duration 3s --json 2>/dev/null | latency old
fi
fi

if [[ $sections == *4* ]]; then
# FILTERED_ROUNDS=6 doubles the sweep (two addresses at 16k and more in flight): the loss
# that every round repeats and the first round's ramp are told apart that way.
# FILTERED_PATHS=1 adds `--fd-path plain` and `--backend epoll` at every in-flight level (the
# default is io_uring with direct descriptors).
rounds=${FILTERED_ROUNDS:-3}
echo "== 4. filtered sweep in a network namespace, 1 s timeout, 1 try, $rounds rounds"
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null; then
  ns=ph-bench-$$
  ip netns add $ns
  trap 'ip netns del $ns 2>/dev/null || true; rm -rf "$tmp"' EXIT
  ip netns exec $ns ip link set lo up
  printf 'table inet f {\n chain in {\n type filter hook input priority 0;\n ip daddr 127.0.0.0/8 tcp dport 1-65535 drop\n }\n}\n' | ip netns exec $ns nft -f -
  max=$("$ph" scan 127.0.0.1 -p 1 --format jsonl 2>&1 >/dev/null | grep -o '[0-9]* in flight' | grep -o '[0-9]*')
  variants=("")
  [ -n "${FILTERED_PATHS:-}" ] && variants=("" "--fd-path plain" "--backend epoll")
  for inflight in 1000 4000 16000 "$max"; do
    probes=$((inflight * rounds))
    hosts=$(((probes + 65534) / 65535))
    ports=$((probes / hosts))
    for variant in "${variants[@]}"; do
      for bin in "$ph" $old; do
        [ "$bin" != "$ph" ] && [ -n "$variant" ] && continue
        # shellcheck disable=SC2086 # the variant is two words
        ip netns exec $ns "$bin" scan 127.0.0.1-127.0.0.$hosts -p 1-$ports --timeout 1s --tries 1 --inflight "$inflight" $variant --format jsonl >/dev/null 2>"$tmp/err"
        rate=$(grep -o '([0-9]* probes/s' "$tmp/err" | grep -o '[0-9]*')
        echo "  $([ "$bin" = "$ph" ] && echo new || echo old)${variant:+ ($variant)} in flight $inflight: $(grep -o '[0-9]* of [0-9]* probes in [0-9.]*s' "$tmp/err"), $rate probes/s, $(python3 -c "print(f'{$rate / $inflight:.3f}')") of in-flight/timeout; $(grep -o 'filtered [0-9]*' "$tmp/err")"
      done
    done
  done
else
  echo "  skipped: needs root and nft"
fi
fi

if [[ $sections == *5* ]]; then
echo "== 5. idle porthawk serve: CPU and context switches over 30 s after 5 s of start-up"
# switches PID: "TID SWITCHES" per thread (voluntary + not), from /proc/PID/task/*/status.
switches() {
  local t
  for t in /proc/"$1"/task/*; do
    awk -v tid="${t##*/}" '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print tid, n + 0}' \
      "$t/status" 2>/dev/null || true
  done
}
# woke BEFORE AFTER: context switches in between, summed over the threads alive at the end
# (a thread born in between counts from 0; one that ended in between is not counted).
woke() {
  awk 'NR == FNR {was[$1] = $2; next} {n += $2 - ($1 in was ? was[$1] : 0)} END {print n + 0}' "$1" "$2"
}
# idle BIN LABEL [CONFIG]: one idle server, measured.
idle() {
  local bin=$1 label=$2 config=${3:-}
  local data port pid t0 t1 threads
  data=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [[ -n $config ]]; then
    "$bin" serve --listen 127.0.0.1:$port --data "$data" --config "$config" >/dev/null 2>&1 &
  else
    "$bin" serve --listen 127.0.0.1:$port --data "$data" >/dev/null 2>&1 &
  fi
  pid=$!
  sleep 5
  t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  switches $pid >"$tmp/switches0"
  sleep 30
  t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  switches $pid >"$tmp/switches1"
  threads=$(ls /proc/$pid/task | wc -l)
  kill $pid
  wait $pid 2>/dev/null || true
  rm -rf "$data"
  echo "  $label: $((t1 - t0)) ticks of 10 ms in 30 s ($(python3 -c "print(f'{($t1 - $t0) / 30:.2f}')") % of one core), $(woke "$tmp/switches0" "$tmp/switches1") context switches, $threads threads"
}
# One monitor at a 60 s interval on a closed loopback port: its first check falls somewhere
# in the first minute (the phase is spread), so the 30 s window holds at most one check. The
# config has a directory of its own: the server watches the config file's directory, and
# the measurement's own files must not wake it.
mkdir "$tmp/config"
monitor=$tmp/config/porthawk.toml
printf '[[monitor]]\nname = "idle"\ntargets = ["127.0.0.1"]\nports = "9"\ninterval = "60s"\n' >"$monitor"
for bin in "$ph" $old; do
  who=$([ "$bin" = "$ph" ] && echo new || echo old)
  idle "$bin" "$who, no monitor"
  idle "$bin" "$who, one monitor every 60 s" "$monitor"
done
fi

if [[ $sections == *6* ]]; then
echo "== 6. peak RSS, 127.1.0.0/16 x 16 ports (1,048,576 probes)"
/usr/bin/time -f "  porthawk peak RSS %M KiB, %e s" "$ph" scan 127.1.0.0/16 -p 1-16 --format jsonl >/dev/null 2>"$tmp/err" || true
tail -1 "$tmp/err"
fi

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
