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
    let monitors = config.watch.monitors.len();
    porthawk_server::run(config, |ready| {
        for line in ready_lines(ready, monitors) {
            eprintln!("{line}");
        }
    })?;
    eprintln!("porthawk: stopped");
    Ok(ExitCode::SUCCESS)
}

/// What `serve` tells its user once it listens. The first line is the one a script waits
/// for, with the address actually bound (`--listen :0`).
fn ready_lines(ready: &Ready, monitors: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "porthawk: listening on http://{} (backend {}, data in {})",
        ready.addr,
        ready.backend,
        ready.data_dir.display()
    )];
    if let Some(reason) = &ready.fallback_reason {
        lines.push(format!(
            "porthawk: io_uring not used, falling back to epoll: {reason}"
        ));
    }
    if !ready.token {
        lines.push(format!(
            "porthawk: no API token configured ([api] token or {TOKEN_ENV}): \
             listening on loopback only, mutating routes are open to local users"
        ));
    }
    if monitors > 0 {
        lines.push(format!("porthawk: watching {monitors} monitor(s)"));
    }
    if ready.interrupted > 0 {
        lines.push(format!(
            "porthawk: {} sweep(s) of a previous run were left running and are now marked interrupted",
            ready.interrupted
        ));
    }
    lines
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
        let lines = ready_lines(
            &ready(Some("shard 0 could not set up its io_uring ring: EINVAL")),
            0,
        );
        assert_eq!(
            lines[0],
            "porthawk: listening on http://127.0.0.1:9180 (backend epoll, data in data)"
        );
        assert_eq!(
            lines[1],
            "porthawk: io_uring not used, falling back to epoll: shard 0 could not set up its io_uring ring: EINVAL"
        );
        assert_eq!(ready_lines(&ready(None), 0).len(), 1);
    }
}
