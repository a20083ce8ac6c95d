//! `porthawk serve`: settings from flags, the config file and the environment, then the
//! server of `porthawk-server` until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use porthawk_server::{ServerConfig, TOKEN_ENV};

use crate::args::ServeArgs;

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let env_token = std::env::var(TOKEN_ENV).ok();
    let mut config = ServerConfig::load(args.config.as_deref(), env_token)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    config.dry_run = args.dry_run;
    let monitors = config.watch.monitors.len();
    porthawk_server::run(config, |ready| {
        // One line a script can wait for, with the address actually bound (--listen :0).
        eprintln!(
            "porthawk: listening on http://{} (backend {}, data in {})",
            ready.addr,
            ready.backend,
            ready.data_dir.display()
        );
        // The rest is the log: RUST_LOG and --log-format apply.
        if !ready.token {
            tracing::warn!(
                "no API token configured ([api] token or {TOKEN_ENV}): listening on loopback \
                 only, mutating routes are open to local users"
            );
        }
        if monitors > 0 {
            tracing::info!(monitors, "watching {monitors} monitor(s)");
        }
        if ready.interrupted > 0 {
            tracing::warn!(
                sweeps = ready.interrupted,
                "{} sweep(s) of a previous run were left running and are now marked interrupted",
                ready.interrupted
            );
        }
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
