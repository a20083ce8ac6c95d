//! Prometheus metrics, in the `porthawk_` namespace with units in the names.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use porthawk_core::PortState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::sweep::SweepState;

/// A `state` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state's name.
    pub state: &'static str,
}

/// A `shard` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    /// The shard's index.
    pub shard: u16,
}

/// The labels of an API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method, from a closed set ([`method_label`]).
    pub method: &'static str,
    /// The route as declared (`/v1/sweeps/{id}`), or `unmatched`.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// The `method` label of a request: the methods of RFC 9110 by name, anything else `other`,
/// so that a client cannot create metric series at will.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The labels of a scheduled sweep's run.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    /// The `[[sweep]]` name (from the config: a closed set).
    pub schedule: String,
    /// `baseline`, `unchanged`, `changed` or `failed`.
    pub outcome: &'static str,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Probes finished, by verdict.
    pub probes: Family<StateLabel, Counter>,
    /// Probes per second since the sample before (at least a second before), computed when
    /// the metrics are read: nothing wakes on a timer to keep it current.
    pub probes_per_second: Gauge<f64, AtomicU64>,
    /// When `probes_per_second` was last computed, and the probes total then.
    rate_sample: Mutex<(Instant, u64)>,
    /// Probes the engine keeps in flight at most.
    pub inflight_limit: Gauge,
    /// Probes in flight now, per shard.
    pub shard_inflight: Family<ShardLabel, Gauge>,
    /// Connect latency of open and closed verdicts.
    pub connect_latency: Histogram,
    /// Result batches of sweeps taken from the engine.
    pub batches: Counter,
    /// Batches of a job no sweep owns.
    pub unknown_job_batches: Counter,
    /// Sweeps by state.
    pub sweeps: Family<StateLabel, Gauge>,
    /// Results written to the store.
    pub stored_results: Counter,
    /// Store writes that failed.
    pub store_errors: Counter,
    /// API requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// The monitors' metrics.
    pub monitor: crate::monitor::metrics::MonitorMetrics,
    /// Scheduled sweeps' runs, by schedule and outcome.
    pub schedule_runs: Family<ScheduleLabels, Counter>,
    /// Fleet mode's metrics.
    pub fleet: FleetMetrics,
}

/// A `pool` label: a pool of `[fleet] pools` (a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The pool.
    pub pool: String,
}

/// An `agent` label: an agent of `[fleet] agents` (a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    /// The agent.
    pub agent: String,
}

/// Fleet mode's metrics (issue 9).
#[derive(Clone, Default)]
pub struct FleetMetrics {
    /// Live agents (registry keys present) per pool.
    pub agents_live: Family<PoolLabel, Gauge>,
    /// Slices of running fleet sweeps by state.
    pub slices: Family<StateLabel, Gauge>,
    /// Slices published again (after max_deliver ran out, or by the janitor).
    pub redeliveries: Counter,
    /// Slices won by an attempt that was not the first delivery.
    pub redelivered_wins: Counter,
    /// Frames that arrived for a slice already done (or a sweep ended).
    pub superseded_frames: Counter,
    /// Frames that were already in the ledger.
    pub duplicate_frames: Counter,
    /// Attempts rejected (short, long, or with records outside the sweep).
    pub rejected_attempts: Counter,
    /// Result messages that were not a valid frame, or came from an unknown agent.
    pub malformed_frames: Counter,
    /// Result messages waiting for the coordinator.
    pub results_lag: Gauge,
    /// Probes per second of each agent, from its heartbeat.
    pub agent_probes_per_second: Family<AgentLabel, Gauge>,
    /// Whether the coordinator is connected to NATS (1) or not (0).
    pub connected: Gauge,
}

impl FleetMetrics {
    fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics::default();
        let r = registry.sub_registry_with_prefix("fleet");
        r.register("agents_live", "Live agents per pool", m.agents_live.clone());
        r.register(
            "slices",
            "Slices of running fleet sweeps, by state",
            m.slices.clone(),
        );
        r.register(
            "redeliveries",
            "Slices published again after their work was lost or ran out of deliveries",
            m.redeliveries.clone(),
        );
        r.register(
            "redelivered_wins",
            "Slices completed by an attempt other than the first delivery",
            m.redelivered_wins.clone(),
        );
        r.register(
            "superseded_frames",
            "Result frames for a slice already done",
            m.superseded_frames.clone(),
        );
        r.register(
            "duplicate_frames",
            "Result frames already applied (the ledger had them)",
            m.duplicate_frames.clone(),
        );
        r.register(
            "rejected_attempts",
            "Slice attempts rejected: records short, long or outside the sweep",
            m.rejected_attempts.clone(),
        );
        r.register(
            "malformed_frames",
            "Result messages that were not a valid frame or came from an unknown agent",
            m.malformed_frames.clone(),
        );
        r.register(
            "results_lag_messages",
            "Result messages waiting for the coordinator",
            m.results_lag.clone(),
        );
        r.register(
            "agent_probes_per_second",
            "Probes per second of each agent, from its heartbeat",
            m.agent_probes_per_second.clone(),
        );
        r.register(
            "connected",
            "Whether the coordinator is connected to NATS",
            m.connected.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("porthawk");
        let probes = Family::<StateLabel, Counter>::default();
        registry.register("probes", "Probes finished, by verdict", probes.clone());
        let probes_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "probes_per_second",
            "Probes finished per second, since the previous computation (at a scrape, at most \
             once a second)",
            probes_per_second.clone(),
        );
        let shard_inflight = Family::<ShardLabel, Gauge>::default();
        registry.register(
            "shard_inflight_probes",
            "Probes in flight now, per engine shard",
            shard_inflight.clone(),
        );
        let inflight_limit = Gauge::default();
        registry.register(
            "inflight_probes_limit",
            "Probes the engine keeps in flight at most, across shards",
            inflight_limit.clone(),
        );
        // 50 µs to about 26 s.
        let connect_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        registry.register_with_unit(
            "connect_latency",
            "Connect latency of probes that were answered (open or closed)",
            Unit::Seconds,
            connect_latency.clone(),
        );
        let batches = Counter::default();
        registry.register(
            "result_batches",
            "Result batches of sweeps received from the engine",
            batches.clone(),
        );
        let unknown_job_batches = Counter::default();
        registry.register(
            "unknown_job_batches",
            "Result batches of a job that no sweep owns",
            unknown_job_batches.clone(),
        );
        let sweeps = Family::<StateLabel, Gauge>::default();
        registry.register("sweeps", "Sweeps in the store, by state", sweeps.clone());
        let stored_results = Counter::default();
        registry.register(
            "stored_results",
            "Results written to the store",
            stored_results.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store writes that failed",
            store_errors.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by method, route and status",
            requests.clone(),
        );
        let schedule_runs = Family::<ScheduleLabels, Counter>::default();
        registry.register(
            "schedule_runs",
            "Runs of scheduled sweeps ([[sweep]]), by schedule and outcome (baseline, unchanged, changed, failed)",
            schedule_runs.clone(),
        );
        let monitor = crate::monitor::metrics::MonitorMetrics::register(&mut registry);
        let fleet = FleetMetrics::register(&mut registry);
        Metrics {
            monitor,
            schedule_runs,
            fleet,
            registry,
            probes,
            probes_per_second,
            rate_sample: Mutex::new((Instant::now(), 0)),
            inflight_limit,
            shard_inflight,
            connect_latency,
            batches,
            unknown_job_batches,
            sweeps,
            stored_results,
            store_errors,
            requests,
        }
    }
}

impl Metrics {
    /// Moves one sweep from state `from` (if any) to `to`.
    pub fn sweep_moved(&self, from: Option<SweepState>, to: SweepState) {
        if let Some(from) = from {
            self.sweeps
                .get_or_create(&StateLabel {
                    state: from.as_str(),
                })
                .dec();
        }
        self.sweeps
            .get_or_create(&StateLabel { state: to.as_str() })
            .inc();
    }

    /// Adds a batch's verdicts, counted per state in [`PortState::ALL`] order, to
    /// `porthawk_probes_total`.
    pub fn count_probes(&self, per_state: &[u64; PortState::ALL.len()]) {
        for (state, n) in PortState::ALL.iter().zip(per_state) {
            if *n > 0 {
                self.probes
                    .get_or_create(&StateLabel {
                        state: state.as_str(),
                    })
                    .inc_by(*n);
            }
        }
    }

    /// Probes finished so far, of every verdict (sweeps and monitors).
    pub fn probes_total(&self) -> u64 {
        PortState::ALL
            .iter()
            .map(|s| {
                self.probes
                    .get_or_create(&StateLabel { state: s.as_str() })
                    .get()
            })
            .sum()
    }

    /// Sets `probes_per_second` from the probes counted by everyone (sweeps and monitors)
    /// since the last time it was set, if that was at least a second ago; called when the
    /// metrics are read.
    pub fn update_rate(&self) {
        let mut sample = self.rate_sample.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = sample.0.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let probes = self.probes_total();
        let rate = probes.saturating_sub(sample.1) as f64 / elapsed.as_secs_f64();
        self.probes_per_second.set(rate);
        *sample = (Instant::now(), probes);
    }

    /// Publishes each shard's current in-flight count (read from the engine at scrape time).
    pub fn set_shard_inflight(&self, per_shard: &[usize]) {
        for (shard, n) in per_shard.iter().enumerate() {
            self.shard_inflight
                .get_or_create(&ShardLabel {
                    shard: shard as u16,
                })
                .set(*n as i64);
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace_and_units() {
        let m = Metrics::default();
        m.probes.get_or_create(&StateLabel { state: "open" }).inc();
        m.connect_latency.observe(0.001);
        m.sweep_moved(None, SweepState::Running);
        m.set_shard_inflight(&[3, 7]);
        let text = m.encode();
        for name in [
            "porthawk_probes_total{state=\"open\"} 1",
            "porthawk_connect_latency_seconds_bucket",
            "porthawk_result_batches_total",
            "porthawk_sweeps{state=\"running\"} 1",
            "porthawk_probes_per_second",
            "porthawk_shard_inflight_probes{shard=\"1\"} 7",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    /// The rate is probes since the previous sample over the time since it, taken when the
    /// metrics are read (no thread keeps it current); samples closer than a second apart
    /// keep the previous value.
    #[test]
    fn the_rate_is_computed_when_read() {
        let m = Metrics::default();
        *m.rate_sample.lock().unwrap() = (Instant::now() - Duration::from_secs(2), 0);
        m.count_probes(&[10, 0, 0, 0, 0]);
        m.update_rate();
        let rate = m.probes_per_second.get();
        // 10 probes over a little more than 2 s.
        assert!(rate > 4.0 && rate <= 5.0, "{rate}");
        m.count_probes(&[10, 0, 0, 0, 0]);
        m.update_rate();
        assert_eq!(m.probes_per_second.get(), rate, "a second sample too soon");
    }
}
