//! [`WatchHandle`]: how the rest of the server talks to the monitor runtime's thread, by
//! commands over a channel: requests from the API, and closures that read the watch.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::config::WatchConfig;
use super::history::ActionRecord;
use super::rounds::MonitorLink;
use super::watch::{Refusal, Watch};

pub(super) type ViewFn = Box<dyn FnOnce(&Watch, u64) + Send>;

pub(super) enum Command {
    CheckNow(String, oneshot::Sender<Result<usize, Refusal>>),
    Silence(String, Option<u64>, oneshot::Sender<Result<(), Refusal>>),
    RunAction(
        String,
        Option<String>,
        oneshot::Sender<Result<ActionRecord, Refusal>>,
    ),
    View(ViewFn),
    Reload(oneshot::Sender<Result<usize, String>>),
    AttachFleet(MonitorLink),
    /// Nothing to do but look around: fleet mode's state is there to link up to.
    FleetReady,
    Stop,
}

/// The handle on the watch thread that the API holds.
pub struct WatchHandle {
    tx: mpsc::UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

/// How the watch was started.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The monitoring config in force at start.
    pub config: Arc<WatchConfig>,
    /// The file to reload it from on SIGHUP or when it changes.
    pub path: Option<PathBuf>,
    /// Log actions instead of running them.
    pub dry_run: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for WatchHandle {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        WatchHandle {
            tx,
            thread: Mutex::new(None),
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl WatchHandle {
    /// The receiving end of the commands, once: for the thread that runs the watch.
    pub(super) fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Command>> {
        lock(&self.rx).take()
    }

    /// Records the thread that runs the watch, for [`WatchHandle::stop`].
    pub(super) fn set_thread(&self, thread: JoinHandle<()>) {
        *lock(&self.thread) = Some(thread);
    }

    /// Stops the watch thread (running actions are killed) and waits for it.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// Runs `f` on the watch thread with the watch and the time, and returns its answer;
    /// `None` if the watch is not running.
    pub(crate) async fn view<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Watch, u64) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let f: ViewFn = Box::new(move |w, now| {
            let _ = tx.send(f(w, now));
        });
        self.tx.send(Command::View(f)).ok()?;
        rx.await.ok()
    }

    /// Checks monitor `name` now; the number of jobs it takes.
    pub(crate) async fn check_now(&self, name: String) -> Option<Result<usize, Refusal>> {
        self.ask(|tx| Command::CheckNow(name, tx)).await
    }

    /// Silences monitor `name` until `until_ms` (`None` lifts it).
    pub(crate) async fn silence(
        &self,
        name: String,
        until_ms: Option<u64>,
    ) -> Option<Result<(), Refusal>> {
        self.ask(|tx| Command::Silence(name, until_ms, tx)).await
    }

    /// Runs a configured action by hand and waits for its record.
    pub(crate) async fn run_action(
        &self,
        name: String,
        monitor: Option<String>,
    ) -> Option<Result<ActionRecord, Refusal>> {
        self.ask(|tx| Command::RunAction(name, monitor, tx)).await
    }

    /// Gives the runtime its link to the fleet task (fleet mode): rounds of pool vantages go
    /// there from now on, and their records come back through it. Without it a pool's
    /// rounds end unprobed (unknown, never DOWN).
    pub fn attach_fleet(&self, link: MonitorLink) {
        let _ = self.tx.send(Command::AttachFleet(link));
    }

    /// Tells the runtime, which sleeps until something is due, that fleet mode's state is
    /// set: it links up to it at once.
    pub(crate) fn fleet_ready(&self) {
        let _ = self.tx.send(Command::FleetReady);
    }

    /// Reloads the config file; the number of monitors, or why it was rejected.
    pub(crate) async fn reload(&self) -> Option<Result<usize, String>> {
        self.ask(Command::Reload).await
    }
}
