//! `porthawk serve`, the daemon: sweeps submitted over HTTP and scheduled monitors, run by one
//! shared engine; sweeps aggregated into the embedded store (`porthawk-store`), monitors
//! judged by `porthawk-watch`; actions, notifications, the status page, Prometheus metrics.
//!
//! - [`Server::start`] opens the store (migrating it, and marking sweeps a previous process
//!   left running as interrupted), starts the engine, the aggregator thread (fed by the
//!   sweeps' result sink) and the monitor runtime (fed by a sink of its own).
//! - [`app`] builds the axum `Router` over an [`AppState`]; tests drive it with `oneshot`.
//! - [`run`] is the whole server for the command line: it listens, serves until SIGINT or
//!   SIGTERM, then stops the sweeps (they become `interrupted`) and the engine.
//!
//! Architecture invariant: the server never touches a socket of a probed target; every probe
//! goes through the engine as a job.

mod aggregator;
mod api;
mod auth;
mod blackbox;
mod config;
mod error;
mod extract;
mod fleet;
mod fs_watch;
mod guard;
mod http;
mod metrics;
pub mod monitor;
mod page;
mod probe_route;
mod prune_signal;
mod retention;
mod schedule;
mod schedule_api;
mod schedule_notice;
mod shared;
mod store;
mod store_watch;
mod sweep;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use porthawk_engine::{result_channel, Backend, Engine};

pub use api::{app, ApiDoc};
pub use blackbox::{load as load_blackbox, BlackboxError, BlackboxModules};
pub use config::{
    default_allow, HttpGuard, Limits, ServerConfig, DEFAULT_LISTEN, DEFAULT_PUBLIC, PUBLIC_CHOICES,
    TOKEN_ENV,
};
pub use error::{ApiError, ErrorBody, ErrorDetail, ListenError, ServerError};
pub use fleet::{AgentList, AgentView, FleetState, MonitorRound, RunningView};
pub use sweep::{
    AgentRate, Counts, ProbeRequest, SliceCounts, StoreMode, SweepMode, SweepRequest, SweepState,
    SweepStatus,
};

use aggregator::Aggregator;
use metrics::Metrics;
pub use shared::AppState;
use shared::Shared;
use store::{Progress, Store};

/// Result batches of sweeps the engine may queue for the aggregator before shards wait.
const SWEEP_BATCHES: usize = 64;

/// How long a stopping server waits for cancelled sweeps to report their last results.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running server: store, engine and aggregator. Stop it with [`Server::shutdown`] (or by
/// dropping it).
pub struct Server {
    shared: Arc<Shared>,
    /// The data directory's lock, held (and its pid inside) for the server's life.
    _lock: std::fs::File,
    aggregator: Option<JoinHandle<()>>,
    /// Dropped to stop the aggregator (after its last write).
    stop_aggregator: Option<crossbeam_channel::Sender<()>>,
    /// Logs a deleted database when it happens.
    store_watch: Option<fs_watch::WatchThread>,
    /// Deletes old sweeps; stopped first.
    pruner: Option<retention::Pruner>,
    /// Runs the scheduled sweeps; stopped before the monitors.
    scheduler: Option<schedule::Scheduler>,
    /// The fleet task's runtime (with `[fleet]`); stopped before the rest.
    fleet: Option<fleet::FleetRuntime>,
    interrupted_at_start: usize,
}

impl Server {
    /// Opens the store in `config.data_dir`, starts the engine and the aggregator.
    pub fn start(config: ServerConfig) -> Result<Server, ServerError> {
        // Before the store is touched: a second server on the same directory would mark the
        // first one's running sweeps interrupted.
        let lock = lock_data_dir(&config.data_dir)?;
        let db = config.data_dir.join("porthawk.db");
        let (store, interrupted_at_start) =
            Store::open(&config.data_dir).map_err(|source| match source {
                porthawk_store::StoreError::CreateDir { path, source } => ServerError::Io {
                    context: format!("cannot create data directory '{}'", path.display()),
                    source,
                },
                source => ServerError::Store {
                    path: db.clone(),
                    source,
                },
            })?;
        let engine = Engine::start(&config.engine)?;
        let (sweep_sink, sweep_results) = result_channel(SWEEP_BATCHES);
        let metrics = Metrics::default();
        metrics.inflight_limit.set(engine.inflight() as i64);
        for (state, n) in store
            .count_by_state()
            .map_err(|source| ServerError::Store { path: db, source })?
        {
            if let Ok(state) = state.parse::<SweepState>() {
                metrics
                    .sweeps
                    .get_or_create(&metrics::StateLabel {
                        state: state.as_str(),
                    })
                    .set(n as i64);
            }
        }
        let shared = Arc::new(Shared::new(config, engine, sweep_sink, store, metrics));
        let aggregator = Aggregator::new(Arc::clone(&shared));
        let (stop_aggregator, aggregator_stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("porthawk-aggregator".into())
            .spawn(move || aggregator.run(sweep_results, aggregator_stopped))
            .map_err(|source| ServerError::Io {
                context: "cannot start the aggregator thread".into(),
                source,
            })?;
        let options = monitor::WatchOptions {
            config: Arc::clone(&shared.config.watch),
            path: shared.config.config_path.clone(),
            dry_run: shared.config.dry_run,
        };
        monitor::runtime::start(&shared, options).map_err(|source| ServerError::Io {
            context: "cannot start the monitor thread".into(),
            source,
        })?;
        let fleet = match shared.config.fleet.clone() {
            Some(config) => {
                let (state, runtime) =
                    fleet::start(&shared, config).map_err(|source| ServerError::Io {
                        context: "cannot start the fleet task".into(),
                        source,
                    })?;
                let _ = shared.fleet.set(state);
                shared.watch.fleet_ready();
                Some(runtime)
            }
            None => None,
        };
        let pruner =
            retention::Pruner::start(Arc::clone(&shared)).map_err(|source| ServerError::Io {
                context: "cannot start the sweep retention thread".into(),
                source,
            })?;
        let scheduler =
            schedule::Scheduler::start(Arc::clone(&shared)).map_err(|source| ServerError::Io {
                context: "cannot start the scheduled sweeps' thread".into(),
                source,
            })?;
        let store_watch = store_watch::start(Arc::clone(&shared));
        Ok(Server {
            shared,
            _lock: lock,
            aggregator: Some(thread),
            stop_aggregator: Some(stop_aggregator),
            store_watch,
            pruner: Some(pruner),
            scheduler: Some(scheduler),
            fleet,
            interrupted_at_start,
        })
    }

    /// The handlers' state.
    pub fn state(&self) -> AppState {
        AppState(Arc::clone(&self.shared))
    }

    /// How many sweeps a previous process left running, now marked interrupted.
    pub fn interrupted_at_start(&self) -> usize {
        self.interrupted_at_start
    }

    /// The engine's backend.
    pub fn backend(&self) -> Backend {
        self.shared.engine.backend()
    }

    /// Why the engine runs on epoll although io_uring was allowed, if it does.
    pub fn fallback_reason(&self) -> Option<String> {
        self.shared.engine.fallback_reason().map(str::to_string)
    }

    /// Stops: cancels running sweeps (they are stored as `interrupted` with every result
    /// received), stops the aggregator after its last write, then the engine.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.aggregator.take() else {
            return;
        };
        self.pruner = None;
        // Before the sweeps are stopped: a run the stop interrupts is recorded as failed at
        // the next start, not notified as a failure now.
        self.scheduler = None;
        // Fleet sweeps go on running on their agents; the next start resumes them.
        self.fleet = None;
        // Monitors first: they submit no more jobs, and their running actions are killed.
        self.shared.watch.stop();
        self.shared.begin_stop();
        let deadline = Instant::now() + STOP_GRACE;
        while self.shared.live_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop_aggregator = None;
        let _ = thread.join();
        self.store_watch = None;
        // Sweeps whose end did not arrive in time: store them as interrupted (or failed)
        // with what they have; and try again the failed ends the store refused.
        let left = self.shared.live_sweeps();
        let unstored = self.shared.unstored_ends();
        let progress: Vec<Progress> = left
            .iter()
            .chain(&unstored)
            .map(|s| {
                let failure = s.failure.get().cloned();
                Progress {
                    sweep_id: s.id,
                    done: s.done.load(Ordering::Relaxed),
                    counts: s.counts(),
                    finished: Some(if failure.is_some() {
                        SweepState::Failed
                    } else {
                        SweepState::Interrupted
                    }),
                    reason: failure,
                }
            })
            .collect();
        if !progress.is_empty() {
            if let Err(e) = self.shared.store.write_batch(Vec::new(), progress).wait() {
                tracing::error!(error = %e, "cannot store the end of the sweeps still running");
            }
        }
        for s in &left {
            let state = match s.failure.get() {
                Some(_) => SweepState::Failed,
                None => SweepState::Interrupted,
            };
            self.shared.retire(s, state);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lock file in the data directory.
const LOCK_FILE: &str = "porthawk.lock";

/// Takes the data directory's lock: an exclusive `flock` on `porthawk.lock`, which then
/// holds this process's pid. Another server holding it is refused with its pid named. The
/// kernel drops the lock when the process ends, however it ends, so a stale file is no
/// obstacle.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use rustix::fs::{flock, FlockOperation};
    use std::io::{Read, Seek, Write};

    std::fs::create_dir_all(dir).map_err(|source| ServerError::Io {
        context: format!("cannot create data directory '{}'", dir.display()),
        source,
    })?;
    let path = dir.join(LOCK_FILE);
    let io = |source| ServerError::Io {
        context: format!("lock file '{}'", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim().parse::<u32>().ok();
            return Err(ServerError::Locked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// What [`run`] tells its caller once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Whether mutating routes need a token.
    pub token: bool,
    /// The engine's backend.
    pub backend: Backend,
    /// Why the engine fell back to epoll under `--backend auto`, if it did.
    pub fallback_reason: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Sweeps of a previous process now marked interrupted.
    pub interrupted: usize,
    /// The most client connections served at once.
    pub max_connections: usize,
}

/// Runs a server until SIGINT or SIGTERM: starts it, listens on `config.listen`, calls
/// `on_ready`, serves, and stops cleanly.
pub fn run(config: ServerConfig, on_ready: impl FnOnce(&Ready)) -> Result<(), ServerError> {
    config.validate()?;
    let io = |context: &str| {
        let context = context.to_string();
        move |source| ServerError::Io { context, source }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("porthawk-api")
        .build()
        .map_err(io("cannot start the async runtime"))?;
    let server = Server::start(config.clone())?;
    let state = server.state();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|cause| ListenError {
                addr: config.listen,
                cause,
            })?;
        let addr = listener.local_addr().map_err(io("listening socket"))?;
        let shared = Arc::clone(&state.0);
        let nofile = rlimit::Resource::NOFILE.get().map_or(1024, |l| l.0);
        let cap = config.http.connection_cap(nofile, shared.engine.inflight());
        on_ready(&Ready {
            addr,
            token: config.token.is_some(),
            backend: server.backend(),
            fallback_reason: server.fallback_reason(),
            data_dir: config.data_dir.clone(),
            interrupted: server.interrupted_at_start(),
            max_connections: cap,
        });
        let stop = async move {
            stop_signal().await;
            // Ending the sweeps also ends the result streams that follow them.
            shared.begin_stop();
        };
        // Connections that outlive the grace period are cut.
        http::serve(listener, app(state), &config.http, cap, stop, STOP_GRACE).await;
        Ok(())
    });
    drop(runtime);
    server.shutdown();
    result
}

async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use super::*;

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(tempfile::TempDir);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            TempDir(
                tempfile::Builder::new()
                    .prefix(&format!("porthawk-server-test-{name}-"))
                    .tempdir()
                    .unwrap(),
            )
        }

        pub fn path(&self) -> &Path {
            self.0.path()
        }
    }

    /// A server on a one-shard epoll engine with its store in a fresh temp dir.
    pub fn test_server(name: &str, tweak: impl FnOnce(&mut ServerConfig)) -> (Server, TempDir) {
        let dir = TempDir::new(name);
        let mut config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        config.engine.shards = 1;
        config.engine.inflight = 64;
        config.engine.backend = porthawk_engine::BackendChoice::Epoll;
        tweak(&mut config);
        (Server::start(config).unwrap(), dir)
    }
}
