//! Sweep retention: a thread that has the store's writer delete the ended sweeps `[api]
//! keep_sweeps` and `keep_sweeps_for` no longer keep, with their results: at start, when a
//! sweep ends (the count limit may now drop one) and every [`PRUNE_EVERY`] (for the age
//! limit, days by default). In between it sleeps: an idle server does not wake for it.
//! Running sweeps are never deleted; no SQL runs on this thread or on an async one.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::StateLabel;
use crate::shared::Shared;
use crate::store::now_ms;

/// How often the store is pruned when no sweep ends.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Sweeps deleted per write, so that the aggregator's batches run in between.
const PRUNE_BATCH: usize = 50;

/// Batches per pruning at most; what is left waits for the next one.
const MAX_BATCHES: usize = 1000;

/// The pruning thread; dropping it stops the thread and waits for it.
pub(crate) struct Pruner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    /// Starts the thread.
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Pruner> {
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("porthawk-retention".into())
            .spawn(move || loop {
                prune(&s);
                if s.prune.wait(PRUNE_EVERY) {
                    return;
                }
            })?;
        Ok(Pruner {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.shared.prune.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes what the retention no longer keeps, batch by batch; how many sweeps it deleted.
pub(crate) fn prune(shared: &Shared) -> usize {
    let keep = shared.config.sweep_retention;
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let pruned = match shared
            .store
            .prune_sweeps(keep, now_ms(), PRUNE_BATCH)
            .wait()
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune old sweeps");
                break;
            }
        };
        for state in &pruned {
            shared
                .metrics
                .sweeps
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .dec();
        }
        total += pruned.len();
        if pruned.len() < PRUNE_BATCH {
            break;
        }
    }
    if total > 0 {
        tracing::info!(
            sweeps = total,
            keep_sweeps = keep.count,
            keep_sweeps_for_s = keep.max_age.as_secs(),
            "pruned old sweeps"
        );
    }
    total
}
