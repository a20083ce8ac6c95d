//! The state the running server's parts share: its config, engine, store, metrics, the
//! monitors' handle, and the sweeps it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use porthawk_core::JobId;
use porthawk_engine::{Engine, Job, ResultSink};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::monitor::handle::WatchHandle;
use crate::store::{now_ms, Store, StoreHealth};
use crate::sweep::{LiveSweep, SweepPlan, SweepState};

/// The state every handler shares: a cheap handle on the running server.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl AppState {
    /// Fleet mode, when the config has `[fleet]`: agents, monitor rounds from pools.
    pub fn fleet(&self) -> Option<Arc<crate::fleet::state::FleetState>> {
        self.0.fleet.get().cloned()
    }
}

/// Sweeps this process runs, by sweep id and by engine job id; and those that failed and
/// whose end the store could not take.
#[derive(Default)]
pub(crate) struct LiveSweeps {
    by_id: HashMap<u64, Arc<LiveSweep>>,
    by_job: HashMap<JobId, Arc<LiveSweep>>,
    /// Ended `failed` while the store refused to record it: the store still says
    /// `running`, so the API answers from here.
    unstored_ends: HashMap<u64, Arc<LiveSweep>>,
}

/// The running server's parts, shared by the API handlers, the aggregator and the monitor
/// runtime.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) engine: Engine,
    /// Where every sweep's job sends its results: the aggregator reads the other end.
    sweep_sink: ResultSink,
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    pub(crate) watch: WatchHandle,
    /// Whether monitor history is being written.
    pub(crate) history: HistoryWrites,
    live: Mutex<LiveSweeps>,
    stopping: AtomicBool,
    /// Fleet mode's state, when the config has `[fleet]`.
    pub(crate) fleet: std::sync::OnceLock<Arc<crate::fleet::state::FleetState>>,
    /// Wakes the scheduler, which sleeps until a schedule is due: the config was reloaded.
    pub(crate) schedules_changed: tokio::sync::Notify,
    /// Wakes the retention thread, which sleeps until a sweep ends.
    pub(crate) prune: crate::prune_signal::PruneSignal,
}

/// Whether the monitors' history writes succeed: the last one's error while they fail.
#[derive(Default)]
pub(crate) struct HistoryWrites(Mutex<Option<String>>);

impl HistoryWrites {
    /// Records a failed history write; true for the first failure of a run of them (to log
    /// once, not per check).
    pub(crate) fn failed(&self, e: &str) -> bool {
        lock(&self.0).replace(e.to_string()).is_none()
    }

    /// Records a history write that succeeded; true if writes had been failing.
    pub(crate) fn written(&self) -> bool {
        lock(&self.0).take().is_some()
    }

    /// `written`, or `not written: <the last error>`.
    pub(crate) fn describe(&self) -> String {
        match &*lock(&self.0) {
            None => "written".into(),
            Some(e) => format!("not written: {e}"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(
        config: ServerConfig,
        engine: Engine,
        sweep_sink: ResultSink,
        store: Store,
        metrics: Metrics,
    ) -> Shared {
        Shared {
            config,
            engine,
            sweep_sink,
            store,
            metrics,
            watch: WatchHandle::default(),
            history: HistoryWrites::default(),
            live: Mutex::new(LiveSweeps::default()),
            stopping: AtomicBool::new(false),
            fleet: std::sync::OnceLock::new(),
            schedules_changed: tokio::sync::Notify::new(),
            prune: crate::prune_signal::PruneSignal::default(),
        }
    }

    /// The sweeps still running, to end them at a stop.
    pub(crate) fn live_sweeps(&self) -> Vec<Arc<LiveSweep>> {
        lock(&self.live).by_id.values().cloned().collect()
    }

    pub(crate) fn live_by_job(&self, job: JobId) -> Option<Arc<LiveSweep>> {
        lock(&self.live).by_job.get(&job).cloned()
    }

    pub(crate) fn live_by_id(&self, id: u64) -> Option<Arc<LiveSweep>> {
        lock(&self.live).by_id.get(&id).cloned()
    }

    /// A sweep whose state this process knows better than the store: one running, or one
    /// that failed and whose end could not be stored.
    pub(crate) fn in_memory(&self, id: u64) -> Option<Arc<LiveSweep>> {
        let live = lock(&self.live);
        live.by_id
            .get(&id)
            .or_else(|| live.unstored_ends.get(&id))
            .cloned()
    }

    /// The failed sweeps whose end the store could not take, to try again at a stop.
    pub(crate) fn unstored_ends(&self) -> Vec<Arc<LiveSweep>> {
        lock(&self.live).unstored_ends.values().cloned().collect()
    }

    /// Stores a planned sweep and hands it to the engine, or refuses it whole.
    pub(crate) fn create(&self, plan: SweepPlan) -> Result<u64, ApiError> {
        let mut live = lock(&self.live);
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ApiError::too_many("the server is stopping"));
        }
        let max = self.config.limits.max_concurrent_sweeps;
        if live.by_id.len() >= max {
            return Err(ApiError::too_many(format!(
                "{} sweeps are running, the most this server runs at once is {max}",
                live.by_id.len()
            )));
        }
        // A sweep accepted into a deleted database would be lost at exit.
        let health = self.store.health();
        if let StoreHealth::Deleted(_) = health {
            return Err(ApiError::unavailable(format!(
                "the store is unhealthy, no sweep is accepted: {health}"
            )));
        }
        let created = now_ms();
        // Callers run this on a blocking thread: it waits for the store's writer.
        let id = self
            .store
            .insert_sweep(
                &plan.request,
                plan.request.store.is_all(),
                plan.space.len(),
                created,
            )
            .wait()
            .map_err(|e| ApiError::unavailable(format!("cannot store the sweep: {e}")))?;
        let job = self.engine.next_job_id();
        let rate = plan.request.rate;
        let sweep = Arc::new(LiveSweep::new(
            id,
            job,
            plan.request,
            Arc::clone(&plan.space),
            created,
        ));
        // Registered before it is submitted, so that its first batch finds it.
        live.by_id.insert(id, Arc::clone(&sweep));
        live.by_job.insert(job, Arc::clone(&sweep));
        let handle = self.engine.submit(Job {
            id: job,
            positions: 0..plan.space.len(),
            space: plan.space,
            spec: plan.spec,
            rate,
            sink: self.sweep_sink.clone(),
        });
        let _ = sweep.handle.set(handle);
        self.metrics.sweep_moved(None, SweepState::Running);
        Ok(id)
    }

    /// Forgets a sweep that ended (its final state is already stored) and wakes its readers.
    pub(crate) fn retire(&self, sweep: &Arc<LiveSweep>, state: SweepState) {
        {
            let mut live = lock(&self.live);
            live.by_id.remove(&sweep.id);
            live.by_job.remove(&sweep.job);
        }
        self.metrics.sweep_moved(Some(SweepState::Running), state);
        self.prune.sweep_ended();
        sweep.stored.send_modify(|v| *v += 1);
    }

    /// Forgets a running sweep that ended `failed` without the store taking its end: the
    /// API goes on reporting it from memory.
    pub(crate) fn retire_unstored(&self, sweep: &Arc<LiveSweep>) {
        let _ = sweep.ended_ms.set(now_ms());
        {
            let mut live = lock(&self.live);
            live.by_id.remove(&sweep.id);
            live.by_job.remove(&sweep.job);
            live.unstored_ends.insert(sweep.id, Arc::clone(sweep));
        }
        self.metrics
            .sweep_moved(Some(SweepState::Running), SweepState::Failed);
        self.prune.sweep_ended();
        sweep.stored.send_modify(|v| *v += 1);
    }

    /// Cancels a running sweep at the user's request; false if it is not running.
    pub(crate) fn cancel(&self, id: u64) -> Option<Arc<LiveSweep>> {
        let sweep = self.live_by_id(id)?;
        sweep.user_cancelled.store(true, Ordering::SeqCst);
        if let Some(h) = sweep.handle.get() {
            h.cancel();
        }
        Some(sweep)
    }

    /// Refuses new sweeps and cancels the running ones: they end as `interrupted`.
    pub(crate) fn begin_stop(&self) {
        let live = {
            let guard = lock(&self.live);
            self.stopping.store(true, Ordering::SeqCst);
            guard.by_id.values().cloned().collect::<Vec<_>>()
        };
        for s in live {
            if let Some(h) = s.handle.get() {
                h.cancel();
            }
        }
    }

    pub(crate) fn live_count(&self) -> usize {
        lock(&self.live).by_id.len()
    }
}
