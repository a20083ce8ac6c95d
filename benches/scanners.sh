#!/usr/bin/env bash
# porthawk beside nmap -sT and RustScan on the same sweeps, in one session (issue 6):
#   1. the closed sweep 127.0.0.1-127.0.0.4 × 1-65535: probes/s and peak RSS of each;
#   2. accuracy on a loopback farm (crates/bench/examples/farm.rs): 4 hosts × 1,000 ports of
#      which 64 per host listen: the open ports each tool reports against that ground truth.
# RustScan comes from `cargo install rustscan`. Loopback only, bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p porthawk-cli >/dev/null
cargo build --release -p porthawk-bench --example farm >/dev/null
ph=target/release/porthawk
rate() { python3 -c "print(f'{$1/$2:.0f}')"; }
timed() { /usr/bin/time -f "%e %M" -o /tmp/scanners.time "$@"; read -r secs kib </tmp/scanners.time; }

echo "== 1. closed sweep 127.0.0.1-127.0.0.4 x 1-65535 (262,140 probes)"
timed $ph scan 127.0.0.1-127.0.0.4 -p 1-65535 --format jsonl >/dev/null 2>&1
echo "porthawk:                 $(rate 262140 "$secs") probes/s, peak RSS $((kib / 1024)) MiB"
timed $ph scan 127.0.0.1-127.0.0.4 -p 1-65535 --inflight 1024 --format jsonl >/dev/null 2>&1
echo "porthawk --inflight 1024: $(rate 262140 "$secs") probes/s, peak RSS $((kib / 1024)) MiB"
timed nmap -sT -n -Pn -T5 --min-rate 50000 -p1-65535 127.0.0.1-4 -oG /dev/null >/dev/null
echo "nmap -sT -T5:             $(rate 262140 "$secs") probes/s, peak RSS $((kib / 1024)) MiB"
if command -v rustscan >/dev/null; then
  for batch in 4500 16000; do
    timed rustscan -a 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 -r 1-65535 -b $batch -t 1000 -g \
      --ulimit 20000 >/dev/null 2>&1
    echo "rustscan -b $batch:       $(rate 262140 "$secs") probes/s, peak RSS $((kib / 1024)) MiB"
  done
fi

echo "== 2. accuracy on a farm: 4 hosts x 1000 ports, 256 listening"
coproc FARM { exec target/release/examples/farm 4 64 300; }
read -r tag first last portlist <&"${FARM[0]}"
[ "$tag" = FARM ] || { echo "farm did not start"; exit 1; }
lo=${portlist%%,*}
hi=$((lo + 999))
echo "farm: $first-$last, listeners on $lo-$((lo + 63)), ports swept $lo-$hi"
in_truth() { awk -v lo="$lo" '$2 >= lo && $2 < lo + 64' | sort -u | wc -l; }
outside() { awk -v lo="$lo" '$2 < lo || $2 >= lo + 64' | sort -u | wc -l; }
found=$($ph scan "$first-$last" -p "$lo-$hi" --format grep 2>/dev/null | awk '{print $2, $5}' | sed 's|/open.*||')
echo "porthawk:  $(echo "$found" | in_truth)/256 found, $(echo "$found" | outside) reported open outside the truth"
found=$(nmap -sT -n -Pn -T5 --min-rate 50000 -p "$lo-$hi" "$first-${last##*.}" -oG - | grep -o 'Host: [0-9.]*.*' |
  awk '{ip=$2; for (i=4; i<=NF; i++) if ($i ~ /\/open\//) {split($i, a, "/"); print ip, a[1]}}')
echo "nmap -sT:  $(echo "$found" | in_truth)/256 found, $(echo "$found" | outside) reported open outside the truth"
if command -v rustscan >/dev/null; then
  hosts=$(python3 -c "import ipaddress as i; a=i.ip_address('$first'); print(','.join(str(a+k) for k in range(4)))")
  found=$(rustscan -a "$hosts" -r "$lo-$hi" -b 4500 -t 1000 -g --ulimit 20000 2>/dev/null |
    sed 's/ -> \[/ /; s/\]//' | awk '{n=split($2, p, ","); for (i=1; i<=n; i++) print $1, p[i]}')
  echo "rustscan:  $(echo "$found" | in_truth)/256 found, $(echo "$found" | outside) reported open outside the truth"
fi
exec {FARM[1]}>&-
wait
