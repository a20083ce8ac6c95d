//! porthawk's embedded store: SQLite in the data directory, in WAL mode, with migrations at
//! start.
//!
//! - Writes go through **one writer thread** that owns the only writable connection: the
//!   aggregator's batches, new sweeps, monitor history, pruning. Each write method queues
//!   the work and returns a [`Reply`]: blocking callers [`Reply::wait`], async callers
//!   `.await` it, so no SQL ever runs on an async thread.
//! - Reads run on the caller's thread over read-only connections from a small pool, which
//!   WAL lets run beside the writer. Callers in async code run them on a blocking pool
//!   (`spawn_blocking`).
//! - `db`: [`Store`] itself: the writer thread, the reader pool, [`Reply`], and
//!   [`StoreHealth`]: a write that failed (transactions that may pass are tried again first)
//!   or a database file deleted under the store, which refuses writes then.
//! - `schema`: the migrations (sweeps and results, then the monitor tables).
//! - `sweeps`: sweeps, their results and progress.
//! - `schedules`: scheduled sweeps' runs and the changes they found.
//! - `browse`: a sweep's results filtered (state, port, service, text) and paged, for the
//!   sweep page.
//! - `fleet`: fleet sweeps: slices, the per-frame ledger, staging, and the "first complete
//!   attempt wins" rule that counts each slice once.
//! - `history`: monitor history: target states, checks, state changes, actions,
//!   notifications, silences, and the samples the status page draws from.
//!
//! Architecture invariant: this is the only crate that speaks SQL or depends on rusqlite.

mod browse;
mod db;
mod fleet;
mod history;
mod schedules;
mod schema;
mod sweeps;

pub use browse::{ResultFilter, MAX_RESULTS_PAGE};
pub use db::{now_ms, Reply, Store, StoreError, StoreHealth};
pub use fleet::{
    Attempt, Completed, FleetFrame, FleetSweep, IngestReport, NewFleetSweep, OpenSlice, Rejected,
    Republish, SliceProgress,
};
pub use history::{
    uptime, ActionRecord, Beat, Change, EventRow, NoticeRecord, RttBucket, MAX_BUCKETS,
};
pub use schedules::{ChangeRow, RunEnd, RunNotice, RunOutcome, ScheduleRun};
pub use sweeps::{
    Counts, NewResult, Progress, ResultRow, SweepRetention, SweepRow, SweepState, SweepSummary,
};

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(tempfile::TempDir);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            TempDir(
                tempfile::Builder::new()
                    .prefix(&format!("porthawk-store-test-{name}-"))
                    .tempdir()
                    .unwrap(),
            )
        }

        pub fn path(&self) -> &Path {
            self.0.path()
        }
    }
}
