//! The aggregator: one thread that reads the result sink of every sweep's engine job, routes
//! records by job id to their sweep, and writes results and progress to the store in batched
//! transactions. It sees sweeps only: monitors receive their jobs' results on a sink of
//! their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use porthawk_core::{PortState, ResultBatch};

use crate::shared::Shared;
use crate::store::{NewResult, Progress};
use crate::sweep::{LiveSweep, SweepState};

/// Rows buffered before a store write.
const FLUSH_ROWS: usize = 4096;
/// The longest a result waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Probes of a sweep received since its last committed write: added to the sweep's live
/// counters only once the write that carries them has committed.
#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    done: u64,
    counts: [u64; PortState::ALL.len()],
}

/// A sweep with news since the last write.
struct Touched {
    sweep: Arc<LiveSweep>,
    delta: Delta,
}

/// The aggregator's state between batches.
pub(crate) struct Aggregator {
    shared: Arc<Shared>,
    pending: Vec<NewResult>,
    touched: Vec<Touched>,
    finished: Vec<(Arc<LiveSweep>, SweepState)>,
    last_flush: Instant,
}

impl Aggregator {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Aggregator {
            pending: Vec::with_capacity(FLUSH_ROWS),
            touched: Vec::new(),
            finished: Vec::new(),
            last_flush: Instant::now(),
            shared,
        }
    }

    /// Runs until `results` is closed or `stop` is (its sender dropped: the server stops);
    /// writes everything received before returning. It sleeps in the channels until a batch
    /// or the stop arrives; the flush timer runs only while something waits to be written.
    pub(crate) fn run(mut self, results: Receiver<ResultBatch>, stop: Receiver<()>) {
        loop {
            let timer = match self.has_news() {
                true => crossbeam_channel::at(self.last_flush + FLUSH_INTERVAL),
                false => crossbeam_channel::never(),
            };
            select! {
                recv(results) -> batch => match batch {
                    Ok(batch) => self.handle_batch(batch),
                    Err(_) => break,
                },
                recv(stop) -> _ => {
                    // What the engine sent before the stop is written with the rest.
                    while let Ok(batch) = results.try_recv() {
                        self.handle_batch(batch);
                    }
                    break;
                },
                recv(timer) -> _ => {},
            }
            if !self.finished.is_empty()
                || self.pending.len() >= FLUSH_ROWS
                || self.last_flush.elapsed() >= FLUSH_INTERVAL
            {
                self.flush();
            }
        }
        self.flush();
    }

    /// Whether anything received waits for a write.
    fn has_news(&self) -> bool {
        !(self.pending.is_empty() && self.touched.is_empty() && self.finished.is_empty())
    }

    /// The pending news of `live`, added to the sweeps touched since the last write.
    fn touch(&mut self, live: &Arc<LiveSweep>) -> &mut Delta {
        let i = match self
            .touched
            .iter()
            .position(|t| Arc::ptr_eq(&t.sweep, live))
        {
            Some(i) => i,
            None => {
                self.touched.push(Touched {
                    sweep: Arc::clone(live),
                    delta: Delta::default(),
                });
                self.touched.len() - 1
            }
        };
        &mut self.touched[i].delta
    }

    /// Routes one batch's records to their sweep. A batch of a job no sweep owns (a sweep
    /// already retired) is counted and logged.
    pub(crate) fn handle_batch(&mut self, batch: ResultBatch) {
        let metrics = &self.shared.metrics;
        metrics.batches.inc();
        let Some(live) = self.shared.live_by_job(batch.job) else {
            metrics.unknown_job_batches.inc();
            tracing::warn!(
                results = batch.records.len(),
                job = %batch.job,
                "dropped a batch of results of a job no sweep owns"
            );
            return;
        };
        if live.failure.get().is_some() {
            // A store write of this sweep failed and its job was cancelled: what the job
            // still reports is neither stored nor counted, and its end is `failed`.
            metrics.count_probes(&per_state(&batch));
            self.touch(&live);
            if batch.job_done {
                self.finished.push((live, SweepState::Failed));
            }
            return;
        }
        let store_all = live.request.store.is_all();
        for r in &batch.records {
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
        let per_state = per_state(&batch);
        self.shared.metrics.count_probes(&per_state);
        let delta = self.touch(&live);
        delta.done += batch.records.len() as u64;
        for (count, n) in delta.counts.iter_mut().zip(per_state) {
            *count += n;
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

    /// Writes buffered rows and the progress of every sweep they touched in one transaction
    /// (the store retries it a few times), then retires the sweeps that ended. Only a
    /// committed write adds its probes to the sweeps' counters; when it fails for good, every
    /// sweep it carried is stopped and ends `failed` with the counts of its earlier writes.
    pub(crate) fn flush(&mut self) {
        self.last_flush = Instant::now();
        if !self.has_news() {
            return;
        }
        let end_of = |s: &Arc<LiveSweep>| {
            self.finished
                .iter()
                .find(|(f, _)| Arc::ptr_eq(f, s))
                .map(|(_, st)| *st)
        };
        let progress: Vec<Progress> = self
            .touched
            .iter()
            .map(|t| {
                let finished = end_of(&t.sweep);
                committed_plus(&t.sweep, t.delta, finished)
            })
            .collect();
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(FLUSH_ROWS));
        let n = rows.len();
        let written = self.shared.store.write_batch(rows, progress).wait();
        let metrics = &self.shared.metrics;
        let failure = match written {
            Ok(()) => {
                metrics.stored_results.inc_by(n as u64);
                for t in &self.touched {
                    t.sweep.done.fetch_add(t.delta.done, Ordering::Relaxed);
                    for (count, n) in t.sweep.counts.iter().zip(t.delta.counts) {
                        count.fetch_add(n, Ordering::Relaxed);
                    }
                }
                None
            }
            Err(e) => {
                metrics.store_errors.inc();
                let reason = format!("store write failed: {e}");
                tracing::error!(
                    results = n,
                    sweeps = self.touched.len(),
                    error = %e,
                    "cannot write results to the store: the sweeps they belong to fail"
                );
                for t in &self.touched {
                    fail(&t.sweep, &reason);
                }
                Some(reason)
            }
        };
        for t in self.touched.drain(..) {
            t.sweep.stored.send_modify(|v| *v += 1);
        }
        for (s, state) in std::mem::take(&mut self.finished) {
            if failure.is_some() {
                // Its end was in the write that failed: store it alone.
                self.end_failed(&s);
            } else {
                self.shared.retire(&s, state);
            }
        }
    }

    /// Stores the end of a failed sweep: its committed counts, `failed` and why. When even
    /// that cannot be written, the sweep stays `failed` in memory (the API reports it so;
    /// the store, which still says `running`, marks it `interrupted` at the next start).
    fn end_failed(&self, sweep: &Arc<LiveSweep>) {
        let progress = committed_plus(sweep, Delta::default(), Some(SweepState::Failed));
        match self
            .shared
            .store
            .write_batch(Vec::new(), vec![progress])
            .wait()
        {
            Ok(()) => self.shared.retire(sweep, SweepState::Failed),
            Err(e) => {
                self.shared.metrics.store_errors.inc();
                tracing::error!(
                    "cannot store that sweep {} failed, it is kept as failed in memory: {e}",
                    sweep.id
                );
                self.shared.retire_unstored(sweep);
            }
        }
    }
}

/// A batch's probes per verdict, in [`PortState::ALL`] order.
fn per_state(batch: &ResultBatch) -> [u64; PortState::ALL.len()] {
    let mut per_state = [0u64; PortState::ALL.len()];
    for r in &batch.records {
        per_state[r.state.index()] += 1;
    }
    per_state
}

/// The progress to write for `sweep`: its committed counters plus `delta`, and its end.
fn committed_plus(sweep: &LiveSweep, delta: Delta, finished: Option<SweepState>) -> Progress {
    let mut counts = sweep.counts();
    let add = |c: &mut u64, s: PortState| *c += delta.counts[s.index()];
    add(&mut counts.open, PortState::Open);
    add(&mut counts.closed, PortState::Closed);
    add(&mut counts.filtered, PortState::Filtered);
    add(&mut counts.unreachable, PortState::Unreachable);
    add(&mut counts.error, PortState::Error);
    let reason = sweep.failure.get().cloned();
    Progress {
        sweep_id: sweep.id,
        done: sweep.done.load(Ordering::Relaxed) + delta.done,
        counts,
        finished: if reason.is_some() {
            finished.map(|_| SweepState::Failed)
        } else {
            finished
        },
        reason: reason.filter(|_| finished.is_some()),
    }
}

/// Marks a sweep failed (the first reason stays) and cancels its engine job.
pub(crate) fn fail(sweep: &LiveSweep, reason: &str) {
    let _ = sweep.failure.set(reason.to_string());
    if let Some(h) = sweep.handle.get() {
        h.cancel();
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
