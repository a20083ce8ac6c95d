//! Runs a banner farm (every listener sends a banner on accept) until standard input closes or
//! a time limit passes, so that other scanners can be measured against the same farm:
//! `benches/banner.sh` runs `porthawk scan --banner` and `nmap -sV --version-light` on it.
//!
//! Prints `FARM <first host> <last host> <ports, comma-separated>` once it listens.
//! Usage: `farm [HOSTS] [PORTS_PER_HOST] [MAX_SECONDS]`.

use std::io::Read;
use std::time::Duration;

use porthawk_bench::{Farm, FarmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hosts: u8 = args.next().map_or(Ok(4), |a| a.parse())?;
    let ports: u16 = args.next().map_or(Ok(64), |a| a.parse())?;
    let max_secs: u64 = args.next().map_or(Ok(600), |a| a.parse())?;
    let farm = Farm::start(&FarmConfig {
        hosts,
        open_ports: ports,
        banner_ports: ports,
        closed_ports: 0,
        filtered_ports: 0,
        accept_threads: 2,
    })?;
    let ports: Vec<String> = farm.open_ports().iter().map(u16::to_string).collect();
    let first = farm.hosts().first().ok_or("no host")?;
    let last = farm.hosts().last().ok_or("no host")?;
    println!("FARM {first} {last} {}", ports.join(","));
    // Serve until stdin closes (the script is done) or the time limit passes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(max_secs));
    drop(farm);
    Ok(())
}
