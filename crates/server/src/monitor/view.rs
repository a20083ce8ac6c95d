//! What the monitor routes and the status page show: monitors, targets, checks and uptime as
//! views, and the filter of targets. Shared by `api` (JSON) and `page` (HTML).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::history::{ActionRecord, EventRow, NoticeRecord};
use super::notify::rfc3339;
use super::state::Health;
use super::watch::{LastCheck, MonitorCounts, TargetHost, VantageSummary};

/// A target's last check, as shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckView {
    /// When, RFC 3339.
    pub at: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Whether it passed.
    pub ok: bool,
    /// The port state.
    pub state: String,
    /// Connect round trip in microseconds.
    pub rtt_us: u32,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&LastCheck> for CheckView {
    fn from(l: &LastCheck) -> Self {
        CheckView {
            at: rfc3339(l.at_ms),
            at_ms: l.at_ms,
            ok: l.ok,
            state: l.state.as_str().to_string(),
            rtt_us: l.rtt_us,
            reason: l.reason.clone(),
        }
    }
}

/// How a monitor looks from one of its vantage points (`from`): this server's engine
/// (`local`) or a fleet pool.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VantageView {
    /// `local` or the pool's name.
    pub name: String,
    /// `down`, `pending` or `up`: the worst of its targets as seen from there; or
    /// `no-agents` when the pool has no live agent (nothing is known from there: a warning
    /// about the fleet, never a verdict on the targets).
    pub state: String,
    /// Why: the first target seen DOWN from there and its reason, or that the pool has no
    /// agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Live agents in the pool; `null` for `local`.
    pub agents: Option<u32>,
    /// Its targets per state, as seen from there.
    pub counts: MonitorCounts,
}

impl From<VantageSummary> for VantageView {
    fn from(v: VantageSummary) -> Self {
        VantageView {
            name: v.name.to_string(),
            state: v.state.to_string(),
            reason: v.reason,
            agents: v.agents,
            counts: v.counts,
        }
    }
}

/// A target as one vantage point sees it (monitors with several vantages).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetVantageView {
    /// `local` or the pool's name.
    pub name: String,
    /// `pending`, `up` or `down` as seen from there, or `no-agents`.
    pub state: String,
    /// Its last check from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<CheckView>,
    /// Its last check from there, when that was skipped for a local shortage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Uptime shares over 24 hours, 7 days and 30 days (`null` where nothing is known).
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Uptime {
    /// Over the last 24 hours.
    pub h24: Option<f64>,
    /// Over the last 7 days.
    pub d7: Option<f64>,
    /// Over the last 30 days.
    pub d30: Option<f64>,
}

/// One target of a monitor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetView {
    /// Address, or the host name of a name target (checked through its addresses).
    #[schema(value_type = String)]
    pub target: TargetHost,
    /// Port.
    pub port: u16,
    /// The name it was given by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `pending`, `up` or `down`: with several vantage points, the quorum's verdict.
    pub state: Health,
    /// Whether it flaps.
    pub flapping: bool,
    /// Seen DOWN from some vantage points, fewer than the quorum: a path or regional
    /// problem (its `state` is not `down`; no action runs).
    pub partial: bool,
    /// Since when its hard state holds (ms since the Unix epoch; 0 if never decided).
    pub since_ms: u64,
    /// The last check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<CheckView>,
    /// Uptime.
    pub uptime: Uptime,
    /// Its last check, when that was skipped (after `last`) for a shortage on this host:
    /// `check skipped: local shortage EMFILE on this host`. Not a verdict about the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// How each vantage point sees it, in `from` order (only for monitors with several).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vantages: Vec<TargetVantageView>,
    /// Its hard state, which uptime is computed from (not shown).
    #[serde(skip)]
    pub(crate) hard: Health,
}

/// A monitor in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MonitorSummary {
    /// Name.
    pub name: String,
    /// Group on the status page.
    pub group: String,
    /// `up`, `down`, `partial`, `flapping` or `pending`: its worst target. `partial`: some
    /// target is seen DOWN from fewer vantage points than the quorum.
    pub state: String,
    /// Target-ports.
    pub targets: u64,
    /// Targets per state.
    pub counts: MonitorCounts,
    /// Check interval in seconds.
    pub interval_s: f64,
    /// How it probes.
    pub probe: String,
    /// How many vantage points must see a target DOWN: `all`, `any` or a number.
    pub quorum: String,
    /// Its vantage points (`from`), each with what it sees.
    pub vantages: Vec<VantageView>,
    /// When a check last finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Silenced until (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_until: Option<String>,
    /// The average uptime of its targets.
    pub uptime: Uptime,
    /// Checks skipped since the monitor was loaded because this host was short of a
    /// resource (EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL): not verdicts.
    pub skipped_checks: u64,
    /// The last skipped check, while no check with a verdict has come since:
    /// `check skipped: local shortage EMFILE on this host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// `GET /v1/monitors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorList {
    /// The monitors, in config order.
    pub monitors: Vec<MonitorSummary>,
}

/// `GET /v1/monitors/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorDetail {
    /// The monitor.
    #[serde(flatten)]
    pub summary: MonitorSummary,
    /// Targets matching the filter, worst first, one page.
    pub target_list: Vec<TargetView>,
    /// Targets matching the filter.
    pub matching: usize,
    /// The page's offset.
    pub offset: usize,
    /// Recent state changes, actions and notifications, newest first.
    pub events: Vec<EventRow>,
    /// Recent actions with exit codes and output.
    pub actions: Vec<ActionRecord>,
    /// Recent notifications with their delivery status.
    pub notifications: Vec<NoticeRecord>,
    /// `written`, or `not written: ...` while history writes fail (the verdicts above are
    /// kept in memory; the history lists miss what could not be written).
    pub history: String,
}

/// Filters and paging of targets.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetQuery {
    /// Only targets in this state: `up`, `down`, `pending`, `flapping`, `partial`, or
    /// `problems` (anything but up).
    pub state: Option<String>,
    /// Only targets whose address, port or host name contains this text.
    pub q: Option<String>,
    /// Targets per page.
    pub limit: Option<usize>,
    /// Targets to skip.
    pub offset: Option<usize>,
    /// The status page: one monitor only.
    pub monitor: Option<String>,
}
