//! Runs the bench and prints its report, without the CLI:
//! `cargo run --release -p porthawk-bench --example report -- [--json] [--duration SECS] [SCENARIO...]`.

use std::time::Duration;

use porthawk_bench::{run, BenchConfig, Scenario};

fn main() {
    let mut config = BenchConfig::default();
    let mut json = false;
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--duration" => {
                let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
                config.duration = Duration::from_secs_f64(secs);
            }
            name => match name.parse::<Scenario>() {
                Ok(s) => scenarios.push(s),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            },
        }
    }
    if !scenarios.is_empty() {
        config.scenarios = scenarios;
    }
    match run(&config, &mut |line: &str| eprintln!("bench: {line}")) {
        Ok(report) if json => println!("{}", report.to_json()),
        Ok(report) => print!("{}", report.render_table()),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
