//! The runtime around [`Watch`]: one thread with its own small tokio runtime that owns the
//! watch, submits its jobs to the server's engine with a result sink of its own, runs
//! actions and delivers notifications, writes history, and reloads the config on SIGHUP or
//! when the file changes.
//!
//! Everything else talks to it through its `handle::WatchHandle`: the API sends requests and
//! closures that read the watch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::collections::HashMap;

use porthawk_core::{JobId, PortState, ProbeRecord, ResultBatch};
use porthawk_engine::{result_channel, Job, ResultSink};
use tokio::sync::{mpsc, oneshot};

use super::handle::{Command, WatchOptions};

use super::config;
use super::config::LOCAL_VANTAGE;
use super::history::{self, ActionRecord};
use super::metrics::{OutcomeLabels, ReloadLabel, TargetLabels};
use super::rounds::{MonitorLink, RoundEvent, RoundRequest};
use super::state::Health;
use super::watch::{Answers, Check, Effect, Refusal, Restored, Save, TargetPort, Verdict, Watch};
use super::{actions, notify};
use crate::fs_watch::{Events, WatchThread};
use crate::shared::Shared;
use crate::store::now_ms;
use porthawk_store::Reply;
use rustix::fs::inotify::WatchFlags;

/// How often the config file's stamp is looked at when its directory cannot be watched
/// (with inotify, a change wakes the runtime instead).
const FILE_POLL: Duration = Duration::from_secs(1);
/// Result batches of monitor jobs the engine may queue before shards wait.
const RESULT_BATCHES: usize = 16;
/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long after its deadline a pool's round may still report (frames in flight).
const ROUND_GRACE_MS: u64 = 2_000;

/// Starts the watch thread over the server's engine and store; `shared.watch` becomes its
/// handle.
pub(crate) fn start(shared: &Arc<Shared>, options: WatchOptions) -> std::io::Result<()> {
    let Some(rx) = shared.watch.take_receiver() else {
        return Ok(());
    };
    let shared2 = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name("porthawk-watch".into())
        .spawn(move || {
            // Read before the async runtime starts: no SQL or file access on an async
            // thread.
            let now = now_ms();
            let restored = shared2.store.restore_watch(now).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the monitor states of the last run");
                Default::default()
            });
            let stamp = options.path.as_deref().and_then(file_stamp);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the monitors");
                    return;
                }
            };
            rt.block_on(async move {
                let runtime = Runtime::new(shared2, rx, options, restored, now, stamp);
                runtime.run().await;
            });
        })?;
    shared.watch.set_thread(thread);
    Ok(())
}

struct Runtime {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    /// The sink every monitor job sends its results to.
    sink: ResultSink,
    /// Those results, forwarded from the sink by the `porthawk-watch-results` thread.
    results: mpsc::Receiver<ResultBatch>,
    watch: Watch,
    path: Option<PathBuf>,
    file_stamp: Option<(SystemTime, u64)>,
    saves: Vec<Save>,
    /// The link to the fleet task, once fleet mode attached it.
    fleet: Option<MonitorLink>,
    /// Pool rounds in flight, with when the runtime gives up on them.
    remote: HashMap<JobId, u64>,
    /// Checks of host names whose names were resolved on the blocking pool, with the
    /// answers (the sender is cloned into each resolution).
    resolved_tx: mpsc::UnboundedSender<(Check, Answers)>,
    resolved: mpsc::UnboundedReceiver<(Check, Answers)>,
    /// Monitors whose DOWN action has ended: checked again at once, not at the next interval.
    recheck_tx: mpsc::UnboundedSender<String>,
    recheck: mpsc::UnboundedReceiver<String>,
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Runtime {
    fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Command>,
        options: WatchOptions,
        restored: Restored,
        now: u64,
        stamp: Option<(SystemTime, u64)>,
    ) -> Runtime {
        let watch = Watch::new(options.config, restored, options.dry_run, now);
        let (sink, results) = forward_results();
        let (resolved_tx, resolved) = mpsc::unbounded_channel();
        let (recheck_tx, recheck) = mpsc::unbounded_channel();
        let rt = Runtime {
            recheck_tx,
            recheck,
            resolved_tx,
            resolved,
            sink,
            results,
            file_stamp: stamp,
            path: options.path,
            shared,
            rx,
            watch,
            saves: Vec::new(),
            fleet: None,
            remote: HashMap::new(),
        };
        rt.publish_all();
        rt
    }

    /// Sets the `monitor_up` series of every target with a verdict.
    fn publish_all(&self) {
        for m in self.watch.monitors() {
            for (k, t) in &m.targets {
                self.publish(&m.spec.name, k, t.tracker.hard);
            }
        }
    }

    fn publish(&self, monitor: &str, (host, port): &TargetPort, hard: Health) {
        let value = match hard {
            Health::Up => 1,
            Health::Down => 0,
            Health::Pending => return,
        };
        self.shared
            .metrics
            .monitor
            .up
            .get_or_create(&TargetLabels {
                monitor: monitor.to_string(),
                target: host.to_string(),
                port: port.to_string(),
            })
            .set(value);
    }

    async fn run(mut self) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let (file_tx, mut file_events) = mpsc::unbounded_channel();
        let mut config_watch = self
            .path
            .as_deref()
            .and_then(|p| watch_config_file(p, file_tx));
        // A change between the start's read and the watch is seen now.
        if config_watch.is_some() {
            self.reload_if_changed().await;
        }
        let mut last_poll = Instant::now();
        let mut last_prune: Option<Instant> = None;
        loop {
            // The loop sleeps until something arrives on a channel or the next deadline: a
            // check due, news in the watch's tick, a pool round's end, history pruning (and
            // the config file's stamp only when it cannot be watched).
            let now = now_ms();
            let due_ms = [
                self.watch.next_due_ms(),
                self.watch.next_tick_ms(),
                self.remote.values().min().copied(),
            ]
            .into_iter()
            .flatten()
            .min();
            let mut wake = last_prune.map_or_else(Instant::now, |t| t + PRUNE_EVERY);
            if let Some(due) = due_ms {
                wake = wake.min(Instant::now() + Duration::from_millis(due.saturating_sub(now)));
            }
            if config_watch.is_none() && self.path.is_some() {
                wake = wake.min(last_poll + FILE_POLL);
            }
            let hup_recv = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let fleet_events = self.fleet.as_mut().map(|l| &mut l.events);
            let fleet_recv = async {
                match fleet_events {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(c) => self.command(c).await,
                },
                Some(batch) = self.results.recv() => self.on_batch(batch),
                event = fleet_recv => match event {
                    Some(e) => self.on_fleet_event(e),
                    None => {
                        tracing::warn!("the fleet task is gone: pool rounds are not probed");
                        self.fleet = None;
                    }
                },
                Some((check, answers)) = self.resolved.recv() => self.on_resolved(check, answers),
                Some(monitor) = self.recheck.recv() => {
                    // After an action: see at once whether it helped (an unknown monitor,
                    // removed by a reload meanwhile, is nothing to check).
                    if self.watch.check_now(&monitor, now_ms()).is_ok() {
                        tracing::info!(%monitor, "checking again after the action");
                    }
                }
                Some(events) = file_events.recv(), if config_watch.is_some() => {
                    if events.ended {
                        tracing::warn!(
                            "the config file's directory can no longer be watched: its stamp \
                             is looked at every second instead"
                        );
                        config_watch = None;
                    }
                    if events.any {
                        self.reload_if_changed().await;
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                () = hup_recv => {
                    let _ = self.reload_file("SIGHUP").await;
                }
            }
            // Drain whatever else is queued before the next turn, so that a burst of batches
            // is one store write.
            while let Ok(batch) = self.results.try_recv() {
                self.on_batch(batch);
            }
            while let Some(e) = self.fleet.as_mut().and_then(|l| l.events.try_recv().ok()) {
                self.on_fleet_event(e);
            }
            self.expire_rounds();
            while let Ok(c) = self.rx.try_recv() {
                if matches!(c, Command::Stop) {
                    self.flush();
                    return;
                }
                self.command(c).await;
            }
            if self.fleet.is_none() {
                // Fleet mode starts after the monitors (and says so with a command): link up
                // once its state is there.
                if let Some(state) = self.shared.fleet.get() {
                    self.fleet = super::fleet_rounds::connect(Arc::clone(state));
                    if self.fleet.is_some() {
                        tracing::info!("monitors probe from fleet pools through the fleet task");
                    }
                }
            }
            self.submit_due();
            if self.watch.next_tick_ms().is_some_and(|t| t <= now_ms()) {
                let effects = self.watch.tick(now_ms());
                self.apply(effects);
            }
            if config_watch.is_none() && last_poll.elapsed() >= FILE_POLL {
                last_poll = Instant::now();
                self.reload_if_changed().await;
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let before =
                    now_ms().saturating_sub(self.watch.config().retention.as_millis() as u64);
                let pruned = self.shared.store.prune_history(before);
                report_failure(&self.shared, pruned, "prune monitor history".into());
            }
            self.flush();
        }
        self.flush();
    }

    /// Reloads the config file if its stamp (modification time and size) changed.
    async fn reload_if_changed(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let stamp = tokio::task::spawn_blocking(move || file_stamp(&path))
            .await
            .ok()
            .flatten();
        if stamp.is_some() && stamp != self.file_stamp {
            self.file_stamp = stamp;
            let _ = self.reload_file("the file changed").await;
        }
    }

    fn submit_due(&mut self) {
        let now = now_ms();
        let engine = &self.shared.engine;
        let (due, skipped) = self.watch.poll_due(now, || engine.next_job_id());
        let shared = Arc::clone(&self.shared);
        let m = &shared.metrics.monitor;
        m.skipped.inc_by(skipped);
        let mut unrouted = Vec::new();
        for (check, lateness_ms) in due {
            m.lateness.observe(lateness_ms as f64 / 1000.0);
            if !check.names.is_empty() {
                // Host names are resolved at every check, here on the blocking pool (the
                // resolver blocks), for every vantage: agents get addresses only. The
                // answers come back to the loop, which submits or routes the addresses.
                let tx = self.resolved_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let answers = check
                        .names
                        .iter()
                        .map(|n| (Arc::clone(n), crate::config::resolve(n)))
                        .collect();
                    let _ = tx.send((check, answers));
                });
                continue;
            }
            if &*check.vantage != LOCAL_VANTAGE {
                let wire = check.wire.clone();
                if !self.route(&check, wire, now) {
                    unrouted.push((check.id, check.monitor, check.vantage));
                }
                continue;
            }
            if let Some(space) = check.space.clone() {
                self.submit(check, space);
            }
        }
        // Without a fleet the round ends with no results: unknown, never DOWN.
        for (id, monitor, pool) in unrouted {
            tracing::warn!(%monitor, %pool, "no fleet to probe from: the round is skipped");
            self.finish(id, now);
        }
    }

    /// Ends the pool rounds whose deadline (and grace) passed without an end from the fleet
    /// task: nobody took them, or their results were lost. What did arrive counts.
    fn expire_rounds(&mut self) {
        let now = now_ms();
        let expired: Vec<JobId> = self
            .remote
            .iter()
            .filter(|(_, &until)| until <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.remote.remove(&id);
            tracing::debug!(round = id.0, "a pool round ended at its deadline");
            self.finish(id, now);
        }
    }

    /// What the fleet task reports: records and ends of pool rounds, live agents per pool.
    fn on_fleet_event(&mut self, event: RoundEvent) {
        let now = now_ms();
        match event {
            RoundEvent::Records {
                id,
                pool,
                agent,
                records,
            } => {
                let job = JobId(id);
                if !self.remote.contains_key(&job) || self.watch.job_vantage(job) != Some(&pool) {
                    tracing::debug!(round = id, %pool, %agent, "records of a round not running");
                    return;
                }
                self.count(&records);
                let effects = self.watch.on_records(job, &records, now);
                self.apply(effects);
            }
            RoundEvent::Done { id, incomplete } => {
                if self.remote.remove(&JobId(id)).is_some() {
                    if let Some(why) = incomplete {
                        tracing::debug!(round = id, why, "a pool round ended incomplete");
                    }
                    self.finish(JobId(id), now);
                }
            }
            RoundEvent::Agents(live) => {
                for pool in self.watch.pools() {
                    let n = live.get(&*pool).copied().unwrap_or(0);
                    if self.watch.set_agents(&pool, n) {
                        if n == 0 {
                            tracing::warn!(
                                %pool,
                                "no live agent in the pool: monitors from it show no-agents \
                                 (a fleet problem, not a verdict on the targets)"
                            );
                        } else {
                            tracing::info!(%pool, agents = n, "the pool has live agents again");
                        }
                    }
                }
            }
        }
    }

    /// Counts records like any probe in the metrics.
    fn count(&self, records: &[ProbeRecord]) {
        let mut per_state = [0u64; PortState::ALL.len()];
        for r in records {
            per_state[r.state.index()] += 1;
        }
        self.shared.metrics.count_probes(&per_state);
    }

    /// A monitor job is over: escalation, and its duration in the metrics.
    fn finish(&mut self, job: JobId, now: u64) {
        let (effects, finished) = self.watch.on_job_done(job, now);
        if let Some(f) = finished {
            self.shared
                .metrics
                .monitor
                .check_duration
                .get_or_create(&super::metrics::MonitorLabel { monitor: f.monitor })
                .observe(now.saturating_sub(f.started_ms) as f64 / 1000.0);
        }
        self.apply(effects);
    }

    /// Probes a `local` check's space on this server's engine.
    fn submit(&self, check: Check, space: Arc<porthawk_core::TargetSpace>) {
        self.shared.engine.submit(Job {
            id: check.id,
            positions: 0..space.len(),
            space,
            spec: check.spec,
            rate: None,
            sink: self.sink.clone(),
        });
    }

    /// Sends a pool's round (its chunk in wire form) to the fleet task; never probed from
    /// here. Whether it went.
    fn route(&mut self, check: &Check, wire: Option<porthawk_core::SweepSpec>, now: u64) -> bool {
        let sent = match (&self.fleet, wire) {
            (Some(link), Some(spec)) => link
                .rounds
                .send(RoundRequest {
                    id: check.id.0,
                    monitor: check.monitor.clone(),
                    pool: check.vantage.to_string(),
                    spec,
                    deadline_ms: check.deadline_ms,
                })
                .is_ok(),
            _ => false,
        };
        if sent {
            self.remote
                .insert(check.id, check.deadline_ms.max(now) + ROUND_GRACE_MS);
        }
        sent
    }

    /// The answers for a check's host names: names that did not resolve are failed checks
    /// now (from the check's vantage), the addresses of the others probed: here for `local`,
    /// inline in the round's spec for a pool (or the job ends when there are none).
    fn on_resolved(&mut self, check: Check, answers: Answers) {
        let now = now_ms();
        let (space, effects) = self.watch.on_resolved(check.id, answers, now);
        self.apply(effects);
        let Some(space) = space else {
            self.finish(check.id, now);
            return;
        };
        if &*check.vantage == LOCAL_VANTAGE {
            self.submit(check, space);
            return;
        }
        let wire = self.watch.pool_wire(check.id, &space);
        if !self.route(&check, wire, now) {
            tracing::warn!(
                monitor = %check.monitor,
                pool = %check.vantage,
                "no fleet to probe from: the round is skipped"
            );
            self.finish(check.id, now);
        }
    }

    /// Judges a batch of a monitor job (counted like any probe in the metrics).
    fn on_batch(&mut self, batch: ResultBatch) {
        let now = now_ms();
        self.count(&batch.records);
        let effects = self.watch.on_records(batch.job, &batch.records, now);
        self.apply(effects);
        if batch.job_done {
            self.finish(batch.job, now);
        }
    }

    async fn command(&mut self, c: Command) {
        let now = now_ms();
        match c {
            Command::CheckNow(name, reply) => {
                let r = self.watch.check_now(&name, now);
                let _ = reply.send(r);
                self.submit_due();
            }
            Command::Silence(name, until, reply) => {
                let r = self.watch.silence(&name, until).map(|e| self.apply(e));
                let _ = reply.send(r);
            }
            Command::RunAction(name, monitor, reply) => {
                match self.watch.run_action(&name, monitor.as_deref(), now) {
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                    Ok(req) => {
                        tracing::info!(
                            action = %req.action.name,
                            monitor = req.monitor.as_deref(),
                            "action requested over the API"
                        );
                        self.run_action(req, Some(reply));
                    }
                }
            }
            Command::View(f) => f(&self.watch, now),
            Command::Reload(reply) => {
                let r = self.reload_file("API request").await;
                let _ = reply.send(r);
            }
            Command::AttachFleet(link) => {
                tracing::info!("monitors probe from fleet pools through the fleet task");
                self.fleet = Some(link);
            }
            Command::FleetReady | Command::Stop => {}
        }
    }

    /// Reloads the config file. Reading it and resolving its host names block, so they run
    /// on tokio's blocking pool while this thread goes on with its actions' tasks.
    async fn reload_file(&mut self, why: &str) -> Result<usize, String> {
        let Some(path) = self.path.clone() else {
            return Err("the server was started without --config".into());
        };
        let loaded = match tokio::task::spawn_blocking(move || config::load(&path)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the config loader failed: {e}")),
        };
        let metrics = &self.shared.metrics.monitor;
        match loaded {
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&ReloadLabel {
                        outcome: "rejected",
                    })
                    .inc();
                tracing::error!(
                    why,
                    error = %e,
                    "config reload rejected, the running config stays"
                );
                Err(e)
            }
            Ok(c) => {
                let n = c.monitors.len();
                let removed = self.watch.reload(Arc::new(c), now_ms());
                for (m, (host, port)) in &removed {
                    metrics.up.remove(&TargetLabels {
                        monitor: m.clone(),
                        target: host.to_string(),
                        port: port.to_string(),
                    });
                }
                let forgotten = self.shared.store.forget_targets(removed);
                report_failure(
                    &self.shared,
                    forgotten,
                    "forget removed monitor targets".into(),
                );
                self.publish_all();
                // The scheduler reads the schedules again (it sleeps until one is due).
                self.shared.schedules_changed.notify_one();
                metrics
                    .reloads
                    .get_or_create(&ReloadLabel { outcome: "applied" })
                    .inc();
                tracing::info!(why, monitors = n, "config reloaded");
                Ok(n)
            }
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Save(s) => {
                    match &s {
                        Save::Target {
                            monitor,
                            target,
                            tracker,
                            ..
                        } => self.publish(monitor, target, tracker.hard),
                        // A target's first verdict being UP is not news.
                        Save::Event {
                            from: Health::Pending,
                            kind: "up",
                            ..
                        } => {}
                        Save::Event {
                            monitor,
                            target,
                            kind,
                            reason,
                            ..
                        } => {
                            let (ip, port) = target;
                            tracing::warn!(
                                monitor = %monitor,
                                ip = %ip,
                                port,
                                state = kind,
                                reason = reason.as_deref(),
                                "monitor target changed state"
                            );
                        }
                        _ => {}
                    }
                    self.saves.push(s);
                }
                Effect::Action(req) => self.run_action(req, None),
                Effect::Notice(n) => self.notify(n),
                Effect::LocalShortage {
                    monitor,
                    skipped,
                    last,
                } => {
                    let (ip, port) = last.target;
                    tracing::warn!(
                        monitor = %monitor,
                        skipped,
                        errno = last.errno,
                        ip = %ip,
                        port,
                        "checks skipped: local shortage {} on this host, not a verdict about \
                         the targets; they keep their state until a check can run",
                        last.errno
                    );
                }
            }
        }
    }

    fn run_action(
        &mut self,
        req: super::watch::ActionRequest,
        reply: Option<oneshot::Sender<Result<ActionRecord, Refusal>>>,
    ) {
        let shared = Arc::clone(&self.shared);
        let remote = match &req.action.kind {
            config::ActionKind::Remote { agent, run } => Some((agent.clone(), run.clone())),
            _ => None,
        };
        // A remote dry run still asks the agent, which answers with what it would run.
        let dry_remote = req.verdict == Verdict::DryRun && remote.is_some();
        if req.verdict != Verdict::Run && !dry_remote {
            if let Some(rec) = actions::not_run(&req) {
                tracing::info!(
                    action = %rec.action,
                    monitor = rec.monitor.as_deref(),
                    outcome = %rec.outcome,
                    detail = rec.detail.as_deref(),
                    "action not run"
                );
                finish_action(&shared, &rec);
                if let Some(r) = reply {
                    let _ = r.send(Ok(rec));
                }
            }
            return;
        }
        // A DOWN action that ran is followed by a check right away.
        let recheck = (req.trigger == super::watch::Trigger::Down && !dry_remote)
            .then(|| req.monitor.clone())
            .flatten()
            .map(|m| (m, self.recheck_tx.clone()));
        let reason = self.reason(&req);
        let fleet = self.shared.fleet.get().cloned();
        // A remote action's outcome goes to the monitor's notifiers for its trigger.
        let notifiers = match (&remote, req.monitor.as_deref()) {
            (Some(_), Some(m)) => self.notifiers(m, req.trigger),
            _ => Vec::new(),
        };
        match &remote {
            Some((agent, run)) => tracing::info!(
                action = %req.action.name,
                %agent,
                run,
                "asking an agent to run an action"
            ),
            None => tracing::info!(
                action = %req.action.name,
                argv = ?req.action.kind.argv(),
                "running action"
            ),
        }
        tokio::spawn(async move {
            let rec = match remote {
                Some((agent, run)) => {
                    let finish = |rec: &ActionRecord| {
                        tracing::info!(action = %rec.action, outcome = %rec.outcome,
                            detail = rec.detail.as_deref(), "remote action");
                        finish_action(&shared, rec);
                    };
                    super::remote::run(fleet, &req, &agent, &run, reason, dry_remote, finish).await
                }
                None => {
                    let rec = actions::run(&req).await;
                    tracing::info!(
                        action = %rec.action,
                        outcome = %rec.outcome,
                        exit_code = rec.exit_code,
                        "action ended"
                    );
                    finish_action(&shared, &rec);
                    rec
                }
            };
            if let Some((monitor, tx)) = recheck {
                let _ = tx.send(monitor);
            }
            // Notifications (retried with backoff) hold up neither the check nor the reply.
            let notices = (!notifiers.is_empty()).then(|| rec.clone());
            if let Some(r) = reply {
                let _ = r.send(Ok(rec));
            }
            if let Some(rec) = notices {
                for n in super::remote::notify_outcome(&rec, &notifiers).await {
                    finish_notice(&shared, &n);
                }
            }
        });
    }

    /// The notifiers of `monitor` for `trigger` (`on_down` for DOWN, `on_up` for UP).
    fn notifiers(
        &self,
        monitor: &str,
        trigger: super::watch::Trigger,
    ) -> Vec<Arc<config::NotifySpec>> {
        let Some(m) = self.watch.monitor(monitor) else {
            return Vec::new();
        };
        let names: Vec<&str> = match trigger {
            super::watch::Trigger::Down => m.spec.down_notifiers().collect(),
            super::watch::Trigger::Up => m.spec.up_notifiers().collect(),
            super::watch::Trigger::Manual => Vec::new(),
        };
        let all = &self.watch.config().notifiers;
        names.iter().filter_map(|n| all.get(*n).cloned()).collect()
    }

    /// The failing check's reason for an action's first DOWN target, for the agent's
    /// context.
    fn reason(&self, req: &super::watch::ActionRequest) -> Option<String> {
        let monitor = self.watch.monitor(req.monitor.as_deref()?)?;
        req.targets
            .iter()
            .find_map(|t| monitor.targets.get(t)?.last.as_ref()?.reason.clone())
    }

    fn notify(&mut self, n: super::watch::Notice) {
        let Some(spec) = self.watch.config().notifiers.get(&n.notify).cloned() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        if n.silenced {
            finish_notice(&shared, &notify::record(&spec, &n, "silenced", 0, None));
            return;
        }
        tokio::spawn(async move {
            let rec = notify::deliver(&spec, &n).await;
            finish_notice(&shared, &rec);
        });
    }

    fn flush(&mut self) {
        if self.saves.is_empty() {
            return;
        }
        let saves = std::mem::take(&mut self.saves);
        let what = format!("write {} monitor history rows", saves.len());
        let saved = self.shared.store.save_history(saves);
        report_failure(&self.shared, saved, what);
    }
}

/// The monitors' result sink, and a thread that forwards what arrives on it to the async
/// runtime (the engine's sinks are blocking channels; `blocking_send` keeps the back-pressure
/// of the bounded async channel). The thread ends once every sender of the sink (the
/// runtime's and those of jobs in the engine) is gone, or at the first batch after the
/// runtime's receiver is gone.
fn forward_results() -> (ResultSink, mpsc::Receiver<ResultBatch>) {
    let (sink, results) = result_channel(RESULT_BATCHES);
    let (tx, rx) = mpsc::channel(RESULT_BATCHES);
    let spawned = std::thread::Builder::new()
        .name("porthawk-watch-results".into())
        .spawn(move || {
            // Blocks until a batch arrives: nothing wakes it while no monitor job runs.
            while let Ok(batch) = results.recv() {
                if tx.blocking_send(batch).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread no monitor result would arrive: say so once.
        tracing::error!(error = %e, "cannot start the monitor results thread");
    }
    (sink, rx)
}

/// Watches the config file's directory for a file written or moved in place (an editor's
/// rename, a Kubernetes ConfigMap's symlink swap) on the `porthawk-config-watch` thread,
/// which sends what it sees to the runtime; `None` (logged) when inotify cannot, and the
/// runtime then looks at the file's stamp every [`FILE_POLL`]. Every event in the directory
/// counts: the file's stamp then says whether it changed.
fn watch_config_file(
    path: &std::path::Path,
    tx: mpsc::UnboundedSender<Events>,
) -> Option<WatchThread> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let flags = WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO;
    let send = move |e| {
        let _ = tx.send(e);
    };
    match WatchThread::spawn("porthawk-config-watch", dir, flags, |_| true, send) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch the config file's directory: its stamp is looked at every second"
            );
            None
        }
    }
}

/// Waits for a queued history write on the runtime, without holding up the loop. A failure
/// is counted; the first of a run of them is logged (not one line per check) and
/// `shared.history` says that history is not being written, which the monitor routes and
/// `/healthz` report. The monitors go on judging with their verdicts in memory. The writer
/// applies writes in the order they were queued either way.
fn report_failure<T: Send + 'static>(shared: &Arc<Shared>, reply: Reply<T>, what: String) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        match reply.await {
            Ok(_) => {
                if shared.history.written() {
                    tracing::info!("monitor history is being written again");
                }
            }
            Err(e) => {
                shared.metrics.store_errors.inc();
                if shared.history.failed(&e.to_string()) {
                    tracing::error!(
                        error = %e,
                        "monitor history is not being written (monitors keep their verdicts \
                         in memory): cannot {what}"
                    );
                }
            }
        }
    });
}

fn finish_action(shared: &Arc<Shared>, rec: &ActionRecord) {
    shared
        .metrics
        .monitor
        .actions
        .get_or_create(&OutcomeLabels {
            name: rec.action.clone(),
            outcome: rec.outcome.clone(),
        })
        .inc();
    let recorded = shared.store.record_action(rec.clone());
    report_failure(shared, recorded, format!("record action {}", rec.action));
}

fn finish_notice(shared: &Arc<Shared>, rec: &history::NoticeRecord) {
    shared
        .metrics
        .monitor
        .notifications
        .get_or_create(&OutcomeLabels {
            name: rec.notify.clone(),
            outcome: rec.outcome.clone(),
        })
        .inc();
    let recorded = shared.store.record_notice(rec.clone());
    report_failure(
        shared,
        recorded,
        format!("record notification {}", rec.notify),
    );
}
