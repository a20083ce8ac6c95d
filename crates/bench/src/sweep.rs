//! One measured point: an engine sweeping a farm for a bounded time.
//!
//! The engine runs jobs over finite target spaces, so a point keeps a few jobs outstanding
//! (each over the same space with a new seed) until the duration or the probe budget is
//! used up, then cancels what is left and waits for the in-flight probes to be reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use hdrhistogram::Histogram;
use porthawk_core::{JobId, PortState, ProbeSpec, TargetSpace};
use porthawk_engine::{result_channel, Engine, EngineConfig, Job, JobHandle};

use crate::farm::Farm;
use crate::report::{Accuracy, Latency};
use crate::{sys, BenchError};

/// What one point measures.
pub(crate) struct PointSpec<'a> {
    pub farm: &'a Farm,
    pub ports: Vec<u16>,
    pub engine: EngineConfig,
    pub probe: ProbeSpec,
    pub duration: Duration,
    pub max_probes: u64,
}

/// What one point measured.
pub(crate) struct Measurement {
    pub backend: String,
    pub shards: usize,
    pub inflight: usize,
    pub probes: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
    pub latency: Latency,
    pub peak_inflight: usize,
    pub peak_rss_kib: u64,
    pub states: [u64; 5],
    pub accuracy: Accuracy,
    pub errors: Vec<String>,
    /// Each shard's CPU time over the wall time of the measured part.
    pub shard_busy: Vec<f64>,
    /// Each shard's in-flight window when the measured part ended.
    pub windows: Vec<usize>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// The first job runs alone, unmeasured.
    Calibrating { since: Instant },
    /// Jobs run back to back until the deadline or the probe budget.
    Measuring,
    /// Jobs were cancelled; in-flight probes are being reported.
    Stopping { since: Instant },
}

struct Running {
    handle: JobHandle,
    space: Arc<TargetSpace>,
    records: u64,
    open: u64,
}

/// Probes in the first, calibrating job (at most; fewer when in-flight is lower).
const FIRST_JOB: u64 = 4096;

/// The fewest probes in a later job.
const MIN_JOB: u64 = 1024;

/// The most jobs outstanding at once. Later jobs hold at least a share of twice the
/// in-flight limit, so that this many of them can keep every slot busy.
const MAX_OUTSTANDING: u64 = 16;

/// How long cancelled jobs may take to report their in-flight probes before the point is
/// declared stalled, beyond the probes' own timeouts.
const STALL_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn measure(spec: &PointSpec<'_>) -> Result<Measurement, BenchError> {
    let farm = spec.farm;
    let ports = spec.ports.len().max(1) as u64;
    let open_per_host = spec
        .ports
        .iter()
        .filter(|p| farm.open_ports().contains(p))
        .count() as u64;
    let all_hosts = farm.hosts().len() as u64;
    let inflight = spec.engine.inflight as u64;
    // Jobs are sized by how many of the farm's hosts they cover. The first one is small, so
    // that it ends early and calibrates; later ones aim at an eighth of the duration at the
    // measured rate, so that several jobs end within the duration (their results are checked
    // in full) and the cancelled tail stays short. Several jobs outstanding keep the shards
    // busy when one job is smaller than the in-flight limit.
    let first_job_hosts = inflight.min(FIRST_JOB).div_ceil(ports).clamp(1, all_hosts);

    sys::reset_peak_rss();
    let engine = Engine::start(&spec.engine)?;
    // One sink for every job of the run: batches are told apart by their job id.
    let (sink, results) = result_channel(64);
    let farm_cpu = |farm: &Farm| -> Duration {
        farm.thread_ids()
            .iter()
            .map(|&t| sys::thread_cpu_time(t))
            .sum()
    };
    let attempt_time = spec.probe.connect_timeout * u32::from(spec.probe.tries.max(1));
    let calibration_limit = spec.duration + attempt_time + STALL_GRACE;

    let mut jobs: HashMap<JobId, Running> = HashMap::new();
    let new_hist = || {
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| BenchError::Internal(format!("histogram: {e}")))
    };
    let mut hist = new_hist()?;
    let mut submitted = 0u64;
    let mut seed = 1u64;
    let mut m = Measurement {
        // With the fd path on io_uring ("io_uring (direct fds)"): it changes the cost per probe.
        backend: match engine.backend() {
            porthawk_engine::Backend::Uring => {
                format!("{} ({} fds)", engine.backend(), engine.fd_path())
            }
            porthawk_engine::Backend::Epoll => engine.backend().to_string(),
        },
        shards: engine.shards(),
        inflight: engine.inflight(),
        probes: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        latency: Latency::default(),
        peak_inflight: 0,
        peak_rss_kib: 0,
        states: [0; 5],
        accuracy: Accuracy::default(),
        errors: Vec::new(),
        shard_busy: Vec::new(),
        windows: Vec::new(),
    };
    // The first job runs alone and is not measured: it warms up and calibrates the size of
    // the later jobs, and guarantees that at least one job is checked in full.
    let mut phase = Phase::Calibrating {
        since: Instant::now(),
    };
    let mut farm_cpu0 = Duration::ZERO;
    let mut cpu0 = Duration::ZERO;
    let mut shard_cpu0 = engine.cpu_per_shard();
    let mut started = Instant::now();
    let mut deadline = started;
    let mut job_hosts = first_job_hosts;

    loop {
        let outstanding = match phase {
            Phase::Calibrating { .. } => 1,
            Phase::Measuring => (inflight * 2)
                .div_ceil(job_hosts * ports)
                .clamp(2, MAX_OUTSTANDING) as usize,
            Phase::Stopping { .. } => 0,
        };
        while jobs.len() < outstanding && submitted < spec.max_probes {
            seed += 1;
            let space = Arc::new(farm.space(job_hosts as usize, &spec.ports, seed)?);
            let handle = engine.submit(Job {
                id: engine.next_job_id(),
                positions: 0..space.len(),
                space: Arc::clone(&space),
                spec: spec.probe.clone(),
                rate: None,
                sink: sink.clone(),
            });
            submitted += space.len();
            jobs.insert(
                handle.id(),
                Running {
                    handle,
                    space,
                    records: 0,
                    open: 0,
                },
            );
        }
        if jobs.is_empty() {
            break;
        }
        match results.recv_timeout(Duration::from_millis(20)) {
            Ok(batch) => {
                let Some(job) = jobs.get_mut(&batch.job) else {
                    continue;
                };
                let measured = !matches!(phase, Phase::Calibrating { .. });
                for r in &batch.records {
                    if measured {
                        m.states[r.state.index()] += 1;
                    }
                    let truth = farm.truth(SocketAddr::new(r.ip, r.port));
                    if truth != Some(r.state) {
                        m.accuracy.wrong += 1;
                    }
                    if r.state == PortState::Open {
                        job.open += 1;
                    }
                }
                let n = batch.records.len() as u64;
                job.records += n;
                m.accuracy.records_checked += n;
                if measured {
                    m.probes += n;
                }
                if batch.job_done {
                    if let Some(job) = jobs.remove(&batch.job) {
                        let stats = job.handle.stats();
                        if measured {
                            let _ = hist.add(&stats.rtt_us);
                            m.peak_inflight = m.peak_inflight.max(stats.peak_inflight);
                        }
                        m.errors.extend(stats.errors);
                        // A job cancelled at the deadline after its last target was
                        // probed reported everything: it counts as complete.
                        if !batch.cancelled || job.records >= job.space.len() {
                            let hosts = job.space.len() / ports;
                            m.accuracy.complete_jobs += 1;
                            m.accuracy.missing += job.space.len().saturating_sub(job.records);
                            m.accuracy.open_expected += open_per_host * hosts;
                            m.accuracy.open_found += job.open;
                        }
                        if let Phase::Calibrating { since } = phase {
                            let rate = job.records as f64 / since.elapsed().as_secs_f64().max(1e-3);
                            let want = rate * spec.duration.as_secs_f64() / 8.0;
                            job_hosts = ((want / ports as f64) as u64)
                                .max(MIN_JOB.max(inflight * 2 / MAX_OUTSTANDING).div_ceil(ports))
                                .clamp(1, all_hosts);
                            phase = Phase::Measuring;
                            hist = new_hist()?;
                            farm_cpu0 = farm_cpu(farm);
                            cpu0 = sys::process_cpu_time();
                            shard_cpu0 = engine.cpu_per_shard();
                            started = Instant::now();
                            deadline = started + spec.duration;
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(BenchError::EngineStopped),
        }
        let now = Instant::now();
        match phase {
            Phase::Calibrating { since } if now.duration_since(since) > calibration_limit => {
                return Err(BenchError::Stalled(format!(
                    "the calibration job did not end within {calibration_limit:?}"
                )));
            }
            Phase::Measuring if now >= deadline || m.probes >= spec.max_probes => {
                phase = Phase::Stopping { since: now };
                m.windows = engine.window_per_shard();
                for job in jobs.values() {
                    job.handle.cancel();
                }
            }
            Phase::Stopping { since } if now.duration_since(since) > attempt_time + STALL_GRACE => {
                return Err(BenchError::Stalled(format!(
                    "{} jobs still running {:?} after the deadline",
                    jobs.len(),
                    now.duration_since(since)
                )));
            }
            _ => {}
        }
    }
    m.elapsed = started.elapsed();
    // Every job has ended; each shard published its CPU time at its last loop turn.
    m.shard_busy = engine
        .cpu_per_shard()
        .iter()
        .zip(&shard_cpu0)
        .map(|(now, then)| {
            now.saturating_sub(*then).as_secs_f64() / m.elapsed.as_secs_f64().max(1e-9)
        })
        .collect();
    let cpu = sys::process_cpu_time().saturating_sub(cpu0);
    m.cpu = cpu.saturating_sub(farm_cpu(farm).saturating_sub(farm_cpu0));
    m.peak_rss_kib = sys::peak_rss_kib();
    m.latency = Latency {
        p50_us: hist.value_at_quantile(0.5),
        p90_us: hist.value_at_quantile(0.9),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
    };
    drop(engine);
    Ok(m)
}
