//! `porthawk agent`: flags to an [`AgentConfig`], a small tokio runtime, SIGTERM to stop.
//! The logic is in `porthawk_fleet::agent`.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use porthawk_core::FleetName;
use porthawk_engine::{default_inflight, max_inflight, raise_nofile_limit, EngineConfig};
use porthawk_fleet::agent::{default_agent_name, AgentConfig};
use porthawk_fleet::conn::ConnConfig;
use porthawk_fleet::remedy::RemedyConfig;
use porthawk_watch::config::parse_agent_actions;
use std::sync::Arc;

use crate::args::AgentArgs;

/// Frames waiting for a PubAck above which the agent takes no new work.
const MAX_PENDING_FRAMES: usize = 64;

/// Usage errors (bad names, unsafe settings) are `Err` (exit 2); a failure once running is
/// printed here and exits 1.
pub fn run(args: AgentArgs) -> Result<ExitCode> {
    let name = match &args.name {
        Some(name) => FleetName::new("agent", name).map_err(|e| anyhow!("--name: {e}"))?,
        None => default_agent_name().ok_or_else(|| {
            anyhow!(
                "the host name is not a valid agent name (1 to 64 of A-Z a-z 0-9 _ -): give --name"
            )
        })?,
    };
    let pools = args
        .pools
        .iter()
        .map(|p| FleetName::new("pool", p).map_err(|e| anyhow!("--pool: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let conn = ConnConfig {
        url: args.nats.clone(),
        name,
        nkey: args.nkey.clone(),
        tls_ca: args.tls_ca.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        allow_insecure: args.allow_insecure,
    };
    // Before any traffic: a remote server without credentials is refused here.
    conn.check()?;
    let nofile = raise_nofile_limit();
    let inflight = match args.inflight {
        Some(n) if n as usize > max_inflight(nofile) => {
            return Err(anyhow!(
                "--inflight {n} is more than the file descriptor limit allows ({})",
                max_inflight(nofile)
            ))
        }
        Some(n) => n as usize,
        None => default_inflight(nofile),
    };
    let mut engine = EngineConfig {
        inflight,
        backend: args.backend,
        ..EngineConfig::default()
    };
    if let Some(shards) = args.shards {
        engine.shards = shards.into();
    }
    engine.shards = engine.shards.min(engine.inflight).max(1);
    let remedy = match &args.actions {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("--actions: cannot read {}: {e}", path.display()))?;
            let file = path.display().to_string();
            let actions = parse_agent_actions(&file, &text).map_err(|e| anyhow!("{e}"))?;
            Some(Arc::new(RemedyConfig {
                file,
                actions,
                dry_run: args.dry_run,
            }))
        }
        None => None,
    };
    for name in &args.host_names {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(anyhow!("--host-name: {name:?} is not a host name"));
        }
    }
    let config = AgentConfig {
        conn,
        pools,
        slices: args.slices.into(),
        grace: args.grace,
        heartbeat: args.heartbeat,
        rate: args.rate,
        engine,
        max_pending_frames: MAX_PENDING_FRAMES,
        remedy,
        host_addresses: args.host_addresses.clone(),
        host_names: args.host_names.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        };
        anyhow::Ok(porthawk_fleet::agent::run(config, stop).await)
    })?;
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("porthawk: agent: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
