//! The aggregator: one thread that reads the result sink of every sweep's engine job, routes
//! records by job id to their sweep, and writes results and progress to the store in batched
//! transactions. It sees sweeps only: monitors receive their jobs' results on a sink of
//! their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use porthawk_core::{PortState, ResultBatch};

use crate::shared::Shared;
use crate::store::{NewResult, Progress};
use crate::sweep::{LiveSweep, SweepState};

/// Rows buffered before a store write.
const FLUSH_ROWS: usize = 4096;
/// The longest a result waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the loop wakes without batches, to flush and to notice a stop.
const TICK: Duration = Duration::from_millis(50);

/// The aggregator's state between batches.
pub(crate) struct Aggregator {
    shared: Arc<Shared>,
    pending: Vec<NewResult>,
    touched: Vec<Arc<LiveSweep>>,
    finished: Vec<(Arc<LiveSweep>, SweepState)>,
    last_flush: Instant,
    rate_since: Instant,
    rate_probes: u64,
}

impl Aggregator {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Aggregator {
            pending: Vec::with_capacity(FLUSH_ROWS),
            touched: Vec::new(),
            finished: Vec::new(),
            last_flush: Instant::now(),
            rate_since: Instant::now(),
            rate_probes: shared.metrics.probes_total(),
            shared,
        }
    }

    /// Runs until `results` is closed or the server asks it to stop; flushes before
    /// returning.
    pub(crate) fn run(mut self, results: Receiver<ResultBatch>) {
        loop {
            match results.recv_timeout(TICK) {
                Ok(batch) => self.handle_batch(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.finished.is_empty()
                || self.pending.len() >= FLUSH_ROWS
                || self.last_flush.elapsed() >= FLUSH_INTERVAL
            {
                self.flush();
            }
            self.update_rate();
            if self.shared.stop_aggregator.load(Ordering::SeqCst) && results.is_empty() {
                break;
            }
        }
        self.flush();
    }

    /// Sets `probes_per_second` from the probes counted by everyone (sweeps here, monitors
    /// in their runtime).
    fn update_rate(&mut self) {
        let elapsed = self.rate_since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let probes = self.shared.metrics.probes_total();
            let rate = probes.saturating_sub(self.rate_probes) as f64 / elapsed.as_secs_f64();
            self.shared.metrics.probes_per_second.set(rate);
            self.rate_probes = probes;
            self.rate_since = Instant::now();
        }
    }

    /// Routes one batch's records to their sweep. A batch of a job no sweep owns (a sweep
    /// already retired) is counted and logged.
    pub(crate) fn handle_batch(&mut self, batch: ResultBatch) {
        let metrics = &self.shared.metrics;
        metrics.batches.inc();
        let Some(live) = self.shared.live_by_job(batch.job) else {
            metrics.unknown_job_batches.inc();
            eprintln!(
                "porthawk: dropped a batch of {} results of job {}, which no sweep owns",
                batch.records.len(),
                batch.job
            );
            return;
        };
        let mut per_state = [0u64; PortState::ALL.len()];
        let store_all = live.request.store.is_all();
        for r in &batch.records {
            per_state[r.state.index()] += 1;
            if matches!(r.state, PortState::Open | PortState::Closed) {
                metrics
                    .connect_latency
                    .observe(f64::from(r.rtt_us) / 1_000_000.0);
            }
            if store_all || r.state == PortState::Open {
                self.pending
                    .push(NewResult::new(live.id, r, live.space.name_of(r.ip)));
            }
        }
        metrics.count_probes(&per_state);
        for (count, n) in live.counts.iter().zip(per_state) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
        let n = batch.records.len() as u64;
        live.done.fetch_add(n, Ordering::Relaxed);
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, &live)) {
            self.touched.push(Arc::clone(&live));
        }
        if batch.job_done {
            let state = if !batch.cancelled {
                SweepState::Done
            } else if live.user_cancelled.load(Ordering::SeqCst) {
                SweepState::Cancelled
            } else {
                SweepState::Interrupted
            };
            self.finished.push((live, state));
        }
    }

    /// Writes buffered rows and the progress of every sweep they touched in one transaction,
    /// then retires the sweeps that ended.
    pub(crate) fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.pending.is_empty() && self.touched.is_empty() && self.finished.is_empty() {
            return;
        }
        let progress: Vec<Progress> = self
            .touched
            .iter()
            .map(|s| Progress {
                sweep_id: s.id,
                done: s.done.load(Ordering::Relaxed),
                counts: s.counts(),
                finished: self
                    .finished
                    .iter()
                    .find(|(f, _)| Arc::ptr_eq(f, s))
                    .map(|(_, st)| *st),
            })
            .collect();
        let metrics = &self.shared.metrics;
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(FLUSH_ROWS));
        let n = rows.len();
        match self.shared.store.write_batch(rows, progress).wait() {
            Ok(()) => {
                metrics.stored_results.inc_by(n as u64);
            }
            Err(e) => {
                // The sweep goes on; its counts stay right in memory, and the next write
                // records them. The rows of this write are lost, which the log says.
                metrics.store_errors.inc();
                eprintln!("porthawk: cannot write {n} results to the store: {e}");
            }
        }
        for s in self.touched.drain(..) {
            s.stored.send_modify(|v| *v += 1);
        }
        for (s, state) in self.finished.drain(..) {
            self.shared.retire(&s, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::metrics::TargetLabels;
    use crate::test_support::test_server;
    use porthawk_core::{JobId, ProbeRecord};

    /// Monitor checks come back on the monitors' own sink: they are judged (the target goes
    /// UP) and counted as probes, and not one of their batches reaches the aggregator.
    #[test]
    fn monitor_results_bypass_the_aggregator() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let text = format!(
            "[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"{port}\"\n\
             interval = \"100ms\"\ntimeout = \"100ms\"\nfail_after = 1\nrecover_after = 1\n"
        );
        let watch = crate::monitor::config::parse("t.toml", &text).unwrap();
        let (server, _dir) = test_server("agg-monitor", |c| c.watch = Arc::new(watch));
        let m = &server.shared.metrics;
        let up = || {
            m.monitor
                .up
                .get_or_create(&TargetLabels {
                    monitor: "m".into(),
                    target: "127.0.0.1".into(),
                    port: port.to_string(),
                })
                .get()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while up() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(up(), 1, "the monitor never saw its target up");
        assert!(m.probes_total() >= 1);
        assert_eq!(m.batches.get(), 0, "a monitor batch reached the aggregator");
        assert_eq!(m.unknown_job_batches.get(), 0);
        server.shutdown();
        drop(listener);
    }

    #[test]
    fn batches_of_no_sweep_are_counted_and_dropped() {
        let (server, _dir) = test_server("agg-unknown", |_| {});
        let mut agg = Aggregator::new(Arc::clone(&server.shared));
        for job in [999_998, 999_999] {
            agg.handle_batch(ResultBatch {
                job: JobId(job),
                shard: 0,
                records: vec![ProbeRecord::new(
                    "127.0.0.1".parse().unwrap(),
                    1,
                    PortState::Closed,
                    1,
                    1,
                )],
                shard_done: true,
                job_done: true,
                cancelled: false,
            });
        }
        agg.flush();
        let m = &server.shared.metrics;
        assert_eq!(m.batches.get(), 2);
        assert_eq!(m.unknown_job_batches.get(), 2);
        assert_eq!(m.stored_results.get(), 0);
        server.shutdown();
    }
}
