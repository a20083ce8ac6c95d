//! [`Watch`]: every monitor's schedule, targets, incidents and policies, as plain code.
//!
//! Like a sans-IO protocol machine, it never reads the clock, touches a socket or spawns
//! anything: the runtime passes `now_ms` (milliseconds since the Unix epoch) into every call
//! and carries out what comes back:
//!
//! - [`Watch::poll_due`] when [`Watch::next_due_ms`] has come: the [`Check`]s to run as
//!   engine jobs (one per chunk of a monitor whose turn it is);
//! - [`Watch::on_records`] and [`Watch::on_job_done`] as results arrive;
//! - [`Watch::tick`] now and then (every ~100 ms): grouped notifications leave, reminders
//!   fall due, silences expire;
//! - the `Effect`s these return: actions to run (already judged against cooldowns,
//!   `max_per_hour`, silences, `allow_reboot` and `--dry-run`), notices to deliver, and
//!   history to save.
//!
//! **Vantage points.** A monitor probes from each vantage of its `from` (`local`, this
//! server's engine, and fleet pools): each chunk is one [`Check`] per vantage, and each
//! target-port keeps one [`Tracker`] per vantage ([`Target::vantages`]). With one vantage
//! (the default `["local"]`) the target's tracker *is* that vantage's, exactly as before
//! vantages existed. With several, the target's tracker follows the quorum's verdict
//! ([`crate::state::agree`]): DOWN when `quorum` vantages see it DOWN (actions and DOWN
//! notices come only from this), `partial` when some but fewer do (shown, notified through
//! `on_partial`, never acted on). A pool without live agents ([`Watch::set_agents`]) gets no
//! checks and counts neither way: a warning about the fleet, never a verdict on a target.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use porthawk_core::{
    errno_name, is_local_errno, AddressMode, HostSetBuilder, JobId, PortSet, PortState,
    ProbeRecord, ProbeSpec, TargetSpace,
};

use crate::config::{ActionSpec, MonitorSpec, StateMap, WatchConfig, LOCAL_VANTAGE};
use crate::state::{agree, Change, Health, Sight, Tracker};

/// One chunk's round of probes, for the runtime to submit as an engine job with this id.
///
/// A chunk holds addresses (its `space`, submitted as it is) or host names: the runtime
/// resolves those (it blocks) and passes the answers to [`Watch::on_resolved`], which says
/// what to submit (names that did not resolve are judged there and then).
#[derive(Debug, Clone)]
pub struct Check {
    /// The job id its results will carry.
    pub id: JobId,
    /// The target-ports of the chunk, for a chunk of addresses.
    pub space: Option<Arc<TargetSpace>>,
    /// The host names of the chunk, to resolve before it runs.
    pub names: Vec<Arc<str>>,
    /// How to probe them.
    pub spec: ProbeSpec,
    /// The monitor it is a round of.
    pub monitor: String,
    /// Where to probe from: [`LOCAL_VANTAGE`] (this server's engine) or a fleet pool.
    pub vantage: Arc<str>,
    /// When its results stop being useful: the next round of the chunk is due then (for a
    /// pool, the work item's deadline).
    pub deadline_ms: u64,
    /// For a pool: the chunk and probe in the fleet's wire form, to send inline in the
    /// round's work item. `None` for `local`.
    pub wire: Option<porthawk_core::SweepSpec>,
}

/// Target-ports per job: a monitor larger than this is split into chunks whose start times
/// are spread over its interval, so that 10,000 monitored ports are not probed in the same
/// millisecond.
pub const CHUNK_PROBES: u64 = 256;

const HOUR_MS: u64 = 3_600_000;

/// What a monitor target is: an address (of the config's addresses and ranges), or a host
/// name, resolved at every check and judged over its addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetHost {
    /// An address.
    Addr(IpAddr),
    /// A host name.
    Name(Arc<str>),
}

impl TargetHost {
    /// `10.0.0.7:25`, `[::1]:25`, `mx.example:25`.
    pub fn with_port(&self, port: u16) -> String {
        match self {
            TargetHost::Addr(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            TargetHost::Addr(ip) => format!("{ip}:{port}"),
            TargetHost::Name(n) => format!("{n}:{port}"),
        }
    }

    /// The address, for an address target.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            TargetHost::Addr(ip) => Some(*ip),
            TargetHost::Name(_) => None,
        }
    }
}

impl std::fmt::Display for TargetHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetHost::Addr(ip) => ip.fmt(f),
            TargetHost::Name(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for TargetHost {
    type Err = std::convert::Infallible;

    /// An address where the text is one, else a name (as the store keeps them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<IpAddr>() {
            Ok(ip) => TargetHost::Addr(ip),
            Err(_) => TargetHost::Name(Arc::from(s)),
        })
    }
}

impl From<IpAddr> for TargetHost {
    fn from(ip: IpAddr) -> Self {
        TargetHost::Addr(ip)
    }
}

impl serde::Serialize for TargetHost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A target (address or name) and a port.
pub type TargetPort = (TargetHost, u16);

/// The outcome of the last check of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    /// When it was checked.
    pub at_ms: u64,
    /// Whether it passed.
    pub ok: bool,
    /// The port state.
    pub state: PortState,
    /// Connect round trip.
    pub rtt_us: u32,
    /// Why it failed.
    pub reason: Option<String>,
}

/// One monitored target-port.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Its state machine: with one vantage, that vantage's; with several, the quorum's
    /// verdict (its runs stay 0; the vantages count theirs).
    pub tracker: Tracker,
    /// The name it was given by, if any.
    pub host: Option<Arc<str>>,
    /// The last check with a verdict (from any vantage; with several, its reason names it).
    pub last: Option<LastCheck>,
    /// The last check, when it was skipped for a local shortage after `last`.
    pub skipped: Option<SkippedCheck>,
    /// Some vantages, but fewer than the quorum, see it DOWN.
    pub partial: bool,
    /// How each vantage of the monitor's `from` sees it, in that order.
    pub vantages: Vec<VantageTarget>,
}

/// A target-port as one vantage point sees it.
#[derive(Debug, Clone, Default)]
pub struct VantageTarget {
    /// The vantage's state machine of the target.
    pub tracker: Tracker,
    /// Its last check with a verdict.
    pub last: Option<LastCheck>,
    /// Its last check, when that was skipped for a local shortage (of the agent or this
    /// host) after `last`.
    pub skipped: Option<SkippedCheck>,
    /// The outcomes of its last `fail_after` checks, oldest first.
    recent: std::collections::VecDeque<bool>,
}

impl VantageTarget {
    /// Failed checks among the last ones kept (at most `fail_after`), and how many are kept.
    pub fn recent_failures(&self) -> (usize, usize) {
        (
            self.recent.iter().filter(|ok| !**ok).count(),
            self.recent.len(),
        )
    }

    fn remember(&mut self, ok: bool, keep: u32) {
        self.recent.push_back(ok);
        while self.recent.len() > keep.max(1) as usize {
            self.recent.pop_front();
        }
    }
}

/// A check whose outcome is unknown: the probe failed for a shortage on this host (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL), which says nothing about the target. It neither
/// counts toward `fail_after` nor ends a run of successes; no state change, action or
/// notification comes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCheck {
    /// When it was skipped.
    pub at_ms: u64,
    /// The target-port.
    pub target: TargetPort,
    /// The errno name (`EMFILE`).
    pub errno: &'static str,
    /// The pool whose agent was short, or `None` for this host.
    pub pool: Option<Arc<str>>,
}

impl SkippedCheck {
    /// `check skipped: local shortage EMFILE on this host` (or `on an agent of pool eu`).
    pub fn message(&self) -> String {
        match &self.pool {
            None => format!("check skipped: local shortage {} on this host", self.errno),
            Some(p) => format!(
                "check skipped: local shortage {} on an agent of pool {p}",
                self.errno
            ),
        }
    }
}

/// A monitor's checks skipped for local shortages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSkips {
    /// Checks skipped since the monitor was loaded.
    pub total: u64,
    /// Checks skipped since its last check with a verdict.
    pub run: u64,
    /// The last one.
    pub last: Option<SkippedCheck>,
    /// Whether this run has been logged.
    warned: bool,
}

/// Skipped checks in a row (without a check with a verdict between them) after which a
/// monitor asks for one warning in the log ([`Effect::LocalShortage`]).
pub const WARN_AFTER_SKIPS: u64 = 3;

struct Chunk {
    space: Option<Arc<TargetSpace>>,
    names: Vec<Arc<str>>,
    due_ms: u64,
    /// The job running per vantage (index into the monitor's `from`).
    running: Vec<Option<JobId>>,
    /// A check was asked for (`check_now`) while a job of the chunk was running: it is due
    /// as soon as that job ends, not skipped.
    again: bool,
}

/// A job of a chunk, as the watch remembers it until it is done.
#[derive(Debug, Clone)]
struct JobInfo {
    monitor: String,
    /// The vantage by name: a reload may reorder `from`.
    vantage: Arc<str>,
    started_ms: u64,
}

/// The host names of a running job: which names each probed address stands for, and what
/// each name's addresses came to so far (`None`: skipped for a local shortage). Names are
/// judged when the job ends, once every address has answered.
#[derive(Debug, Default)]
struct NameRound {
    by_ip: HashMap<IpAddr, Vec<Arc<str>>>,
    seen: BTreeMap<(Arc<str>, u16), Vec<AddressCheck>>,
}

/// One address of a host name and its check (`None`: skipped for a local shortage).
type AddressCheck = (IpAddr, Option<LastCheck>);

/// What the resolver said of each host name of a check: its addresses, or why it has none.
pub type Answers = Vec<(Arc<str>, Result<Vec<IpAddr>, String>)>;

/// An open incident: some target of the monitor is DOWN.
#[derive(Debug, Clone)]
struct Incident {
    /// The check that opened it has not ended yet: it does not count towards escalation.
    fresh: bool,
    next_action: usize,
    jobs_since_action: u64,
    last_notice_ms: u64,
}

#[derive(Debug, Clone)]
struct Note {
    kind: NoticeKind,
    target: TargetPort,
    host: Option<Arc<str>>,
    reason: Option<String>,
}

/// A monitor and its live state.
pub struct Monitor {
    /// Its configuration.
    pub spec: Arc<MonitorSpec>,
    chunks: Vec<Chunk>,
    /// Its target-ports, in address order.
    pub targets: BTreeMap<TargetPort, Target>,
    incident: Option<Incident>,
    outbox: Vec<Note>,
    outbox_since: Option<u64>,
    /// Notifications and automatic actions are held back until then.
    pub silenced_until: Option<u64>,
    /// When a check of it last finished.
    pub last_check_ms: Option<u64>,
    /// Checks skipped for local shortages.
    pub local_skips: LocalSkips,
    /// Live agents per vantage of `from`: `None` for `local` (always there), `Some(0)` for a
    /// pool without agents.
    pub agents: Vec<Option<u32>>,
}

/// How a monitor looks from one of its vantage points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VantageSummary {
    /// `local` or the pool.
    pub name: Arc<str>,
    /// `no-agents` (the pool has no live agent: nothing is known from there), else the
    /// worst of its targets as seen from there: `down`, `pending` or `up`.
    pub state: &'static str,
    /// Why: the first target it sees DOWN and its reason, or that the pool has no agents.
    pub reason: Option<String>,
    /// Live agents in the pool (`None` for `local`).
    pub agents: Option<u32>,
    /// Its target-ports per state.
    pub counts: MonitorCounts,
}

impl Monitor {
    /// Targets per shown state: pending, up, down, and how many of them flap or are seen
    /// DOWN from fewer vantages than the quorum.
    pub fn counts(&self) -> MonitorCounts {
        let mut c = MonitorCounts::default();
        for t in self.targets.values() {
            match t.tracker.health() {
                Health::Pending => c.pending += 1,
                Health::Up => c.up += 1,
                Health::Down => c.down += 1,
            }
            if t.tracker.flapping {
                c.flapping += 1;
            }
            if t.partial {
                c.partial += 1;
            }
        }
        c
    }

    /// Whether vantage `v` (an index into `from`) has no live agent.
    pub fn blind(&self, v: usize) -> bool {
        self.agents.get(v).copied().flatten() == Some(0)
    }

    /// How each vantage of `from` sees the monitor, in order.
    pub fn vantage_summaries(&self) -> Vec<VantageSummary> {
        self.spec
            .from
            .iter()
            .enumerate()
            .map(|(v, name)| {
                let agents = self.agents.get(v).copied().flatten();
                let mut counts = MonitorCounts::default();
                let mut first_down = None;
                for (k, t) in &self.targets {
                    let Some(vt) = t.vantages.get(v) else {
                        continue;
                    };
                    match vt.tracker.health() {
                        Health::Pending => counts.pending += 1,
                        Health::Up => counts.up += 1,
                        Health::Down => {
                            counts.down += 1;
                            if first_down.is_none() {
                                let why = vt.last.as_ref().and_then(|l| l.reason.clone());
                                first_down = Some(match why {
                                    Some(r) => format!("{}: {r}", target_text(k)),
                                    None => target_text(k),
                                });
                            }
                        }
                    }
                    if vt.tracker.flapping {
                        counts.flapping += 1;
                    }
                }
                let (state, reason) = if self.blind(v) {
                    (
                        "no-agents",
                        Some(format!(
                            "no live agent in pool {name}: nothing is known from there \
                             (a fleet problem, not a verdict on the targets)"
                        )),
                    )
                } else if counts.down > 0 {
                    ("down", first_down)
                } else if counts.pending > 0 {
                    ("pending", None)
                } else {
                    ("up", None)
                };
                VantageSummary {
                    name: Arc::clone(name),
                    state,
                    reason,
                    agents,
                    counts,
                }
            })
            .collect()
    }

    /// How a target's vantages see it, for incidents and notices: `down from eu (3/3), up
    /// from us` (the failed checks among the last `fail_after`), `no agents in ap`.
    pub fn describe(&self, t: &Target) -> String {
        describe(&self.spec.from, &self.agents, t)
    }

    /// How each vantage of `from` sees target `t`, for [`agree`].
    fn sights(&self, t: &Target) -> Vec<Sight> {
        sights(&self.agents, t)
    }

    /// The reason a target shows: its last failing check's, or with several vantages what
    /// each of them sees.
    fn reason_of(&self, t: &Target) -> Option<String> {
        if self.spec.multi_vantage() {
            Some(self.describe(t))
        } else {
            t.last.as_ref().and_then(|l| l.reason.clone())
        }
    }

    /// The worst state of its targets: down, partial, flapping, pending, or up.
    pub fn overall(&self) -> &'static str {
        let c = self.counts();
        if c.down > 0 {
            "down"
        } else if c.partial > 0 {
            "partial"
        } else if c.flapping > 0 {
            "flapping"
        } else if c.pending > 0 {
            "pending"
        } else {
            "up"
        }
    }

    /// Whether it is silenced at `now_ms`.
    pub fn silenced(&self, now_ms: u64) -> bool {
        self.silenced_until.is_some_and(|u| u > now_ms)
    }

    fn hard_down(&self) -> Vec<(TargetPort, Option<Arc<str>>, Option<String>)> {
        self.targets
            .iter()
            .filter(|(_, t)| t.tracker.hard == Health::Down && !t.tracker.flapping)
            .map(|(k, t)| (k.clone(), t.host.clone(), self.reason_of(t)))
            .collect()
    }
}

/// How each vantage sees target `t` (`agents` as [`Monitor::agents`]), for [`agree`].
fn sights(agents: &[Option<u32>], t: &Target) -> Vec<Sight> {
    t.vantages
        .iter()
        .enumerate()
        .map(|(v, vt)| {
            if agents.get(v).copied().flatten() == Some(0) {
                Sight::NoAgents
            } else {
                Sight::Seen(vt.tracker.hard)
            }
        })
        .collect()
}

/// [`Monitor::describe`], over the parts of a monitor it needs.
fn describe(from: &[Arc<str>], agents: &[Option<u32>], t: &Target) -> String {
    let mut parts = Vec::new();
    for (v, (name, vt)) in from.iter().zip(&t.vantages).enumerate() {
        if agents.get(v).copied().flatten() == Some(0) {
            parts.push(format!("no agents in {name}"));
            continue;
        }
        parts.push(match vt.tracker.hard {
            Health::Down => {
                let (failed, of) = vt.recent_failures();
                format!("down from {name} ({failed}/{of})")
            }
            Health::Up => format!("up from {name}"),
            Health::Pending => format!("pending from {name}"),
        });
    }
    parts.join(", ")
}

/// `ip:port` (brackets for IPv6) or `name:port`.
fn target_text((host, port): &TargetPort) -> String {
    host.with_port(*port)
}

/// Targets of a monitor per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorCounts {
    /// Up.
    pub up: u64,
    /// Down.
    pub down: u64,
    /// Pending.
    pub pending: u64,
    /// Flapping (counted in their state too).
    pub flapping: u64,
    /// Seen DOWN from some vantage points, fewer than the quorum (counted in their state
    /// too, which is not DOWN).
    pub partial: u64,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoticeKind {
    /// Targets went DOWN.
    Down,
    /// Targets recovered.
    Up,
    /// Targets started flapping.
    Flapping,
    /// Targets are still DOWN.
    Reminder,
    /// Targets are seen DOWN from some vantage points, fewer than the quorum.
    Partial,
    /// Targets seen DOWN from some vantage points are seen UP from all again.
    PartialEnd,
}

impl NoticeKind {
    /// `down`, `up`, `flapping`, `reminder`, `partial` or `partial_end`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Down => "down",
            NoticeKind::Up => "up",
            NoticeKind::Flapping => "flapping",
            NoticeKind::Reminder => "reminder",
            NoticeKind::Partial => "partial",
            NoticeKind::PartialEnd => "partial_end",
        }
    }
}

/// One target in a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeItem {
    /// Address or host name.
    pub target: TargetHost,
    /// Port.
    pub port: u16,
    /// The name it was given by.
    pub host: Option<String>,
    /// Why it failed, for DOWN targets; with several vantage points, what each of them sees
    /// (`down from eu (3/3), up from us`).
    pub reason: Option<String>,
}

/// A notification to deliver through one channel, listing every target it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The `[notify.NAME]` to use.
    pub notify: String,
    /// The monitor.
    pub monitor: String,
    /// What happened.
    pub kind: NoticeKind,
    /// The targets.
    pub items: Vec<NoticeItem>,
    /// When.
    pub at_ms: u64,
    /// Held back by a silence: recorded, not delivered.
    pub silenced: bool,
}

/// Why an action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The monitor went DOWN (or escalated).
    Down,
    /// The monitor recovered.
    Up,
    /// `POST /v1/actions/{name}`.
    Manual,
}

impl Trigger {
    /// `down`, `up` or `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Down => "down",
            Trigger::Up => "up",
            Trigger::Manual => "manual",
        }
    }
}

/// What the policy decided about an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Run,
    /// Log what would run (`--dry-run`).
    DryRun,
    /// Do not run it: the outcome to record (`cooldown`, `rate_limited`, `silenced`,
    /// `refused`) and why.
    Skip(&'static str, String),
}

/// An action the policy has judged.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The action.
    pub action: Arc<ActionSpec>,
    /// The monitor it is for, if any (manual runs may have none).
    pub monitor: Option<String>,
    /// The targets that are DOWN.
    pub targets: Vec<TargetPort>,
    /// Why it runs.
    pub trigger: Trigger,
    /// Whether it runs.
    pub verdict: Verdict,
    /// When it was decided.
    pub at_ms: u64,
}

/// History to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// The state of a target (written when it changes).
    Target {
        /// Monitor.
        monitor: String,
        /// Address and port.
        target: TargetPort,
        /// Host name.
        host: Option<String>,
        /// Its state machine.
        tracker: Tracker,
        /// Its last check.
        last: Option<LastCheck>,
    },
    /// A state change.
    Event {
        /// Monitor.
        monitor: String,
        /// Address and port.
        target: TargetPort,
        /// `down`, `up`, `flapping` or `stable`.
        kind: &'static str,
        /// The state before.
        from: Health,
        /// The state after.
        to: Health,
        /// Why (the failing check's reason).
        reason: Option<String>,
        /// When.
        at_ms: u64,
    },
    /// A failed check, or the first passing one after failures.
    Check {
        /// Monitor.
        monitor: String,
        /// Address and port.
        target: TargetPort,
        /// The check.
        check: LastCheck,
    },
    /// A batch of checks of one monitor, passing or not, summed: what the status page's
    /// heartbeat bar and response-time chart are drawn from. One per batch of results, so
    /// its rows grow with the monitor's chunks, not with its target-ports.
    Sample(Sample),
    /// A silence set or lifted.
    Silence {
        /// Monitor.
        monitor: String,
        /// Until when; `None` lifts it.
        until_ms: Option<u64>,
    },
}

/// A batch of checks of one monitor, summed (see [`Save::Sample`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Monitor.
    pub monitor: String,
    /// When the batch came in.
    pub at_ms: u64,
    /// Checks with a verdict (checks skipped for a local shortage are not counted).
    pub checks: u32,
    /// Checks that failed.
    pub fails: u32,
    /// The sum of the connect round trips of the passing checks, in microseconds.
    pub rtt_sum_us: u64,
    /// The longest round trip of a passing check, in microseconds.
    pub rtt_max_us: u32,
    /// The first failure: `ip:port: reason`.
    pub reason: Option<String>,
    /// The earliest end of validity of a certificate seen (of each presented chain, its
    /// first to expire), in seconds since the Unix epoch.
    pub cert_not_after: Option<i64>,
}

impl Sample {
    /// The sum of `records` of a monitor whose targets are `known`, or `None` when no record
    /// is a check with a verdict.
    fn of(
        monitor: &str,
        records: &[ProbeRecord],
        states: StateMap,
        known: impl Fn(IpAddr, u16) -> bool,
        now_ms: u64,
    ) -> Option<Sample> {
        let mut s = Sample {
            monitor: monitor.to_string(),
            at_ms: now_ms,
            checks: 0,
            fails: 0,
            rtt_sum_us: 0,
            rtt_max_us: 0,
            reason: None,
            cert_not_after: None,
        };
        for r in records {
            if !known(r.ip, r.port) || local_shortage(r).is_some() {
                continue;
            }
            s.checks += 1;
            match verdict(r, states) {
                (true, _) => {
                    s.rtt_sum_us += u64::from(r.rtt_us);
                    s.rtt_max_us = s.rtt_max_us.max(r.rtt_us);
                }
                (false, reason) => {
                    s.fails += 1;
                    if s.reason.is_none() {
                        let at = std::net::SocketAddr::new(r.ip, r.port);
                        s.reason = Some(format!("{at}: {}", reason.unwrap_or_default()));
                    }
                }
            }
            // The presented chain's first certificate to expire (an intermediate may end
            // before the leaf), as check's `cert_days` and the results' `cert_days_left`.
            if let Some(cert) = r.tls.as_ref().and_then(|t| t.expiring()) {
                s.cert_not_after = Some(
                    s.cert_not_after
                        .map_or(cert.not_after, |n| n.min(cert.not_after)),
                );
            }
        }
        (s.checks > 0).then_some(s)
    }
}

/// What the runtime must carry out.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Run (or record) an action.
    Action(ActionRequest),
    /// Deliver (or record) a notification.
    Notice(Notice),
    /// Write history.
    Save(Save),
    /// Log one warning (no notification, no action): the monitor's checks have been skipped
    /// [`WARN_AFTER_SKIPS`] times in a row for a shortage on this host (or an agent).
    LocalShortage {
        /// The monitor.
        monitor: String,
        /// Checks skipped in a row so far.
        skipped: u64,
        /// The last of them.
        last: SkippedCheck,
    },
}

/// A chunk job that has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The monitor.
    pub monitor: String,
    /// When the job was submitted.
    pub started_ms: u64,
}

/// A target's state as stored, to restore it after a restart.
#[derive(Debug, Clone)]
pub struct SavedTarget {
    /// Monitor.
    pub monitor: String,
    /// Address and port.
    pub target: TargetPort,
    /// Its state machine.
    pub tracker: Tracker,
    /// Its last check.
    pub last: Option<LastCheck>,
}

/// What the store remembers of a previous run.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Target states.
    pub targets: Vec<SavedTarget>,
    /// Silences by monitor.
    pub silences: Vec<(String, u64)>,
    /// Action runs of the last hour (name, start), for cooldowns and `max_per_hour`.
    pub action_runs: Vec<(String, u64)>,
}

/// Why a request about a monitor or action cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No monitor by that name.
    NoMonitor(String),
    /// No action by that name.
    NoAction(String),
}

/// Every monitor's state and the policies over them.
pub struct Watch {
    config: Arc<WatchConfig>,
    monitors: Vec<Monitor>,
    index: HashMap<String, usize>,
    jobs: HashMap<JobId, JobInfo>,
    /// Live agents per fleet pool, as the runtime last said ([`Watch::set_agents`]).
    agents: HashMap<Arc<str>, u32>,
    rounds: HashMap<JobId, NameRound>,
    action_runs: HashMap<String, Vec<u64>>,
    dry_run: bool,
}

fn phase_seed(name: &str) -> u64 {
    // A stable hash (not the std RandomState): the same monitor keeps its place in the
    // interval across restarts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Splits a monitor into chunks of at most [`CHUNK_PROBES`] target-ports.
fn chunk_spaces(spec: &MonitorSpec) -> Vec<Arc<TargetSpace>> {
    let ports = spec.ports.as_slice();
    let host_count = spec.hosts.len() as u64;
    let mut out = Vec::new();
    let seed = phase_seed(&spec.name);
    let mut push = |hosts: HostSetBuilder, ports: PortSet| {
        // A chunk is small and valid by construction; a failure would drop only this chunk.
        if let Ok(space) = TargetSpace::new(hosts.build(), ports, seed) {
            out.push(Arc::new(space));
        }
    };
    let add = |b: &mut HostSetBuilder, i: u64| {
        if let Some((ip, name)) = spec.hosts.get(u128::from(i)) {
            match name {
                Some(n) => b.include_named(ip, n),
                None => b.include(porthawk_core::AddrRange::single(ip)),
            };
        }
    };
    if ports.len() as u64 >= CHUNK_PROBES {
        for i in 0..host_count {
            for group in ports.chunks(CHUNK_PROBES as usize) {
                let mut b = HostSetBuilder::default();
                add(&mut b, i);
                push(b, PortSet::from_ports(group.to_vec()));
            }
        }
    } else {
        let per = (CHUNK_PROBES / ports.len().max(1) as u64).max(1);
        let mut i = 0;
        while i < host_count {
            let mut b = HostSetBuilder::default();
            for j in i..(i + per).min(host_count) {
                add(&mut b, j);
            }
            push(b, spec.ports.clone());
            i += per;
        }
    }
    out
}

/// Host names per chunk: each name counted as two addresses (one of each family), so a
/// chunk of names holds about [`CHUNK_PROBES`] target-ports too.
fn name_groups(spec: &MonitorSpec) -> Vec<Vec<Arc<str>>> {
    let per = (CHUNK_PROBES / 2 / spec.ports.len().max(1) as u64).max(1) as usize;
    spec.names.chunks(per).map(<[Arc<str>]>::to_vec).collect()
}

impl Monitor {
    fn new(spec: Arc<MonitorSpec>, agents: &HashMap<Arc<str>, u32>, now_ms: u64) -> Monitor {
        // Chunks of addresses (a space), then chunks of host names (resolved at each check).
        let parts: Vec<_> = chunk_spaces(&spec)
            .into_iter()
            .map(|space| (Some(space), Vec::new()))
            .chain(name_groups(&spec).into_iter().map(|names| (None, names)))
            .collect();
        let interval = spec.interval.as_millis().max(1) as u64;
        let n = parts.len().max(1) as u64;
        let base = phase_seed(&spec.name) % interval;
        let vantages = spec.from.len();
        let chunks = parts
            .into_iter()
            .enumerate()
            .map(|(i, (space, names))| Chunk {
                space,
                names,
                due_ms: now_ms + (base + i as u64 * interval / n) % interval,
                running: vec![None; vantages],
                again: false,
            })
            .collect();
        let mut targets = BTreeMap::new();
        for i in 0..spec.hosts.len() {
            if let Some((ip, name)) = spec.hosts.get(i) {
                for &port in spec.ports.as_slice() {
                    targets.insert(
                        (TargetHost::Addr(ip), port),
                        Target {
                            host: name.cloned(),
                            vantages: vec![VantageTarget::default(); vantages],
                            ..Target::default()
                        },
                    );
                }
            }
        }
        let agents = spec
            .from
            .iter()
            .map(|v| (&**v != LOCAL_VANTAGE).then(|| agents.get(v).copied().unwrap_or(0)))
            .collect();
        for name in &spec.names {
            for &port in spec.ports.as_slice() {
                targets.insert(
                    (TargetHost::Name(Arc::clone(name)), port),
                    Target {
                        host: Some(Arc::clone(name)),
                        vantages: vec![VantageTarget::default(); vantages],
                        ..Target::default()
                    },
                );
            }
        }
        Monitor {
            agents,
            spec,
            chunks,
            targets,
            incident: None,
            outbox: Vec::new(),
            outbox_since: None,
            silenced_until: None,
            last_check_ms: None,
            local_skips: LocalSkips::default(),
        }
    }
}

/// Whether targets of a monitor went DOWN or came UP while checks were observed.
#[derive(Debug, Default, Clone, Copy)]
struct Moved {
    went_down: bool,
    came_up: bool,
}

impl Moved {
    fn add(&mut self, other: Moved) {
        self.went_down |= other.went_down;
        self.came_up |= other.came_up;
    }
}

impl Monitor {
    /// A check of `key` from vantage `v` (an index into `from`) skipped for a local shortage
    /// (`errno`, of this host or of an agent of the pool): no verdict.
    fn skip(
        &mut self,
        monitor: &str,
        key: TargetPort,
        v: usize,
        errno: &'static str,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let pool = self
            .spec
            .from
            .get(v)
            .filter(|f| &***f != LOCAL_VANTAGE)
            .cloned();
        let Some(t) = self.targets.get_mut(&key) else {
            return;
        };
        let skip = SkippedCheck {
            at_ms: now_ms,
            target: key,
            errno,
            pool,
        };
        if let Some(vt) = t.vantages.get_mut(v) {
            vt.skipped = Some(skip.clone());
        }
        t.skipped = Some(skip.clone());
        let s = &mut self.local_skips;
        s.total += 1;
        s.run += 1;
        s.last = Some(skip.clone());
        if s.run >= WARN_AFTER_SKIPS && !s.warned {
            s.warned = true;
            effects.push(Effect::LocalShortage {
                monitor: monitor.to_string(),
                skipped: s.run,
                last: skip,
            });
        }
    }

    /// A check of `key` with a verdict, from vantage `v` (an index into `from`): the
    /// vantage's tracker moves, and with it the target's (with one vantage, the same; with
    /// several, the quorum's verdict); what changed is saved and queued for notification.
    fn observe(
        &mut self,
        monitor: &str,
        key: &TargetPort,
        v: usize,
        check: LastCheck,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Moved {
        let mut moved = Moved::default();
        let spec = Arc::clone(&self.spec);
        let thresholds = spec.thresholds;
        let multi = spec.multi_vantage();
        let Some(vantage) = spec.from.get(v) else {
            return moved;
        };
        let Some(t) = self.targets.get_mut(key) else {
            return moved;
        };
        let Some(vt) = t.vantages.get_mut(v) else {
            return moved;
        };
        vt.skipped = None;
        t.skipped = None;
        self.local_skips.run = 0;
        self.local_skips.warned = false;
        let ok = check.ok;
        let reason = check.reason.clone();
        let was_failing = vt.last.as_ref().is_some_and(|l| !l.ok);
        vt.remember(ok, thresholds.fail_after);
        let seen = vt.tracker.observe(ok, now_ms, &thresholds);
        vt.last = Some(check.clone());
        let before = t.tracker.clone();
        let before_partial = t.partial;
        let (changes, reason) = if multi {
            // History names the vantage; the verdict moves only when a vantage's hard state
            // did.
            let named = LastCheck {
                reason: Some(match &reason {
                    Some(r) => format!("from {vantage}: {r}"),
                    None => format!("from {vantage}"),
                }),
                ..check
            };
            if !ok || was_failing {
                effects.push(Effect::Save(Save::Check {
                    monitor: monitor.to_string(),
                    target: key.clone(),
                    check: named.clone(),
                }));
            }
            t.last = Some(named.clone());
            let mut vantage_moved = false;
            for c in &seen {
                if let Change::Became { from, to } = *c {
                    vantage_moved = true;
                    effects.push(Effect::Save(Save::Event {
                        monitor: monitor.to_string(),
                        target: key.clone(),
                        kind: if to == Health::Down {
                            "vantage_down"
                        } else {
                            "vantage_up"
                        },
                        from,
                        to,
                        reason: named.reason.clone(),
                        at_ms: now_ms,
                    }));
                }
            }
            let changes = if vantage_moved {
                let a = agree(&sights(&self.agents, t), spec.quorum, t.tracker.hard);
                t.partial = a.partial;
                t.tracker.settle(a.hard, now_ms, &thresholds)
            } else {
                Vec::new()
            };
            (changes, Some(describe(&spec.from, &self.agents, t)))
        } else {
            if !ok || was_failing {
                effects.push(Effect::Save(Save::Check {
                    monitor: monitor.to_string(),
                    target: key.clone(),
                    check: check.clone(),
                }));
            }
            t.tracker = vt.tracker.clone();
            t.last = Some(check);
            (seen, reason)
        };
        let flapping = t.tracker.flapping;
        for change in changes {
            let (kind, from, to) = match change {
                Change::Became { from, to } => (to.as_str(), from, to),
                Change::FlapStarted => ("flapping", t.tracker.hard, t.tracker.hard),
                Change::FlapStopped { now } => ("stable", now, now),
            };
            effects.push(Effect::Save(Save::Event {
                monitor: monitor.to_string(),
                target: key.clone(),
                kind,
                from,
                to,
                reason: if to == Health::Down {
                    reason.clone()
                } else {
                    None
                },
                at_ms: now_ms,
            }));
            let note = |kind| Note {
                kind,
                target: key.clone(),
                host: t.host.clone(),
                reason: reason.clone(),
            };
            match change {
                Change::FlapStarted => self.outbox.push(note(NoticeKind::Flapping)),
                Change::Became {
                    to: Health::Down, ..
                } if !flapping => {
                    self.outbox.push(note(NoticeKind::Down));
                    moved.went_down = true;
                }
                Change::FlapStopped { now: Health::Down } => {
                    self.outbox.push(note(NoticeKind::Down));
                    moved.went_down = true;
                }
                Change::Became {
                    from: Health::Down,
                    to: Health::Up,
                } if !flapping => {
                    self.outbox.push(note(NoticeKind::Up));
                    moved.came_up = true;
                }
                Change::FlapStopped { now: Health::Up } => {
                    self.outbox.push(note(NoticeKind::Up));
                    moved.came_up = true;
                }
                _ => {}
            }
        }
        if t.partial != before_partial {
            let hard = t.tracker.hard;
            effects.push(Effect::Save(Save::Event {
                monitor: monitor.to_string(),
                target: key.clone(),
                kind: if t.partial { "partial" } else { "partial_end" },
                from: hard,
                to: hard,
                reason: reason.clone(),
                at_ms: now_ms,
            }));
            // A partial outage that became the quorum's DOWN is told as DOWN.
            if t.partial || hard != Health::Down {
                self.outbox.push(Note {
                    kind: if t.partial {
                        NoticeKind::Partial
                    } else {
                        NoticeKind::PartialEnd
                    },
                    target: key.clone(),
                    host: t.host.clone(),
                    reason: reason.clone(),
                });
            }
        }
        if before != t.tracker {
            effects.push(Effect::Save(Save::Target {
                monitor: monitor.to_string(),
                target: key.clone(),
                host: t.host.as_deref().map(str::to_string),
                tracker: t.tracker.clone(),
                last: t.last.clone(),
            }));
        }
        if !self.outbox.is_empty() && self.outbox_since.is_none() {
            self.outbox_since = Some(now_ms);
        }
        moved
    }
}

/// A host name's check from its addresses' (`None`: skipped for a local shortage): with
/// `any` it passes when one address passed (the fastest of them gives the state and round
/// trip), with `all` when every one did. A failure names each failing address
/// (`::1: closed (connection refused)`). `None` when the addresses that were skipped could
/// have changed the verdict: no verdict, as for an address whose check was skipped.
fn name_verdict(mode: AddressMode, seen: &[AddressCheck], now_ms: u64) -> Option<LastCheck> {
    let known: Vec<(IpAddr, &LastCheck)> = seen
        .iter()
        .filter_map(|(ip, c)| c.as_ref().map(|c| (*ip, c)))
        .collect();
    let unknown = known.len() < seen.len();
    // In address order, so that the same outcome always reads the same.
    let mut failing: Vec<&(IpAddr, &LastCheck)> = known.iter().filter(|(_, c)| !c.ok).collect();
    failing.sort_by_key(|(ip, _)| *ip);
    let passing = known.iter().filter(|(_, c)| c.ok);
    let pass = match mode {
        AddressMode::Any => passing.clone().next().is_some(),
        AddressMode::All => failing.is_empty(),
    };
    let decided = match mode {
        AddressMode::Any => pass || !unknown,
        AddressMode::All => !pass || !unknown,
    };
    if !decided || known.is_empty() {
        return None;
    }
    if pass {
        let best = passing.min_by_key(|(_, c)| c.rtt_us)?;
        return Some(LastCheck {
            at_ms: now_ms,
            ok: true,
            state: best.1.state,
            rtt_us: best.1.rtt_us,
            reason: None,
        });
    }
    let first = failing.first()?;
    let reasons: Vec<String> = failing
        .iter()
        .map(|(ip, c)| format!("{ip}: {}", c.reason.as_deref().unwrap_or("failed")))
        .collect();
    Some(LastCheck {
        at_ms: now_ms,
        ok: false,
        state: first.1.state,
        rtt_us: first.1.rtt_us,
        reason: Some(reasons.join("; ")),
    })
}

/// The errno name of a record that failed for a shortage on this host (a check whose
/// outcome is unknown), or `None` for a record that says something about the target.
pub fn local_shortage(r: &ProbeRecord) -> Option<&'static str> {
    match (r.state, r.errno) {
        (PortState::Error, Some(e)) if is_local_errno(e) => Some(errno_name(e)),
        _ => None,
    }
}

/// Whether a record is a passing check, and if not, why: as `states` maps a refusal and a
/// reply that did not match (a monitor's `refused`/`mismatch`, a `/probe` module's).
pub fn verdict(r: &ProbeRecord, states: StateMap) -> (bool, Option<String>) {
    if states.must_stay_closed {
        match r.state {
            PortState::Closed => return (true, None),
            PortState::Open => {
                return (
                    false,
                    Some("open: accepts connections, but refused = \"ok\" wants it closed".into()),
                )
            }
            _ => {}
        }
    }
    if states.mismatch_ok && r.state == PortState::Open && r.mismatch {
        return (true, None);
    }
    match r.state {
        PortState::Open => match (&r.reason, r.matched) {
            (None, Some(false)) => (false, Some("open, but the reply did not match".into())),
            (None, _) => (true, None),
            (Some(reason), _) => (false, Some(format!("open, but {reason}"))),
        },
        PortState::Closed => (false, Some("closed (connection refused)".into())),
        PortState::Filtered => (
            false,
            Some(format!("filtered (no answer after {} tries)", r.tries)),
        ),
        PortState::Unreachable | PortState::Error => {
            let errno = r.errno.map_or("", errno_name);
            (
                false,
                Some(format!("{} {errno}", r.state).trim().to_string()),
            )
        }
    }
}

impl Watch {
    /// The monitors of `config`, with states restored from a previous run.
    pub fn new(config: Arc<WatchConfig>, restored: Restored, dry_run: bool, now_ms: u64) -> Watch {
        let mut w = Watch {
            config: Arc::new(WatchConfig::default()),
            monitors: Vec::new(),
            index: HashMap::new(),
            jobs: HashMap::new(),
            agents: HashMap::new(),
            rounds: HashMap::new(),
            action_runs: HashMap::new(),
            dry_run,
        };
        w.reload(config, now_ms);
        for s in restored.targets {
            if let Some(&i) = w.index.get(&s.monitor) {
                let m = &mut w.monitors[i];
                let single = !m.spec.multi_vantage();
                if let Some(t) = m.targets.get_mut(&s.target) {
                    // With one vantage the stored tracker is that vantage's; with several it
                    // is the quorum's verdict, and the vantages start afresh.
                    if single {
                        if let Some(v) = t.vantages.first_mut() {
                            v.tracker = s.tracker.clone();
                            v.last = s.last.clone();
                        }
                    }
                    t.tracker = s.tracker;
                    t.last = s.last;
                }
            }
        }
        for (monitor, until) in restored.silences {
            if let Some(&i) = w.index.get(&monitor) {
                w.monitors[i].silenced_until = Some(until).filter(|&u| u > now_ms);
            }
        }
        for (action, at) in restored.action_runs {
            w.action_runs.entry(action).or_default().push(at);
        }
        // A monitor that was DOWN before the restart is in an incident whose first action
        // has already run.
        for m in &mut w.monitors {
            if !m.hard_down().is_empty() {
                m.incident = Some(Incident {
                    fresh: false,
                    next_action: 1,
                    jobs_since_action: 0,
                    last_notice_ms: now_ms,
                });
            }
        }
        w
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<WatchConfig> {
        &self.config
    }

    /// The monitors, in configuration order.
    pub fn monitors(&self) -> &[Monitor] {
        &self.monitors
    }

    /// A monitor by name.
    pub fn monitor(&self, name: &str) -> Option<&Monitor> {
        self.index.get(name).map(|&i| &self.monitors[i])
    }

    /// Whether `job` is a monitor's.
    pub fn owns(&self, job: JobId) -> bool {
        self.jobs.contains_key(&job)
    }

    /// The vantage a running job probes from.
    pub fn job_vantage(&self, job: JobId) -> Option<&str> {
        self.jobs.get(&job).map(|j| &*j.vantage)
    }

    /// Replaces the configuration. Monitors keep their targets' states, incidents and
    /// silences by name; a monitor that probes as before keeps its schedule. Returns the
    /// target-ports that are no longer monitored.
    pub fn reload(&mut self, config: Arc<WatchConfig>, now_ms: u64) -> Vec<(String, TargetPort)> {
        let mut old: HashMap<String, Monitor> = self
            .monitors
            .drain(..)
            .map(|m| (m.spec.name.clone(), m))
            .collect();
        let mut removed = Vec::new();
        for spec in &config.monitors {
            let mut m = Monitor::new(Arc::clone(spec), &self.agents, now_ms);
            if let Some(prev) = old.remove(&spec.name) {
                // Vantages are matched by name: `from` may have changed.
                let moved: Vec<Option<usize>> = spec
                    .from
                    .iter()
                    .map(|v| prev.spec.from.iter().position(|p| p == v))
                    .collect();
                if prev.spec.fingerprint == spec.fingerprint {
                    m.chunks = prev.chunks;
                } else {
                    // Jobs of the old chunks still report into the targets they share.
                    for (c, p) in m.chunks.iter_mut().zip(&prev.chunks) {
                        for (slot, from) in c.running.iter_mut().zip(&moved) {
                            *slot = from.and_then(|j| p.running.get(j).copied().flatten());
                        }
                    }
                }
                // The verdict carries over while it means the same: the same vantages
                // judged by the same quorum. Otherwise it is judged again from the
                // vantages' states (quietly: a reload is not news about the targets).
                let same_verdict = prev.spec.from == spec.from && prev.spec.quorum == spec.quorum;
                let mut rejudge = Vec::new();
                for (k, t) in prev.targets {
                    match m.targets.get_mut(&k) {
                        Some(slot) => {
                            for (v, from) in slot.vantages.iter_mut().zip(&moved) {
                                if let Some(old) = from.and_then(|j| t.vantages.get(j)) {
                                    *v = old.clone();
                                }
                            }
                            slot.last = t.last;
                            if same_verdict {
                                slot.tracker = t.tracker;
                                slot.partial = t.partial;
                            } else {
                                rejudge.push(k);
                            }
                        }
                        None => removed.push((spec.name.clone(), k)),
                    }
                }
                for k in rejudge {
                    let Some(t) = m.targets.get(&k) else { continue };
                    let (tracker, partial) = if spec.multi_vantage() {
                        let a = agree(&m.sights(t), spec.quorum, Health::Pending);
                        let tracker = Tracker::restored(a.hard, 0, 0, now_ms, false);
                        (tracker, a.partial)
                    } else {
                        let v = t.vantages.first().cloned().unwrap_or_default();
                        (v.tracker, false)
                    };
                    if let Some(t) = m.targets.get_mut(&k) {
                        t.tracker = tracker;
                        t.partial = partial;
                    }
                }
                m.incident = prev.incident;
                m.outbox = prev.outbox;
                m.outbox_since = prev.outbox_since;
                m.silenced_until = prev.silenced_until;
                m.last_check_ms = prev.last_check_ms;
                if m.hard_down().is_empty() {
                    m.incident = None;
                }
            }
            self.monitors.push(m);
        }
        for (name, m) in old {
            removed.extend(m.targets.into_keys().map(|k| (name.clone(), k)));
        }
        self.index = self
            .monitors
            .iter()
            .enumerate()
            .map(|(i, m)| (m.spec.name.clone(), i))
            .collect();
        self.config = config;
        removed
    }

    /// When the next chunk is due, if any monitor exists.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.monitors
            .iter()
            .flat_map(|m| m.chunks.iter().map(|c| c.due_ms))
            .min()
    }

    /// The jobs of every chunk due at `now_ms`, each with its lateness in milliseconds.
    /// `new_id` hands out job ids. A chunk whose previous job has not ended skips a turn.
    pub fn poll_due(
        &mut self,
        now_ms: u64,
        mut new_id: impl FnMut() -> JobId,
    ) -> (Vec<(Check, u64)>, u64) {
        let mut jobs = Vec::new();
        let mut skipped = 0;
        for m in &mut self.monitors {
            let interval = m.spec.interval.as_millis().max(1) as u64;
            for c in &mut m.chunks {
                if c.due_ms > now_ms {
                    continue;
                }
                let lateness = now_ms - c.due_ms;
                c.due_ms += interval;
                if c.due_ms <= now_ms {
                    // Far behind (a stall, a suspended machine): keep the phase, skip the
                    // missed turns.
                    c.due_ms += (now_ms - c.due_ms) / interval * interval + interval;
                }
                for (v, vantage) in m.spec.from.iter().enumerate() {
                    // A pool without agents: nobody would take the work.
                    if m.agents.get(v).copied().flatten() == Some(0) {
                        continue;
                    }
                    let Some(running) = c.running.get_mut(v) else {
                        continue;
                    };
                    if running.is_some() {
                        skipped += 1;
                        continue;
                    }
                    let id = new_id();
                    *running = Some(id);
                    self.jobs.insert(
                        id,
                        JobInfo {
                            monitor: m.spec.name.clone(),
                            vantage: Arc::clone(vantage),
                            started_ms: now_ms,
                        },
                    );
                    jobs.push((
                        Check {
                            id,
                            space: c.space.clone(),
                            names: c.names.clone(),
                            spec: m.spec.spec.clone(),
                            monitor: m.spec.name.clone(),
                            vantage: Arc::clone(vantage),
                            deadline_ms: c.due_ms,
                            // A chunk of names gets its wire form once they are resolved
                            // (on this server: agents get addresses only).
                            wire: c
                                .space
                                .as_ref()
                                .filter(|_| &**vantage != LOCAL_VANTAGE)
                                .map(|space| {
                                    porthawk_core::SweepSpec::from_space(
                                        space,
                                        phase_seed(&m.spec.name),
                                        m.spec.wire_probe.clone(),
                                    )
                                }),
                        },
                        lateness,
                    ));
                }
            }
        }
        (jobs, skipped)
    }

    /// Tells the watch how many live agents fleet pool `pool` has now (from the fleet's
    /// registry). A pool with none gets no checks and its vantage shows `no-agents`; it
    /// counts neither as DOWN nor as UP. Pools never named here have none. Returns whether
    /// that changed whether the pool has agents.
    pub fn set_agents(&mut self, pool: &str, live: u32) -> bool {
        let before = self.agents.get(pool).copied().unwrap_or(0);
        self.agents.insert(Arc::from(pool), live);
        for m in &mut self.monitors {
            for (v, name) in m.spec.from.iter().enumerate() {
                if &**name == pool && &**name != LOCAL_VANTAGE {
                    if let Some(a) = m.agents.get_mut(v) {
                        *a = Some(live);
                    }
                }
            }
        }
        (before == 0) != (live == 0)
    }

    /// The fleet pools the monitors probe from (every vantage but `local`), each once.
    pub fn pools(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for m in &self.monitors {
            for v in &m.spec.from {
                if &**v != LOCAL_VANTAGE && !out.contains(v) {
                    out.push(Arc::clone(v));
                }
            }
        }
        out
    }

    /// Makes every chunk of monitor `name` due now; returns how many chunks it has.
    pub fn check_now(&mut self, name: &str, now_ms: u64) -> Result<usize, Refusal> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Refusal::NoMonitor(name.to_string()))?;
        let m = &mut self.monitors[i];
        for c in &mut m.chunks {
            if c.running.iter().any(Option::is_some) {
                // Asked while a check runs (e.g. right after an action that the running
                // check's verdict started): the asked-for check follows that one.
                c.again = true;
            } else {
                c.due_ms = c.due_ms.min(now_ms);
            }
        }
        Ok(m.chunks.len())
    }

    /// Silences monitor `name` until `until_ms` (`None` lifts the silence).
    pub fn silence(&mut self, name: &str, until_ms: Option<u64>) -> Result<Vec<Effect>, Refusal> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Refusal::NoMonitor(name.to_string()))?;
        self.monitors[i].silenced_until = until_ms;
        Ok(vec![Effect::Save(Save::Silence {
            monitor: name.to_string(),
            until_ms,
        })])
    }

    /// Judges a run of action `name` requested by hand.
    pub fn run_action(
        &mut self,
        name: &str,
        monitor: Option<&str>,
        now_ms: u64,
    ) -> Result<ActionRequest, Refusal> {
        let action = self
            .config
            .actions
            .get(name)
            .cloned()
            .ok_or_else(|| Refusal::NoAction(name.to_string()))?;
        let (monitor, targets) = match monitor {
            Some(m) => {
                let mon = self
                    .monitor(m)
                    .ok_or_else(|| Refusal::NoMonitor(m.to_string()))?;
                let down = mon.hard_down().into_iter().map(|(k, _, _)| k).collect();
                (Some(m.to_string()), down)
            }
            None => (None, Vec::new()),
        };
        Ok(self.judge(action, monitor, targets, Trigger::Manual, false, now_ms))
    }

    fn judge(
        &mut self,
        action: Arc<ActionSpec>,
        monitor: Option<String>,
        targets: Vec<TargetPort>,
        trigger: Trigger,
        silenced: bool,
        now_ms: u64,
    ) -> ActionRequest {
        let verdict = if silenced {
            Verdict::Skip("silenced", "the monitor is silenced".into())
        } else if matches!(action.kind, crate::config::ActionKind::Reboot)
            && !self.config.allow_reboot
        {
            Verdict::Skip(
                "refused",
                "reboot actions need allow_reboot = true in the config".into(),
            )
        } else {
            let runs = self.action_runs.entry(action.name.clone()).or_default();
            runs.retain(|&t| t + HOUR_MS > now_ms);
            let cooldown = action.cooldown.as_millis() as u64;
            match runs.last() {
                Some(&last) if cooldown > 0 && now_ms < last + cooldown => Verdict::Skip(
                    "cooldown",
                    format!(
                        "in cooldown for another {} s",
                        (last + cooldown - now_ms).div_ceil(1000)
                    ),
                ),
                _ if runs.len() as u64 >= u64::from(action.max_per_hour) => Verdict::Skip(
                    "rate_limited",
                    format!("ran {} times in the last hour (max_per_hour)", runs.len()),
                ),
                _ => {
                    runs.push(now_ms);
                    if self.dry_run {
                        Verdict::DryRun
                    } else {
                        Verdict::Run
                    }
                }
            }
        };
        ActionRequest {
            action,
            monitor,
            targets,
            trigger,
            verdict,
            at_ms: now_ms,
        }
    }

    /// Feeds the records of a monitor job (from the vantage it was submitted for); returns
    /// what to do. An address target is judged at once; the addresses of a host name are kept until the job ends
    /// ([`Watch::on_job_done`]), where the name is judged over all of them.
    pub fn on_records(&mut self, job: JobId, records: &[ProbeRecord], now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(info) = self.jobs.get(&job) else {
            return effects;
        };
        let Some(&i) = self.index.get(&info.monitor) else {
            return effects;
        };
        let name = info.monitor.clone();
        let vantage = Arc::clone(&info.vantage);
        let mut moved = Moved::default();
        {
            let m = &mut self.monitors[i];
            // A vantage a reload removed: its last job's results have no tracker left.
            let Some(v) = m.spec.from.iter().position(|f| *f == vantage) else {
                return effects;
            };
            let mut round = self.rounds.get_mut(&job);
            let states = m.spec.states;
            let sample = Sample::of(
                &name,
                records,
                states,
                |ip, port| {
                    m.targets.contains_key(&(TargetHost::Addr(ip), port))
                        || round.as_ref().is_some_and(|r| r.by_ip.contains_key(&ip))
                },
                now_ms,
            );
            effects.extend(sample.map(|s| Effect::Save(Save::Sample(s))));
            for r in records {
                let shortage = local_shortage(r);
                let check = shortage.is_none().then(|| {
                    let (ok, reason) = verdict(r, states);
                    LastCheck {
                        at_ms: now_ms,
                        ok,
                        state: r.state,
                        rtt_us: r.rtt_us,
                        reason,
                    }
                });
                // A job of host names: the names this address stands for (an address that
                // is also a target of its own is judged by its own chunk's job, once).
                if let Some(round) = round.as_deref_mut() {
                    let names = round.by_ip.get(&r.ip).cloned().unwrap_or_default();
                    for n in names {
                        let key = (TargetHost::Name(Arc::clone(&n)), r.port);
                        if let Some(errno) = shortage {
                            m.skip(&name, key, v, errno, now_ms, &mut effects);
                        }
                        round
                            .seen
                            .entry((n, r.port))
                            .or_default()
                            .push((r.ip, check.clone()));
                    }
                    continue;
                }
                let key = (TargetHost::Addr(r.ip), r.port);
                if !m.targets.contains_key(&key) {
                    continue;
                }
                match (shortage, check) {
                    (Some(errno), _) => m.skip(&name, key, v, errno, now_ms, &mut effects),
                    (None, Some(check)) => {
                        moved.add(m.observe(&name, &key, v, check, now_ms, &mut effects));
                    }
                    (None, None) => {}
                }
            }
        }
        self.after_observing(i, moved, now_ms, &mut effects);
        effects
    }

    /// The answers of the resolver for the host names of job `job` (each name with its
    /// addresses or why it has none). Names that did not resolve, or have no address of the
    /// family asked for, are failed checks now (`cannot resolve 'mx1.example': ...`); the
    /// addresses of the others are what the job probes: returns their space, or `None` when
    /// nothing is left to probe (the runtime then ends the job with
    /// [`Watch::on_job_done`]), and what to do.
    pub fn on_resolved(
        &mut self,
        job: JobId,
        answers: Answers,
        now_ms: u64,
    ) -> (Option<Arc<TargetSpace>>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(info) = self.jobs.get(&job) else {
            return (None, effects);
        };
        let Some(&i) = self.index.get(&info.monitor) else {
            return (None, effects);
        };
        let name = info.monitor.clone();
        let vantage = Arc::clone(&info.vantage);
        let mut moved = Moved::default();
        let mut hosts = HostSetBuilder::default();
        let mut round = NameRound::default();
        {
            let m = &mut self.monitors[i];
            // A vantage a reload removed: nothing to probe from there.
            let Some(v) = m.spec.from.iter().position(|f| *f == vantage) else {
                return (None, effects);
            };
            let family = m.spec.family;
            let ports = m.spec.ports.clone();
            for (host, answer) in answers {
                let ips = answer.and_then(|mut ips| {
                    ips.sort();
                    ips.dedup();
                    match family.nothing_left(&ips) {
                        Some(why) => Err(why),
                        None => Ok(family.select(&ips)),
                    }
                });
                match ips {
                    Ok(ips) => {
                        for ip in ips {
                            hosts.include_named(ip, &host);
                            round.by_ip.entry(ip).or_default().push(Arc::clone(&host));
                        }
                    }
                    Err(why) => {
                        for &port in ports.as_slice() {
                            let key = (TargetHost::Name(Arc::clone(&host)), port);
                            let check = LastCheck {
                                at_ms: now_ms,
                                ok: false,
                                state: PortState::Error,
                                rtt_us: 0,
                                reason: Some(format!("cannot resolve '{host}': {why}")),
                            };
                            moved.add(m.observe(&name, &key, v, check, now_ms, &mut effects));
                        }
                    }
                }
            }
        }
        self.after_observing(i, moved, now_ms, &mut effects);
        let seed = phase_seed(&name);
        let space = TargetSpace::new(hosts.build(), self.monitors[i].spec.ports.clone(), seed)
            .ok()
            .map(Arc::new);
        if space.is_some() {
            self.rounds.insert(job, round);
        }
        (space, effects)
    }

    /// The wire form of a pool job's resolved addresses (the space [`Watch::on_resolved`]
    /// returned), for the round's work item: agents get addresses only, never names. `None`
    /// for a `local` job or a job the watch does not know.
    pub fn pool_wire(&self, job: JobId, space: &TargetSpace) -> Option<porthawk_core::SweepSpec> {
        let info = self.jobs.get(&job)?;
        if &*info.vantage == LOCAL_VANTAGE {
            return None;
        }
        let m = self.monitor(&info.monitor)?;
        Some(porthawk_core::SweepSpec::from_space(
            space,
            phase_seed(&m.spec.name),
            m.spec.wire_probe.clone(),
        ))
    }

    /// Opens or closes the incident of monitor `i` after its targets moved.
    fn after_observing(&mut self, i: usize, moved: Moved, now_ms: u64, effects: &mut Vec<Effect>) {
        if moved.went_down {
            self.open_incident(i, now_ms, effects);
        }
        if moved.came_up {
            self.maybe_close_incident(i, now_ms, effects);
        }
    }

    /// Judges the host names of a job that ended, over every address each one had.
    fn judge_names(
        &mut self,
        job: JobId,
        i: usize,
        name: &str,
        vantage: &str,
        now_ms: u64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(round) = self.rounds.remove(&job) else {
            return effects;
        };
        let mut moved = Moved::default();
        {
            let m = &mut self.monitors[i];
            let Some(v) = m.spec.from.iter().position(|f| &**f == vantage) else {
                return effects;
            };
            let mode = m.spec.addresses;
            for ((host, port), seen) in round.seen {
                let key = (TargetHost::Name(host), port);
                if !m.targets.contains_key(&key) {
                    continue;
                }
                if let Some(check) = name_verdict(mode, &seen, now_ms) {
                    moved.add(m.observe(name, &key, v, check, now_ms, &mut effects));
                }
            }
        }
        self.after_observing(i, moved, now_ms, &mut effects);
        effects
    }

    fn open_incident(&mut self, i: usize, now_ms: u64, effects: &mut Vec<Effect>) {
        let m = &self.monitors[i];
        if m.incident.is_some() {
            return;
        }
        let silenced = m.silenced(now_ms);
        let spec = Arc::clone(&m.spec);
        let down: Vec<TargetPort> = m.hard_down().into_iter().map(|(k, _, _)| k).collect();
        self.monitors[i].incident = Some(Incident {
            fresh: true,
            next_action: 1,
            jobs_since_action: 0,
            last_notice_ms: now_ms,
        });
        let first = spec.down_actions().next().map(str::to_string);
        if let Some(first) = first {
            if let Some(action) = self.config.actions.get(&first).cloned() {
                let req = self.judge(
                    action,
                    Some(spec.name.clone()),
                    down,
                    Trigger::Down,
                    silenced,
                    now_ms,
                );
                effects.push(Effect::Action(req));
            }
        }
    }

    fn maybe_close_incident(&mut self, i: usize, now_ms: u64, effects: &mut Vec<Effect>) {
        let m = &self.monitors[i];
        if m.incident.is_none() || !m.hard_down().is_empty() {
            return;
        }
        let silenced = m.silenced(now_ms);
        let spec = Arc::clone(&m.spec);
        self.monitors[i].incident = None;
        for name in spec.up_actions() {
            if let Some(action) = self.config.actions.get(name).cloned() {
                let req = self.judge(
                    action,
                    Some(spec.name.clone()),
                    Vec::new(),
                    Trigger::Up,
                    silenced,
                    now_ms,
                );
                effects.push(Effect::Action(req));
            }
        }
    }

    /// Marks a monitor job finished: escalates an incident that outlasted its action.
    /// Returns what to do, and the job's monitor and start (for its duration).
    pub fn on_job_done(&mut self, job: JobId, now_ms: u64) -> (Vec<Effect>, Option<Finished>) {
        let mut effects = Vec::new();
        let Some(JobInfo {
            monitor: name,
            vantage,
            started_ms,
        }) = self.jobs.remove(&job)
        else {
            return (effects, None);
        };
        let finished = Finished {
            monitor: name.clone(),
            started_ms,
        };
        let Some(&i) = self.index.get(&name) else {
            self.rounds.remove(&job);
            return (effects, Some(finished));
        };
        effects.extend(self.judge_names(job, i, &name, &vantage, now_ms));
        let m = &mut self.monitors[i];
        m.last_check_ms = Some(now_ms);
        for c in &mut m.chunks {
            for r in &mut c.running {
                if *r == Some(job) {
                    *r = None;
                }
            }
            if c.again && c.running.iter().all(Option::is_none) {
                c.again = false;
                c.due_ms = c.due_ms.min(now_ms);
            }
        }
        // Escalation counts rounds: one job per chunk and vantage that gets checks.
        let seeing = (0..m.spec.from.len()).filter(|&v| !m.blind(v)).count();
        let chunks = (m.chunks.len() * seeing.max(1)).max(1) as u64;
        let silenced = m.silenced(now_ms);
        let spec = Arc::clone(&m.spec);
        let actions: Vec<&str> = spec.down_actions().collect();
        let Some(inc) = m.incident.as_mut() else {
            return (effects, Some(finished));
        };
        if inc.fresh {
            inc.fresh = false;
        } else {
            inc.jobs_since_action += 1;
        }
        let Some(prev) = inc
            .next_action
            .checked_sub(1)
            .and_then(|p| actions.get(p))
            .and_then(|n| self.config.actions.get(*n))
        else {
            return (effects, Some(finished));
        };
        let due = inc.next_action < actions.len()
            && inc.jobs_since_action >= u64::from(prev.escalate_after) * chunks;
        if due {
            let next = actions[inc.next_action];
            inc.next_action += 1;
            inc.jobs_since_action = 0;
            let down = m.hard_down().into_iter().map(|(k, _, _)| k).collect();
            if let Some(action) = self.config.actions.get(next).cloned() {
                let req = self.judge(action, Some(name), down, Trigger::Down, silenced, now_ms);
                effects.push(Effect::Action(req));
            }
        }
        (effects, Some(finished))
    }

    /// When [`Watch::tick`] next has something to do: a silence ends, a group wait is over
    /// or a reminder is due; `None` while nothing is pending. The runtime sleeps until then
    /// (or until a check is due, [`Watch::next_due_ms`]) instead of calling `tick` on a
    /// timer; anything that changes the answer is a call into the watch, after which the
    /// caller asks again.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.monitors
            .iter()
            .flat_map(|m| {
                let group = m
                    .outbox_since
                    .map(|s| s.saturating_add(m.spec.group_wait.as_millis() as u64));
                let remind = match (m.spec.remind, m.incident.as_ref()) {
                    (Some(r), Some(inc)) => {
                        Some(inc.last_notice_ms.saturating_add(r.as_millis() as u64))
                    }
                    _ => None,
                };
                [m.silenced_until, group, remind]
            })
            .flatten()
            .min()
    }

    /// Sends grouped notifications whose wait is over, and reminders that are due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for m in &mut self.monitors {
            if m.silenced_until.is_some_and(|u| u <= now_ms) {
                m.silenced_until = None;
                effects.push(Effect::Save(Save::Silence {
                    monitor: m.spec.name.clone(),
                    until_ms: None,
                }));
            }
            let silenced = m.silenced(now_ms);
            let wait = m.spec.group_wait.as_millis() as u64;
            if m.outbox_since.is_some_and(|s| now_ms >= s + wait) {
                m.outbox_since = None;
                let mut by_kind: BTreeMap<NoticeKind, Vec<NoticeItem>> = BTreeMap::new();
                for n in m.outbox.drain(..) {
                    by_kind.entry(n.kind).or_default().push(NoticeItem {
                        target: n.target.0,
                        port: n.target.1,
                        host: n.host.as_deref().map(str::to_string),
                        reason: if n.kind == NoticeKind::Up && !m.spec.multi_vantage() {
                            None
                        } else {
                            n.reason
                        },
                    });
                }
                for (kind, items) in by_kind {
                    let notifiers: Vec<&str> = match kind {
                        NoticeKind::Up => m.spec.up_notifiers().collect(),
                        NoticeKind::Partial | NoticeKind::PartialEnd => {
                            m.spec.on_partial.iter().map(String::as_str).collect()
                        }
                        _ => m.spec.down_notifiers().collect(),
                    };
                    for notify in notifiers {
                        effects.push(Effect::Notice(Notice {
                            notify: notify.to_string(),
                            monitor: m.spec.name.clone(),
                            kind,
                            items: items.clone(),
                            at_ms: now_ms,
                            silenced,
                        }));
                    }
                }
                if let Some(inc) = m.incident.as_mut() {
                    inc.last_notice_ms = now_ms;
                }
            }
            if let (Some(remind), Some(inc)) = (m.spec.remind, m.incident.as_ref()) {
                if now_ms >= inc.last_notice_ms + remind.as_millis() as u64 {
                    let items: Vec<NoticeItem> = m
                        .hard_down()
                        .into_iter()
                        .map(|(k, host, reason)| NoticeItem {
                            target: k.0,
                            port: k.1,
                            host: host.as_deref().map(str::to_string),
                            reason,
                        })
                        .collect();
                    for notify in m.spec.down_notifiers() {
                        effects.push(Effect::Notice(Notice {
                            notify: notify.to_string(),
                            monitor: m.spec.name.clone(),
                            kind: NoticeKind::Reminder,
                            items: items.clone(),
                            at_ms: now_ms,
                            silenced,
                        }));
                    }
                    if let Some(inc) = m.incident.as_mut() {
                        inc.last_notice_ms = now_ms;
                    }
                }
            }
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests as config;
    use crate::config::Quorum;

    /// A fake clock: milliseconds that the test moves.
    struct Clock(u64);

    impl Clock {
        fn advance(&mut self, ms: u64) -> u64 {
            self.0 += ms;
            self.0
        }
    }

    const CONFIG: &str = r#"
[[monitor]]
name = "web"
targets = ["127.0.0.1-127.0.0.3"]
ports = "80"
interval = "1s"
timeout = "200ms"
fail_after = 2
recover_after = 1
flap_changes = 4
flap_window = "1m"
on_down = ["restart", "reboot", "ops"]
on_up = ["ops", "after"]
remind = "10s"
group_wait = "500ms"

[action.restart]
exec = ["systemctl", "restart", "web"]
cooldown = "5s"
max_per_hour = 2
escalate_after = 3

[action.reboot]
reboot = true

[action.after]
exec = ["true"]
cooldown = "0s"

[notify.ops]
webhook = { url = "http://127.0.0.1:1/" }
"#;

    /// The rig's name service: what a name resolves to, or why not.
    type Resolver = Box<dyn Fn(&str) -> Result<Vec<IpAddr>, String>>;

    struct Rig {
        watch: Watch,
        clock: Clock,
        next: u64,
        resolve: Resolver,
    }

    impl Rig {
        fn new(text: &str) -> Rig {
            let config = Arc::new(config::parse("t.toml", text).unwrap());
            let clock = Clock(1_000_000);
            Rig {
                watch: Watch::new(config, Restored::default(), false, clock.0),
                clock,
                next: 1,
                resolve: Box::new(|n| Err(format!("no name service in tests ({n})"))),
            }
        }

        /// Runs one round at the current time: every due job reports `up` per address.
        fn round(&mut self, up: &dyn Fn(IpAddr) -> bool) -> Vec<Effect> {
            self.round_records(&|ip, port| {
                let state = if up(ip) {
                    PortState::Open
                } else {
                    PortState::Closed
                };
                ProbeRecord::new(ip, port, state, 10, 1)
            })
        }

        /// Runs one round at the current time: every due job reports `record` per target.
        fn round_records(&mut self, record: &dyn Fn(IpAddr, u16) -> ProbeRecord) -> Vec<Effect> {
            let now = self.clock.0;
            let next = &mut self.next;
            let (jobs, _) = self.watch.poll_due(now, || {
                *next += 1;
                JobId(*next)
            });
            let mut effects = Vec::new();
            for (job, _) in jobs {
                let mut space = job.space.clone();
                if !job.names.is_empty() {
                    let answers = job
                        .names
                        .iter()
                        .map(|n| (Arc::clone(n), (self.resolve)(n)))
                        .collect();
                    let (s, e) = self.watch.on_resolved(job.id, answers, now);
                    effects.extend(e);
                    space = s;
                }
                let Some(space) = space else {
                    effects.extend(self.watch.on_job_done(job.id, now).0);
                    continue;
                };
                let records: Vec<ProbeRecord> = (0..space.len())
                    .filter_map(|i| space.get(i))
                    .map(|a| record(a.ip(), a.port()))
                    .collect();
                effects.extend(self.watch.on_records(job.id, &records, now));
                effects.extend(self.watch.on_job_done(job.id, now).0);
            }
            effects.extend(self.watch.tick(now));
            effects
        }

        /// Advances one interval (and the group wait) and runs a round of `record`s.
        fn step_records(&mut self, record: &dyn Fn(IpAddr, u16) -> ProbeRecord) -> Vec<Effect> {
            let mut e = self.round_records(record);
            self.clock.advance(500);
            e.extend(self.watch.tick(self.clock.0));
            self.clock.advance(500);
            e
        }

        /// Advances one interval (and the group wait) and runs a round.
        fn step(&mut self, up: &dyn Fn(IpAddr) -> bool) -> Vec<Effect> {
            let mut e = self.round(up);
            self.clock.advance(500);
            e.extend(self.watch.tick(self.clock.0));
            self.clock.advance(500);
            e
        }
    }

    /// A check asked for while the chunk's job still runs (the re-check right after an
    /// action that this job's verdict started) is due when that job ends, not skipped for
    /// a whole interval.
    #[test]
    fn a_check_asked_for_while_one_runs_follows_it() {
        let mut rig = Rig::new(CONFIG);
        let now = rig.clock.0;
        rig.watch.check_now("web", now).unwrap();
        let mut next = 100;
        let mut new_id = || {
            next += 1;
            JobId(next)
        };
        let (jobs, _) = rig.watch.poll_due(now, &mut new_id);
        assert_eq!(jobs.len(), 1);
        let running = jobs[0].0.id;
        // Asked for while it runs: nothing new is due yet, and the turn is not lost.
        rig.watch.check_now("web", now + 5).unwrap();
        let (jobs, _) = rig.watch.poll_due(now + 5, &mut new_id);
        assert!(jobs.is_empty());
        rig.watch.on_job_done(running, now + 10);
        let (jobs, _) = rig.watch.poll_due(now + 10, &mut new_id);
        assert_eq!(jobs.len(), 1, "the asked-for check follows the running one");
        rig.watch.on_job_done(jobs[0].0.id, now + 20);
        // Once: the next check is a whole interval later.
        let (jobs, _) = rig.watch.poll_due(now + 20, &mut new_id);
        assert!(jobs.is_empty());
    }

    fn actions(effects: &[Effect]) -> Vec<(String, Trigger, Verdict)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Action(a) => Some((a.action.name.clone(), a.trigger, a.verdict.clone())),
                _ => None,
            })
            .collect()
    }

    const NAMED: &str = r#"
[[monitor]]
name = "mx"
targets = ["mx.test", "127.0.0.9"]
ports = "25"
interval = "1s"
timeout = "200ms"
fail_after = 1
recover_after = 1
group_wait = "0s"
on_down = ["ops"]
on_up = ["ops"]
ADDRESSES

[notify.ops]
webhook = { url = "http://127.0.0.1:1/" }
"#;

    fn named_rig(extra: &str) -> Rig {
        let mut rig = Rig::new(&NAMED.replace("ADDRESSES", extra));
        rig.resolve = Box::new(|n| match n {
            "mx.test" => Ok(vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
            _ => Err("unknown".into()),
        });
        rig
    }

    impl Rig {
        /// Makes every chunk of monitor `mx` due, then steps.
        fn step_all(&mut self, up: &dyn Fn(IpAddr) -> bool) -> Vec<Effect> {
            self.watch.check_now("mx", self.clock.0).unwrap();
            self.step(up)
        }
    }

    fn name_target(rig: &Rig) -> Target {
        let m = rig.watch.monitor("mx").unwrap();
        m.targets[&(TargetHost::Name(Arc::from("mx.test")), 25)].clone()
    }

    /// Only the IPv4 addresses answer.
    fn v4_only(ip: IpAddr) -> bool {
        ip.is_ipv4()
    }

    #[test]
    fn a_name_is_up_when_one_address_answers_unless_all_are_asked_for() {
        let mut any = named_rig("");
        any.step_all(&v4_only);
        let t = name_target(&any);
        assert_eq!(t.tracker.hard, Health::Up, "{:?}", t.last);
        assert_eq!(any.watch.monitor("mx").unwrap().overall(), "up");

        let mut all = named_rig("addresses = \"all\"");
        let e = all.step_all(&v4_only);
        let t = name_target(&all);
        assert_eq!(t.tracker.hard, Health::Down);
        let reason = t.last.unwrap().reason.unwrap();
        assert_eq!(reason, "::1: closed (connection refused)");
        let n = notices(&e);
        assert_eq!(n.len(), 1, "{e:?}");
        assert_eq!(n[0].items[0].target.to_string(), "mx.test");
        assert_eq!(n[0].items[0].reason.as_deref(), Some(reason.as_str()));

        // Neither address answers: DOWN with both named, in either mode.
        let e = any.step_all(&|_| false);
        let t = name_target(&any);
        assert_eq!(t.tracker.hard, Health::Down);
        assert_eq!(
            t.last.unwrap().reason.unwrap(),
            "127.0.0.1: closed (connection refused); ::1: closed (connection refused)"
        );
        assert_eq!(notices(&e)[0].kind, NoticeKind::Down);
    }

    #[test]
    fn ip_family_chooses_the_addresses_of_a_name() {
        let mut v6 = named_rig("ip_family = \"ipv6\"");
        v6.step_all(&v4_only);
        assert_eq!(name_target(&v6).tracker.hard, Health::Down);
        let mut v4 = named_rig("ip_family = \"ipv4\"\naddresses = \"all\"");
        v4.step_all(&v4_only);
        assert_eq!(name_target(&v4).tracker.hard, Health::Up);
        let mut prefer = named_rig("prefer_family = \"ipv6\"");
        prefer.resolve = Box::new(|_| Ok(vec!["127.0.0.1".parse().unwrap()]));
        prefer.step_all(&v4_only);
        assert_eq!(
            name_target(&prefer).tracker.hard,
            Health::Up,
            "falls back to IPv4"
        );
    }

    #[test]
    fn a_name_that_stops_resolving_is_down_with_the_reason_and_recovers() {
        let mut rig = named_rig("");
        rig.step_all(&v4_only);
        assert_eq!(name_target(&rig).tracker.hard, Health::Up);
        rig.resolve = Box::new(|n| Err(format!("no such name {n}")));
        let e = rig.step_all(&v4_only);
        let t = name_target(&rig);
        assert_eq!(t.tracker.hard, Health::Down);
        let reason = "cannot resolve 'mx.test': no such name mx.test";
        assert_eq!(t.last.unwrap().reason.as_deref(), Some(reason));
        let down = notices(&e);
        assert_eq!(down.len(), 1, "{e:?}");
        assert_eq!(down[0].items[0].reason.as_deref(), Some(reason));
        assert!(e.iter().any(|e| matches!(e,
            Effect::Save(Save::Event { kind: "down", reason: Some(r), .. }) if r == reason)));
        // The address target of the same monitor is judged as before.
        let m = rig.watch.monitor("mx").unwrap();
        let addr = &m.targets[&(IpAddr::from([127, 0, 0, 9]).into(), 25)];
        assert_eq!(addr.tracker.hard, Health::Up);
        // A family with no address is a resolution failure too.
        rig.resolve = Box::new(|_| Ok(vec!["::1".parse().unwrap()]));
        rig.step_all(&|_| true);
        assert_eq!(name_target(&rig).tracker.hard, Health::Up);
        let e = rig.step_all(&v4_only);
        assert_eq!(name_target(&rig).tracker.hard, Health::Down);
        assert_eq!(notices(&e)[0].kind, NoticeKind::Down);
        rig.resolve = Box::new(|_| Ok(vec!["127.0.0.1".parse().unwrap()]));
        let e = rig.step_all(&v4_only);
        assert_eq!(name_target(&rig).tracker.hard, Health::Up);
        assert_eq!(notices(&e)[0].kind, NoticeKind::Up);
    }

    fn notices(effects: &[Effect]) -> Vec<&Notice> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notice(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    fn all_up(_: IpAddr) -> bool {
        true
    }

    fn none_up(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn jobs_are_spread_over_the_interval_and_late_by_nothing() {
        let text = r#"
[[monitor]]
name = "big"
targets = ["127.0.0.0/22"]
ports = "22,80,443,8080"
interval = "10s"
"#;
        let mut rig = Rig::new(text);
        // 1024 hosts × 4 ports = 4096 target-ports = 16 chunks.
        let start = rig.clock.0;
        let mut starts = Vec::new();
        let mut id = 0;
        for _ in 0..100 {
            let now = rig.clock.advance(100);
            let (jobs, skipped) = rig.watch.poll_due(now, || {
                id += 1;
                JobId(id)
            });
            assert_eq!(skipped, 0);
            for (job, late) in jobs {
                assert!(late < 100, "{late}");
                starts.push(now - start);
                rig.watch.on_job_done(job.id, now);
            }
        }
        assert_eq!(starts.len(), 16, "{starts:?}");
        // Evenly spread: no two chunks within 500 ms of each other (10 s / 16 = 625 ms).
        starts.sort_unstable();
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= 500, "{starts:?}");
        }
    }

    #[test]
    fn a_chunk_still_running_skips_its_turn() {
        let mut rig = Rig::new(CONFIG);
        let mut id = 0;
        let now = rig.clock.advance(1000);
        let (jobs, _) = rig.watch.poll_due(now, || {
            id += 1;
            JobId(id)
        });
        assert_eq!(jobs.len(), 1);
        let now = rig.clock.advance(1000);
        let (jobs, skipped) = rig.watch.poll_due(now, || JobId(99));
        assert!(jobs.is_empty());
        assert_eq!(skipped, 1);
    }

    #[test]
    fn down_runs_first_action_and_groups_notifications() {
        let mut rig = Rig::new(CONFIG);
        let e = rig.step(&all_up);
        assert!(actions(&e).is_empty() && notices(&e).is_empty());
        // All three fail: DOWN after two checks, one action, one notice listing all three.
        let mut e = rig.step(&none_up);
        assert!(actions(&e).is_empty());
        e.extend(rig.step(&none_up));
        assert_eq!(
            actions(&e),
            [("restart".to_string(), Trigger::Down, Verdict::Run)]
        );
        let n = notices(&e);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].kind, NoticeKind::Down);
        assert_eq!(n[0].notify, "ops");
        assert_eq!(n[0].items.len(), 3);
        assert!(n[0].items[0].reason.as_deref().unwrap().contains("closed"));
        let m = rig.watch.monitor("web").unwrap();
        assert_eq!(m.counts().down, 3);
        assert_eq!(m.overall(), "down");
        // Recovery: one UP notice and the on_up action.
        let e = rig.step(&all_up);
        assert_eq!(
            actions(&e),
            [("after".to_string(), Trigger::Up, Verdict::Run)]
        );
        let n = notices(&e);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].kind, NoticeKind::Up);
        assert_eq!(n[0].items.len(), 3);
    }

    #[test]
    fn escalation_runs_the_next_action_after_escalate_after_checks() {
        let mut rig = Rig::new(CONFIG);
        rig.step(&all_up);
        let mut all = Vec::new();
        for _ in 0..2 {
            all.extend(rig.step(&none_up));
        }
        assert_eq!(actions(&all).len(), 1);
        // restart has escalate_after = 3: three more DOWN checks, then reboot, which the
        // config does not allow.
        let mut later = Vec::new();
        for _ in 0..2 {
            later.extend(rig.step(&none_up));
        }
        assert!(actions(&later).is_empty(), "{:?}", actions(&later));
        later.extend(rig.step(&none_up));
        let a = actions(&later);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, "reboot");
        assert!(matches!(a[0].2, Verdict::Skip("refused", _)), "{a:?}");
        // No further actions: the list is exhausted.
        let mut rest = Vec::new();
        for _ in 0..10 {
            rest.extend(rig.step(&none_up));
        }
        assert!(actions(&rest).is_empty());
    }

    #[test]
    fn cooldown_and_max_per_hour_hold_actions_back() {
        let mut rig = Rig::new(&CONFIG.replace("flap_changes = 4", "flap_changes = 100"));
        rig.step(&all_up);
        let mut verdicts = Vec::new();
        // Outages of 2 checks, recoveries of 1: the restart is asked for every 3 s.
        for _ in 0..6 {
            let mut e = rig.step(&none_up);
            e.extend(rig.step(&none_up));
            e.extend(rig.step(&all_up));
            verdicts.extend(
                actions(&e)
                    .into_iter()
                    .filter(|a| a.0 == "restart")
                    .map(|a| a.2),
            );
        }
        let kinds: Vec<&str> = verdicts
            .iter()
            .map(|v| match v {
                Verdict::Run => "run",
                Verdict::DryRun => "dry",
                Verdict::Skip(k, _) => k,
            })
            .collect();
        // Cooldown 5 s: run, (3 s later) cooldown, (6 s) run, cooldown, then the hour's
        // budget of 2 is spent.
        assert_eq!(
            kinds,
            [
                "run",
                "cooldown",
                "run",
                "cooldown",
                "rate_limited",
                "rate_limited"
            ]
        );
        // An hour later the budget is back.
        rig.clock.advance(HOUR_MS);
        let mut e = rig.step(&none_up);
        e.extend(rig.step(&none_up));
        assert!(actions(&e)
            .iter()
            .any(|a| a.0 == "restart" && a.2 == Verdict::Run));
    }

    #[test]
    fn flapping_target_is_reported_once_and_runs_no_action() {
        let mut rig = Rig::new(CONFIG);
        rig.step(&all_up);
        let mut e = Vec::new();
        // 127.0.0.1 flaps (down two checks, up one); the others stay up.
        let flappy = |ip: IpAddr| ip != IpAddr::from([127, 0, 0, 1]);
        for _ in 0..12 {
            e.extend(rig.step(&flappy));
            e.extend(rig.step(&flappy));
            e.extend(rig.step(&all_up));
        }
        let n = notices(&e);
        let flapping = n.iter().filter(|n| n.kind == NoticeKind::Flapping).count();
        assert_eq!(flapping, 1, "{n:?}");
        // Before it counted as flapping: DOWN, UP, DOWN (the 4th change starts flapping).
        let downs = n.iter().filter(|n| n.kind == NoticeKind::Down).count();
        assert_eq!(downs, 2, "{n:?}");
        let restarts = actions(&e)
            .iter()
            .filter(|a| a.0 == "restart" && a.2 == Verdict::Run)
            .count();
        assert!(restarts <= 2, "{:?}", actions(&e));
        assert_eq!(rig.watch.monitor("web").unwrap().overall(), "flapping");
    }

    /// `next_tick_ms` names the first instant at which `tick` has news (a group wait over, a
    /// reminder, a silence ending), so a runtime that sleeps until then misses nothing; with
    /// nothing pending it is `None` and the runtime need not wake at all.
    #[test]
    fn tick_has_news_exactly_when_next_tick_ms_says() {
        let mut rig = Rig::new(CONFIG);
        rig.step(&all_up);
        rig.step(&all_up);
        assert_eq!(rig.watch.next_tick_ms(), None, "all up, nothing pending");
        rig.step(&none_up);
        // The second failure is DOWN: its notice waits for the group wait (500 ms).
        let t = rig.clock.0;
        rig.round(&none_up);
        assert_eq!(rig.watch.next_tick_ms(), Some(t + 500));
        assert!(notices(&rig.watch.tick(t + 499)).is_empty());
        let e = rig.watch.tick(t + 500);
        let n = notices(&e);
        assert!(n.iter().any(|n| n.kind == NoticeKind::Down), "{n:?}");
        // Then the reminder, 10 s after that notice.
        let remind = t + 500 + 10_000;
        assert_eq!(rig.watch.next_tick_ms(), Some(remind));
        assert!(notices(&rig.watch.tick(remind - 1)).is_empty());
        let e = rig.watch.tick(remind);
        let n = notices(&e);
        assert!(n.iter().all(|n| n.kind == NoticeKind::Reminder) && !n.is_empty());
        // A silence that ends first is the next news: its end is saved.
        rig.watch.silence("web", Some(remind + 1_000)).unwrap();
        assert_eq!(rig.watch.next_tick_ms(), Some(remind + 1_000));
        let ended = rig.watch.tick(remind + 1_000);
        assert!(
            ended
                .iter()
                .any(|e| matches!(e, Effect::Save(Save::Silence { until_ms: None, .. }))),
            "{ended:?}"
        );
    }

    #[test]
    fn reminders_repeat_while_down_and_silence_holds_back() {
        let mut rig = Rig::new(CONFIG);
        rig.step(&all_up);
        let mut e = Vec::new();
        for _ in 0..25 {
            e.extend(rig.step(&none_up));
        }
        let reminders = notices(&e)
            .iter()
            .filter(|n| n.kind == NoticeKind::Reminder)
            .count();
        // DOWN at the 2nd check; remind every 10 s over 23 more seconds.
        assert_eq!(reminders, 2);
        // Silenced: notices are still produced, marked silenced; actions are skipped.
        let now = rig.clock.0;
        rig.watch.silence("web", Some(now + 60_000)).unwrap();
        let mut e = rig.step(&all_up);
        e.extend(rig.step(&none_up));
        e.extend(rig.step(&none_up));
        let n = notices(&e);
        assert!(!n.is_empty() && n.iter().all(|n| n.silenced), "{n:?}");
        assert!(actions(&e)
            .iter()
            .all(|a| matches!(a.2, Verdict::Skip("silenced", _))));
        assert_eq!(
            rig.watch.silence("nope", None).unwrap_err(),
            Refusal::NoMonitor("nope".into())
        );
    }

    #[test]
    fn reload_keeps_state_of_unchanged_monitors() {
        let mut rig = Rig::new(CONFIG);
        rig.step(&all_up);
        rig.step(&none_up);
        rig.step(&none_up);
        assert_eq!(rig.watch.monitor("web").unwrap().counts().down, 3);
        // Same monitor, one target fewer, and a new monitor.
        let text = CONFIG.replace("127.0.0.1-127.0.0.3", "127.0.0.1-127.0.0.2")
            + "\n[[monitor]]\nname = \"new\"\ntargets = [\"127.0.0.9\"]\nports = \"1\"\n";
        let config = Arc::new(config::parse("t.toml", &text).unwrap());
        let removed = rig.watch.reload(config, rig.clock.0);
        assert_eq!(
            removed,
            [("web".to_string(), (IpAddr::from([127, 0, 0, 3]).into(), 80))]
        );
        let m = rig.watch.monitor("web").unwrap();
        assert_eq!(m.counts().down, 2);
        assert_eq!(rig.watch.monitor("new").unwrap().counts().pending, 1);
        // The incident survives: recovery runs the on_up action, not a second restart.
        let e = rig.step(&all_up);
        assert!(
            actions(&e).iter().all(|a| a.0 == "after"),
            "{:?}",
            actions(&e)
        );
    }

    #[test]
    fn restored_state_survives_a_restart_without_rerunning_actions() {
        let config = Arc::new(config::parse("t.toml", CONFIG).unwrap());
        let ip = IpAddr::from([127, 0, 0, 2]);
        let restored = Restored {
            targets: vec![SavedTarget {
                monitor: "web".into(),
                target: (ip.into(), 80),
                tracker: Tracker::restored(Health::Down, 0, 0, 5, false),
                last: None,
            }],
            silences: vec![],
            action_runs: vec![("restart".into(), 999_000)],
        };
        let mut rig = Rig::new(CONFIG);
        rig.watch = Watch::new(config, restored, false, rig.clock.0);
        assert_eq!(rig.watch.monitor("web").unwrap().counts().down, 1);
        let e = rig.step(&|a| a != ip);
        assert!(actions(&e).is_empty(), "{:?}", actions(&e));
    }

    #[test]
    fn dry_run_and_manual_runs_are_judged_too() {
        let config = Arc::new(config::parse("t.toml", CONFIG).unwrap());
        let mut w = Watch::new(config, Restored::default(), true, 0);
        let r = w.run_action("restart", Some("web"), 1000).unwrap();
        assert_eq!(r.verdict, Verdict::DryRun);
        assert_eq!(r.trigger, Trigger::Manual);
        let r = w.run_action("restart", None, 2000).unwrap();
        assert!(matches!(r.verdict, Verdict::Skip("cooldown", _)));
        assert_eq!(
            w.run_action("rm-rf", None, 0).unwrap_err(),
            Refusal::NoAction("rm-rf".into())
        );
    }

    #[test]
    fn failures_are_explained() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let plain = StateMap::default();
        let mut r = ProbeRecord::new(ip, 1, PortState::Open, 1, 1);
        assert_eq!(verdict(&r, plain), (true, None));
        r.matched = Some(false);
        assert!(!verdict(&r, plain).0);
        r.reason = Some("expect: no match".into());
        assert_eq!(
            verdict(&r, plain).1.as_deref(),
            Some("open, but expect: no match")
        );
        let r = ProbeRecord::new(ip, 1, PortState::Filtered, 1, 2);
        assert!(verdict(&r, plain).1.unwrap().contains("2 tries"));
    }

    #[test]
    fn refusals_and_mismatches_map_as_the_monitor_says() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let closed_ok = StateMap {
            must_stay_closed: true,
            ..StateMap::default()
        };
        let mismatch_ok = StateMap {
            mismatch_ok: true,
            ..StateMap::default()
        };
        let open = ProbeRecord::new(ip, 1, PortState::Open, 1, 1);
        let closed = ProbeRecord::new(ip, 1, PortState::Closed, 1, 1);
        let filtered = ProbeRecord::new(ip, 1, PortState::Filtered, 1, 2);
        // A port that must stay closed: refused passes, accepted fails and says why, no
        // answer fails as always.
        assert_eq!(verdict(&closed, closed_ok), (true, None));
        assert_eq!(
            verdict(&open, closed_ok),
            (
                false,
                Some("open: accepts connections, but refused = \"ok\" wants it closed".into())
            )
        );
        assert!(!verdict(&filtered, closed_ok).0);
        assert!(!verdict(&closed, StateMap::default()).0);
        // A reply that did not match passes with mismatch = "ok"; silence does not.
        let wrong = ProbeRecord {
            reason: Some("step 1: got '554 no', wanted ^220".into()),
            matched: Some(false),
            mismatch: true,
            ..open.clone()
        };
        let silent = ProbeRecord {
            reason: Some("step 1: expect ^220 timed out after 2s".into()),
            matched: Some(false),
            ..open.clone()
        };
        assert_eq!(verdict(&wrong, mismatch_ok), (true, None));
        assert!(!verdict(&wrong, StateMap::default()).0);
        assert!(!verdict(&silent, mismatch_ok).0);
        assert!(!verdict(&closed, mismatch_ok).0);
    }

    const MUST_STAY_CLOSED: &str = r#"
[[monitor]]
name = "telnet"
targets = ["127.0.0.1"]
ports = "23"
interval = "1s"
timeout = "200ms"
fail_after = 1
recover_after = 1
group_wait = "0s"
refused = "ok"
on_down = ["ops"]
on_up = ["ops"]

[notify.ops]
webhook = { url = "http://127.0.0.1:1/" }
"#;

    #[test]
    fn a_name_that_must_stay_closed_is_down_when_any_address_accepts() {
        let mut rig = named_rig("refused = \"ok\"");
        let m = rig.watch.monitor("mx").unwrap();
        assert_eq!(m.spec.addresses, AddressMode::All);
        // Every address refuses: UP.
        rig.step_all(&none_up);
        assert_eq!(name_target(&rig).tracker.health(), Health::Up);
        // One address accepts: DOWN, naming it.
        rig.step_all(&v4_only);
        let t = name_target(&rig);
        assert_eq!(t.tracker.health(), Health::Down);
        assert_eq!(
            t.last.unwrap().reason.as_deref(),
            Some("127.0.0.1: open: accepts connections, but refused = \"ok\" wants it closed")
        );
    }

    #[test]
    fn a_port_that_must_stay_closed_is_up_while_refused_and_down_when_it_accepts() {
        let mut rig = Rig::new(MUST_STAY_CLOSED);
        let m = rig.watch.monitor("telnet").unwrap();
        assert_eq!(m.spec.probe, "connect, must stay closed");
        let health = |rig: &Rig| {
            let m = rig.watch.monitor("telnet").unwrap();
            m.targets
                .values()
                .map(|t| t.tracker.health())
                .collect::<Vec<_>>()
        };
        let step = |rig: &mut Rig, up: &dyn Fn(IpAddr) -> bool| {
            rig.watch.check_now("telnet", rig.clock.0).unwrap();
            rig.step(up)
        };
        step(&mut rig, &none_up);
        assert_eq!(health(&rig), [Health::Up]);
        let down = step(&mut rig, &all_up);
        assert_eq!(health(&rig), [Health::Down]);
        let n = notices(&down);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].kind, NoticeKind::Down);
        assert_eq!(
            n[0].items[0].reason.as_deref(),
            Some("open: accepts connections, but refused = \"ok\" wants it closed")
        );
        let up = step(&mut rig, &none_up);
        assert_eq!(health(&rig), [Health::Up]);
        assert_eq!(notices(&up)[0].kind, NoticeKind::Up);
    }

    /// EMFILE: a shortage of descriptors on this host.
    const EMFILE: i32 = 24;
    /// ECONNRESET: the target reset the connection.
    const ECONNRESET: i32 = 104;

    fn emfile(ip: IpAddr, port: u16) -> ProbeRecord {
        let mut r = ProbeRecord::new(ip, port, PortState::Error, 0, 1);
        r.errno = Some(EMFILE);
        r
    }

    fn open(ip: IpAddr, port: u16) -> ProbeRecord {
        ProbeRecord::new(ip, port, PortState::Open, 10, 1)
    }

    fn closed(ip: IpAddr, port: u16) -> ProbeRecord {
        ProbeRecord::new(ip, port, PortState::Closed, 10, 1)
    }

    fn reset(ip: IpAddr, port: u16) -> ProbeRecord {
        let mut r = ProbeRecord::new(ip, port, PortState::Error, 0, 1);
        r.errno = Some(ECONNRESET);
        r
    }

    fn shortage_warnings(effects: &[Effect]) -> Vec<(u64, SkippedCheck)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::LocalShortage { skipped, last, .. } => Some((*skipped, last.clone())),
                _ => None,
            })
            .collect()
    }

    fn events(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Save(Save::Event { kind, .. }) => Some(*kind),
                _ => None,
            })
            .collect()
    }

    const ONE_TARGET: &str = r#"
[[monitor]]
name = "db"
targets = ["127.0.0.1"]
ports = "5432"
interval = "1s"
fail_after = 3
recover_after = 2
on_down = ["restart"]
on_up = ["ops"]
group_wait = "500ms"

[action.restart]
exec = ["systemctl", "restart", "db"]
cooldown = "0s"

[notify.ops]
webhook = { url = "http://127.0.0.1:1/" }
"#;

    fn health(rig: &Rig, monitor: &str) -> Vec<Health> {
        rig.watch
            .monitor(monitor)
            .unwrap()
            .targets
            .values()
            .map(|t| t.tracker.health())
            .collect()
    }

    /// Issue 14 item 4: a healthy target that the host cannot probe (every record EMFILE)
    /// for 10 rounds stays UP: no DOWN, no action, no notification; the skips are counted,
    /// reported in the monitor's last result, and logged once.
    #[test]
    fn local_shortage_for_ten_rounds_keeps_a_healthy_target_up_with_no_action() {
        let mut rig = Rig::new(CONFIG);
        // The first job is due within one interval.
        rig.step(&all_up);
        rig.step(&all_up);
        assert_eq!(health(&rig, "web"), vec![Health::Up; 3]);
        let mut effects = Vec::new();
        for _ in 0..10 {
            effects.extend(rig.step_records(&emfile));
        }
        assert_eq!(actions(&effects), vec![]);
        assert!(notices(&effects).is_empty());
        assert_eq!(events(&effects), Vec::<&str>::new());
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Save(_))),
            "a skipped check writes no history"
        );
        assert_eq!(health(&rig, "web"), vec![Health::Up; 3]);
        let m = rig.watch.monitor("web").unwrap();
        assert_eq!(m.overall(), "up");
        assert_eq!((m.local_skips.total, m.local_skips.run), (30, 30));
        let last = m.local_skips.last.as_ref().unwrap();
        assert_eq!(
            last.message(),
            "check skipped: local shortage EMFILE on this host"
        );
        for t in m.targets.values() {
            assert_eq!(t.skipped.as_ref().unwrap().errno, "EMFILE");
            assert!(t.last.as_ref().unwrap().ok, "the last verdict is kept");
        }
        // One warning, at the third skip in a row.
        let warned = shortage_warnings(&effects);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].0, WARN_AFTER_SKIPS);

        // A target never checked before stays pending, never DOWN.
        let mut fresh = Rig::new(CONFIG);
        let mut effects = Vec::new();
        for _ in 0..10 {
            effects.extend(fresh.step_records(&emfile));
        }
        assert_eq!(health(&fresh, "web"), vec![Health::Pending; 3]);
        assert_eq!(actions(&effects), vec![]);
        assert!(notices(&effects).is_empty());
    }

    /// Real failures count toward `fail_after` across skipped checks (which neither count nor
    /// reset the run), and a real error (ECONNRESET) is a failure like any other.
    #[test]
    fn real_failures_count_across_local_shortages() {
        let mut rig = Rig::new(ONE_TARGET);
        // The first job is due within one interval.
        rig.step_records(&open);
        rig.step_records(&open);
        let mut effects = Vec::new();
        for record in [closed, emfile, emfile, reset, emfile] {
            effects.extend(rig.step_records(&record));
        }
        // Two real failures of three: failing, not DOWN.
        assert_eq!(health(&rig, "db"), vec![Health::Pending]);
        assert_eq!(actions(&effects), vec![]);
        let t = rig
            .watch
            .monitor("db")
            .unwrap()
            .targets
            .values()
            .next()
            .unwrap();
        assert_eq!(t.tracker.fail_run, 2);
        let effects = rig.step_records(&closed);
        assert_eq!(health(&rig, "db"), vec![Health::Down]);
        assert_eq!(events(&effects), vec!["down"]);
        assert_eq!(
            actions(&effects),
            vec![("restart".to_string(), Trigger::Down, Verdict::Run)]
        );
        let t = rig
            .watch
            .monitor("db")
            .unwrap()
            .targets
            .values()
            .next()
            .unwrap();
        assert_eq!(
            t.last.as_ref().unwrap().reason.as_deref(),
            Some("closed (connection refused)"),
            "the reason is the real failure, not the shortage"
        );
    }

    /// Recovery: a success streak is not reset by skipped checks (two successes with
    /// shortages between them bring a DOWN target back UP), skipped checks alone never do,
    /// and after a check with a verdict a new shortage is warned about again.
    #[test]
    fn recovery_counts_successes_across_local_shortages() {
        let mut rig = Rig::new(ONE_TARGET);
        // The first job is due within one interval.
        rig.step_records(&open);
        rig.step_records(&open);
        for _ in 0..3 {
            rig.step_records(&closed);
        }
        assert_eq!(health(&rig, "db"), vec![Health::Down]);
        let mut effects = Vec::new();
        for _ in 0..5 {
            effects.extend(rig.step_records(&emfile));
        }
        assert_eq!(
            health(&rig, "db"),
            vec![Health::Down],
            "a skip is no success"
        );
        assert_eq!(shortage_warnings(&effects).len(), 1);
        let mut effects = Vec::new();
        for record in [open, emfile, emfile] {
            effects.extend(rig.step_records(&record));
        }
        assert_eq!(health(&rig, "db"), vec![Health::Pending]);
        assert!(
            shortage_warnings(&effects).is_empty(),
            "a new run of two skips"
        );
        effects.extend(rig.step_records(&emfile));
        assert_eq!(shortage_warnings(&effects).len(), 1, "a new run of three");
        effects.extend(rig.step_records(&open));
        assert_eq!(health(&rig, "db"), vec![Health::Up]);
        assert_eq!(events(&effects), vec!["up"]);
        let m = rig.watch.monitor("db").unwrap();
        assert_eq!(m.local_skips.run, 0);
        assert_eq!(m.local_skips.total, 8);
        assert!(m.targets.values().all(|t| t.skipped.is_none()));
    }

    // ---------------------------------------------------------------------------------
    // Vantage points: one tracker per target-port and vantage, judged by the quorum.

    const VANTAGE: &str = r#"
[[monitor]]
name = "mx"
targets = ["127.0.0.1"]
ports = "25"
interval = "1s"
fail_after = 3
recover_after = 2
flap_changes = 4
flap_window = "1m"
on_down = ["restart", "ops"]
on_up = ["ops"]
group_wait = "500ms"

[action.restart]
exec = ["systemctl", "restart", "postfix"]
cooldown = "0s"
max_per_hour = 100

[notify.ops]
webhook = { url = "http://127.0.0.1:1/" }

[notify.paths]
webhook = { url = "http://127.0.0.1:2/" }
"#;

    /// `text` with every monitor probing from `from` by `quorum`, partial outages notified
    /// through `paths`. (The file itself may name pools only with `[fleet]`, which is the
    /// server's to check; the watch takes the model as given.)
    fn vantage_config(text: &str, from: &[&str], quorum: Quorum) -> Arc<WatchConfig> {
        let mut c = config::parse("t.toml", text).unwrap();
        for m in &mut c.monitors {
            let mut spec = (**m).clone();
            spec.from = from.iter().map(|v| Arc::from(*v)).collect();
            spec.quorum = quorum;
            spec.on_partial = vec!["paths".into()];
            *m = Arc::new(spec);
        }
        Arc::new(c)
    }

    impl Rig {
        fn with(config: Arc<WatchConfig>) -> Rig {
            let clock = Clock(1_000_000);
            Rig {
                watch: Watch::new(config, Restored::default(), false, clock.0),
                clock,
                next: 1,
                resolve: Box::new(|n| Err(format!("no name service in tests ({n})"))),
            }
        }

        /// One interval: every due job reports, per vantage and address, whether it is up.
        /// Returns the effects and the vantages that got a job.
        fn step_from(&mut self, up: &dyn Fn(&str, IpAddr) -> bool) -> (Vec<Effect>, Vec<String>) {
            let now = self.clock.0;
            let next = &mut self.next;
            let (jobs, _) = self.watch.poll_due(now, || {
                *next += 1;
                JobId(*next)
            });
            let mut effects = Vec::new();
            let mut vantages = Vec::new();
            for (job, _) in jobs {
                vantages.push(job.vantage.to_string());
                let mut space = job.space.clone();
                if !job.names.is_empty() {
                    // Names are resolved here (the coordinator) for every vantage; a pool
                    // gets the addresses inline in its round's spec.
                    let answers = job
                        .names
                        .iter()
                        .map(|n| (Arc::clone(n), (self.resolve)(n)))
                        .collect();
                    let (s, e) = self.watch.on_resolved(job.id, answers, now);
                    effects.extend(e);
                    space = s;
                    if let Some(space) = &space {
                        let wire = self.watch.pool_wire(job.id, space);
                        assert_eq!(wire.is_some(), &*job.vantage != LOCAL_VANTAGE);
                        if let Some(wire) = wire {
                            let rebuilt = wire.space().unwrap();
                            assert_eq!(rebuilt.len(), space.len());
                            for i in 0..space.len() {
                                assert_eq!(rebuilt.get(i), space.get(i));
                            }
                        }
                    }
                }
                let Some(space) = space else {
                    effects.extend(self.watch.on_job_done(job.id, now).0);
                    continue;
                };
                let records: Vec<ProbeRecord> = (0..space.len())
                    .filter_map(|i| space.get(i))
                    .map(|a| {
                        let state = if up(&job.vantage, a.ip()) {
                            PortState::Open
                        } else {
                            PortState::Filtered
                        };
                        ProbeRecord::new(a.ip(), a.port(), state, 10, 1)
                    })
                    .collect();
                effects.extend(self.watch.on_records(job.id, &records, now));
                effects.extend(self.watch.on_job_done(job.id, now).0);
            }
            effects.extend(self.watch.tick(now));
            self.clock.advance(500);
            effects.extend(self.watch.tick(self.clock.0));
            self.clock.advance(500);
            (effects, vantages)
        }

        /// `rounds` intervals of `up`; all their effects.
        fn run_from(&mut self, rounds: usize, up: &dyn Fn(&str, IpAddr) -> bool) -> Vec<Effect> {
            (0..rounds).flat_map(|_| self.step_from(up).0).collect()
        }

        fn target(&self, monitor: &str) -> &Target {
            self.watch
                .monitor(monitor)
                .unwrap()
                .targets
                .values()
                .next()
                .unwrap()
        }
    }

    fn everywhere(_: &str, _: IpAddr) -> bool {
        true
    }

    /// Port 25 is dropped on the way from pool `b` only.
    fn dropped_from_b(v: &str, _: IpAddr) -> bool {
        v != "b"
    }

    fn nowhere(_: &str, _: IpAddr) -> bool {
        false
    }

    fn notice_kinds(effects: &[Effect]) -> Vec<(NoticeKind, String)> {
        notices(effects)
            .iter()
            .map(|n| (n.kind, n.notify.clone()))
            .collect()
    }

    /// A rig whose pools `a` and `b` have agents, after two healthy rounds from both.
    fn two_pools(quorum: Quorum) -> Rig {
        let mut rig = Rig::with(vantage_config(VANTAGE, &["a", "b"], quorum));
        rig.watch.set_agents("a", 2);
        rig.watch.set_agents("b", 3);
        rig.run_from(2, &everywhere);
        assert_eq!(rig.target("mx").tracker.health(), Health::Up);
        rig
    }

    /// A host name probed from `local` and a pool: the name is resolved here for both (the
    /// pool's round carries the addresses inline, checked in `step_from`), each vantage
    /// judges it over its own records with the same any/all rule, and a name that stops
    /// resolving is a failed check from every vantage.
    #[test]
    fn a_name_is_resolved_here_and_judged_from_each_vantage() {
        let text = VANTAGE.replace("targets = [\"127.0.0.1\"]", "targets = [\"mx.test\"]");
        let mut rig = Rig::with(vantage_config(&text, &["local", "a"], Quorum::All));
        rig.watch.set_agents("a", 1);
        rig.resolve = Box::new(|n| match n {
            "mx.test" => Ok(vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
            _ => Err("unknown".into()),
        });
        let key = (TargetHost::Name(Arc::from("mx.test")), 25);
        let mut effects = Vec::new();
        let mut vantages = Vec::new();
        for _ in 0..3 {
            let (e, v) = rig.step_from(&everywhere);
            effects.extend(e);
            vantages.extend(v);
        }
        assert!(vantages.iter().any(|v| v == "local"), "{vantages:?}");
        assert!(vantages.iter().any(|v| v == "a"), "{vantages:?}");
        // Samples count the checks of every vantage (local and pool alike).
        assert!(!samples(&effects).is_empty());
        let t = &rig.watch.monitor("mx").unwrap().targets[&key];
        assert_eq!(t.tracker.health(), Health::Up);
        assert!(t.vantages.iter().all(|v| v.tracker.hard == Health::Up));
        // From pool a only IPv4 answers: with `any` the name is still UP from there.
        rig.run_from(3, &|v, ip| v != "a" || ip.is_ipv4());
        let t = &rig.watch.monitor("mx").unwrap().targets[&key];
        assert_eq!(t.vantages[1].tracker.hard, Health::Up);
        // Nothing answers from a: DOWN from a, UP from local: partial (quorum all).
        let effects = rig.run_from(3, &|v, _| v != "a");
        assert_eq!(actions(&effects), vec![]);
        let t = &rig.watch.monitor("mx").unwrap().targets[&key];
        assert_eq!(
            (t.vantages[0].tracker.hard, t.vantages[1].tracker.hard),
            (Health::Up, Health::Down)
        );
        assert_eq!((t.tracker.health(), t.partial), (Health::Up, true));
        let reason = t.vantages[1].last.as_ref().unwrap().reason.clone().unwrap();
        assert_eq!(
            reason,
            "127.0.0.1: filtered (no answer after 1 tries); ::1: filtered (no answer after 1 tries)"
        );
        // Everything answers again, then the name stops resolving: a failed check from
        // every vantage, so DOWN by the quorum, and the action runs.
        rig.run_from(2, &everywhere);
        assert!(!rig.watch.monitor("mx").unwrap().targets[&key].partial);
        rig.resolve = Box::new(|n| Err(format!("no such name {n}")));
        let effects = rig.run_from(3, &everywhere);
        assert_eq!(
            actions(&effects),
            [("restart".to_string(), Trigger::Down, Verdict::Run)]
        );
        let t = &rig.watch.monitor("mx").unwrap().targets[&key];
        assert_eq!((t.tracker.health(), t.partial), (Health::Down, false));
        for v in &t.vantages {
            assert_eq!(v.tracker.hard, Health::Down);
            let why = v.last.as_ref().unwrap().reason.clone().unwrap();
            assert_eq!(why, "cannot resolve 'mx.test': no such name mx.test");
        }
    }

    #[test]
    fn each_chunk_is_checked_from_every_vantage_with_agents() {
        let mut rig = Rig::with(vantage_config(VANTAGE, &["local", "a", "b"], Quorum::All));
        rig.watch.set_agents("a", 1);
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.extend(rig.step_from(&everywhere).1);
        }
        // Pool b has no agents: nobody would take its work, so none is made.
        assert_eq!(seen, ["local", "a"]);
        assert_eq!(rig.watch.pools(), [Arc::from("a"), Arc::from("b")]);
    }

    /// A pool's check carries its chunk in the fleet's wire form, which rebuilds the same
    /// target-ports in the same order (the agent checks the count before probing); the
    /// local check has none.
    #[test]
    fn a_pool_check_carries_its_chunk_in_wire_form() {
        let text = VANTAGE.replace("127.0.0.1\"]", "127.0.0.1\", \"127.0.3.0/30\"]");
        let mut rig = Rig::with(vantage_config(&text, &["local", "a"], Quorum::Any));
        rig.watch.set_agents("a", 1);
        let mut id = 0;
        let mut checks = Vec::new();
        for _ in 0..10 {
            let now = rig.clock.advance(100);
            checks.extend(
                rig.watch
                    .poll_due(now, || {
                        id += 1;
                        JobId(id)
                    })
                    .0,
            );
        }
        assert_eq!(checks.len(), 2);
        for (c, _) in &checks {
            assert!(c.deadline_ms > rig.clock.0 - 1000, "{}", c.deadline_ms);
            match &*c.vantage {
                "local" => assert!(c.wire.is_none()),
                _ => {
                    let wire = c.wire.as_ref().unwrap();
                    let space = wire.space().unwrap();
                    assert_eq!(space.len(), 5);
                    let rebuilt: Vec<_> = (0..5).map(|i| space.get(i)).collect();
                    let ours: Vec<_> = (0..5).map(|i| c.space.as_ref().unwrap().get(i)).collect();
                    assert_eq!(rebuilt, ours);
                    // The default timeout: 2 s, at most the interval (1 s).
                    assert_eq!(wire.probe.connect_timeout_ms, 1000);
                }
            }
        }
    }

    /// Quorum "all": one pool of two sees the port DOWN. That is a path problem: the target
    /// is `partial` (not DOWN), `on_partial` is told which vantage sees what, and no action
    /// runs. When the path heals, `on_partial` hears that too.
    #[test]
    fn quorum_all_with_one_vantage_down_is_partial_and_runs_no_action() {
        let mut rig = two_pools(Quorum::All);
        let effects = rig.run_from(5, &dropped_from_b);
        assert_eq!(actions(&effects), vec![]);
        assert_eq!(
            notice_kinds(&effects),
            [(NoticeKind::Partial, "paths".to_string())]
        );
        let n = notices(&effects);
        assert_eq!(
            n[0].items[0].reason.as_deref(),
            Some("up from a, down from b (3/3)")
        );
        assert_eq!(events(&effects), ["vantage_down", "partial"]);
        let t = rig.target("mx");
        assert_eq!((t.tracker.health(), t.partial), (Health::Up, true));
        assert_eq!(t.vantages[1].tracker.hard, Health::Down);
        let m = rig.watch.monitor("mx").unwrap();
        assert_eq!(m.overall(), "partial");
        assert_eq!(
            (m.counts().partial, m.counts().up, m.counts().down),
            (1, 1, 0)
        );
        let v = m.vantage_summaries();
        assert_eq!(
            v.iter()
                .map(|v| (&*v.name, v.state, v.agents))
                .collect::<Vec<_>>(),
            [("a", "up", Some(2)), ("b", "down", Some(3))]
        );
        assert!(
            v[1].reason
                .as_deref()
                .unwrap()
                .starts_with("127.0.0.1:25: filtered"),
            "{v:?}"
        );
        // The history names the vantage.
        let checks: Vec<String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Save(Save::Check { check, .. }) => check.reason.clone(),
                _ => None,
            })
            .collect();
        assert!(!checks.is_empty());
        assert!(
            checks.iter().all(|r| r.starts_with("from b: filtered")),
            "{checks:?}"
        );

        let effects = rig.run_from(2, &everywhere);
        assert_eq!(actions(&effects), vec![]);
        assert_eq!(
            notice_kinds(&effects),
            [(NoticeKind::PartialEnd, "paths".to_string())]
        );
        assert_eq!(events(&effects), ["vantage_up", "partial_end"]);
        assert!(!rig.target("mx").partial);
        assert_eq!(rig.watch.monitor("mx").unwrap().overall(), "up");
    }

    /// Quorum "any": the same single DOWN vantage is the monitor's DOWN: the action runs
    /// and the notice names the vantages. Recovery from that vantage ends it.
    #[test]
    fn quorum_any_with_one_vantage_down_is_down_and_runs_the_action() {
        let mut rig = two_pools(Quorum::Any);
        let effects = rig.run_from(2, &dropped_from_b);
        assert!(actions(&effects).is_empty(), "two failures of three");
        let effects = rig.run_from(1, &dropped_from_b);
        assert_eq!(
            actions(&effects),
            [("restart".to_string(), Trigger::Down, Verdict::Run)]
        );
        assert_eq!(
            notice_kinds(&effects),
            [(NoticeKind::Down, "ops".to_string())]
        );
        let n = notices(&effects);
        assert_eq!(
            n[0].items[0].reason.as_deref(),
            Some("up from a, down from b (3/3)")
        );
        assert_eq!(events(&effects), ["vantage_down", "down"]);
        let t = rig.target("mx");
        assert_eq!((t.tracker.health(), t.partial), (Health::Down, false));
        assert_eq!(rig.watch.monitor("mx").unwrap().overall(), "down");
        // Still DOWN from b: the action is not repeated (escalation has nothing further).
        assert!(actions(&rig.run_from(5, &dropped_from_b)).is_empty());
        // b answers again: after recover_after checks the monitor is UP, once.
        let effects = rig.run_from(3, &everywhere);
        assert_eq!(events(&effects), ["vantage_up", "up"]);
        assert_eq!(
            notice_kinds(&effects),
            [(NoticeKind::Up, "ops".to_string())]
        );
        assert_eq!(rig.target("mx").tracker.health(), Health::Up);
    }

    /// Quorum 2 of three vantages: one DOWN is partial, two are DOWN (the action runs),
    /// and one of them recovering brings the monitor UP again while the other keeps it
    /// partial.
    #[test]
    fn quorum_n_counts_vantages() {
        let mut rig = Rig::with(vantage_config(
            VANTAGE,
            &["local", "a", "b"],
            Quorum::AtLeast(2),
        ));
        rig.watch.set_agents("a", 1);
        rig.watch.set_agents("b", 1);
        rig.run_from(2, &everywhere);
        let effects = rig.run_from(3, &|v, _| v != "b");
        assert_eq!(actions(&effects), vec![]);
        assert!(rig.target("mx").partial);
        let effects = rig.run_from(3, &|v, _| v == "local");
        assert_eq!(
            actions(&effects),
            [("restart".to_string(), Trigger::Down, Verdict::Run)]
        );
        assert_eq!(
            notices(&effects)
                .iter()
                .map(|n| (n.kind, n.items[0].reason.clone().unwrap()))
                .collect::<Vec<_>>(),
            [(
                NoticeKind::Down,
                "up from local, down from a (3/3), down from b (3/3)".to_string()
            )]
        );
        let t = rig.target("mx");
        assert_eq!((t.tracker.health(), t.partial), (Health::Down, false));
        // a heals: one vantage of three sees it DOWN, fewer than 2: UP and partial.
        let effects = rig.run_from(2, &|v, _| v != "b");
        let t = rig.target("mx");
        assert_eq!((t.tracker.health(), t.partial), (Health::Up, true));
        let kinds: Vec<NoticeKind> = notices(&effects).iter().map(|n| n.kind).collect();
        assert_eq!(kinds, [NoticeKind::Up, NoticeKind::Partial]);
    }

    /// A pool with no live agent is a warning about the fleet: it gets no checks, shows
    /// `no-agents`, and is never counted as DOWN (nor as UP: a DOWN verdict holds when the
    /// other vantage goes blind, rather than "recovering" for lack of eyes).
    #[test]
    fn a_pool_without_agents_is_no_agents_and_never_a_verdict() {
        let mut rig = Rig::with(vantage_config(VANTAGE, &["a", "b"], Quorum::All));
        rig.watch.set_agents("a", 1);
        // b never had agents: everything probed from b would fail, but nothing is.
        let (_, vantages) = rig.step_from(&dropped_from_b);
        assert!(vantages.iter().all(|v| v == "a"), "{vantages:?}");
        let effects = rig.run_from(6, &dropped_from_b);
        assert_eq!(actions(&effects), vec![]);
        assert!(notices(&effects).is_empty(), "{:?}", notice_kinds(&effects));
        assert_eq!(rig.target("mx").tracker.health(), Health::Up);
        let m = rig.watch.monitor("mx").unwrap();
        let v = m.vantage_summaries();
        assert_eq!((v[1].state, v[1].agents), ("no-agents", Some(0)));
        assert!(v[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("no live agent in pool b"));
        assert_eq!(m.describe(rig.target("mx")), "up from a, no agents in b");

        // Both see it DOWN: DOWN. Then b loses its agents while a still sees it DOWN: the
        // verdict holds, with no recovery notice and no second action.
        rig.watch.set_agents("b", 2);
        let effects = rig.run_from(4, &nowhere);
        assert_eq!(actions(&effects).len(), 1);
        assert_eq!(rig.target("mx").tracker.health(), Health::Down);
        assert!(rig.watch.set_agents("b", 0));
        let effects = rig.run_from(4, &nowhere);
        assert!(notices(&effects).is_empty(), "{:?}", notice_kinds(&effects));
        assert!(actions(&effects).is_empty());
        assert_eq!(rig.target("mx").tracker.health(), Health::Down);
        // a sees it UP again: that is a verdict from the only vantage with eyes.
        let effects = rig.run_from(2, &everywhere);
        assert_eq!(
            notice_kinds(&effects),
            [(NoticeKind::Up, "ops".to_string())]
        );
    }

    /// The verdict flaps when the vantages that see the target DOWN come and go (quorum
    /// any): reported once as flapping, and the action runs no more than before it flapped.
    #[test]
    fn flapping_across_vantages_is_reported_once() {
        let mut rig = two_pools(Quorum::Any);
        let mut effects = Vec::new();
        // b down 3 rounds (DOWN), then all up 2 (UP), then a down 3, all up 2, ...
        for i in 0..6 {
            let bad = if i % 2 == 0 { "b" } else { "a" };
            effects.extend(rig.run_from(3, &|v, _| v != bad));
            effects.extend(rig.run_from(2, &everywhere));
        }
        let kinds: Vec<NoticeKind> = notices(&effects).iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == NoticeKind::Flapping).count(),
            1,
            "{kinds:?}"
        );
        let runs = actions(&effects)
            .iter()
            .filter(|a| a.2 == Verdict::Run)
            .count();
        assert_eq!(
            runs, 2,
            "DOWN, UP, DOWN, then the 4th change starts flapping"
        );
        assert!(rig.target("mx").tracker.flapping);
        assert_eq!(rig.watch.monitor("mx").unwrap().overall(), "flapping");
    }

    /// `from = ["local"]` said out loud is the default, and judges exactly as monitors did
    /// before vantage points: the same effects, step by step, for a run with an outage,
    /// escalation, recovery and flapping.
    #[test]
    fn from_local_alone_behaves_exactly_as_before() {
        let explicit = CONFIG.replace(
            "group_wait = \"500ms\"",
            "group_wait = \"500ms\"\nfrom = [\"local\"]\nquorum = \"all\"",
        );
        let mut a = Rig::new(CONFIG);
        let mut b = Rig::new(&explicit);
        let flappy = |ip: IpAddr| ip != IpAddr::from([127, 0, 0, 1]);
        let plan: Vec<&dyn Fn(IpAddr) -> bool> = [
            vec![&all_up as &dyn Fn(IpAddr) -> bool; 2],
            vec![&none_up; 8],
            vec![&all_up; 2],
            [&flappy as &dyn Fn(IpAddr) -> bool, &flappy, &all_up].repeat(5),
        ]
        .concat();
        for (i, up) in plan.into_iter().enumerate() {
            let (ea, eb) = (a.step(up), b.step(up));
            assert_eq!(format!("{ea:?}"), format!("{eb:?}"), "step {i}");
        }
        let (ma, mb) = (
            a.watch.monitor("web").unwrap(),
            b.watch.monitor("web").unwrap(),
        );
        assert_eq!(ma.counts(), mb.counts());
        for (ta, tb) in ma.targets.values().zip(mb.targets.values()) {
            assert_eq!(ta.tracker, tb.tracker);
            // The one vantage's tracker is the target's.
            assert_eq!(tb.vantages.len(), 1);
            assert_eq!(tb.vantages[0].tracker, tb.tracker);
        }
    }

    fn samples(effects: &[Effect]) -> Vec<&Sample> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Save(Save::Sample(s)) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_batch_of_checks_is_summed_in_a_sample_for_the_status_page() {
        let mut rig = Rig::new(CONFIG);
        // Two of three up: one sample per batch, passing round trips summed, the first
        // failure named; a record for an address the monitor does not watch is ignored, and
        // so is a check skipped for a local shortage.
        let mut all = Vec::new();
        for _ in 0..2 {
            all.extend(rig.step_records(&|ip, port| match ip.to_string().as_str() {
                "127.0.0.1" => ProbeRecord::new(ip, port, PortState::Open, 100, 1),
                "127.0.0.2" => ProbeRecord::new(ip, port, PortState::Open, 300, 1),
                _ => emfile(ip, port),
            }));
        }
        let s = samples(&all);
        assert!(!s.is_empty());
        // The first round is due within one interval: one or two rounds have run.
        for s in &s {
            assert_eq!((s.checks, s.rtt_sum_us), (2, 400), "{s:?}");
        }
        assert!(s.iter().all(|s| s.fails == 0 && s.reason.is_none()));
        assert_eq!(s.iter().map(|s| s.rtt_max_us).max(), Some(300));
        let down = rig.step(&|ip| ip.to_string() != "127.0.0.3");
        let s = samples(&down);
        assert_eq!(s.iter().map(|s| s.fails).sum::<u32>(), 1, "{s:?}");
        let reason = s.iter().find_map(|s| s.reason.clone()).unwrap();
        assert_eq!(reason, "127.0.0.3:80: closed (connection refused)");
        // Nothing but shortages: no sample at all.
        assert!(samples(&rig.step_records(&emfile)).is_empty());
        let stray = Sample::of(
            "web",
            &[open("10.9.9.9".parse().unwrap(), 80)],
            StateMap::default(),
            |_, _| false,
            1,
        );
        assert_eq!(stray, None);
    }

    #[test]
    fn a_samples_certificate_end_is_the_first_of_the_chain_to_expire() {
        let cert = |subject: &str, not_after| porthawk_core::CertInfo {
            subject: subject.into(),
            issuer: "CN=Root".into(),
            not_before: 0,
            not_after,
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut r = open(ip, 443);
        r.tls = Some(porthawk_core::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: String::new(),
            cert: Some(cert("CN=www", 9_000_000)),
            expires_first: Some(cert("CN=Intermediate", 1_000_000)),
        });
        let s = Sample::of("web", &[r], StateMap::default(), |_, _| true, 1).unwrap();
        assert_eq!(s.cert_not_after, Some(1_000_000));
    }
}
