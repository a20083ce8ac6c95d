//! The `porthawk` binary: flags, output and glue. The logic lives in the library crates.
#![forbid(unsafe_code)]

mod agent;
mod args;
mod bench;
mod check;
mod completions;
mod diff;
mod fleet;
mod logging;
mod man;
mod output;
mod probe;
mod scan;
mod serve;
mod targets;

use std::io::Write;
use std::process::ExitCode;

use args::Command;

fn main() -> ExitCode {
    let cli = match args::parse_from(std::env::args_os()) {
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
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // "the following required arguments were not provided:" names them on the
            // lines after it: keep them on the one line.
            let line = if first.ends_with(':') {
                let named: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                format!("{first} {}", named.join(", "))
            } else {
                first.to_string()
            };
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
        Command::Completions(args) => completions::run(args),
        Command::Man => man::run(),
        Command::Diff(args) => diff::run(&args),
        Command::Agent(args) => agent::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Check(args) => match check::run(args) {
            // A check that cannot run is UNKNOWN to the monitoring system, not CRITICAL.
            Err(err) => {
                let text = report(&err).replace('|', "\\x7c");
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
            let _ = writeln!(std::io::stderr(), "porthawk: {}", report(&err));
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

/// The error and its causes on one line, `outer: cause: root`, each said once. Our error types
/// keep their source out of their text (`{:#}` would print it twice otherwise); a cause whose
/// text the line already holds word for word, as some library errors repeat theirs, is skipped.
fn report(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    use anyhow::Context;

    #[test]
    fn report_prints_each_cause_of_a_store_error_once() {
        // A data directory under a file cannot be created: ENOTDIR, said once.
        let file = tempfile_path("report-file");
        std::fs::write(&file, "x").expect("write");
        let err = porthawk_server::Server::start(porthawk_server::ServerConfig {
            data_dir: file.join("data"),
            ..Default::default()
        })
        .err()
        .expect("a data directory under a file");
        let line = report(&anyhow::Error::from(err));
        let _ = std::fs::remove_file(&file);
        assert!(line.contains("data"), "{line}");
        assert_eq!(line.matches("os error").count(), 1, "{line}");
    }

    #[test]
    fn report_skips_a_cause_its_wrapper_already_quotes() {
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "read failed: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Err::<(), _>(Repeats(std::io::Error::other("disk on fire")))
            .context("cannot load the config")
            .expect_err("an error");
        assert_eq!(
            report(&err),
            "cannot load the config: read failed: disk on fire"
        );
    }

    fn tempfile_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("porthawk-{name}-{}", std::process::id()))
    }
}
