//! `porthawk bench`: capacity planning on loopback, with the harness of `porthawk-bench`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use porthawk_bench::{BenchConfig, Scenario};

use crate::args::BenchArgs;

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let mut config = BenchConfig {
        scenarios: if args.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenario.clone()
        },
        duration: args.duration,
        backend: args.backend,
        direct_fds: args.fd_path.direct_fds(),
        max_probes: args.max_probes.max(1),
        inflight: args.inflight.map(|n| n as usize),
        pairs: args.pairs.into(),
        ..BenchConfig::default()
    };
    if let Some(shards) = args.shards {
        config.shards = shards.into();
    }
    let tty = std::io::stderr().is_terminal();
    let mut progress = |line: &str| {
        // On a terminal progress overwrites itself; in a log it is one line per step.
        if tty {
            eprint!("\r\x1b[2Kporthawk bench: {line}");
        } else {
            eprintln!("porthawk bench: {line}");
        }
    };
    let report = porthawk_bench::run(&config, &mut progress)?;
    if tty {
        eprintln!();
    }
    let text = if args.json {
        report.to_json()
    } else {
        report.render_table()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
