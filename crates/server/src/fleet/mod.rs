//! The coordinator's fleet task: fleet sweeps (`"from": "<pool>"`) run on the pool's agents.
//!
//! It runs on a small tokio runtime of its own (`porthawk-fleet` threads), started by
//! [`start`] when the config has `[fleet]`, and talks to NATS only through
//! `porthawk_fleet::coord::Coord`; the exactly-once accounting is the store's SQL
//! (`porthawk_store` `fleet.rs`). Its loops:
//!
//! - **publisher**: for each running fleet sweep, keeps up to a window of slices published
//!   (`2 × 2 ×` live agents of the pool, at least 4): a slice's row is written before its work
//!   message is published (`Store::claim_slices`), so a crash in between is repaired by
//!   publishing it again under the same message id. It looks again only when woken: a sweep
//!   created, slices completed or failed, the live agents changed (or, after a store error,
//!   a second later);
//! - **ingest**: long pull requests on the results consumer, one at a time, hand over
//!   result frames as soon as they arrive, in batches of what has arrived; it checks each
//!   (known agent, every record inside the sweep's hosts × ports), applies the batch in
//!   store transactions of at most 65,536 staged rows and acks each one's messages only
//!   after it committed;
//! - **advisories**: a slice whose work ran out of deliveries is deleted from the work stream
//!   and published with `epoch + 1`, up to `[fleet] max_epochs`, then it fails;
//! - **janitor** (every `ack_wait` while a fleet sweep runs, asleep otherwise): a published
//!   slice that is not done and has sent nothing for `2 × ack_wait` is published again when
//!   its work message is gone (a work item acked with an error end, frames lost with the
//!   NATS host) or is still there but out of deliveries (the advisory was missed while the
//!   coordinator was down); both count against `max_epochs`;
//! - **registry**: the live agents of the `porthawk_agents` bucket, from each heartbeat as
//!   it is published (a core subscription: no timer); an agent whose last heartbeat is
//!   `agent_ttl` old is looked up then, and dropped once its key is gone;
//! - **slices gauge**: the slices by state, read again when they change (at most once a
//!   second).
//!
//! Idle (no sweep, no monitor round, agents or none), no loop wakes on a timer; what still
//! wakes the task periodically is NATS itself: the results pull's renewal every
//! [`RESULTS_PULL_EXPIRES`](porthawk_fleet::coord::RESULTS_PULL_EXPIRES) (60 s), the
//! client's and the server's pings (every 60 s and 2 min), and each agent's heartbeat.
//!
//! Running fleet sweeps survive a restart of the coordinator: the store does not mark them
//! interrupted, and [`start`] resumes them (spec, open slices, lazy publication).
//!
//! For the monitors (vantage points), [`FleetState::publish_round`] publishes a monitor round
//! to a pool and [`FleetState::take_rounds`] hands out the receiver of every round's records
//! as [`MonitorRound`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use porthawk_core::{
    slice_len as auto_slice_len, Attempt, FleetJob, FleetName, PortState, SpecRef, SweepSpec,
    TargetSpace, WireMessage, WorkItem, MAX_SPEC_LEN,
};
use porthawk_fleet::coord::{Coord, CoordConfig, Incoming, RegistryUpdate};
use porthawk_store::{FleetFrame, FleetSweep, NewFleetSweep, Republish, SweepState};
use porthawk_watch::config::FleetConfig;

pub(crate) mod state;

use state::lock;
pub use state::{AgentList, AgentView, FleetState, MonitorRound, RunningView};

use crate::error::ApiError;
use crate::shared::Shared;
use crate::store::{now_ms, NewResult};
use crate::sweep::{self, AgentRate, SliceCounts, SweepMode, SweepRequest, SweepStatus};
use porthawk_store::Counts;

/// Result messages per pull request, and per batch at most (one store transaction).
const FETCH_MAX: usize = 256;
/// Bytes per pull request, and per batch at most: a pull without a byte bound can exceed the
/// server's per-connection pending limit and get the consumer dropped.
const FETCH_MAX_BYTES: usize = 32 << 20;
/// Staged rows applied in one store transaction at most (a frame is never split): bounds
/// how long a fetched batch holds the store's one writer with `store = "all"`.
const TRANSACTION_ROWS: usize = 65_536;
/// How soon the publisher tries again after a store error (it otherwise waits for a wake).
const PUBLISH_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between attempts to pull results again after the pull failed.
const PULL_RETRY_MAX: Duration = Duration::from_secs(10);
/// How soon an agent whose last heartbeat is `agent_ttl` old is looked up again while its
/// registry key is still there (nats-server drops an expired key on its own timer, a
/// little after `max_age`).
const RECHECK: Duration = Duration::from_secs(1);
/// The slices gauge is read at most this often (it is read only when slices change).
const SLICES_GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Slices each agent is assumed to run at once (the agent's `--slices` default).
const SLOTS_PER_AGENT: u32 = 2;

/// A fleet sweep the task runs.
pub(crate) struct Run {
    sweep: FleetSweep,
    pool: FleetName,
    space: TargetSpace,
    revision: u64,
    rate: Option<u64>,
    /// Every slice has been claimed.
    exhausted: AtomicBool,
}

/// The fleet task's runtime: dropping it stops every loop.
pub(crate) struct FleetRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FleetRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Starts the fleet task on its own runtime. It connects in the background (retrying), so
/// the API is up even while NATS is not; fleet sweeps wait for it.
pub(crate) fn start(
    shared: &Arc<Shared>,
    config: FleetConfig,
) -> std::io::Result<(Arc<FleetState>, FleetRuntime)> {
    // No agent has been seen yet: every pool starts at 0 live agents (the registry's
    // watch corrects it once connected), so "no agent in pool X" is visible from the start.
    for pool in &config.pools {
        shared
            .metrics
            .fleet
            .agents_live
            .get_or_create(&crate::metrics::PoolLabel { pool: pool.clone() })
            .set(0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("porthawk-fleet")
        .enable_all()
        .build()?;
    let (created, created_rx) = tokio::sync::mpsc::unbounded_channel();
    let (rounds_tx, rounds_rx) = tokio::sync::mpsc::channel(1024);
    let state = Arc::new(FleetState {
        config,
        coord: Mutex::new(None),
        runs: Mutex::new(HashMap::new()),
        agents: Mutex::new(BTreeMap::new()),
        agents_changed: tokio::sync::watch::Sender::new(()),
        created,
        wake: tokio::sync::Notify::new(),
        janitor_wake: tokio::sync::Notify::new(),
        slices_changed: tokio::sync::Notify::new(),
        round_pools: Mutex::new(HashMap::new()),
        rounds_tx,
        rounds_rx: Mutex::new(Some(rounds_rx)),
    });
    let task = Task {
        shared: Arc::clone(shared),
        fleet: Arc::clone(&state),
    };
    runtime.spawn(task.run(created_rx));
    Ok((
        state,
        FleetRuntime {
            runtime: Some(runtime),
        },
    ))
}

/// Plans a fleet sweep, stores it with its spec and hands it to the fleet task. Blocking
/// (names are resolved, the store is waited for).
pub(crate) fn create(
    shared: &Shared,
    fleet: &FleetState,
    request: SweepRequest,
    seed: u64,
) -> Result<u64, ApiError> {
    let pool = request.from.clone().unwrap_or_default();
    if !fleet.config.pools.contains(&pool) {
        return Err(ApiError::bad_request(
            "from",
            format!(
                "unknown pool '{pool}': this server's [fleet] pools are {:?}",
                fleet.config.pools
            ),
        ));
    }
    let probe = sweep::sweep_probe(request.probe.as_ref())?;
    let plan = sweep::plan(request, &shared.config.allow, &shared.config.limits, seed)?;
    let spec = SweepSpec::from_space(&plan.space, seed, probe);
    let encoded = spec.encode();
    if encoded.len() > MAX_SPEC_LEN {
        return Err(ApiError::too_large(
            Some("targets"),
            format!(
                "the sweep's spec is {} bytes, more than the {MAX_SPEC_LEN} a fleet sweep may \
                 hold: use fewer, larger address ranges",
                encoded.len()
            ),
        ));
    }
    let total = plan.space.len();
    let slice_len = fleet
        .config
        .slice_len
        .unwrap_or_else(|| auto_slice_len(total, fleet.live_in_pool(&pool).len().max(1)));
    let id = shared
        .store
        .insert_fleet_sweep(
            &plan.request,
            plan.request.store.is_all(),
            total,
            now_ms(),
            NewFleetSweep {
                pool,
                spec: encoded,
                slice_len,
            },
        )
        .wait()
        .map_err(|e| ApiError::unavailable(format!("cannot store the sweep: {e}")))?;
    shared.metrics.sweep_moved(None, SweepState::Running);
    let _ = fleet.created.send(id);
    fleet.wake.notify_one();
    Ok(id)
}

/// Adds a fleet sweep's slices, failed slices and agents to its status.
pub(crate) fn decorate(shared: &Shared, status: &mut SweepStatus) {
    let Ok(Some(sweep)) = shared.store.fleet_sweep(status.id) else {
        return;
    };
    status.mode = SweepMode::Fleet;
    if let Ok(p) = shared.store.slice_progress(status.id) {
        status.slices = Some(SliceCounts {
            done: p.done,
            total: p.total,
            failed: p.failed,
            partial: p.partial,
        });
        status.failed_slices = Some(p.failed_slices);
    }
    if status.state.is_final() {
        return;
    }
    let live = shared
        .fleet
        .get()
        .map(|f| f.live_in_pool(&sweep.pool))
        .unwrap_or_default();
    let job = FleetJob::Sweep(status.id).to_string();
    let agents: Vec<AgentRate> = live
        .iter()
        .filter(|a| a.running.iter().any(|r| r.job == job))
        .map(|a| AgentRate {
            name: a.name.clone(),
            probes_per_s: a.probes_per_s,
        })
        .collect();
    if live.is_empty() {
        // Nobody runs it: no time can be promised.
        status.eta_s = None;
    }
    status.agents = Some(agents);
}

/// Cancels a running fleet sweep: its queued work is purged, its spec key deleted (agents
/// stop its slices), and it ends `cancelled` with its done slices counted and, as a local
/// sweep keeps what it found, each running slice's newest attempt kept as a partial result
/// (in the same store transaction). `None` if it is not a running fleet sweep.
pub(crate) async fn cancel(shared: &Arc<Shared>, id: u64) -> Result<Option<()>, ApiError> {
    let s = Arc::clone(shared);
    let sweep = tokio::task::spawn_blocking(move || s.store.fleet_sweep(id))
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
        .map_err(|e| ApiError::internal("cannot read the sweep", e))?;
    let Some(sweep) = sweep.filter(|s| s.state == SweepState::Running) else {
        return Ok(None);
    };
    let fleet = shared
        .fleet
        .get()
        .ok_or_else(|| ApiError::unavailable("this server has no [fleet] section"))?;
    let coord = fleet
        .coord()
        .ok_or_else(|| ApiError::unavailable("not connected to NATS: cannot cancel yet"))?;
    // Queued work first (nothing new starts), then the store, then the spec: deleting the
    // spec stops the agents' running slices, whose last frames (short, marked cancelled)
    // would otherwise reach the store first and get their attempts rejected, losing what
    // they found. Once the sweep is cancelled in the store, such frames are superseded.
    let job = FleetJob::Sweep(sweep.id);
    coord
        .purge_job(job)
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot cancel on NATS: {e}")))?;
    let ended = shared
        .store
        .end_fleet_sweep(id, SweepState::Cancelled, None, now_ms())
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot store the cancellation: {e}")))?;
    lock(&fleet.runs).remove(&id);
    if let Err(e) = coord.drop_spec(job).await {
        // The sweep is cancelled; its agents finish their running slices, superseded.
        tracing::warn!(sweep = id, error = %error_chain(&e), "cannot delete a cancelled sweep's spec");
    }
    if ended {
        shared
            .metrics
            .sweep_moved(Some(SweepState::Running), SweepState::Cancelled);
        shared.prune.sweep_ended();
    }
    fleet.slices_changed.notify_one();
    Ok(Some(()))
}

/// The loops of the fleet task.
#[derive(Clone)]
struct Task {
    shared: Arc<Shared>,
    fleet: Arc<FleetState>,
}

impl Task {
    async fn run(self, mut created: tokio::sync::mpsc::UnboundedReceiver<u64>) {
        let coord = self.connect().await;
        for pool in &self.fleet.config.pools {
            match FleetName::new("pool", pool) {
                Ok(name) => {
                    if let Err(e) = coord.ensure_pool(&name).await {
                        tracing::error!(%pool, error = %error_chain(&e), "cannot set up the pool's consumer");
                    }
                }
                Err(e) => tracing::error!(%pool, error = %e, "bad pool name"),
            }
        }
        *lock(&self.fleet.coord) = Some(Arc::clone(&coord));
        self.fleet.agents_changed.send_replace(());
        self.shared.metrics.fleet.connected.set(1);
        // Resume the sweeps a previous process left running, then take new ones.
        let s = Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || s.store.running_fleet_sweeps()).await {
            Ok(Ok(sweeps)) => {
                for sweep in sweeps {
                    tracing::info!(sweep = sweep.id, "resuming fleet sweep");
                    self.activate(&coord, sweep, true).await;
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot read the running fleet sweeps"),
            Err(e) => tracing::error!(error = %e, "cannot read the running fleet sweeps"),
        }
        tokio::spawn(self.clone().ingest(Arc::clone(&coord)));
        tokio::spawn(self.clone().advisories(Arc::clone(&coord)));
        tokio::spawn(self.clone().janitor(Arc::clone(&coord)));
        tokio::spawn(self.clone().registry(Arc::clone(&coord)));
        tokio::spawn(self.clone().publisher(Arc::clone(&coord)));
        tokio::spawn(self.clone().slices_gauge());
        while let Some(id) = created.recv().await {
            let s = Arc::clone(&self.shared);
            match tokio::task::spawn_blocking(move || s.store.fleet_sweep(id)).await {
                Ok(Ok(Some(sweep))) => self.activate(&coord, sweep, false).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::error!(sweep = id, error = %e, "cannot read a new fleet sweep")
                }
                Err(e) => tracing::error!(sweep = id, error = %e, "cannot read a new fleet sweep"),
            }
            self.fleet.wake.notify_one();
        }
    }

    /// Connects, retrying every few seconds (logged), until NATS answers.
    async fn connect(&self) -> Arc<Coord> {
        let c = &self.fleet.config;
        let config = CoordConfig {
            nats: c.nats.clone(),
            nkey: c.nkey.clone(),
            tls_ca: c.tls_ca.clone(),
            tls_client: c.tls_client.clone(),
            ack_wait: c.ack_wait,
            max_deliver: c.max_deliver,
            results_max_bytes: c.results_max_bytes,
            agent_ttl: c.agent_ttl,
        };
        let mut pause = Duration::from_millis(500);
        loop {
            match Coord::connect(config.clone()).await {
                Ok(coord) => {
                    tracing::info!(nats = %config.nats, "fleet coordinator connected");
                    return Arc::new(coord);
                }
                Err(e) => {
                    tracing::error!(nats = %config.nats, error = %error_chain(&e), "fleet coordinator cannot start; retrying");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    /// Starts running a stored fleet sweep: its spec in the bucket, its open slices that were
    /// never acknowledged published again (same message id: a no-op if they were).
    async fn activate(&self, coord: &Coord, sweep: FleetSweep, resumed: bool) {
        let id = sweep.id;
        let fail = |what: String| {
            tracing::error!(sweep = id, "{what}");
        };
        let spec = match SweepSpec::decode(&sweep.spec) {
            Ok(s) => s,
            Err(e) => return fail(format!("stored spec unreadable: {e}")),
        };
        let space = match spec.space() {
            Ok(s) => s,
            Err(e) => return fail(format!("stored spec makes no space: {e}")),
        };
        let pool = match FleetName::new("pool", &sweep.pool) {
            Ok(p) => p,
            Err(e) => return fail(format!("bad pool: {e}")),
        };
        let s = Arc::clone(&self.shared);
        let rate = tokio::task::spawn_blocking(move || s.store.sweep::<SweepRequest>(id))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .and_then(|row| row.request.rate);
        if let Err(e) = coord.ensure_pool(&pool).await {
            return fail(format!(
                "cannot set up the pool's consumer: {}",
                error_chain(&e)
            ));
        }
        let revision = match coord.put_spec(FleetJob::Sweep(id), &spec).await {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot store the spec: {}", error_chain(&e))),
        };
        let run = Arc::new(Run {
            exhausted: AtomicBool::new(sweep.next_slice >= sweep.slices),
            sweep,
            pool,
            space,
            revision,
            rate,
        });
        lock(&self.fleet.runs).insert(id, Arc::clone(&run));
        self.fleet.janitor_wake.notify_one();
        if resumed {
            let s = Arc::clone(&self.shared);
            let open = tokio::task::spawn_blocking(move || s.store.open_slices(id))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            for slice in open.into_iter().filter(|s| s.work_seq.is_none()) {
                self.publish(coord, &run, slice.slice, slice.epoch).await;
            }
        }
    }

    /// Publishes one slice's work item and records its sequence.
    async fn publish(&self, coord: &Coord, run: &Run, slice: u32, epoch: u32) {
        let range = run.sweep.range(slice);
        let item = WorkItem {
            job: FleetJob::Sweep(run.sweep.id),
            slice,
            start: range.start,
            end: range.end,
            spec: SpecRef::Ref(run.revision),
            deadline_ms: None,
            rate: run.rate,
            epoch,
        };
        match coord.publish_work(&run.pool, &item).await {
            Ok(seq) => {
                if let Err(e) = self
                    .shared
                    .store
                    .set_work_seq(run.sweep.id, slice, epoch, seq)
                    .await
                {
                    tracing::error!(sweep = run.sweep.id, slice, error = %e, "cannot record a slice's work sequence");
                }
            }
            // The janitor publishes it again later.
            Err(e) => {
                tracing::warn!(sweep = run.sweep.id, slice, error = %error_chain(&e), "cannot publish a slice")
            }
        }
    }

    /// Lazy publication: keeps each running sweep's window of published slices full. It
    /// looks when woken (`wake`: a sweep created, slices completed or failed, the live
    /// agents changed), and a second after a store error; nothing else changes a window.
    async fn publisher(self, coord: Arc<Coord>) {
        loop {
            let mut failed = false;
            let runs: Vec<Arc<Run>> = lock(&self.fleet.runs).values().cloned().collect();
            for run in runs {
                if run.exhausted.load(Ordering::Relaxed) {
                    continue;
                }
                let live = self.fleet.live_in_pool(run.pool.as_str()).len() as u32;
                let window = (2 * SLOTS_PER_AGENT * live).max(4);
                let id = run.sweep.id;
                let s = Arc::clone(&self.shared);
                let open = match tokio::task::spawn_blocking(move || s.store.open_slices(id)).await
                {
                    Ok(Ok(open)) => open.len() as u32,
                    _ => {
                        failed = true;
                        continue;
                    }
                };
                if open >= window {
                    continue;
                }
                let claimed = match self
                    .shared
                    .store
                    .claim_slices(id, window - open, now_ms())
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(sweep = id, error = %e, "cannot claim slices");
                        failed = true;
                        continue;
                    }
                };
                if claimed.is_empty() {
                    run.exhausted.store(true, Ordering::Relaxed);
                } else {
                    self.fleet.slices_changed.notify_one();
                }
                for slice in claimed {
                    self.publish(&coord, &run, slice, 1).await;
                }
            }
            // Sleep until a sweep is created, slices complete or the live agents change
            // (`wake` keeps a notification that comes while this turn runs); after a store
            // error, try again soon.
            if failed {
                let _ = tokio::time::timeout(PUBLISH_RETRY, self.fleet.wake.notified()).await;
            } else {
                self.fleet.wake.notified().await;
            }
        }
    }

    /// Pulls result frames (long pull requests, one at a time: each batch is what has
    /// arrived, handed over at once), applies each batch in transactions of at most [`TRANSACTION_ROWS`] staged
    /// rows, and acks each transaction's messages after its commit.
    async fn ingest(self, coord: Arc<Coord>) {
        let mut pause = Duration::from_millis(500);
        let mut results = coord.results(FETCH_MAX, FETCH_MAX_BYTES);
        loop {
            let batch = match results.next_batch().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot pull result frames");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(PULL_RETRY_MAX);
                    continue;
                }
            };
            pause = Duration::from_millis(500);
            if batch.is_empty() {
                continue;
            }
            if let Some(pending) = batch.last().and_then(Incoming::pending) {
                self.shared.metrics.fleet.results_lag.set(pending as i64);
            }
            // One transaction per chunk of at most TRANSACTION_ROWS staged rows, each chunk's
            // messages acked after its commit: with `store = "all"` a fetched batch holds up
            // to a million rows, which would hold the store's one writer (local sweeps,
            // monitors) for many seconds.
            let mut frames = self.frames(&batch).into_iter().peekable();
            let mut acked = 0;
            loop {
                let mut chunk = Vec::new();
                let mut rows = 0;
                while let Some((_, f)) = frames.peek() {
                    if !chunk.is_empty() && rows + f.rows.len() > TRANSACTION_ROWS {
                        break;
                    }
                    rows += f.rows.len();
                    chunk.extend(frames.next());
                }
                // The messages up to the chunk's last frame (or all, after the last chunk),
                // malformed and monitor messages among them.
                let upto = match frames.peek() {
                    Some(_) => chunk.last().map_or(acked, |(i, _)| i + 1),
                    None => batch.len(),
                };
                let chunk: Vec<FleetFrame> = chunk.into_iter().map(|(_, f)| f).collect();
                if !self.apply(&coord, chunk).await {
                    // Not acked: these and the rest come again after the consumer's ack_wait.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                for message in &batch[acked..upto] {
                    if let Err(e) = message.ack().await {
                        tracing::warn!(error = %error_chain(&e), "cannot ack a result frame (it comes again and is a duplicate)");
                    }
                }
                acked = upto;
                if acked == batch.len() {
                    break;
                }
            }
        }
    }

    /// Applies frames in one store transaction and acts on its report; false when the
    /// store failed (nothing of it was applied).
    async fn apply(&self, coord: &Coord, frames: Vec<FleetFrame>) -> bool {
        let m = &self.shared.metrics.fleet;
        let n = frames.len();
        match self.shared.store.ingest_frames(frames, now_ms()).await {
            Ok(report) => {
                m.superseded_frames.inc_by(report.superseded);
                m.duplicate_frames.inc_by(report.duplicates);
                for r in &report.rejected {
                    m.rejected_attempts.inc();
                    tracing::warn!(sweep = r.sweep_id, slice = r.slice, attempt = %r.attempt, reason = %r.reason, "slice attempt rejected");
                }
                for c in &report.completed {
                    if c.attempt.delivered > 1 {
                        m.redelivered_wins.inc();
                    }
                    self.shared.metrics.count_probes(&[
                        c.counts.open,
                        c.counts.closed,
                        c.counts.filtered,
                        c.counts.unreachable,
                        c.counts.error,
                    ]);
                }
                for (id, state) in &report.ended {
                    self.ended(coord, *id, *state).await;
                }
                if !report.completed.is_empty() {
                    self.fleet.wake.notify_one();
                    self.fleet.slices_changed.notify_one();
                }
                true
            }
            Err(e) => {
                self.shared.metrics.store_errors.inc();
                tracing::error!(error = %e, frames = n, "cannot store result frames; they will be delivered again");
                false
            }
        }
    }

    /// The store's view of a batch: frames of sweeps, checked; monitor rounds go to their
    /// channel; malformed messages and unknown agents are counted and dropped.
    /// Each frame comes with the index of its message in `batch`.
    fn frames(&self, batch: &[Incoming]) -> Vec<(usize, FleetFrame)> {
        let m = &self.shared.metrics.fleet;
        let known = &self.fleet.config.agents;
        let runs = lock(&self.fleet.runs).clone();
        let mut frames = Vec::new();
        for (i, message) in batch.iter().enumerate() {
            let frame = match &message.frame {
                Ok(f) => f,
                Err(reason) => {
                    m.malformed_frames.inc();
                    tracing::warn!(%reason, "malformed result message dropped");
                    continue;
                }
            };
            if !known.is_empty() && !known.iter().any(|a| a == frame.agent.as_str()) {
                m.malformed_frames.inc();
                tracing::warn!(agent = %frame.agent, "result frame from an agent not in [fleet] agents dropped");
                continue;
            }
            let id = match frame.job {
                FleetJob::Sweep(id) => id,
                FleetJob::Monitor(monitor) => {
                    let pool = lock(&self.fleet.round_pools)
                        .get(&(monitor, frame.slice))
                        .cloned()
                        .unwrap_or_default();
                    let round = MonitorRound {
                        monitor,
                        round: frame.slice,
                        pool,
                        agent: frame.agent.to_string(),
                        records: frame.batch.records.clone(),
                        last: frame.last.is_some(),
                    };
                    if self.fleet.rounds_tx.try_send(round).is_err() {
                        tracing::warn!(monitor, "monitor round records dropped: nobody reads them");
                    }
                    continue;
                }
            };
            if let Some(end) = &frame.end {
                tracing::info!(sweep = id, slice = frame.slice, attempt = %frame.attempt, agent = %frame.agent, %end, "slice attempt ended early");
            }
            let run = runs.get(&id);
            if run.is_none() {
                // A sweep this task does not run (ended, or its spec could not be read):
                // nothing of it may count. The store calls such frames superseded, or
                // rejects their attempt as outside the sweep.
                tracing::debug!(sweep = id, "result frame of a sweep not running here");
            }
            let mut counts = Counts::default();
            let mut outside = 0;
            let mut rows = Vec::new();
            for r in &frame.batch.records {
                match r.state {
                    PortState::Open => counts.open += 1,
                    PortState::Closed => counts.closed += 1,
                    PortState::Filtered => counts.filtered += 1,
                    PortState::Unreachable => counts.unreachable += 1,
                    PortState::Error => counts.error += 1,
                }
                let Some(run) = run else {
                    outside += 1;
                    continue;
                };
                {
                    let space = &run.space;
                    if !space.hosts().contains(r.ip) || !space.ports().contains(r.port) {
                        outside += 1;
                        continue;
                    }
                    if run.sweep.store_all || r.state == PortState::Open {
                        rows.push(NewResult::new(id, r, space.name_of(r.ip)));
                    }
                }
            }
            frames.push((
                i,
                FleetFrame {
                    sweep_id: id,
                    slice: frame.slice,
                    attempt: frame.attempt,
                    n: frame.frame,
                    last: frame.last.map(|l| (l.frames, l.records)),
                    agent: frame.agent.to_string(),
                    records: frame.batch.records.len() as u64,
                    counts,
                    outside,
                    rows,
                },
            ));
        }
        frames
    }

    /// A sweep ended: forget it, purge whatever work of it is still queued (a slice
    /// redelivered after a nats-server restart, or published again, whose slice another
    /// attempt already completed) and drop its spec (agents drop their copy).
    async fn ended(&self, coord: &Coord, id: u64, state: SweepState) {
        lock(&self.fleet.runs).remove(&id);
        self.shared
            .metrics
            .sweep_moved(Some(SweepState::Running), state);
        self.shared.prune.sweep_ended();
        self.fleet.slices_changed.notify_one();
        tracing::info!(sweep = id, state = state.as_str(), "fleet sweep ended");
        if let Err(e) = coord.cancel_job(FleetJob::Sweep(id)).await {
            tracing::warn!(sweep = id, error = %error_chain(&e), "cannot clear an ended sweep's work and spec");
        }
    }

    /// Work that ran out of deliveries: delete it, publish it again with epoch + 1, or fail
    /// the slice past `max_epochs`.
    async fn advisories(self, coord: Arc<Coord>) {
        let mut advisories = match coord.max_deliveries().await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot watch max-deliveries advisories");
                return;
            }
        };
        use futures_util::StreamExt;
        while let Some(seq) = advisories.next().await {
            let s = Arc::clone(&self.shared);
            let Ok(Ok(Some((id, slice, epoch)))) =
                tokio::task::spawn_blocking(move || s.store.slice_by_work_seq(seq)).await
            else {
                continue;
            };
            self.exhausted(&coord, id, slice, epoch, seq).await;
        }
    }

    /// The work message `seq` of a slice's `epoch` ran out of deliveries (the advisory said
    /// so, or the janitor found it so): delete it, then publish the slice again or fail it.
    async fn exhausted(&self, coord: &Coord, id: u64, slice: u32, epoch: u32, seq: u64) {
        tracing::warn!(
            sweep = id,
            slice,
            work_seq = seq,
            "a slice ran out of deliveries (its agents crashed or stalled each time)"
        );
        if let Err(e) = coord.delete_work(seq).await {
            tracing::warn!(error = %error_chain(&e), "cannot delete exhausted work");
        }
        self.again(coord, id, slice, epoch).await;
    }

    /// Publishes an open slice whose `epoch` was lost again with the next epoch, or fails
    /// it once it has been published `max_epochs` times. A loss already handled (the
    /// advisory and the janitor saw the same one) does nothing.
    async fn again(&self, coord: &Coord, id: u64, slice: u32, epoch: u32) {
        let max_epochs = self.fleet.config.max_epochs;
        match self
            .shared
            .store
            .republish_slice(id, slice, epoch, max_epochs, now_ms())
            .await
        {
            Ok(Republish::Epoch(epoch)) => {
                self.shared.metrics.fleet.redeliveries.inc();
                let run = lock(&self.fleet.runs).get(&id).cloned();
                if let Some(run) = run {
                    self.publish(coord, &run, slice, epoch).await;
                }
            }
            Ok(Republish::Failed(ended)) => {
                tracing::error!(
                    sweep = id,
                    slice,
                    "slice failed: published {max_epochs} times, never completed"
                );
                // One open slice fewer: the window has room.
                self.fleet.wake.notify_one();
                self.fleet.slices_changed.notify_one();
                if let Some(state) = ended {
                    self.ended(coord, id, state).await;
                }
            }
            Ok(Republish::NotOpen) => {}
            Err(e) => tracing::error!(sweep = id, slice, error = %e, "cannot republish a slice"),
        }
    }

    /// Every `ack_wait` while a fleet sweep runs (asleep while none does), and while no frame
    /// waits (unread frames may complete slices), looks at
    /// each open slice that sent nothing for `2 × ack_wait`:
    /// - never acknowledged by the work stream (its publish failed): published again under
    ///   the same epoch and message id (a NATS outage is not the slice's fault);
    /// - its work message gone (an attempt acked with an error end, frames lost with a NATS
    ///   host): published again with the next epoch;
    /// - its work message still there but out of deliveries, an advisory missed (the
    ///   coordinator was down when it came): seen from the pool consumer's progress, or from
    ///   a frame of its last allowed delivery; deleted and published again, as the advisory
    ///   would have.
    ///
    /// Both losses count against `max_epochs`, so a slice whose agents keep vanishing ends
    /// `failed`, never republished forever.
    async fn janitor(self, coord: Arc<Coord>) {
        let ack_wait = self.fleet.config.ack_wait;
        let quiet = 2 * ack_wait.as_millis() as u64;
        loop {
            // Nothing to look after: sleep until a sweep is activated.
            if lock(&self.fleet.runs).is_empty() {
                self.fleet.janitor_wake.notified().await;
                continue;
            }
            tokio::time::sleep(ack_wait).await;
            match coord.results_lag().await {
                Ok(0) => {}
                Ok(lag) => {
                    self.shared.metrics.fleet.results_lag.set(lag as i64);
                    continue;
                }
                Err(_) => continue,
            }
            self.shared.metrics.fleet.results_lag.set(0);
            let runs: Vec<Arc<Run>> = lock(&self.fleet.runs).values().cloned().collect();
            for run in runs {
                self.sweep_janitor(&coord, &run, quiet).await;
            }
        }
    }

    /// The janitor's pass over one sweep.
    async fn sweep_janitor(&self, coord: &Coord, run: &Run, quiet: u64) {
        let id = run.sweep.id;
        let s = Arc::clone(&self.shared);
        let Ok(Ok(open)) = tokio::task::spawn_blocking(move || s.store.open_slices(id)).await
        else {
            return;
        };
        let now = now_ms();
        let mut progress = None;
        for slice in open {
            let last = slice.last_seen_ms.unwrap_or(0).max(slice.published_ms);
            if now.saturating_sub(last) < quiet {
                continue;
            }
            let Some(seq) = slice.work_seq else {
                tracing::warn!(
                    sweep = id,
                    slice = slice.slice,
                    "slice never acknowledged by the work stream: publishing it again"
                );
                self.publish(coord, run, slice.slice, slice.epoch).await;
                continue;
            };
            // The consumer's progress first: work acked after it was read is then gone
            // below, never taken for exhausted.
            if progress.is_none() {
                match coord.pool_progress(&run.pool).await {
                    Ok(p) => progress = Some(p),
                    Err(e) => {
                        tracing::warn!(sweep = id, error = %error_chain(&e), "janitor cannot read the pool consumer");
                        return;
                    }
                }
            }
            let Some(progress) = progress else { return };
            match coord.work_exists(seq).await {
                Ok(false) => {
                    tracing::warn!(
                        sweep = id,
                        slice = slice.slice,
                        "slice not done and its work is gone: publishing it again"
                    );
                    self.again(coord, id, slice.slice, slice.epoch).await;
                }
                Ok(true) => {
                    let last_delivery_ran = slice.max_delivered.is_some_and(|d| {
                        d >= u64::try_from(self.fleet.config.max_deliver).unwrap_or(u64::MAX)
                    });
                    if progress.exhausted(seq) || last_delivery_ran {
                        self.exhausted(coord, id, slice.slice, slice.epoch, seq)
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(sweep = id, error = %error_chain(&e), "janitor cannot look up work");
                }
            }
        }
    }

    /// Keeps the list of live agents and their metrics, without a timer: each heartbeat (a
    /// put of the agent's registry key) and each removal (an agent that stops deletes its
    /// key) is seen as it is published. A key that expires (`agent_ttl` after the last put)
    /// publishes nothing, so an agent's last heartbeat sets its deadline: when it passes
    /// with no newer one, the bucket is listed and the agent dropped once its key is gone
    /// (looked up again every [`RECHECK`] until then). The bucket is listed at start too,
    /// for the agents that beat before the subscription.
    async fn registry(self, coord: Arc<Coord>) {
        use futures_util::StreamExt;
        let mut pause = Duration::from_millis(500);
        let mut updates = loop {
            match coord.registry_updates().await {
                Ok(s) => break Box::pin(s),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot watch the agent registry");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        };
        let mut registry = Registry::default();
        self.relist(&coord, &mut registry).await;
        self.agents_moved(&mut registry);
        loop {
            let due = registry.next_due();
            tokio::select! {
                update = updates.next() => match update {
                    Some(update) => self.heard(&mut registry, update),
                    None => {
                        // The client is gone (the runtime is stopping).
                        tracing::warn!("the agent registry subscription ended");
                        return;
                    }
                },
                () = sleep_until(due), if due.is_some() => {
                    self.relist(&coord, &mut registry).await;
                }
            }
            self.agents_moved(&mut registry);
        }
    }

    /// A heartbeat or a removal, as published.
    fn heard(&self, registry: &mut Registry, update: RegistryUpdate) {
        let now = tokio::time::Instant::now();
        let mut agents = lock(&self.fleet.agents);
        match update {
            RegistryUpdate::Put {
                name,
                status: Ok(status),
            } => {
                let view = self.view(&name, &status);
                registry
                    .due
                    .insert(name.clone(), now + self.fleet.config.agent_ttl);
                // Newer than any listing: a key still there at its deadline is this put,
                // not a newer one.
                registry.revs.remove(&name);
                agents.insert(name, view);
            }
            RegistryUpdate::Put {
                name,
                status: Err(reason),
            } => {
                // Listed as the bucket lists it: an unreadable status is no live agent.
                tracing::debug!(agent = %name, %reason, "unreadable agent status");
                registry.forget(&name);
                agents.remove(&name);
            }
            RegistryUpdate::Gone { name } => {
                registry.forget(&name);
                agents.remove(&name);
            }
        }
    }

    /// Lists the bucket: agents not known yet are added (a heartbeat now). An agent whose
    /// deadline has passed is dropped if its key is gone; if the key is still there, it is
    /// looked up again after [`RECHECK`] (an expired key the server has not dropped yet),
    /// unless the key holds a newer put than the last listing showed (heartbeats this
    /// task did not hear: it counts as one).
    async fn relist(&self, coord: &Coord, registry: &mut Registry) {
        let entries = match coord.agents().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the agent registry");
                let later = tokio::time::Instant::now() + RECHECK;
                for due in registry.due.values_mut() {
                    *due = (*due).max(later);
                }
                return;
            }
        };
        let now = tokio::time::Instant::now();
        let ttl = self.fleet.config.agent_ttl;
        let mut agents = lock(&self.fleet.agents);
        let mut present = BTreeMap::new();
        for e in entries {
            if let Ok(status) = e.status {
                present.insert(e.name, (e.revision, status));
            }
        }
        let Registry { due, revs, .. } = registry;
        due.retain(|name, due| {
            if *due > now {
                return true;
            }
            let Some((rev, status)) = present.get(name) else {
                agents.remove(name);
                revs.remove(name);
                return false;
            };
            let newer = revs.get(name).is_some_and(|seen| seen != rev);
            revs.insert(name.clone(), *rev);
            if newer {
                agents.insert(name.clone(), self.view(name, status));
                *due = now + ttl;
            } else {
                *due = now + RECHECK;
            }
            true
        });
        for (name, (rev, status)) in present {
            if !due.contains_key(&name) {
                agents.insert(name.clone(), self.view(&name, &status));
                due.insert(name.clone(), now + ttl);
                revs.insert(name, rev);
            }
        }
    }

    /// An agent as the API lists it, heard from now.
    fn view(&self, name: &str, status: &porthawk_core::AgentStatus) -> AgentView {
        let known = &self.fleet.config.agents;
        AgentView {
            known: known.is_empty() || known.iter().any(|k| k == name),
            name: name.to_string(),
            pools: status.pools.iter().map(|p| p.to_string()).collect(),
            version: status.version.clone(),
            backend: status.backend.clone(),
            shards: status.shards,
            inflight: status.inflight,
            probes_per_s: status.probes_per_s,
            running: status
                .running
                .iter()
                .map(|r| RunningView {
                    job: r.job.to_string(),
                    slice: r.slice,
                    attempt: attempt_text(r.attempt),
                })
                .collect(),
            last_heartbeat: now_ms() as f64 / 1000.0,
        }
    }

    /// Sets the agents' metrics; when who is live in which pool changed, wakes the publisher
    /// (its windows follow the live agents) and the monitors' link.
    fn agents_moved(&self, registry: &mut Registry) {
        let agents = lock(&self.fleet.agents);
        let m = &self.shared.metrics.fleet;
        for pool in &self.fleet.config.pools {
            let n = agents.values().filter(|v| v.pools.contains(pool)).count();
            m.agents_live
                .get_or_create(&crate::metrics::PoolLabel { pool: pool.clone() })
                .set(n as i64);
        }
        for name in &self.fleet.config.agents {
            let rate = agents.get(name).map_or(0, |v| v.probes_per_s);
            m.agent_probes_per_second
                .get_or_create(&crate::metrics::AgentLabel {
                    agent: name.clone(),
                })
                .set(rate as i64);
        }
        let members: BTreeMap<String, (Vec<String>, bool)> = agents
            .values()
            .map(|v| (v.name.clone(), (v.pools.clone(), v.known)))
            .collect();
        drop(agents);
        if registry.members.as_ref() != Some(&members) {
            registry.members = Some(members);
            self.fleet.wake.notify_one();
            self.fleet.agents_changed.send_replace(());
        }
    }

    /// Keeps the slices gauge (slices of running fleet sweeps by state): read when slices
    /// change, at most every [`SLICES_GAUGE_EVERY`], and never while nothing changes.
    async fn slices_gauge(self) {
        loop {
            let s = Arc::clone(&self.shared);
            if let Ok(Ok(states)) =
                tokio::task::spawn_blocking(move || s.store.slices_by_state()).await
            {
                let m = &self.shared.metrics.fleet;
                for state in ["published", "done", "failed"] {
                    let n = states
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, n)| *n);
                    m.slices
                        .get_or_create(&crate::metrics::StateLabel { state })
                        .set(n as i64);
                }
            }
            let read = tokio::time::Instant::now();
            self.fleet.slices_changed.notified().await;
            tokio::time::sleep_until(read + SLICES_GAUGE_EVERY).await;
        }
    }
}

/// The registry loop's own state: when each live agent's last heartbeat gets too old, the
/// key revision the last listing showed of it (none once a newer put was heard), and who
/// was live in which pool when the others were last told.
#[derive(Default)]
struct Registry {
    due: HashMap<String, tokio::time::Instant>,
    revs: HashMap<String, u64>,
    members: Option<BTreeMap<String, (Vec<String>, bool)>>,
}

impl Registry {
    /// An agent no longer listed.
    fn forget(&mut self, name: &str) {
        self.due.remove(name);
        self.revs.remove(name);
    }

    /// The earliest deadline.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.due.values().min().copied()
    }
}

/// Sleeps until `due` (for ever without one: the caller guards the branch).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn attempt_text(a: Attempt) -> String {
    a.to_string()
}

/// An error and its causes, in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
