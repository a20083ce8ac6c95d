#!/usr/bin/env bash
# Banner-grab rate against one loopback farm of banner servers (crates/bench/examples/farm.rs):
# `porthawk scan --banner` beside `nmap -sV --version-light`, with the number of banners each
# reported against the farm's ground truth (every listener sends one). Loopback only, bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-4}
ports=${2:-64}
cargo build --release -p porthawk-cli >/dev/null
cargo build --release -p porthawk-bench --example farm >/dev/null
ph=target/release/porthawk
coproc FARM { exec target/release/examples/farm "$hosts" "$ports" 300; }
read -r tag first last portlist <&"${FARM[0]}"
[ "$tag" = FARM ] || { echo "farm did not start"; exit 1; }
total=$((hosts * ports))
echo "farm: $first-$last × $ports ports = $total banner listeners"
for i in 1 2 3; do
  start=$(date +%s.%N)
  n=$($ph scan "$first-$last" -p "$portlist" --banner --format jsonl 2>/dev/null | grep -c '"banner"' || true)
  end=$(date +%s.%N)
  echo "porthawk --banner: $n/$total banners, $(python3 -c "print(f'{$total/($end-$start):.0f}')") probes/s"
done
if command -v nmap >/dev/null; then
  start=$(date +%s.%N)
  nmap -sV --version-light -n -Pn -T5 -p "$portlist" "$first-${last##*.}" -oG /tmp/nmap-banner.gnmap >/dev/null
  end=$(date +%s.%N)
  # nmap names the farm's banner "ssh (protocol 2.0)": count the ports it identified so.
  n=$(grep -o '[0-9]*/open/tcp//ssh/' /tmp/nmap-banner.gnmap | wc -l)
  echo "nmap -sV --version-light: $n/$total banners, $(python3 -c "print(f'{$total/($end-$start):.0f}')") probes/s"
fi
exec {FARM[1]}>&-
wait
