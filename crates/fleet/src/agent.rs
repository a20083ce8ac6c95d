//! `porthawk agent`: take slices from the pool consumers, run them on the local engine, publish
//! their frames, ack after every PubAck (fleet.md §3.4, §3.5).
//!
//! One task fetches work (only when a slot is free and publishes are not backed up), one task
//! per running slice drives its engine job and publishes its frames, one task puts the
//! registry heartbeat and one watches the spec bucket for cancellations. The engine's blocking
//! result channel is bridged to the slice's task by a blocking thread.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::{self, AckKind, Context};
use futures_util::StreamExt;
use porthawk_core::{
    pool_consumer, AgentStatus, Attempt, FleetJob, FleetName, RunningSlice, SweepSpec, WireMessage,
    AGENTS_BUCKET, SPECS_BUCKET, WORK_STREAM,
};
use porthawk_engine::{Engine, EngineConfig};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{ConnConfig, ConnError, ServerErrors};

/// What an agent does and how.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where NATS is and who this agent is.
    pub conn: ConnConfig,
    /// The pools it takes work from (one consumer each).
    pub pools: Vec<FleetName>,
    /// Slices run at once.
    pub slices: usize,
    /// How long running slices may finish after a stop before they are given back.
    pub grace: Duration,
    /// Registry heartbeat interval.
    pub heartbeat: Duration,
    /// A cap on probe starts per second, applied to each running slice.
    pub rate: Option<u64>,
    /// The engine.
    pub engine: EngineConfig,
    /// Frames waiting for a PubAck above which no new work is taken.
    pub max_pending_frames: usize,
    /// The actions the coordinator may ask for (`--actions FILE`); without it the agent
    /// does not listen for action requests.
    pub remedy: Option<Arc<crate::remedy::RemedyConfig>>,
    /// Addresses of this host declared besides the detected ones (`--host-address`).
    pub host_addresses: Vec<IpAddr>,
    /// Names of this host declared besides the detected one (`--host-name`).
    pub host_names: Vec<String>,
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Connecting failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The streams, consumers or buckets could not be bound.
    #[error("{0}")]
    Bind(String),
    /// The engine did not start.
    #[error("cannot start the engine: {0}")]
    Engine(String),
}

/// Room NATS needs in a message besides the frame (headers, protocol), per fleet.md §3.5.
const PAYLOAD_HEADROOM: usize = 8 << 10;
/// The most addresses a heartbeat lists (the status decoder's bound is 1,024).
const STATUS_LIST_MAX: usize = 1024;

/// Shared by every task of the agent.
pub(crate) struct Ctx {
    pub(crate) name: FleetName,
    pub(crate) js: Context,
    pub(crate) errors: ServerErrors,
    pub(crate) engine: Engine,
    pub(crate) specs: Store,
    pub(crate) rate: Option<u64>,
    pub(crate) max_frame: usize,
    pub(crate) progress_every: Duration,
    /// Frames published and not yet PubAcked, over all slices.
    pub(crate) pending: AtomicUsize,
    /// Records published, for probes/s in the heartbeat.
    pub(crate) records: AtomicU64,
    pub(crate) running: Mutex<HashMap<Attempt, Running>>,
    /// Specs by (key, revision).
    pub(crate) spec_cache: Mutex<HashMap<(String, u64), Arc<SweepSpec>>>,
    /// Set after the grace period: running slices are cancelled and given back (NAK).
    pub(crate) give_back: watch::Receiver<bool>,
}

pub(crate) struct Running {
    pub(crate) job: FleetJob,
    pub(crate) slice: u32,
    pub(crate) cancel: watch::Sender<bool>,
}

/// Runs an agent until `stop` completes (SIGTERM in the binary), then lets running slices
/// finish within the grace period and gives back the rest. `Ok` on a clean stop.
pub async fn run(config: AgentConfig, stop: impl Future<Output = ()>) -> Result<(), AgentError> {
    if config.pools.is_empty() {
        return Err(AgentError::Bind("at least one --pool is needed".into()));
    }
    let (client, errors) = config.conn.connect().await?;
    let js = jetstream::new(client.clone());
    let bind = |what: String, e: &dyn std::fmt::Display| {
        AgentError::Bind(format!("{what}: {e}{}", errors.explain()))
    };
    let work = js
        .get_stream_no_info(WORK_STREAM)
        .await
        .map_err(|e| bind(format!("cannot bind the work stream {WORK_STREAM}"), &e))?;
    let mut consumers: Vec<(FleetName, PullConsumer)> = Vec::new();
    let mut ack_wait = Duration::from_secs(30);
    for pool in &config.pools {
        let name = pool_consumer(pool);
        let consumer: PullConsumer = work.get_consumer(&name).await.map_err(|e| {
            let hint = if e.to_string().contains("not found") {
                format!(
                    " (the coordinator creates it at start: has `porthawk serve` with a [fleet] \
                     section and pool {pool} run against this NATS server?)"
                )
            } else {
                String::new()
            };
            bind(
                format!("cannot bind the work consumer {name} of pool {pool}"),
                &format!("{e}{hint}"),
            )
        })?;
        ack_wait = ack_wait.min(consumer.cached_info().config.ack_wait);
        consumers.push((pool.clone(), consumer));
    }
    let specs = js
        .get_key_value(SPECS_BUCKET)
        .await
        .map_err(|e| bind(format!("cannot bind the spec bucket {SPECS_BUCKET}"), &e))?;
    let agents = js.get_key_value(AGENTS_BUCKET).await.map_err(|e| {
        bind(
            format!("cannot bind the registry bucket {AGENTS_BUCKET}"),
            &e,
        )
    })?;
    let mut spec_watch = specs
        .watch_all()
        .await
        .map_err(|e| bind(format!("cannot watch the spec bucket {SPECS_BUCKET}"), &e))?;
    let engine = Engine::start(&config.engine).map_err(|e| AgentError::Engine(format!("{e:#}")))?;
    let (give_back_tx, give_back) = watch::channel(false);
    let max_frame = client
        .server_info()
        .max_payload
        .saturating_sub(PAYLOAD_HEADROOM)
        .max(PAYLOAD_HEADROOM);
    let ctx = Arc::new(Ctx {
        name: config.conn.name.clone(),
        js,
        errors: errors.clone(),
        engine,
        specs,
        rate: config.rate,
        max_frame,
        progress_every: (ack_wait / 3).max(Duration::from_millis(100)),
        pending: AtomicUsize::new(0),
        records: AtomicU64::new(0),
        running: Mutex::new(HashMap::new()),
        spec_cache: Mutex::new(HashMap::new()),
        give_back,
    });
    // Listening for action requests before the registry shows this agent.
    let remedy = match &config.remedy {
        Some(r) => Some(
            crate::remedy::serve(client.clone(), ctx.name.clone(), Arc::clone(r))
                .await
                .map_err(|e| AgentError::Bind(format!("{e}{}", errors.explain())))?,
        ),
        None => None,
    };
    let status = StatusSource {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pools: config.pools.clone(),
        backend: ctx.engine.backend().to_string(),
        shards: ctx.engine.shards() as u32,
        addresses: declared(host_addresses(), &config.host_addresses),
        names: declared(host_names(), &config.host_names),
    };
    // The first heartbeat is part of binding: an agent that may not write its own key (a
    // wrong name for its nkey) stops here with the server's reason.
    agents
        .put(ctx.name.as_str(), status.build(&ctx, 0).encode().into())
        .await
        .map_err(|e| {
            bind(
                format!(
                    "cannot write this agent's key {} in {AGENTS_BUCKET}",
                    ctx.name
                ),
                &e,
            )
        })?;
    tracing::info!(
        agent = %ctx.name,
        addresses = ?status.addresses,
        names = ?status.names,
        pools = ?config.pools.iter().map(FleetName::as_str).collect::<Vec<_>>(),
        backend = %ctx.engine.backend(),
        slices = config.slices,
        "agent bound; taking work"
    );

    let (stop_tx, _stop_rx) = watch::channel(false);
    let fetcher = tokio::spawn(fetch_loop(
        Arc::clone(&ctx),
        consumers,
        config.slices.max(1),
        config.max_pending_frames.max(1),
        stop_tx.subscribe(),
    ));
    let watcher_ctx = Arc::clone(&ctx);
    let watcher = tokio::spawn(async move {
        while let Some(entry) = spec_watch.next().await {
            let Ok(entry) = entry else { continue };
            if matches!(entry.operation, Operation::Delete | Operation::Purge) {
                cancel_job(&watcher_ctx, &entry.key);
            }
        }
        tracing::warn!("the spec bucket watch ended; cancellations are no longer seen");
    });
    let beat_ctx = Arc::clone(&ctx);
    let beat_agents = agents.clone();
    let beat_every = config.heartbeat;
    let beat_status = status.clone();
    let heartbeat = tokio::spawn(async move {
        let mut last_records = 0;
        let mut tick = tokio::time::interval(beat_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let records = beat_ctx.records.load(Ordering::Relaxed);
            let per_s = ((records - last_records) as f64 / beat_every.as_secs_f64()) as u64;
            last_records = records;
            let value = beat_status.build(&beat_ctx, per_s).encode();
            if let Err(e) = beat_agents.put(beat_ctx.name.as_str(), value.into()).await {
                tracing::warn!(error = %e, "registry heartbeat failed{}", beat_ctx.errors.explain());
            }
        }
    });

    stop.await;
    tracing::info!(grace = ?config.grace, "stopping: no new work; running slices get the grace period");
    let _ = stop_tx.send(true);
    let mut slices = fetcher.await.unwrap_or_default();
    let finished = tokio::time::timeout(config.grace, async {
        while slices.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            slices = slices.len(),
            "grace period over: giving back the running slices"
        );
        let _ = give_back_tx.send(true);
        // Each slice cancels its job and NAKs its message; bounded in case NATS is gone.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while slices.join_next().await.is_some() {}
        })
        .await;
        slices.abort_all();
    }
    heartbeat.abort();
    watcher.abort();
    if let Some(r) = remedy {
        r.abort();
    }
    // The heartbeat is gone before the key is removed, so no beat can write it again.
    let _ = heartbeat.await;
    if let Err(e) = agents.delete(ctx.name.as_str()).await {
        tracing::warn!(error = %e, "could not remove this agent's registry key");
    }
    let _ = client.flush().await;
    tracing::info!("agent stopped");
    Ok(())
}

/// What the heartbeat reports besides the running slices.
#[derive(Debug, Clone)]
struct StatusSource {
    version: String,
    pools: Vec<FleetName>,
    backend: String,
    shards: u32,
    addresses: Vec<IpAddr>,
    names: Vec<String>,
}

impl StatusSource {
    fn build(&self, ctx: &Ctx, probes_per_s: u64) -> AgentStatus {
        let running = ctx
            .running
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(attempt, r)| RunningSlice {
                        job: r.job,
                        slice: r.slice,
                        attempt: *attempt,
                    })
                    .collect()
            })
            .unwrap_or_default();
        AgentStatus {
            version: self.version.clone(),
            pools: self.pools.clone(),
            backend: self.backend.clone(),
            shards: self.shards,
            inflight: ctx.engine.inflight_per_shard().iter().sum::<usize>() as u32,
            probes_per_s,
            running,
            addresses: self.addresses.clone(),
            names: self.names.clone(),
        }
    }
}

/// The spec key of `job` was deleted: cancel its running slices.
fn cancel_job(ctx: &Ctx, key: &str) {
    let Ok(job) = key.parse::<FleetJob>() else {
        return;
    };
    if let Ok(running) = ctx.running.lock() {
        for r in running.values().filter(|r| r.job == job) {
            tracing::info!(%job, slice = r.slice, "spec deleted: cancelling the slice");
            let _ = r.cancel.send(true);
        }
    }
}

/// Takes work while not stopping: one message at a time, only with a free slot and fewer
/// than `max_pending` frames waiting for a PubAck. Returns the running slices.
async fn fetch_loop(
    ctx: Arc<Ctx>,
    consumers: Vec<(FleetName, PullConsumer)>,
    slots: usize,
    max_pending: usize,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(slots));
    let mut tasks = JoinSet::new();
    let mut next = 0;
    let mut failures = 0u32;
    while !*stop.borrow() {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        if ctx.pending.load(Ordering::Relaxed) >= max_pending {
            drop(permit);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let (pool, consumer) = &consumers[next % consumers.len()];
        next += 1;
        let batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut messages = match batch {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(%pool, error = %e, "cannot ask for work{}", ctx.errors.explain());
                drop(permit);
                let pause = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
        };
        failures = 0;
        let mut got = None;
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) if got.is_none() => got = Some(m),
                Ok(m) => {
                    // Never asked for: give it back at once.
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                Err(e) => tracing::debug!(%pool, error = %e, "pull ended"),
            }
        }
        match got {
            Some(msg) => {
                tasks.spawn(crate::slice::run_slice(Arc::clone(&ctx), msg, permit));
            }
            None => drop(permit),
        }
    }
    tasks
}

/// The host's own addresses, from `/proc/net/fib_trie` (IPv4 local /32 routes) and
/// `/proc/net/if_inet6`, each once; loopback and link-local addresses are left out: they name
/// every host alike, so they cannot tell the coordinator which agent runs on a target's
/// host (`agent = "{target}"`). `--host-address` declares any address, loopback included.
fn host_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let t = line.trim_start();
            if let Some(ip) = t.strip_prefix("|-- ") {
                last = ip.trim().parse().ok();
            } else if t.contains("/32 host LOCAL") {
                if let Some(ip) = last {
                    out.push(ip);
                }
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let hex = line.split_whitespace().next().unwrap_or("");
            if let Ok(n) = u128::from_str_radix(hex, 16) {
                if hex.len() == 32 {
                    out.push(IpAddr::V6(n.into()));
                }
            }
        }
    }
    out.retain(|ip| !names_any_host(ip));
    out.sort();
    out.dedup();
    out.truncate(STATUS_LIST_MAX);
    out
}

/// Loopback, unspecified and link-local addresses: the same on every host.
fn names_any_host(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The detected list and the configured one, each entry once, bounded.
fn declared<T: Clone + PartialEq>(detected: Vec<T>, configured: &[T]) -> Vec<T> {
    let mut out = detected;
    for c in configured {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out.truncate(STATUS_LIST_MAX);
    out
}

/// The host's names: its kernel host name.
fn host_names() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| vec![h.trim().to_string()])
        .unwrap_or_default()
        .into_iter()
        .filter(|h| !h.is_empty() && h.len() <= 255 && !h.chars().any(char::is_control))
        .collect()
}

/// The default agent name: the host name up to its first dot, if that is a valid name.
pub fn default_agent_name() -> Option<FleetName> {
    let host = host_names().into_iter().next()?;
    let short = host.split('.').next()?;
    FleetName::new("agent", short).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_addresses_leave_out_those_every_host_has() {
        let addrs = host_addresses();
        assert!(!addrs.iter().any(names_any_host), "{addrs:?}");
        for any in ["127.0.0.1", "::1", "fe80::1", "169.254.1.1", "0.0.0.0"] {
            assert!(names_any_host(&any.parse().unwrap()), "{any}");
        }
        assert!(!names_any_host(&"192.0.2.1".parse().unwrap()));
        let with = declared(addrs.clone(), &["127.0.0.2".parse().unwrap()]);
        assert_eq!(with.len(), addrs.len() + 1);
        assert_eq!(
            declared(with.clone(), &["127.0.0.2".parse().unwrap()]),
            with
        );
    }
}
