//! Scheduled sweeps (`[[sweep]]` in porthawk.toml): the `porthawk-schedule` thread starts
//! each schedule's run as a normal sweep every `every`, diffs each finished run against the
//! previous finished run of the same name with core's `diff_results` (the diff of
//! `porthawk diff` and `/v1/sweeps/{id}/diff`), keeps the outcome and the changes in the
//! store, and notifies the changes of a run through its `on_change` channels as one grouped
//! message.
//!
//! - The first finished run of a schedule is its baseline: stored, never notified. So is a
//!   run whose schedule's targets, ports or probe changed since the run before it, and one
//!   whose predecessor's results retention has deleted.
//! - A run whose sweep does not end `done` (failed, cancelled, interrupted) or cannot be
//!   created is a failure: notified as a failure, never compared (its missing ports are not
//!   "closed"); the next run is compared with the last finished one.
//! - The next run is due `every` after the start of the last one, as the store remembers it,
//!   so a restart of `serve` keeps the schedule. Runs a stop interrupted (their sweep, or
//!   their judging: a stop does not wait for notifications) are recorded as failed at the
//!   next start, without a notice (the stop was ours).
//! - The schedules are read from the watch's config at every tick, so a reload (SIGHUP, a
//!   changed file, `POST /v1/config/reload`) applies to the next run. Between ticks the
//!   thread sleeps until the next schedule is due, a reload (`Shared::schedules_changed`)
//!   or a stop; only while a run's sweep is running does it look again every second.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use porthawk_core::{diff_results, AddrRange, LineChange};
use porthawk_store::{ChangeRow, RunEnd, RunNotice, RunOutcome};
use porthawk_watch::config::{SweepSchedule, WatchConfig};

use crate::monitor::notify::{deliver_message, Outgoing};
use crate::schedule_notice::{change_message, change_row, failure_message};
use crate::shared::Shared;
use crate::store::now_ms;
use crate::sweep::{self, ProbeRequest, StoreMode, SweepRequest, SweepState};

/// How often the scheduler looks at whether its running runs' sweeps have ended (only while
/// a run is running; otherwise it sleeps until a schedule is due or the config is reloaded).
const TICK: Duration = Duration::from_secs(1);
/// The most changes kept in the history of one run; the rest are counted in its detail.
const MAX_STORED: usize = 100_000;

/// The running scheduler thread; stopped (and joined) on drop.
pub(crate) struct Scheduler {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the `porthawk-schedule` thread.
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Scheduler> {
        let (stop, flag) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("porthawk-schedule".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the scheduler's runtime");
                        return;
                    }
                };
                runtime.block_on(run(shared, flag));
                // A plan still resolving names on the blocking pool is not waited for.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A run whose sweep is running.
struct Running {
    run_id: u64,
    sweep_id: u64,
    schedule: Arc<SweepSchedule>,
}

/// The scheduler's state: when each schedule last started, and the runs in progress.
struct Schedules {
    shared: Arc<Shared>,
    last_start: HashMap<String, u64>,
    running: Vec<Running>,
}

async fn run(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut schedules = Schedules {
        shared,
        last_start: HashMap::new(),
        running: Vec::new(),
    };
    schedules.restore().await;
    loop {
        // A stop does not wait for a tick (a notification may be retrying for a minute):
        // the run it interrupts stays unjudged in the store and is recorded as failed at
        // the next start.
        let wake = tokio::select! {
            wake = schedules.tick() => wake,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Sleeps until then, a reload (which may add or change schedules) or a stop.
        let sleep = async {
            match wake {
                Some(ms) => {
                    let wait = Duration::from_millis(ms.saturating_sub(now_ms()));
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = schedules.shared.schedules_changed.notified() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Every address a TCP sweep can reach: a schedule is the operator's own config, trusted as
/// monitors are; the API's allow-list is for requests. The top 2^33 addresses of IPv6
/// (multicast, `ff00::/8`, never a TCP peer) are left out so that the set's size, IPv4's
/// included, fits the `u128` a `HostSet` counts in.
fn everywhere() -> Vec<AddrRange> {
    let v4 = AddrRange::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
    );
    let v6 = AddrRange::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::from(u128::MAX - (1u128 << 33))),
    );
    v4.into_iter().chain(v6).collect()
}

/// The sweep request of one run of `s`: what `POST /v1/sweeps` would send.
pub(crate) fn request_of(s: &SweepSchedule) -> SweepRequest {
    let p = &s.probe;
    let probe = ProbeRequest {
        send: p.send.clone(),
        expect: p.expect.clone(),
        preset: p.preset.clone(),
        tls: p.tls.then_some(true),
        timeout_ms: p.timeout.map(|t| t.as_millis() as u64),
        tries: p.tries,
        ..ProbeRequest::default()
    };
    SweepRequest {
        targets: s.targets.clone(),
        ports: s.ports.clone(),
        exclude: s.exclude.clone(),
        probe: (probe != ProbeRequest::default()).then_some(probe),
        rate: s.rate,
        store: if s.store_all {
            StoreMode::All
        } else {
            StoreMode::Open
        },
        ip_family: None,
        prefer_family: None,
        from: None,
    }
}

/// How a sweep stands, as far as a run is concerned.
enum SweepEnd {
    Running,
    Ended(SweepState, Option<String>),
    Gone,
}

impl Schedules {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Option<T> {
        let shared = Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || f(&shared)).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "a scheduler task failed");
                None
            }
        }
    }

    /// Reads when each schedule last ran, and records the runs a stop interrupted as failed.
    async fn restore(&mut self) {
        let read = self
            .blocking(|s| {
                Ok::<_, porthawk_store::StoreError>((
                    s.store.latest_schedule_runs()?,
                    s.store.unfinished_schedule_runs()?,
                ))
            })
            .await;
        let (latest, unfinished) = match read {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the scheduled sweeps' history");
                return;
            }
            None => return,
        };
        for run in latest {
            self.last_start.insert(run.schedule, run.started_ms);
        }
        for run in unfinished {
            let detail = match run.sweep_id {
                Some(id) => format!("porthawk stopped while its sweep {id} ran"),
                None => "porthawk stopped before its sweep started".to_string(),
            };
            // Stored, not counted in the metrics: the stop that failed it was ours.
            let end = RunEnd {
                run_id: run.id,
                finished_ms: now_ms(),
                outcome: RunOutcome::Failed,
                against: None,
                detail: Some(detail),
                changes: Vec::new(),
                notices: Vec::new(),
            };
            if let Err(e) = self.shared.store.finish_schedule_run(end).await {
                tracing::error!(run = run.id, error = %e, "cannot store the end of an interrupted run");
            }
        }
    }

    /// The config in force: the watch's (which reloads change), or the one of the start.
    async fn config(&self) -> Arc<WatchConfig> {
        match self.shared.watch.view(|w, _| Arc::clone(w.config())).await {
            Some(c) => c,
            None => Arc::clone(&self.shared.config.watch),
        }
    }

    /// Judges the runs whose sweeps ended and starts the runs that are due; when to look
    /// again: in a [`TICK`] while a run is running, else when the next schedule is due
    /// (`None`: no schedule).
    async fn tick(&mut self) -> Option<u64> {
        let config = self.config().await;
        let mut still = Vec::new();
        for run in std::mem::take(&mut self.running) {
            let id = run.sweep_id;
            match self.blocking(move |s| sweep_end(s, id)).await {
                Some(SweepEnd::Running) | None => still.push(run),
                Some(end) => self.judge(run, end, &config).await,
            }
        }
        self.running = still;
        let now = now_ms();
        for schedule in &config.sweeps {
            if self
                .running
                .iter()
                .any(|r| r.schedule.name == schedule.name)
            {
                continue;
            }
            if now >= self.due(schedule) {
                self.start_run(Arc::clone(schedule), &config).await;
            }
        }
        let next_due = config
            .sweeps
            .iter()
            .filter(|s| !self.running.iter().any(|r| r.schedule.name == s.name))
            .map(|s| self.due(s))
            .min();
        let poll = (!self.running.is_empty()).then(|| now_ms() + TICK.as_millis() as u64);
        next_due.into_iter().chain(poll).min()
    }

    /// When `schedule`'s next run is due: `every` after its last start (at once if never).
    fn due(&self, schedule: &SweepSchedule) -> u64 {
        self.last_start
            .get(&schedule.name)
            .map_or(0, |t| t.saturating_add(schedule.every.as_millis() as u64))
    }

    /// Starts a run of `schedule` as a sweep; a sweep that cannot be created is a failed run.
    async fn start_run(&mut self, schedule: Arc<SweepSchedule>, config: &WatchConfig) {
        let now = now_ms();
        self.last_start.insert(schedule.name.clone(), now);
        let request = request_of(&schedule);
        let created = self
            .blocking(move |s| {
                let plan = sweep::plan(request, &everywhere(), &s.config.limits, random_seed())?;
                s.create(plan)
            })
            .await;
        let name = schedule.name.clone();
        match created {
            Some(Ok(sweep_id)) => {
                match self
                    .shared
                    .store
                    .start_schedule_run(&name, Some(sweep_id), now)
                    .await
                {
                    Ok(run_id) => {
                        tracing::info!(schedule = %name, sweep = sweep_id, "scheduled sweep started");
                        self.running.push(Running {
                            run_id,
                            sweep_id,
                            schedule,
                        });
                    }
                    Err(e) => {
                        tracing::error!(schedule = %name, sweep = sweep_id, error = %e,
                            "cannot record the scheduled sweep's run; it is not judged");
                    }
                }
            }
            Some(Err(e)) => {
                let detail = format!("its sweep could not be created: {}", e.message);
                tracing::warn!(schedule = %name, reason = %detail, "scheduled sweep failed");
                match self.shared.store.start_schedule_run(&name, None, now).await {
                    Ok(run_id) => {
                        let notices = self.notify_failure(&schedule, None, &detail, config).await;
                        self.finish(
                            &name,
                            RunEnd {
                                run_id,
                                finished_ms: now_ms(),
                                outcome: RunOutcome::Failed,
                                against: None,
                                detail: Some(detail),
                                changes: Vec::new(),
                                notices,
                            },
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::error!(schedule = %name, error = %e, "cannot record a failed run");
                    }
                }
            }
            None => {}
        }
    }

    async fn finish(&self, schedule: &str, end: RunEnd) {
        self.shared
            .metrics
            .schedule_runs
            .get_or_create(&crate::metrics::ScheduleLabels {
                schedule: schedule.to_string(),
                outcome: end.outcome.as_str(),
            })
            .inc();
        let run = end.run_id;
        if let Err(e) = self.shared.store.finish_schedule_run(end).await {
            tracing::error!(run, error = %e, "cannot store the end of a scheduled sweep's run");
        }
    }

    /// Judges a run whose sweep has ended: compared with the previous finished run, stored,
    /// and notified when something changed or it failed.
    async fn judge(&mut self, run: Running, end: SweepEnd, config: &WatchConfig) {
        let name = run.schedule.name.clone();
        let (state, reason) = match end {
            SweepEnd::Ended(state, reason) => (state, reason),
            SweepEnd::Gone => (
                SweepState::Failed,
                Some("its sweep is no longer stored".into()),
            ),
            SweepEnd::Running => return,
        };
        if state != SweepState::Done {
            let mut detail = format!("sweep {} ended {}", run.sweep_id, state.as_str());
            if let Some(r) = reason {
                let _ = write!(detail, ": {r}");
            }
            tracing::warn!(schedule = %name, reason = %detail, "scheduled sweep failed");
            let notices = self
                .notify_failure(&run.schedule, Some(run.sweep_id), &detail, config)
                .await;
            self.finish(
                &run.schedule.name,
                RunEnd {
                    run_id: run.run_id,
                    finished_ms: now_ms(),
                    outcome: RunOutcome::Failed,
                    against: None,
                    detail: Some(detail),
                    changes: Vec::new(),
                    notices,
                },
            )
            .await;
            return;
        }
        let (run_id, sweep_id) = (run.run_id, run.sweep_id);
        let compared = self
            .blocking(move |s| compare(s, &name, run_id, sweep_id))
            .await;
        let comparison = match compared {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // The run is left unjudged in the store: the next start records it failed.
                tracing::error!(schedule = %run.schedule.name, error = %e,
                    "cannot read the results to compare");
                return;
            }
            None => return,
        };
        let (outcome, against, detail, changes) = match comparison {
            Comparison::Baseline(why) => (RunOutcome::Baseline, None, Some(why), Vec::new()),
            Comparison::Diff { against, changes } if changes.is_empty() => {
                (RunOutcome::Unchanged, Some(against), None, changes)
            }
            Comparison::Diff { against, changes } => {
                (RunOutcome::Changed, Some(against), None, changes)
            }
        };
        let notices = if outcome == RunOutcome::Changed {
            let message = change_message(&run.schedule.name, sweep_id, against, &changes, now_ms());
            self.notify(&run.schedule, &message, config).await
        } else {
            Vec::new()
        };
        tracing::info!(schedule = %run.schedule.name, sweep = sweep_id,
            outcome = outcome.as_str(), changes = changes.len(), "scheduled sweep judged");
        let mut detail = detail;
        let stored: Vec<ChangeRow> = changes.iter().take(MAX_STORED).map(change_row).collect();
        if changes.len() > MAX_STORED {
            detail = Some(format!(
                "{} changes; the first {MAX_STORED} are kept",
                changes.len()
            ));
        }
        self.finish(
            &run.schedule.name,
            RunEnd {
                run_id,
                finished_ms: now_ms(),
                outcome,
                against,
                detail,
                changes: stored,
                notices,
            },
        )
        .await;
    }

    async fn notify_failure(
        &self,
        schedule: &SweepSchedule,
        sweep_id: Option<u64>,
        detail: &str,
        config: &WatchConfig,
    ) -> Vec<RunNotice> {
        let message = failure_message(&schedule.name, sweep_id, detail, now_ms());
        self.notify(schedule, &message, config).await
    }

    /// Sends `message` through each of the schedule's `on_change` channels (as the config in
    /// force defines them).
    async fn notify(
        &self,
        schedule: &SweepSchedule,
        message: &Outgoing,
        config: &WatchConfig,
    ) -> Vec<RunNotice> {
        let mut notices = Vec::new();
        for name in &schedule.on_change {
            let Some(spec) = config.notifiers.get(name) else {
                continue;
            };
            let about = format!("sweep {}", schedule.name);
            let (outcome, attempts, error) = deliver_message(spec, message, &about).await;
            notices.push(RunNotice {
                notify: name.clone(),
                outcome: outcome.to_string(),
                attempts,
                error,
            });
        }
        notices
    }
}

/// How sweep `id` stands: running (in this process), ended with its state and reason, or
/// unknown to the store. Blocking.
fn sweep_end(shared: &Shared, id: u64) -> SweepEnd {
    if shared.live_by_id(id).is_some() {
        return SweepEnd::Running;
    }
    if let Some(failed) = shared.in_memory(id) {
        let s = failed.status();
        return SweepEnd::Ended(s.state, s.reason);
    }
    let row: Result<Option<crate::store::SweepRow>, _> = shared.store.sweep(id);
    match row {
        Ok(Some(row)) if row.state.is_final() => SweepEnd::Ended(row.state, row.reason),
        Ok(Some(_)) => SweepEnd::Running,
        Ok(None) => SweepEnd::Gone,
        Err(e) => {
            tracing::warn!(sweep = id, error = %e, "cannot read a scheduled sweep");
            SweepEnd::Running
        }
    }
}

/// What a finished run is compared with.
enum Comparison {
    /// Nothing to compare with, and why.
    Baseline(String),
    /// The changes since sweep `against`.
    Diff {
        against: u64,
        changes: Vec<LineChange>,
    },
}

/// Compares run `run_id` (sweep `sweep_id`) of `schedule` with the last finished run
/// before it. Blocking.
fn compare(
    shared: &Shared,
    schedule: &str,
    run_id: u64,
    sweep_id: u64,
) -> Result<Comparison, porthawk_store::StoreError> {
    let store = &shared.store;
    let Some(previous) = store.last_compared_run(schedule, run_id)? else {
        return Ok(Comparison::Baseline(
            "the first finished run of this schedule: the baseline later runs are compared with"
                .into(),
        ));
    };
    let Some(against) = previous.sweep_id else {
        return Ok(Comparison::Baseline("the previous run has no sweep".into()));
    };
    let old: Option<crate::store::SweepRow> = store.sweep(against)?;
    let new: Option<crate::store::SweepRow> = store.sweep(sweep_id)?;
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(Comparison::Baseline(format!(
            "the previous run's sweep {against} is no longer stored (retention): this run is \
             the new baseline"
        )));
    };
    if old.request != new.request {
        return Ok(Comparison::Baseline(format!(
            "the schedule's targets, ports or probe changed since sweep {against}: this run is \
             the new baseline"
        )));
    }
    let now = (now_ms() / 1000) as i64;
    let old = sweep::stored_lines(store, against, now)?;
    let new = sweep::stored_lines(store, sweep_id, now)?;
    Ok(Comparison::Diff {
        against,
        changes: diff_results(&old, &new),
    })
}

/// A seed that differs from run to run: the standard library's hasher keys are random.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allow-list of schedules plans any target, IPv6 ones too, without overflowing
    /// the host set's count.
    #[test]
    fn schedules_may_reach_any_address() {
        for target in ["10.0.0.0/24", "2001:db8::/120", "::/0"] {
            let request = SweepRequest {
                targets: vec![target.into()],
                ports: "22".into(),
                exclude: vec![],
                probe: None,
                rate: None,
                store: StoreMode::Open,
                ip_family: None,
                prefer_family: None,
                from: None,
            };
            let limits = crate::config::Limits {
                max_sweep_probes: u64::MAX,
                ..Default::default()
            };
            let planned = sweep::plan(request, &everywhere(), &limits, 1);
            match target {
                // Refused (too wide), not a panic.
                "::/0" => assert!(planned.is_err()),
                _ => assert!(planned.is_ok(), "{target}: {:?}", planned.err()),
            }
        }
    }

    #[test]
    fn a_schedule_becomes_the_request_an_api_client_would_send() {
        let config = porthawk_watch::config::parse(
            "p.toml",
            "[[sweep]]\nname = \"s\"\ntargets = [\"127.0.0.1\"]\nports = \"22\"\nevery = \"1h\"\n\
             probe = { preset = \"ssh\", timeout = \"2s\" }\nstore = \"all\"\n",
        )
        .unwrap();
        let r = request_of(&config.sweeps[0]);
        assert_eq!(r.targets, ["127.0.0.1"]);
        assert_eq!(r.store, StoreMode::All);
        let probe = r.probe.unwrap();
        assert_eq!(probe.preset.as_deref(), Some("ssh"));
        assert_eq!(probe.timeout_ms, Some(2000));
        assert!(sweep::validate(&request_of(&config.sweeps[0])).is_ok());
    }
}
