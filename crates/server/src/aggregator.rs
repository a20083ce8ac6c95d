//! The aggregator: one thread that reads the engine's frames, decodes them, routes records by
//! job id to their sweep, and writes results and progress to the store in batched
//! transactions.
//!
//! A frame that does not decode is counted and logged, never a panic: the same frames will
//! cross the network in fleet mode.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use porthawk_core::{decode_frame, errno_name, PortState};

use crate::store::{NewResult, Progress};
use crate::sweep::{LiveSweep, SweepState};
use crate::Shared;

/// Rows buffered before a store write.
const FLUSH_ROWS: usize = 4096;
/// The longest a result waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the loop wakes without frames, to flush and to notice a stop.
const TICK: Duration = Duration::from_millis(50);

/// The aggregator's state between frames.
pub(crate) struct Aggregator {
    shared: Arc<Shared>,
    pending: Vec<NewResult>,
    touched: Vec<Arc<LiveSweep>>,
    finished: Vec<(Arc<LiveSweep>, SweepState)>,
    last_flush: Instant,
    rate_since: Instant,
    rate_probes: u64,
    probes: u64,
}

impl Aggregator {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Aggregator {
            shared,
            pending: Vec::with_capacity(FLUSH_ROWS),
            touched: Vec::new(),
            finished: Vec::new(),
            last_flush: Instant::now(),
            rate_since: Instant::now(),
            rate_probes: 0,
            probes: 0,
        }
    }

    /// Runs until `frames` is closed or the server asks it to stop; flushes before returning.
    pub(crate) fn run(mut self, frames: Receiver<Vec<u8>>) {
        loop {
            match frames.recv_timeout(TICK) {
                Ok(frame) => self.handle_frame(&frame),
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
            if self.shared.stop_aggregator.load(Ordering::SeqCst) && frames.is_empty() {
                break;
            }
        }
        self.flush();
    }

    fn update_rate(&mut self) {
        let elapsed = self.rate_since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = (self.probes - self.rate_probes) as f64 / elapsed.as_secs_f64();
            self.shared.metrics.probes_per_second.set(rate);
            self.rate_probes = self.probes;
            self.rate_since = Instant::now();
        }
    }

    /// Decodes one frame and routes its records. Malformed frames are counted and logged.
    pub(crate) fn handle_frame(&mut self, frame: &[u8]) {
        let metrics = &self.shared.metrics;
        metrics.frames.inc();
        metrics.frame_bytes.inc_by(frame.len() as u64);
        let batch = match decode_frame(frame) {
            Ok((batch, used)) if used == frame.len() => batch,
            Ok((_, used)) => {
                metrics.frame_errors.inc();
                eprintln!(
                    "porthawk: dropped a result frame with {} bytes after its end",
                    frame.len() - used
                );
                return;
            }
            Err(e) => {
                metrics.frame_errors.inc();
                eprintln!("porthawk: dropped a result frame: {e}");
                return;
            }
        };
        metrics.batches.inc();
        let live = self.shared.live_by_job(batch.job);
        let Some(live) = live else {
            if self.shared.watch.owns(batch.job) {
                // A monitor's check: counted like any probe, judged by the monitors.
                let mut per_state = [0u64; PortState::ALL.len()];
                for r in &batch.records {
                    per_state[r.state.index()] += 1;
                }
                metrics.count_probes(&per_state);
                self.probes += batch.records.len() as u64;
                self.shared.watch.deliver(batch);
                return;
            }
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
                let errno = r
                    .errno
                    .filter(|_| matches!(r.state, PortState::Unreachable | PortState::Error))
                    .map(errno_name);
                self.pending.push(NewResult {
                    sweep_id: live.id,
                    ip: r.ip,
                    port: r.port,
                    state: r.state.as_str(),
                    rtt_us: r.rtt_us,
                    tries: r.tries,
                    host: live.space.name_of(r.ip).map(Arc::from),
                    errno,
                    banner: r.banner.clone(),
                    matched: r.matched,
                    reason: r.reason.clone(),
                });
            }
        }
        metrics.count_probes(&per_state);
        for (count, n) in live.counts.iter().zip(per_state) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
        let n = batch.records.len() as u64;
        self.probes += n;
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
        match self.shared.store.write_batch(&self.pending, &progress) {
            Ok(()) => {
                metrics.stored_results.inc_by(self.pending.len() as u64);
            }
            Err(e) => {
                // The sweep goes on; its counts stay right in memory, and the next write
                // records them. The rows of this write are lost, which the log says.
                metrics.store_errors.inc();
                eprintln!(
                    "porthawk: cannot write {} results to the store: {e}",
                    self.pending.len()
                );
            }
        }
        self.pending.clear();
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
    use crate::test_support::test_server;
    use porthawk_core::{encode_frame, JobId, ProbeRecord, ResultBatch};

    #[test]
    fn garbage_frames_are_counted_never_a_panic() {
        let (server, _dir) = test_server("agg-garbage", |_| {});
        let mut agg = Aggregator::new(Arc::clone(&server.shared));
        let mut good = Vec::new();
        encode_frame(
            &ResultBatch {
                job: JobId(999_999),
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
            },
            &mut good,
        );
        let mut frames: Vec<Vec<u8>> = vec![
            vec![],
            b"PHRB".to_vec(),
            b"XXXX\x01\0\0\0\0".to_vec(),
            b"PHRB\x09\0\0\0\0".to_vec(),
            b"PHRB\x01\xff\xff\xff\xff".to_vec(),
            [&good[..], &[0u8][..]].concat(),
        ];
        // Every truncation and every single-byte corruption of a valid frame.
        for cut in 0..good.len() {
            frames.push(good[..cut].to_vec());
        }
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0xa5;
            frames.push(f);
        }
        // Pseudo-random noise behind a valid header.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let mut f = b"PHRB\x01".to_vec();
            f.extend_from_slice(&(len as u32).to_le_bytes());
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f.push(x as u8);
            }
            frames.push(f);
        }
        for f in &frames {
            agg.handle_frame(f);
        }
        agg.flush();
        let m = &server.shared.metrics;
        assert_eq!(m.frames.get(), frames.len() as u64);
        assert!(m.frame_errors.get() >= 6, "{}", m.frame_errors.get());
        assert_eq!(m.frame_errors.get() + m.batches.get(), frames.len() as u64);
        // Decoded batches all belong to no sweep.
        assert_eq!(m.unknown_job_batches.get(), m.batches.get());
        server.shutdown();
    }
}
