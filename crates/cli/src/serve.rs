//! `porthawk serve`: settings from flags, the config file and the environment, then the
//! server of `porthawk-server` until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use porthawk_server::{Ready, ServerConfig, TOKEN_ENV};

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
    let mut refused = Vec::new();
    if let Some(path) = &args.blackbox_config {
        let modules = porthawk_server::load_blackbox(path)?;
        refused = modules
            .values()
            .filter_map(|m| m.as_ref().err().cloned())
            .collect();
        config.blackbox = std::sync::Arc::new(modules);
    }
    let monitors = config.watch.monitors.len();
    porthawk_server::run(config, |ready| {
        // One plain line a script can wait for, with the address actually bound
        // (--listen :0); the rest is the log, where RUST_LOG and --log-format apply.
        eprintln!("{}", listening_line(ready));
        for note in ready_notes(ready, monitors) {
            match note {
                Note::Warn(text) => tracing::warn!("{text}"),
                Note::Info(text) => tracing::info!("{text}"),
            }
        }
        for why in &refused {
            tracing::warn!("blackbox module refused, /probe answers 400 for it: {why}");
        }
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The line a script waits for: the address actually bound, the backend, the data directory.
fn listening_line(ready: &Ready) -> String {
    format!(
        "porthawk: listening on http://{} (backend {}, data in {})",
        ready.addr,
        ready.backend,
        ready.data_dir.display()
    )
}

/// A log line `serve` writes once it listens.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    Warn(String),
    Info(String),
}

/// What the log says about a server that just started.
fn ready_notes(ready: &Ready, monitors: usize) -> Vec<Note> {
    let mut notes = Vec::new();
    if let Some(reason) = &ready.fallback_reason {
        notes.push(Note::Warn(format!(
            "io_uring not used, falling back to epoll: {reason}"
        )));
    }
    if !ready.token {
        notes.push(Note::Warn(format!(
            "no API token configured ([api] token or {TOKEN_ENV}): listening on loopback \
             only, mutating routes are open to local users"
        )));
    }
    if monitors > 0 {
        notes.push(Note::Info(format!("watching {monitors} monitor(s)")));
    }
    if ready.interrupted > 0 {
        notes.push(Note::Warn(format!(
            "{} sweep(s) of a previous run were left running and are now marked interrupted",
            ready.interrupted
        )));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthawk_engine::Backend;

    fn ready(fallback_reason: Option<&str>) -> Ready {
        Ready {
            addr: "127.0.0.1:9180".parse().unwrap(),
            token: true,
            backend: Backend::Epoll,
            fallback_reason: fallback_reason.map(str::to_string),
            data_dir: "data".into(),
            interrupted: 0,
            max_connections: 64,
        }
    }

    /// Issue 14 item 2: a server that fell back to epoll says so, and why.
    #[test]
    fn a_fallback_to_epoll_is_said_with_its_reason() {
        let fell_back = ready(Some("shard 0 could not set up its io_uring ring: EINVAL"));
        assert_eq!(
            listening_line(&fell_back),
            "porthawk: listening on http://127.0.0.1:9180 (backend epoll, data in data)"
        );
        assert_eq!(
            ready_notes(&fell_back, 0),
            [Note::Warn(
                "io_uring not used, falling back to epoll: shard 0 could not set up its io_uring ring: EINVAL"
                    .to_string()
            )]
        );
        assert_eq!(ready_notes(&ready(None), 0), []);
    }
}
