//! The log: `tracing` events from every crate, filtered by `RUST_LOG`, written to standard
//! error as text or JSON (`--log-format`). What a command reports to its user (the summary
//! line, errors, progress) is not logging and is written by the command itself.

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// What is logged when `RUST_LOG` is unset or invalid: porthawk's own events from `info` up,
/// other crates' from `warn` up. (A directive names a target prefix, so `porthawk` covers
/// `porthawk_core`, `porthawk_server` and the rest.)
const DEFAULT_FILTER: &str = "warn,porthawk=info";

/// Installs the global subscriber; called once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second subscriber cannot be installed (only tests could try); the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
