//! The raw-syscall floor as a command, for side-by-side runs with `porthawk scan` on the same
//! targets (`benches/compare.sh`): `THREADS` threads make one probe each (socket +
//! `SO_LINGER 0` + non-blocking connect + close) to every port of every IPv4 address in
//! `FIRST..=LAST`, then it prints the count, the wall time and the process's CPU time.
//!
//! Usage: `floor THREADS FIRST_IPV4 LAST_IPV4 LOW_PORT HIGH_PORT`, e.g.
//! `floor 2 127.0.0.1 127.0.0.4 1 65535` (262,140 probes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use porthawk_bench::{measure_floor, FloorConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [threads, first, last, low, high] = &args[..] else {
        return Err("usage: floor THREADS FIRST_IPV4 LAST_IPV4 LOW_PORT HIGH_PORT".into());
    };
    let threads: usize = threads.parse()?;
    let (first, last): (Ipv4Addr, Ipv4Addr) = (first.parse()?, last.parse()?);
    let (low, high): (u16, u16) = (low.parse()?, high.parse()?);
    if threads == 0 || u32::from(first) > u32::from(last) || low == 0 || low > high {
        return Err("need THREADS ≥ 1, FIRST ≤ LAST and 1 ≤ LOW ≤ HIGH".into());
    }
    // Ports in the outer loop, as a sweep's permutation spreads a host's ports out.
    let targets: Vec<SocketAddr> = (low..=high)
        .flat_map(|p| {
            (u32::from(first)..=u32::from(last))
                .map(move |h| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(h)), p))
        })
        .collect();
    let started = Instant::now();
    let r = measure_floor(
        &FloorConfig {
            threads,
            // Bounded by the count: one probe per target.
            duration: Duration::from_secs(3600),
            max_probes: targets.len() as u64,
        },
        &targets,
    );
    println!(
        "floor: {} probes, {} threads, {:.3} s wall, {:.3} s CPU, {:.0} probes/s, {:.2} µs CPU/probe",
        r.probes,
        r.threads,
        started.elapsed().as_secs_f64(),
        r.cpu.as_secs_f64(),
        r.probes_per_sec,
        r.cpu_us_per_probe()
    );
    Ok(())
}
