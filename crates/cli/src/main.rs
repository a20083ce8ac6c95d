//! The `porthawk` binary: flags, output and glue. The logic lives in the library crates.
#![forbid(unsafe_code)]

mod args;
mod bench;
mod check;
mod diff;
mod logging;
mod output;
mod probe;
mod scan;
mod serve;
mod targets;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let check = args::runs_check(std::env::args_os());
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                // A plugin run for its help or version did not check anything: UNKNOWN (3),
                // as the monitoring plugin guidelines ask.
                return ExitCode::from(if check { check::UNKNOWN } else { 0 });
            }
            // Clap explains at length; the contract is one line that names the argument.
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            // For `check`, bad arguments are UNKNOWN (3), as monitoring systems expect.
            if check {
                // A `|` would start the perfdata early (an --expect pattern quoted here may
                // have one): write it as banners do.
                println!("PORTHAWK UNKNOWN - {}", line.replace('|', "\\x7c"));
                return ExitCode::from(check::UNKNOWN);
            }
            eprintln!("porthawk: {line}");
            return ExitCode::from(2);
        }
    };
    logging::init(cli.log_format);
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "porthawk starting");
    let result = match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Diff(args) => diff::run(&args),
        Command::Check(args) => match check::run(args) {
            // A check that cannot run is UNKNOWN to the monitoring system, not CRITICAL.
            Err(err) => {
                let text = format!("{err:#}").replace('|', "\\x7c");
                println!("PORTHAWK UNKNOWN - {text}");
                return ExitCode::from(check::UNKNOWN);
            }
            ok => ok,
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "porthawk: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
