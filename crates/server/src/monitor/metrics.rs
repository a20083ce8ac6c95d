//! The monitor metrics: state per target, check duration and lateness, actions and
//! notifications by outcome, config reloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// A monitored target-port.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The monitor.
    pub monitor: String,
    /// The address.
    pub target: String,
    /// The port.
    pub port: String,
}

/// A monitor.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MonitorLabel {
    /// The monitor.
    pub monitor: String,
}

/// An action or notification and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The action's or notification's name.
    pub name: String,
    /// How it ended.
    pub outcome: String,
}

/// How a reload ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    /// `applied` or `rejected`.
    pub outcome: &'static str,
}

type HistogramFamily = Family<MonitorLabel, Histogram, fn() -> Histogram>;

fn seconds_buckets() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The monitor metrics; clones share the series.
#[derive(Clone)]
pub struct MonitorMetrics {
    /// 1 when a target is UP, 0 when DOWN (pending targets keep their last value).
    pub up: Family<TargetLabels, Gauge>,
    /// How long a check job took, per monitor.
    pub check_duration: HistogramFamily,
    /// How late checks started after their due time.
    pub lateness: Histogram,
    /// Checks skipped because the previous one of the same chunk had not ended.
    pub skipped: Counter,
    /// Actions by name and outcome.
    pub actions: Family<OutcomeLabels, Counter>,
    /// Notifications by name and outcome.
    pub notifications: Family<OutcomeLabels, Counter>,
    /// Config reloads by outcome.
    pub reloads: Family<ReloadLabel, Counter>,
}

impl MonitorMetrics {
    /// Creates the metrics and registers them (under the registry's prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = MonitorMetrics {
            up: Family::default(),
            check_duration: Family::new_with_constructor(seconds_buckets),
            lateness: seconds_buckets(),
            skipped: Counter::default(),
            actions: Family::default(),
            notifications: Family::default(),
            reloads: Family::default(),
        };
        registry.register(
            "monitor_up",
            "1 if a monitored target-port is UP, 0 if it is DOWN",
            m.up.clone(),
        );
        registry.register_with_unit(
            "monitor_check_duration",
            "How long one check job of a monitor took",
            Unit::Seconds,
            m.check_duration.clone(),
        );
        registry.register_with_unit(
            "monitor_check_lateness",
            "How late scheduled checks started",
            Unit::Seconds,
            m.lateness.clone(),
        );
        registry.register(
            "monitor_checks_skipped",
            "Scheduled checks skipped because the previous one had not ended",
            m.skipped.clone(),
        );
        registry.register(
            "monitor_actions",
            "Monitor actions by name and outcome",
            m.actions.clone(),
        );
        registry.register(
            "monitor_notifications",
            "Monitor notifications by name and outcome",
            m.notifications.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by outcome",
            m.reloads.clone(),
        );
        m
    }
}
