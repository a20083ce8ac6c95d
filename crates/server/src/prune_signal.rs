//! What wakes the retention thread (`retention.rs`), held in `Shared` so that whatever ends
//! a sweep can say so.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What wakes the retention thread: a sweep ended, or the server stops.
#[derive(Default)]
pub(crate) struct PruneSignal {
    state: Mutex<Wanted>,
    changed: Condvar,
}

#[derive(Default)]
struct Wanted {
    prune: bool,
    stop: bool,
}

impl PruneSignal {
    /// A sweep ended: prune soon (many ends before the thread runs are one pruning).
    pub(crate) fn sweep_ended(&self) {
        self.lock().prune = true;
        self.changed.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_one();
    }

    /// Sleeps until a sweep ends, the stop, or `timeout`; true on the stop.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock();
        let (mut wanted, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |w| !w.prune && !w.stop)
            .unwrap_or_else(|p| p.into_inner());
        wanted.prune = false;
        wanted.stop
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wanted> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
