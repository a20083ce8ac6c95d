#!/usr/bin/env bash
# The comparison runs behind docs/benchmarks.md, in one session on one machine:
#   1. a closed-port sweep of 127.0.0.1-127.0.0.4 × ports 1-65535: porthawk (both backends),
#      nmap -sT, and the raw-syscall floor (measured by `porthawk bench`);
#   2. peak RSS of a 1,048,576-probe sweep (127.1.0.0/16 × 16 ports);
#   3. a filtered sweep in a private network namespace whose nftables rules drop every TCP
#      packet to 127.0.0.1: probes/s against in-flight, 1 s timeout (root only).
# Only loopback traffic; every run is bounded. Usage: bash benches/compare.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -p porthawk-cli >/dev/null
ph=target/release/porthawk
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), RLIMIT_NOFILE hard $(ulimit -Hn)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== 1. closed sweep 127.0.0.1-127.0.0.4 x 1-65535 (262,140 probes)"
for i in $(seq "$runs"); do
  for backend in uring epoll; do
    $ph scan 127.0.0.1-127.0.0.4 -p 1-65535 --backend $backend --format jsonl >/dev/null 2>/tmp/ph.err
    echo "porthawk $backend: $(grep -o '[0-9]* probes/s' /tmp/ph.err)"
  done
  $ph scan 127.0.0.1-127.0.0.4 -p 1-65535 --inflight 1024 >/dev/null 2>/tmp/ph.err
  echo "porthawk uring --inflight 1024: $(grep -o '[0-9]* probes/s' /tmp/ph.err)"
  if command -v nmap >/dev/null; then
    start=$(date +%s.%N)
    nmap -sT -n -Pn -T5 --min-rate 50000 -p1-65535 127.0.0.1-4 -oG /tmp/nmap.gnmap >/dev/null
    end=$(date +%s.%N)
    echo "nmap -sT: $(python3 -c "print(f'{262140/($end-$start):.0f}')") probes/s ($(grep -c '/open/' /tmp/nmap.gnmap) hosts with open ports)"
  fi
  $ph bench --scenario closed --duration 3s 2>/dev/null | grep -E "floor" | head -1
done

echo "== 2. peak RSS, 127.1.0.0/16 x 16 ports (1,048,576 probes)"
/usr/bin/time -f "porthawk peak RSS %M KiB, %e s" $ph scan 127.1.0.0/16 -p 1-16 --format jsonl >/dev/null 2>/tmp/ph.err || true
tail -2 /tmp/ph.err

echo "== 3. filtered sweep in a network namespace, 1 s timeout, 1 try"
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null; then
  ns=ph-bench-$$
  ip netns add $ns
  trap 'ip netns del $ns 2>/dev/null || true' EXIT
  ip netns exec $ns ip link set lo up
  printf 'table inet f {\n chain in {\n type filter hook input priority 0;\n ip daddr 127.0.0.1 tcp dport 1-65535 drop\n }\n}\n' | ip netns exec $ns nft -f -
  for inflight in 1000 4000 16000 19744; do
    ports=$((inflight * 3))
    [ $ports -gt 65535 ] && ports=65535
    ip netns exec $ns $ph scan 127.0.0.1 -p 1-$ports --timeout 1s --tries 1 --inflight $inflight --format jsonl >/dev/null 2>/tmp/ph.err
    echo "in flight $inflight: $(grep -o '[0-9]* of [0-9]* probes in [0-9.]*s ([0-9]* probes/s)' /tmp/ph.err); $(grep -o 'filtered [0-9]*' /tmp/ph.err)"
  done
else
  echo "skipped: needs root and nft"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
