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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, Context, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use porthawk_core::{
    encode_frame, frame_msg_id, parse_work_subject, pool_consumer, results_subject, spec_key,
    AgentStatus, Attempt, EndReason, FleetJob, FleetName, LastFrame, ResultBatch, RunningSlice,
    SpecRef, SweepSpec, WireMessage, WorkItem, AGENTS_BUCKET, HEADER_ATTEMPT, HEADER_END,
    HEADER_FRAME, HEADER_LAST, HEADER_SLICE, HEADER_SWEEP, SPECS_BUCKET, WORK_STREAM,
};
use porthawk_engine::{result_channel, Engine, EngineConfig, Job};
use rustls::time_provider::DefaultTimeProvider;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
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
    /// A cap on probe starts per second, applied to every slice.
    pub rate: Option<u64>,
    /// The engine.
    pub engine: EngineConfig,
    /// Frames waiting for a PubAck above which no new work is taken.
    pub max_pending_frames: usize,
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
/// Frames one slice may have waiting for their PubAck before it stops reading the engine.
const SLICE_PUBLISH_WINDOW: usize = 32;

/// Shared by every task of the agent.
struct Ctx {
    name: FleetName,
    js: Context,
    errors: ServerErrors,
    engine: Engine,
    specs: Store,
    rate: Option<u64>,
    max_frame: usize,
    progress_every: Duration,
    /// Frames published and not yet PubAcked, over all slices.
    pending: AtomicUsize,
    /// Records published, for probes/s in the heartbeat.
    records: AtomicU64,
    running: Mutex<HashMap<Attempt, Running>>,
    /// Specs by (key, revision).
    spec_cache: Mutex<HashMap<(String, u64), Arc<SweepSpec>>>,
    /// Set after the grace period: running slices are cancelled and given back (NAK).
    give_back: watch::Receiver<bool>,
}

struct Running {
    job: FleetJob,
    slice: u32,
    cancel: watch::Sender<bool>,
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
    let status = StatusSource {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pools: config.pools.clone(),
        backend: ctx.engine.backend().to_string(),
        shards: config.engine.shards as u32,
        inflight: config.engine.inflight as u32,
        addresses: host_addresses(),
        names: host_names(),
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
    if let Err(e) = agents.delete(ctx.name.as_str()).await {
        tracing::debug!(error = %e, "could not remove this agent's registry key");
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
    inflight: u32,
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
            inflight: self.inflight,
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
                tasks.spawn(run_slice(Arc::clone(&ctx), msg, permit));
            }
            None => drop(permit),
        }
    }
    tasks
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a slice's spec came from.
enum SpecOutcome {
    Spec(Arc<SweepSpec>),
    /// The key is gone: the job was cancelled.
    Cancelled,
    /// The spec is bad: report it in an `error:` end frame.
    Invalid(String),
    /// NATS did not answer: give the slice back, this is about us, not the slice.
    Local(String),
}

async fn resolve_spec(ctx: &Ctx, item: &WorkItem) -> SpecOutcome {
    let revision = match &item.spec {
        SpecRef::Inline(spec) => return SpecOutcome::Spec(Arc::new(spec.clone())),
        SpecRef::Ref(revision) => *revision,
    };
    let key = spec_key(item.job);
    if let Some(spec) = ctx
        .spec_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(key.clone(), revision)).cloned())
    {
        return SpecOutcome::Spec(spec);
    }
    let entry = match ctx.specs.entry(key.clone()).await {
        Ok(entry) => entry,
        Err(e) => {
            return SpecOutcome::Local(format!(
                "cannot read spec {key}: {e}{}",
                ctx.errors.explain()
            ))
        }
    };
    let Some(entry) = entry else {
        return SpecOutcome::Cancelled;
    };
    if entry.operation != Operation::Put {
        return SpecOutcome::Cancelled;
    }
    if entry.revision != revision {
        return SpecOutcome::Invalid(format!(
            "spec {key} is at revision {}, the work item names {revision}",
            entry.revision
        ));
    }
    match SweepSpec::decode(&entry.value) {
        Ok(spec) => {
            let spec = Arc::new(spec);
            if let Ok(mut cache) = ctx.spec_cache.lock() {
                // Specs are small and few; a bound keeps a long-lived agent's cache small.
                if cache.len() >= 64 {
                    cache.clear();
                }
                cache.insert((key, revision), Arc::clone(&spec));
            }
            SpecOutcome::Spec(spec)
        }
        Err(e) => SpecOutcome::Invalid(e.to_string()),
    }
}

/// One slice, from its message to its ack (or NAK).
async fn run_slice(ctx: Arc<Ctx>, msg: Message, _permit: OwnedSemaphorePermit) {
    let attempt = match msg.info() {
        Ok(info) => Attempt {
            work_seq: info.stream_sequence,
            delivered: info.delivered.max(0) as u64,
        },
        Err(e) => {
            tracing::warn!(error = %e, "a work message without JetStream metadata; ignored");
            return;
        }
    };
    let item = match WorkItem::decode(&msg.payload) {
        Ok(item) => item,
        Err(e) => {
            // Nobody can run it: terminate rather than let it bounce between agents.
            let subject = parse_work_subject(msg.subject.as_str());
            tracing::warn!(subject = %msg.subject, ?subject, error = %e, "undecodable work item: terminated");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let mut slice = SliceRun {
        subject: results_subject(&ctx.name, item.job),
        ctx,
        msg,
        item,
        attempt,
        frames: 0,
        records: 0,
        pubs: FuturesUnordered::new(),
    };
    slice.run().await;
}

struct SliceRun {
    ctx: Arc<Ctx>,
    msg: Message,
    item: WorkItem,
    attempt: Attempt,
    subject: String,
    frames: u32,
    records: u64,
    pubs: FuturesUnordered<tokio::task::JoinHandle<()>>,
}

impl SliceRun {
    async fn run(&mut self) {
        let (job, slice, attempt) = (self.item.job, self.item.slice, self.attempt);
        tracing::info!(%job, slice, %attempt, start = self.item.start, end = self.item.end, "slice taken");
        if self.item.expired(now_ms()) {
            self.end_without_probing(EndReason::Expired).await;
            return;
        }
        let spec = match resolve_spec(&self.ctx, &self.item).await {
            SpecOutcome::Spec(spec) => spec,
            SpecOutcome::Cancelled => {
                self.end_without_probing(EndReason::Cancelled).await;
                return;
            }
            SpecOutcome::Invalid(reason) => {
                self.end_without_probing(EndReason::error(&reason)).await;
                return;
            }
            SpecOutcome::Local(reason) => {
                tracing::warn!(%job, slice, %reason, "giving the slice back");
                let _ = self
                    .msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
                return;
            }
        };
        let prepared = spec.space().map_err(|e| e.to_string()).and_then(|space| {
            let positions = self
                .item
                .positions(space.len())
                .map_err(|e| e.to_string())?;
            let probe = spec
                .probe
                .spec(Arc::new(DefaultTimeProvider))
                .map_err(|e| format!("probe.{}: {e}", e.field))?;
            Ok((space, positions, probe))
        });
        let (space, positions, probe) = match prepared {
            Ok(p) => p,
            Err(reason) => {
                self.end_without_probing(EndReason::error(&reason)).await;
                return;
            }
        };
        let (cancel_tx, mut cancel) = watch::channel(false);
        if let Ok(mut running) = self.ctx.running.lock() {
            running.insert(
                attempt,
                Running {
                    job,
                    slice,
                    cancel: cancel_tx,
                },
            );
        }
        let (sink, results) = result_channel(16);
        let rate = match (self.item.rate, self.ctx.rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let handle = self.ctx.engine.submit(Job {
            id: self.ctx.engine.next_job_id(),
            space: Arc::new(space),
            spec: probe,
            rate,
            positions,
            sink,
        });
        // The engine's channel blocks; a thread hands its batches to this task.
        let (tx, mut batches) = mpsc::channel::<ResultBatch>(4);
        tokio::task::spawn_blocking(move || {
            while let Ok(batch) = results.recv() {
                if tx.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        let mut give_back = self.ctx.give_back.clone();
        let mut progress = tokio::time::interval(self.ctx.progress_every);
        progress.tick().await;
        let mut cancelled = false;
        let mut done = false;
        let mut gave_back = *give_back.borrow();
        while !(gave_back || (done && self.pubs.is_empty())) {
            let read_more = !done && self.pubs.len() < SLICE_PUBLISH_WINDOW;
            tokio::select! {
                batch = batches.recv(), if read_more => match batch {
                    Some(batch) => {
                        let last = batch.job_done;
                        self.publish_batch(batch, cancelled);
                        done = last;
                    }
                    None => {
                        // The engine dropped the job without a job_done batch: it is
                        // stopping. Not a fact about the slice: give it back.
                        gave_back = true;
                    }
                },
                Some(_) = self.pubs.next(), if !self.pubs.is_empty() => {}
                _ = progress.tick() => {
                    if let Err(e) = self.msg.ack_with(AckKind::Progress).await {
                        tracing::warn!(%job, slice, error = %e, "in-progress ack failed");
                    }
                }
                changed = cancel.changed(), if !cancelled => {
                    cancelled = true;
                    if changed.is_ok() {
                        handle.cancel();
                    }
                }
                changed = give_back.changed() => {
                    gave_back = changed.is_err() || *give_back.borrow();
                }
            }
        }
        if let Ok(mut running) = self.ctx.running.lock() {
            running.remove(&attempt);
        }
        if gave_back {
            handle.cancel();
            for p in self.pubs.iter() {
                p.abort();
            }
            match self.msg.ack_with(AckKind::Nak(None)).await {
                Ok(()) => tracing::info!(%job, slice, %attempt, "slice given back (NAK)"),
                Err(e) => {
                    tracing::warn!(%job, slice, error = %e, "NAK failed; the slice comes back after ack_wait")
                }
            }
            return;
        }
        self.ack().await;
    }

    /// Acks after every frame has its PubAck. The server answers even when another
    /// attempt's ack already removed the item (fleet.md #12): completion is the
    /// coordinator's call, from the frames.
    async fn ack(&self) {
        let (job, slice) = (self.item.job, self.item.slice);
        match self.msg.double_ack().await {
            Ok(()) => {
                tracing::info!(%job, slice, attempt = %self.attempt, frames = self.frames, records = self.records, "slice done")
            }
            Err(e) => {
                tracing::warn!(%job, slice, error = %e, "ack failed; the coordinator decides from the frames")
            }
        }
    }

    /// Publishes one empty last frame with `end`, waits for its PubAck, and acks.
    async fn end_without_probing(&mut self, end: EndReason) {
        tracing::info!(job = %self.item.job, slice = self.item.slice, %end, "slice ends without probing");
        let batch = ResultBatch {
            job: porthawk_core::JobId(0),
            shard: 0,
            records: Vec::new(),
            shard_done: true,
            job_done: true,
            cancelled: end == EndReason::Cancelled,
        };
        self.publish_frame(&batch, Some(end), true);
        let mut progress = tokio::time::interval(self.ctx.progress_every);
        progress.tick().await;
        while !self.pubs.is_empty() {
            tokio::select! {
                _ = self.pubs.next() => {}
                _ = progress.tick() => { let _ = self.msg.ack_with(AckKind::Progress).await; }
            }
        }
        self.ack().await;
    }

    /// Publishes the frames of one engine batch, split so each fits in a NATS message.
    fn publish_batch(&mut self, batch: ResultBatch, cancelled: bool) {
        let last = batch.job_done;
        let end = (last && (batch.cancelled || cancelled)).then_some(EndReason::Cancelled);
        if !last && batch.records.is_empty() {
            return;
        }
        for part in split_batch(batch, self.ctx.max_frame) {
            let is_last = last && part.job_done;
            self.publish_frame(&part, if is_last { end.clone() } else { None }, is_last);
        }
    }

    fn publish_frame(&mut self, batch: &ResultBatch, end: Option<EndReason>, last: bool) {
        let n = self.frames;
        self.frames += 1;
        self.records += batch.records.len() as u64;
        let mut payload = Vec::new();
        encode_frame(batch, &mut payload);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_SWEEP, self.item.job.to_string().as_str());
        headers.insert(HEADER_SLICE, self.item.slice.to_string().as_str());
        headers.insert(HEADER_ATTEMPT, self.attempt.to_string().as_str());
        headers.insert(HEADER_FRAME, n.to_string().as_str());
        if last {
            let summary = LastFrame {
                frames: self.frames,
                records: self.records,
            };
            headers.insert(HEADER_LAST, summary.to_string().as_str());
            if let Some(end) = end {
                headers.insert(HEADER_END, end.to_string().as_str());
            }
        }
        let id = frame_msg_id(self.item.job, self.item.slice, self.attempt, n);
        let ctx = Arc::clone(&self.ctx);
        let subject = self.subject.clone();
        let records = batch.records.len() as u64;
        ctx.pending.fetch_add(1, Ordering::Relaxed);
        self.pubs.push(tokio::spawn(async move {
            publish_until_acked(&ctx, subject, Bytes::from(payload), headers, id).await;
            ctx.pending.fetch_sub(1, Ordering::Relaxed);
            ctx.records.fetch_add(records, Ordering::Relaxed);
        }));
    }
}

/// Publishes until a PubAck arrives, retrying with the same `Nats-Msg-Id` (deduplicated by
/// the stream within its window), with a growing pause. Ends only with a PubAck or when the
/// task is aborted (the slice given back).
async fn publish_until_acked(
    ctx: &Ctx,
    subject: String,
    payload: Bytes,
    headers: HeaderMap,
    id: String,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(&id);
            ctx.js.send_publish(subject.clone(), message).await?.await
        };
        match attempt.await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(%id, "frame was already stored (retried publish)");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(%subject, %id, error = %e, "publishing a frame failed; retrying with the same id{}", ctx.errors.explain());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Splits `batch` into batches whose frames are at most `max` bytes (a single record that
/// is larger still goes alone). Only the last part keeps the shard/job end flags.
fn split_batch(batch: ResultBatch, max: usize) -> Vec<ResultBatch> {
    let mut buf = Vec::new();
    encode_frame(&batch, &mut buf);
    if buf.len() <= max || batch.records.len() <= 1 {
        return vec![batch];
    }
    let mut first = batch.clone();
    let mut second = batch;
    let tail = first.records.split_off(first.records.len() / 2);
    second.records = tail;
    first.shard_done = false;
    first.job_done = false;
    first.cancelled = false;
    let mut parts = split_batch(first, max);
    parts.extend(split_batch(second, max));
    parts
}

/// The host's own addresses, from `/proc/net/fib_trie` (IPv4 local /32 routes) and
/// `/proc/net/if_inet6`; loopback included, each once.
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
    out.sort();
    out.dedup();
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
    use porthawk_core::{decode_frame, PortState, ProbeRecord};

    #[test]
    fn oversized_batches_split_into_frames_that_fit() {
        let mut records = Vec::new();
        for i in 0..100u16 {
            let mut r =
                ProbeRecord::new("10.0.0.1".parse().unwrap(), i + 1, PortState::Open, 10, 1);
            r.banner = Some(vec![b'x'; 1000]);
            records.push(r);
        }
        let batch = ResultBatch {
            job: porthawk_core::JobId(1),
            shard: 0,
            records,
            shard_done: true,
            job_done: true,
            cancelled: false,
        };
        let parts = split_batch(batch.clone(), 16 << 10);
        assert!(parts.len() >= 7, "{}", parts.len());
        let mut all = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let mut buf = Vec::new();
            encode_frame(p, &mut buf);
            assert!(buf.len() <= 16 << 10);
            assert_eq!(decode_frame(&buf).unwrap().0, *p);
            assert_eq!(p.job_done, i + 1 == parts.len());
            all.extend(p.records.clone());
        }
        assert_eq!(all, batch.records);
        assert_eq!(split_batch(batch.clone(), 1 << 20), vec![batch]);
    }

    #[test]
    fn host_addresses_include_loopback() {
        let addrs = host_addresses();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
