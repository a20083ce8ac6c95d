//! The monitoring part of `porthawk.toml`: `[[monitor]]`, `[action.NAME]`, `[notify.NAME]`,
//! `allow_reboot` and `retention`, parsed and validated into a [`WatchConfig`], the typed
//! model the rest of the watch runs on.
//!
//! Every error names the file, the line and the field (`porthawk.toml:12: monitor[0].interval:
//! ...`): toml's own errors carry a byte span, and the fields this module checks itself are
//! read as `toml::Spanned` so that their span is known too.
//!
//! Parsing is sans-IO: the caller reads the file and passes a [`Resolve`] function for the
//! host names among the targets (the server resolves on a blocking thread).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use porthawk_core::{
    parse_duration, parse_target, AddressMode, FamilyChoice, HostSet, HostSetBuilder, IpFamily,
    PortSet, ProbeSpec, TargetToken,
};
use serde::Deserialize;
use toml::Spanned;

mod agent_file;
pub use agent_file::{parse_agent_actions, AgentActions};

/// Why a configuration was rejected: the file, the line and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// The line, counted from 1.
    pub line: usize,
    /// The field, as a path: `monitor[0].interval`, `action.restart.exec`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The monitors, actions and notifications of a configuration.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The monitors, in file order.
    pub monitors: Vec<Arc<MonitorSpec>>,
    /// The actions by name.
    pub actions: BTreeMap<String, Arc<ActionSpec>>,
    /// The notification channels by name.
    pub notifiers: BTreeMap<String, Arc<NotifySpec>>,
    /// Whether `reboot` actions may run.
    pub allow_reboot: bool,
    /// How long history (checks, events, actions, notifications) is kept.
    pub retention: Duration,
    /// The scheduled sweeps (`[[sweep]]`), in file order.
    pub sweeps: Vec<Arc<SweepSchedule>>,
    /// The probe modules of `/probe` (`[module.NAME]`), by name.
    pub modules: BTreeMap<String, Arc<ProbeModule>>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            monitors: Vec::new(),
            actions: BTreeMap::new(),
            notifiers: BTreeMap::new(),
            allow_reboot: false,
            retention: DEFAULT_RETENTION,
            sweeps: Vec::new(),
            modules: BTreeMap::new(),
        }
    }
}

/// History kept unless `retention` says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// What a monitor does on a state change: run an action, or notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// Run `[action.NAME]`.
    Action(String),
    /// Send through `[notify.NAME]`.
    Notify(String),
}

/// When a target is UP, DOWN or flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failures before DOWN.
    pub fail_after: u32,
    /// Consecutive successes before UP again.
    pub recover_after: u32,
    /// State changes within `flap_window` that make a target flapping.
    pub flap_changes: u32,
    /// The window of flap detection, in milliseconds.
    pub flap_window_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            fail_after: 3,
            recover_after: 2,
            flap_changes: 6,
            flap_window_ms: 30 * 60_000,
        }
    }
}

/// The vantage point of `porthawk serve`'s own engine: every monitor's default `from`.
pub const LOCAL_VANTAGE: &str = "local";

/// How many of a monitor's vantage points must see a target DOWN before the monitor calls it
/// DOWN (`quorum = "all" | "any" | N`). Fewer than that, but at least one, is `partial`: a
/// path or regional problem, shown and notified (`on_partial`), never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// Every vantage of `from` (the default). A vantage without live agents counts neither
    /// way, so while a pool has no agents such a monitor cannot go DOWN.
    All,
    /// Any one vantage.
    Any,
    /// At least this many vantages (1 to the number in `from`).
    AtLeast(u32),
}

impl Quorum {
    /// The vantages that must see a target DOWN, out of `vantages`.
    pub fn needed(self, vantages: usize) -> usize {
        match self {
            Quorum::All => vantages.max(1),
            Quorum::Any => 1,
            Quorum::AtLeast(n) => n as usize,
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::All => f.write_str("all"),
            Quorum::Any => f.write_str("any"),
            Quorum::AtLeast(n) => write!(f, "{n}"),
        }
    }
}

/// One `[[monitor]]`.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    /// Its unique name.
    pub name: String,
    /// The group the status page shows it in (default: its name).
    pub group: String,
    /// The targets as written.
    pub targets: Vec<String>,
    /// The addresses and ranges among them.
    pub hosts: HostSet,
    /// The host names among them, resolved at every check (each a target of its own,
    /// judged over its addresses by `addresses`).
    pub names: Vec<Arc<str>>,
    /// How a name's addresses make its verdict (`addresses = "any"|"all"`).
    pub addresses: AddressMode,
    /// Which of a name's addresses are probed (`ip_family`, `prefer_family`).
    pub family: FamilyChoice,
    /// The ports.
    pub ports: PortSet,
    /// How often every target-port is checked.
    pub interval: Duration,
    /// How each target-port is probed.
    pub spec: ProbeSpec,
    /// The same probe in the fleet's wire form, for rounds run by a pool's agents.
    pub wire_probe: porthawk_core::SweepProbe,
    /// A short description of the probe (`connect`, `preset smtp`, `send/expect`).
    pub probe: String,
    /// UP/DOWN/flapping thresholds.
    pub thresholds: Thresholds,
    /// What happens when the monitor goes DOWN: actions in escalation order, and
    /// notifications.
    pub on_down: Vec<Reaction>,
    /// What happens when it recovers.
    pub on_up: Vec<Reaction>,
    /// How often a still-DOWN monitor is notified again.
    pub remind: Option<Duration>,
    /// How long notifications wait to be grouped with those of other targets.
    pub group_wait: Duration,
    /// The vantage points it probes from, in order: [`LOCAL_VANTAGE`] (this server's engine)
    /// and fleet pools. Never empty, no duplicates; default `["local"]`.
    pub from: Vec<Arc<str>>,
    /// How many vantages must see a target DOWN.
    pub quorum: Quorum,
    /// The notifications of a partial outage (some vantages, fewer than the quorum, see a
    /// target DOWN). Only `[notify.NAME]`s: a partial outage never runs an action.
    pub on_partial: Vec<String>,
    /// What a refused connection and a reply that did not match come to (`refused`,
    /// `mismatch`).
    pub states: StateMap,
    /// A digest of everything that decides how it probes; equal digests probe alike.
    pub fingerprint: String,
}

/// What a check's refused connection and its reply that did not match come to: check_tcp's
/// `--refused` and `--mismatch`, for monitors (`refused = "ok"`, `mismatch = "ok"`) and the
/// modules of `/probe`. Monitors are UP or DOWN, so `"ok"` and `"critical"` (the default) are
/// the values; `"warning"` is refused with a message that says why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateMap {
    /// `refused = "ok"`: the port must stay closed. A refused connection passes and an
    /// accepted one fails (`open: accepts connections, but refused = "ok" wants it
    /// closed`); no answer, or an unreachable host, fails as always.
    pub must_stay_closed: bool,
    /// `mismatch = "ok"`: a reply that did not match passes (silence, a reset or a failed
    /// TLS handshake still fails).
    pub mismatch_ok: bool,
}

impl StateMap {
    /// Reads `"ok"` or `"critical"`: whether the outcome passes. The message names the
    /// values.
    pub fn parse_state(text: &str) -> Result<bool, String> {
        match text {
            "ok" => Ok(true),
            "critical" => Ok(false),
            "warning" | "warn" => Err(
                "monitors and /probe are UP or DOWN, with no WARNING state: give \"ok\" or \"critical\""
                    .into(),
            ),
            other => Err(format!("'{other}' is not a state: give \"ok\" or \"critical\"")),
        }
    }
}

impl MonitorSpec {
    /// Target-ports checked per round.
    pub fn size(&self) -> u64 {
        (self.hosts.len() as u64 + self.names.len() as u64).saturating_mul(self.ports.len() as u64)
    }

    /// The actions of `on_down`, in escalation order.
    pub fn down_actions(&self) -> impl Iterator<Item = &str> {
        reactions(&self.on_down, true)
    }

    /// The notifiers of `on_down`.
    pub fn down_notifiers(&self) -> impl Iterator<Item = &str> {
        reactions(&self.on_down, false)
    }

    /// The actions of `on_up`.
    pub fn up_actions(&self) -> impl Iterator<Item = &str> {
        reactions(&self.on_up, true)
    }

    /// The notifiers of `on_up`.
    pub fn up_notifiers(&self) -> impl Iterator<Item = &str> {
        reactions(&self.on_up, false)
    }

    /// Whether it probes from more than one vantage point (then a target's verdict is the
    /// quorum's, not one tracker's).
    pub fn multi_vantage(&self) -> bool {
        self.from.len() > 1
    }
}

fn reactions(list: &[Reaction], actions: bool) -> impl Iterator<Item = &str> {
    list.iter().filter_map(move |r| match r {
        Reaction::Action(n) if actions => Some(n.as_str()),
        Reaction::Notify(n) if !actions => Some(n.as_str()),
        _ => None,
    })
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// Run this argv, without a shell.
    Exec(Vec<String>),
    /// `systemctl restart UNIT`.
    Restart(String),
    /// `systemctl reboot`, only with `allow_reboot = true`.
    Reboot,
    /// Ask a fleet agent to run one of the actions its own file defines (`agent = ...`,
    /// `run = ...`): only the name travels, never a command.
    Remote {
        /// Which agent.
        agent: RemoteAgent,
        /// The name of the action in the agent's file.
        run: String,
    },
}

/// The agent a remote action asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAgent {
    /// `agent = "web-1"`.
    Named(String),
    /// `agent = "{target}"`: the agent whose declared addresses or names match the failing
    /// target.
    Target,
}

impl std::fmt::Display for RemoteAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteAgent::Named(name) => f.write_str(name),
            RemoteAgent::Target => f.write_str("{target}"),
        }
    }
}

impl ActionKind {
    /// The command line it runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            ActionKind::Exec(argv) => argv.clone(),
            ActionKind::Restart(unit) => vec!["systemctl".into(), "restart".into(), unit.clone()],
            ActionKind::Reboot => vec!["systemctl".into(), "reboot".into()],
            // The agent's file says what it runs; the coordinator never knows.
            ActionKind::Remote { .. } => Vec::new(),
        }
    }

    /// `exec`, `restart` or `reboot`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionKind::Exec(_) => "exec",
            ActionKind::Restart(_) => "restart",
            ActionKind::Reboot => "reboot",
            ActionKind::Remote { .. } => "remote",
        }
    }
}

/// One `[action.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// Its name.
    pub name: String,
    /// What it runs.
    pub kind: ActionKind,
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// The least time between two runs.
    pub cooldown: Duration,
    /// The most runs in any hour.
    pub max_per_hour: u32,
    /// Checks to wait for a recovery before the next action of `on_down` runs.
    pub escalate_after: u32,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text (`smtp://` without `starttls`).
    None,
    /// `STARTTLS` after the greeting (`smtp://` with `starttls = true`).
    StartTls,
    /// TLS from the start (`smtps://`).
    Implicit,
}

/// An `email = {...}` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSpec {
    /// The SMTP server.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is secured.
    pub security: SmtpSecurity,
    /// The sender.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Login, if the server needs one.
    pub credentials: Option<(String, String)>,
}

/// An `http://` or `https://` URL with a host and no credentials: where a webhook posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    /// Parses `http://host[:port]/path` or `https://...` (by the `url` crate, WHATWG rules).
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("'{text}': {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("'{text}' is not an http:// or https:// URL"));
        }
        // A password would be echoed in every record and error that names the URL.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "'{text}': credentials in the URL are not supported"
            ));
        }
        Ok(HttpUrl(url))
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    if host.is_empty() || host.contains(':') {
        return None;
    }
    Some((host.to_string(), port))
}

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// An email through SMTP.
    Email(EmailSpec),
    /// A JSON POST: `monitor, target, port, state, reason, time` and the grouped `targets`.
    Webhook(HttpUrl),
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack(HttpUrl),
}

impl Channel {
    /// `email`, `webhook` or `slack`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Email(_) => "email",
            Channel::Webhook(_) => "webhook",
            Channel::Slack(_) => "slack",
        }
    }
}

/// One `[notify.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySpec {
    /// Its name.
    pub name: String,
    /// Where it sends.
    pub channel: Channel,
    /// Delivery attempts after the first, with exponential backoff.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub backoff: Duration,
}

// ------------------------------------------------------------------------------------------
// The file as written.

/// The whole of `porthawk.toml`, every section a `deny_unknown_fields` type: the one type
/// the server and the monitors read the file as ([`parse_file`]), once, and again on
/// reload. The monitor parts are read into a [`WatchConfig`] by [`WatchConfig::from_file`];
/// `[api]` is the server's to check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[api]`: where the server listens and what it allows.
    #[serde(default)]
    pub api: Option<ApiSection>,
    #[serde(default)]
    monitor: Vec<Spanned<RawMonitor>>,
    #[serde(default)]
    action: BTreeMap<String, Spanned<RawAction>>,
    #[serde(default)]
    notify: BTreeMap<String, Spanned<RawNotify>>,
    #[serde(default)]
    allow_reboot: Option<bool>,
    #[serde(default)]
    retention: Option<Spanned<String>>,
    #[serde(default)]
    sweep: Vec<Spanned<RawSweep>>,
    #[serde(default)]
    module: BTreeMap<String, Spanned<RawModule>>,
    /// `[fleet]`: the NATS server of fleet mode and the agents it knows.
    #[serde(default)]
    pub fleet: Option<Spanned<FleetSection>>,
}

impl ConfigFile {
    /// Whether the file turns fleet mode on (`[fleet]`), so that monitors may probe from
    /// pools of agents; without it only `local` is allowed in `from`.
    pub fn fleet_mode(&self) -> bool {
        self.fleet.is_some()
    }

    /// The pools `[fleet] pools` lists (their consumers exist, so their agents can bind):
    /// the only pools a monitor may probe from.
    pub fn fleet_pools(&self) -> BTreeSet<String> {
        self.fleet
            .iter()
            .flat_map(|f| f.get_ref().pools.iter().flatten())
            .map(|p| p.get_ref().clone())
            .collect()
    }
}

/// `[api]` as written. The server checks the values; the spans give its errors their line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The address and port the HTTP API listens on.
    pub listen: Option<Spanned<String>>,
    /// The bearer token.
    pub token: Option<Spanned<String>>,
    /// What API sweeps may reach: addresses, blocks and ranges.
    pub allow: Option<Vec<Spanned<String>>>,
    /// The largest request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// The most probes one sweep may hold.
    pub max_sweep_probes: Option<u64>,
    /// The most sweeps running at once.
    pub max_concurrent_sweeps: Option<usize>,
    /// The most client connections held at once.
    pub max_connections: Option<Spanned<usize>>,
    /// How long a client may take to send a request head.
    pub header_timeout: Option<Spanned<String>>,
    /// How long the server waits for a request body.
    pub idle_timeout: Option<Spanned<String>>,
    /// Host names `Host` may carry besides the listen address and loopback names.
    pub hosts: Option<Vec<Spanned<String>>>,
    /// Routes open without the token when one is set.
    pub public: Option<Vec<Spanned<String>>>,
    /// The most ended sweeps kept.
    pub keep_sweeps: Option<Spanned<u64>>,
    /// How long an ended sweep is kept.
    pub keep_sweeps_for: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    name: Spanned<String>,
    #[serde(default)]
    group: Option<String>,
    targets: Spanned<Vec<Spanned<String>>>,
    ports: Spanned<toml::Value>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    tries: Option<Spanned<i64>>,
    #[serde(default)]
    preset: Option<Spanned<String>>,
    #[serde(default)]
    send: Option<Spanned<String>>,
    #[serde(default)]
    expect: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<bool>,
    // TLS checks (issue 11 items 5, 6, 13, 14).
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    tls_ca_file: Option<Spanned<String>>,
    #[serde(default)]
    sni: Option<Spanned<String>>,
    #[serde(default)]
    tls_cert: Option<Spanned<String>>,
    #[serde(default)]
    tls_key: Option<Spanned<String>>,
    #[serde(default)]
    expect_alert: Option<Spanned<String>>,
    #[serde(default)]
    read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    dialog_timeout: Option<Spanned<String>>,
    #[serde(default)]
    fail_after: Option<Spanned<i64>>,
    #[serde(default)]
    recover_after: Option<Spanned<i64>>,
    #[serde(default)]
    flap_changes: Option<Spanned<i64>>,
    #[serde(default)]
    flap_window: Option<Spanned<String>>,
    #[serde(default)]
    on_down: Vec<Spanned<String>>,
    #[serde(default)]
    on_up: Vec<Spanned<String>>,
    #[serde(default)]
    remind: Option<Spanned<String>>,
    #[serde(default)]
    group_wait: Option<Spanned<String>>,
    #[serde(default)]
    from: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    quorum: Option<Spanned<toml::Value>>,
    #[serde(default)]
    on_partial: Vec<Spanned<String>>,
    // Names with several addresses.
    #[serde(default)]
    addresses: Option<Spanned<String>>,
    #[serde(default)]
    ip_family: Option<Spanned<String>>,
    #[serde(default)]
    prefer_family: Option<Spanned<String>>,
    /// Dialog steps in order: `steps = [{ send = "..." }, { expect = "..." }]`.
    #[serde(default)]
    steps: Option<Spanned<Vec<porthawk_core::ProbeStep>>>,
    #[serde(default)]
    quit: Option<Spanned<String>>,
    #[serde(default)]
    expect_all: Option<bool>,
    #[serde(default)]
    max_reply: Option<Spanned<i64>>,
    // check_tcp's state mapping (issue 11 item 10).
    /// `"ok"`: the port must stay closed.
    #[serde(default)]
    refused: Option<Spanned<String>>,
    /// `"ok"`: a reply that did not match passes.
    #[serde(default)]
    mismatch: Option<Spanned<String>>,
    /// Keep the peer's bytes out of reasons (history, notifications, the status page).
    #[serde(default)]
    jail: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(default)]
    exec: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    restart: Option<Spanned<String>>,
    #[serde(default)]
    reboot: Option<Spanned<bool>>,
    /// A remote action: the agent to ask (a name or `{target}`), with `run`.
    #[serde(default)]
    agent: Option<Spanned<String>>,
    /// A remote action: the name of the action in the agent's file.
    #[serde(default)]
    run: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    cooldown: Option<Spanned<String>>,
    #[serde(default)]
    max_per_hour: Option<Spanned<i64>>,
    #[serde(default)]
    escalate_after: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    #[serde(default)]
    email: Option<Spanned<RawEmail>>,
    #[serde(default)]
    webhook: Option<Spanned<RawUrl>>,
    #[serde(default)]
    slack: Option<Spanned<RawUrl>>,
    #[serde(default)]
    retries: Option<Spanned<i64>>,
    #[serde(default)]
    backoff: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp: Spanned<String>,
    from: Spanned<String>,
    to: Spanned<Vec<String>>,
    #[serde(default)]
    starttls: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: Spanned<String>,
}

// ------------------------------------------------------------------------------------------
// Parsing and validation.

/// Parses and validates the monitoring part of a `porthawk.toml` text; `file` names it in
/// errors. Host names among the targets are kept as names: the runtime resolves them at
/// every check, so that a name that stops (or starts) resolving is a verdict, not a config
/// error.
pub fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
    let parsed = parse_file(file, text)?;
    WatchConfig::from_file(file, text, &parsed)
}

/// Reads a `porthawk.toml` text as the one [`ConfigFile`] type. An error names the file, the
/// line (from the span toml gives) and the field path (from `serde_path_to_error`):
/// `porthawk.toml:11: monitor[0].intervl: unknown field ...`.
pub fn parse_file(file: &str, text: &str) -> Result<ConfigFile, ConfigError> {
    let cx = Lines { file, text };
    let de = toml::Deserializer::parse(text).map_err(|e| cx.toml_error(&e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = field_path(e.path());
        cx.toml_error(e.inner(), Some(path))
    })
}

/// A field path as the config's errors write it (`monitor[0].interval`,
/// `notify.m.email.smtp`): the keys and indices serde went through, without the private
/// keys of `toml::Spanned`.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Lines of a config text, for errors.
struct Lines<'a> {
    file: &'a str,
    text: &'a str,
}

impl Lines<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: self.line(span.start),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A toml error: its span gives the line, `path` the field (none for a syntax error,
    /// which is reported as `(toml)`).
    fn toml_error(&self, e: &toml::de::Error, path: Option<String>) -> ConfigError {
        let message = e.message().trim().replace('\n', " ");
        let field = match path {
            Some(p) if !p.is_empty() => p,
            Some(_) => "(file)".to_string(),
            None => "(toml)".to_string(),
        };
        ConfigError {
            file: self.file.to_string(),
            line: e.span().map_or(0, |s| self.line(s.start)),
            field,
            message,
        }
    }
}

impl WatchConfig {
    /// The monitors, actions and notifications of a parsed file, checked; `file` and `text`
    /// name the file and give the lines of errors.
    pub fn from_file(file: &str, text: &str, raw: &ConfigFile) -> Result<WatchConfig, ConfigError> {
        let cx = Cx {
            lines: Lines { file, text },
            fleet: raw.fleet_mode(),
            pools: raw.fleet_pools(),
        };
        let mut config = WatchConfig {
            allow_reboot: raw.allow_reboot.unwrap_or(false),
            ..WatchConfig::default()
        };
        if let Some(r) = &raw.retention {
            config.retention = cx.duration(r, "retention", Duration::from_secs(60))?;
        }
        for (name, action) in &raw.action {
            let spec = cx.action(name, action)?;
            config.actions.insert(name.clone(), Arc::new(spec));
        }
        for (name, notify) in &raw.notify {
            let field = format!("notify.{name}");
            if config.actions.contains_key(name) {
                return Err(cx.err(
                    notify.span(),
                    &field,
                    format!(
                        "'{name}' names both an action and a notification; names must be unique"
                    ),
                ));
            }
            let spec = cx.notify(name, notify)?;
            config.notifiers.insert(name.clone(), Arc::new(spec));
        }
        let mut names = BTreeSet::new();
        for (i, m) in raw.monitor.iter().enumerate() {
            let spec = cx.monitor(i, m, &config)?;
            if !names.insert(spec.name.clone()) {
                let m = m.get_ref();
                return Err(cx.err(
                    m.name.span(),
                    &format!("monitor[{i}].name"),
                    format!("a monitor named '{}' is defined twice", spec.name),
                ));
            }
            config.monitors.push(Arc::new(spec));
        }
        cx.sweeps_and_modules(raw, &mut config)?;
        Ok(config)
    }
}

/// Span-named errors for a field the checks find wrong.
pub fn span_error(
    file: &str,
    text: &str,
    span: Range<usize>,
    field: &str,
    message: impl Into<String>,
) -> ConfigError {
    Lines { file, text }.err(span, field, message)
}

struct Cx<'a> {
    lines: Lines<'a>,
    /// Whether the file has `[fleet]`: monitors may then name pools in `from`.
    fleet: bool,
    /// The pools of `[fleet] pools`.
    pools: BTreeSet<String>,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        self.lines.err(span, field, message)
    }

    fn duration(
        &self,
        value: &Spanned<String>,
        field: &str,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = parse_duration(value.get_ref()).map_err(|m| self.err(value.span(), field, m))?;
        if d < min {
            return Err(self.err(
                value.span(),
                field,
                format!("'{}' is too short: at least {min:?}", value.get_ref()),
            ));
        }
        Ok(d)
    }

    fn count(
        &self,
        value: &Spanned<i64>,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<u32, ConfigError> {
        let v = *value.get_ref();
        if !range.contains(&v) {
            return Err(self.err(
                value.span(),
                field,
                format!("{v} is out of range: {} to {}", range.start(), range.end()),
            ));
        }
        Ok(v as u32)
    }

    fn action(&self, name: &str, raw: &Spanned<RawAction>) -> Result<ActionSpec, ConfigError> {
        let f = |key: &str| format!("action.{name}.{key}");
        check_name(name).map_err(|m| self.err(raw.span(), &format!("action.{name}"), m))?;
        let a = raw.get_ref();
        let remote = a.agent.is_some() || a.run.is_some();
        if !exactly_one(&[
            a.exec.is_some(),
            a.restart.is_some(),
            a.reboot.is_some(),
            remote,
        ]) {
            return Err(self.err(
                raw.span(),
                &format!("action.{name}"),
                "needs exactly one of exec = [argv...], restart = \"unit\", reboot = true or \
                 agent = \"NAME\" with run = \"ACTION\"",
            ));
        }
        let kind = if remote {
            self.remote(name, raw)?
        } else if let Some(exec) = &a.exec {
            let argv = exec.get_ref();
            if argv.is_empty() || argv[0].trim().is_empty() {
                return Err(self.err(exec.span(), &f("exec"), "needs a program and its arguments"));
            }
            ActionKind::Exec(argv.clone())
        } else if let Some(unit) = &a.restart {
            let u = unit.get_ref();
            if u.is_empty() || u.starts_with('-') || u.contains(char::is_whitespace) {
                return Err(self.err(
                    unit.span(),
                    &f("restart"),
                    format!("'{u}' is not a systemd unit name"),
                ));
            }
            ActionKind::Restart(u.clone())
        } else {
            match &a.reboot {
                Some(r) if *r.get_ref() => ActionKind::Reboot,
                Some(r) => {
                    return Err(self.err(
                        r.span(),
                        &f("reboot"),
                        "only reboot = true is meaningful",
                    ))
                }
                None => unreachable!("exactly one kind was given"),
            }
        };
        let timeout = match &a.timeout {
            Some(t) => self.duration(t, &f("timeout"), Duration::from_millis(10))?,
            None => Duration::from_secs(30),
        };
        let cooldown = match &a.cooldown {
            Some(t) => self.duration(t, &f("cooldown"), Duration::ZERO)?,
            None => Duration::from_secs(300),
        };
        let max_per_hour = match &a.max_per_hour {
            Some(n) => self.count(n, &f("max_per_hour"), 1..=3600)?,
            None => 6,
        };
        let escalate_after = match &a.escalate_after {
            Some(n) => self.count(n, &f("escalate_after"), 1..=1_000_000)?,
            None => 3,
        };
        Ok(ActionSpec {
            name: name.to_string(),
            kind,
            timeout,
            cooldown,
            max_per_hour,
            escalate_after,
        })
    }

    /// `agent` and `run` of a remote action: both, only with `[fleet]`; `agent` a fleet
    /// agent name or `{target}`, `run` an action name.
    fn remote(&self, name: &str, raw: &Spanned<RawAction>) -> Result<ActionKind, ConfigError> {
        let f = |key: &str| format!("action.{name}.{key}");
        let a = raw.get_ref();
        let (Some(agent), Some(run)) = (&a.agent, &a.run) else {
            let missing = if a.agent.is_none() { "agent" } else { "run" };
            return Err(self.err(
                raw.span(),
                &f(missing),
                "missing: a remote action needs both agent = \"NAME\" (or \"{target}\") and \
                 run = \"ACTION\" (an action of the agent's own file)",
            ));
        };
        if !self.fleet {
            return Err(self.err(
                agent.span(),
                &f("agent"),
                "a remote action needs fleet mode: add a [fleet] section",
            ));
        }
        let target = agent.get_ref() == "{target}";
        if !target && porthawk_core::FleetName::new("agent", agent.get_ref()).is_err() {
            return Err(self.err(
                agent.span(),
                &f("agent"),
                format!(
                    "'{}' is neither an agent name (1 to 64 of A-Z a-z 0-9 _ -) nor \"{{target}}\"",
                    agent.get_ref()
                ),
            ));
        }
        if !porthawk_core::is_action_name(run.get_ref()) {
            return Err(self.err(
                run.span(),
                &f("run"),
                format!(
                    "'{}' is not an action name (1 to 64 of letters, digits, '-', '_' and '.')",
                    run.get_ref()
                ),
            ));
        }
        Ok(ActionKind::Remote {
            agent: if target {
                RemoteAgent::Target
            } else {
                RemoteAgent::Named(agent.get_ref().clone())
            },
            run: run.get_ref().clone(),
        })
    }

    fn notify(&self, name: &str, raw: &Spanned<RawNotify>) -> Result<NotifySpec, ConfigError> {
        let f = |key: &str| format!("notify.{name}.{key}");
        check_name(name).map_err(|m| self.err(raw.span(), &format!("notify.{name}"), m))?;
        let n = raw.get_ref();
        if !exactly_one(&[n.email.is_some(), n.webhook.is_some(), n.slack.is_some()]) {
            return Err(self.err(
                raw.span(),
                &format!("notify.{name}"),
                "needs exactly one of email = {...}, webhook = { url } or slack = { url }",
            ));
        }
        let url = |u: &Spanned<RawUrl>, key: &str| {
            let url = &u.get_ref().url;
            HttpUrl::parse(url.get_ref()).map_err(|m| self.err(url.span(), &f(key), m))
        };
        let channel = if let Some(e) = &n.email {
            Channel::Email(self.email(name, e)?)
        } else if let Some(w) = &n.webhook {
            Channel::Webhook(url(w, "webhook.url")?)
        } else if let Some(s) = &n.slack {
            Channel::Slack(url(s, "slack.url")?)
        } else {
            unreachable!("exactly one channel was given")
        };
        let retries = match &n.retries {
            Some(r) => self.count(r, &f("retries"), 0..=20)?,
            None => 4,
        };
        let backoff = match &n.backoff {
            Some(b) => self.duration(b, &f("backoff"), Duration::from_millis(1))?,
            None => Duration::from_secs(2),
        };
        Ok(NotifySpec {
            name: name.to_string(),
            channel,
            retries,
            backoff,
        })
    }

    fn email(&self, name: &str, raw: &Spanned<RawEmail>) -> Result<EmailSpec, ConfigError> {
        let f = |key: &str| format!("notify.{name}.email.{key}");
        let e = raw.get_ref();
        let smtp = e.smtp.get_ref();
        let (implicit, rest) = if let Some(r) = smtp.strip_prefix("smtp://") {
            (false, r)
        } else if let Some(r) = smtp.strip_prefix("smtps://") {
            (true, r)
        } else {
            return Err(self.err(
                e.smtp.span(),
                &f("smtp"),
                format!("'{smtp}' is not an smtp://host:port or smtps://host:port URL"),
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) =
            split_host_port(rest, if implicit { 465 } else { 25 }).ok_or_else(|| {
                self.err(
                    e.smtp.span(),
                    &f("smtp"),
                    format!("'{smtp}' has no valid host and port"),
                )
            })?;
        let security = match (implicit, e.starttls.unwrap_or(false)) {
            (true, _) => SmtpSecurity::Implicit,
            (false, true) => SmtpSecurity::StartTls,
            (false, false) => SmtpSecurity::None,
        };
        let address = |a: &str| a.contains('@') && !a.contains(char::is_whitespace);
        if !address(e.from.get_ref()) {
            return Err(self.err(
                e.from.span(),
                &f("from"),
                format!("'{}' is not an email address", e.from.get_ref()),
            ));
        }
        if e.to.get_ref().is_empty() {
            return Err(self.err(e.to.span(), &f("to"), "needs at least one recipient"));
        }
        if let Some(bad) = e.to.get_ref().iter().find(|a| !address(a)) {
            return Err(self.err(
                e.to.span(),
                &f("to"),
                format!("'{bad}' is not an email address"),
            ));
        }
        let credentials = match (&e.user, &e.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(self.err(
                    raw.span(),
                    &f("user"),
                    "user and password go together: give both or neither",
                ))
            }
        };
        Ok(EmailSpec {
            host,
            port,
            security,
            from: e.from.get_ref().clone(),
            to: e.to.get_ref().clone(),
            credentials,
        })
    }

    /// One `[[monitor]]`: each part (targets, ports, timing, probe, thresholds, reactions)
    /// is read and checked by its own function, in a fixed order, so that a file with
    /// several errors always reports the same one first.
    fn monitor(
        &self,
        i: usize,
        raw: &Spanned<RawMonitor>,
        config: &WatchConfig,
    ) -> Result<MonitorSpec, ConfigError> {
        let m = raw.get_ref();
        let f = |key: &str| format!("monitor[{i}].{key}");
        let name = m.name.get_ref().clone();
        check_name(&name).map_err(|msg| self.err(m.name.span(), &f("name"), msg))?;
        let (hosts, names) = self.monitor_hosts(m, &f)?;
        let (ports, ports_text) = self.monitor_ports(m, &f)?;
        let (addresses, family) = self.monitor_addresses(m, &f)?;
        let size = (hosts.len() + names.len() as u128).saturating_mul(ports.len() as u128);
        if size > MAX_MONITOR_SIZE as u128 {
            return Err(self.err(
                m.targets.span(),
                &f("targets"),
                format!("{size} target-ports in one monitor; the most is {MAX_MONITOR_SIZE}"),
            ));
        }
        let timing = self.monitor_timing(raw, &f)?;
        let (options, spec) = self.monitor_probe(raw, &timing, &f)?;
        let states = self.monitor_states(m, &options, &f)?;
        let addresses = self.closed_addresses(m, states, addresses, &f)?;
        let thresholds = self.monitor_thresholds(m, &f)?;
        let on_down = self.monitor_reactions(&m.on_down, "on_down", config, &f)?;
        let on_up = self.monitor_reactions(&m.on_up, "on_up", config, &f)?;
        let remind = m
            .remind
            .as_ref()
            .map(|r| self.duration(r, &f("remind"), Duration::from_secs(1)))
            .transpose()?;
        let group_wait = match &m.group_wait {
            Some(g) => self.duration(g, &f("group_wait"), Duration::ZERO)?,
            None => Duration::from_secs(10).min(timing.interval),
        };
        let (from, quorum) = self.monitor_vantages(raw, &f)?;
        let on_partial = self.monitor_partial(&m.on_partial, config, &f)?;
        // Options that name files are refused with a pool: an agent would read its own
        // host's files, not the ones this config means.
        let pooled = from.iter().any(|v| &**v != LOCAL_VANTAGE);
        if let Some(list) = m.from.as_ref().filter(|_| pooled) {
            for (field, given) in [
                ("tls_ca_file", options.tls_ca_file.is_some()),
                ("tls_cert", options.tls_cert.is_some()),
                ("tls_key", options.tls_key.is_some()),
            ] {
                if given {
                    return Err(self.err(
                        list.span(),
                        &f("from"),
                        format!(
                            "{field} names a file of this server, which the agents of a pool \
                             cannot read: probe this monitor from \"local\" alone"
                        ),
                    ));
                }
            }
        }
        let wire_probe = porthawk_core::SweepProbe::new(
            &options,
            timing.timeout,
            timing.tries,
            timing.read_timeout,
            timing.dialog_timeout,
        );
        Ok(MonitorSpec {
            wire_probe,
            group: m.group.clone().unwrap_or_else(|| name.clone()),
            name,
            targets: m
                .targets
                .get_ref()
                .iter()
                .map(|t| t.get_ref().clone())
                .collect(),
            hosts,
            names,
            addresses,
            family,
            ports,
            interval: timing.interval,
            spec,
            probe: probe_description(m),
            thresholds,
            on_down,
            on_up,
            remind,
            group_wait,
            fingerprint: format!(
                "{}|{addresses}|{family:?}|{states:?}|{}",
                fingerprint(m, &ports_text, &timing, &options, &from),
                options.jail
            ),
            states,
            from,
            quorum,
            on_partial,
        })
    }

    /// `targets`: addresses and ranges, and host names (kept as names, in file order,
    /// without repeats).
    fn monitor_hosts(
        &self,
        m: &RawMonitor,
        f: &dyn Fn(&str) -> String,
    ) -> Result<(HostSet, Vec<Arc<str>>), ConfigError> {
        if m.targets.get_ref().is_empty() {
            return Err(self.err(m.targets.span(), &f("targets"), "needs at least one target"));
        }
        let mut hosts = HostSetBuilder::default();
        let mut names: Vec<Arc<str>> = Vec::new();
        for (j, t) in m.targets.get_ref().iter().enumerate() {
            let field = f(&format!("targets[{j}]"));
            match parse_target(t.get_ref())
                .map_err(|e| self.err(t.span(), &field, e.to_string()))?
            {
                TargetToken::Range(r) => {
                    hosts.include(r);
                }
                TargetToken::Host(host) => {
                    if !names.iter().any(|n| **n == *host) {
                        names.push(Arc::from(host.as_str()));
                    }
                }
            }
        }
        let hosts = hosts.build();
        if hosts.is_empty() && names.is_empty() {
            return Err(self.err(m.targets.span(), &f("targets"), "names no address"));
        }
        Ok((hosts, names))
    }

    /// `addresses = "any"|"all"`, `ip_family = "ipv4"|"ipv6"` and `prefer_family`: how the
    /// names among the targets are checked.
    fn monitor_addresses(
        &self,
        m: &RawMonitor,
        f: &dyn Fn(&str) -> String,
    ) -> Result<(AddressMode, FamilyChoice), ConfigError> {
        let family = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|v| {
                    v.get_ref()
                        .parse::<IpFamily>()
                        .map_err(|e| self.err(v.span(), &f(key), e))
                })
                .transpose()
        };
        let only = family(&m.ip_family, "ip_family")?;
        let prefer = family(&m.prefer_family, "prefer_family")?;
        if let (Some(_), Some(p)) = (only, &m.prefer_family) {
            return Err(self.err(
                p.span(),
                &f("prefer_family"),
                "give ip_family (only that family) or prefer_family (with fallback), not both",
            ));
        }
        let addresses = match &m.addresses {
            Some(a) => a
                .get_ref()
                .parse::<AddressMode>()
                .map_err(|e| self.err(a.span(), &f("addresses"), e))?,
            None => AddressMode::Any,
        };
        Ok((addresses, FamilyChoice::new(only, prefer)))
    }

    /// `ports`: `"25,587"`, `25` or `[25, 587]`; the set and its text (for the fingerprint).
    fn monitor_ports(
        &self,
        m: &RawMonitor,
        f: &dyn Fn(&str) -> String,
    ) -> Result<(PortSet, String), ConfigError> {
        let ports_text = match m.ports.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(n) => Ok(n.to_string()),
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|()| {
                    self.err(
                        m.ports.span(),
                        &f("ports"),
                        "a list of ports holds numbers or strings",
                    )
                })?
                .join(","),
            _ => {
                return Err(self.err(
                    m.ports.span(),
                    &f("ports"),
                    "expected \"25,587\", 25 or [25, 587]",
                ))
            }
        };
        let ports = PortSet::parse(&ports_text)
            .map_err(|e| self.err(m.ports.span(), &f("ports"), e.to_string()))?;
        if ports.is_empty() {
            return Err(self.err(m.ports.span(), &f("ports"), "names no port"));
        }
        Ok((ports, ports_text))
    }

    /// `interval`, `timeout`, `tries`, `read_timeout`, `dialog_timeout`, with their defaults
    /// and the rule that a timeout fits in the interval.
    fn monitor_timing(
        &self,
        raw: &Spanned<RawMonitor>,
        f: &dyn Fn(&str) -> String,
    ) -> Result<Timing, ConfigError> {
        let m = raw.get_ref();
        let interval = match &m.interval {
            Some(v) => self.duration(v, &f("interval"), Duration::from_millis(100))?,
            None => Duration::from_secs(30),
        };
        let timeout = match &m.timeout {
            Some(v) => self.duration(v, &f("timeout"), Duration::from_millis(1))?,
            None => Duration::from_secs(2).min(interval),
        };
        if timeout > interval {
            let span = m.timeout.as_ref().map_or(raw.span(), Spanned::span);
            return Err(self.err(
                span,
                &f("timeout"),
                format!("{timeout:?} is longer than the interval of {interval:?}"),
            ));
        }
        let tries = match &m.tries {
            Some(n) => self.count(n, &f("tries"), 1..=10)? as u8,
            None => 1,
        };
        let read_timeout = match &m.read_timeout {
            Some(v) => self.duration(v, &f("read_timeout"), Duration::from_millis(1))?,
            None => timeout,
        };
        let dialog_timeout = match &m.dialog_timeout {
            Some(v) => self.duration(v, &f("dialog_timeout"), Duration::from_millis(1))?,
            None => timeout.saturating_mul(2).min(interval),
        };
        Ok(Timing {
            interval,
            timeout,
            tries,
            read_timeout,
            dialog_timeout,
        })
    }

    /// `preset` or `send`/`expect`, and `tls`: the probe options and the spec core builds
    /// from them, as for the command line.
    fn monitor_probe(
        &self,
        raw: &Spanned<RawMonitor>,
        timing: &Timing,
        f: &dyn Fn(&str) -> String,
    ) -> Result<(porthawk_core::ProbeOptions, ProbeSpec), ConfigError> {
        let m = raw.get_ref();
        if m.preset.is_some() && (m.send.is_some() || m.expect.is_some()) {
            let span = m.preset.as_ref().map_or(raw.span(), Spanned::span);
            return Err(self.err(span, &f("preset"), "give a preset or send/expect, not both"));
        }
        let options = porthawk_core::ProbeOptions {
            preset: m.preset.as_ref().map(|p| p.get_ref().clone()),
            send: m.send.as_ref().map(|p| p.get_ref().clone()),
            expect: m.expect.as_ref().map(|p| p.get_ref().clone()),
            tls: m.tls.unwrap_or(false),
            steps: m.steps.as_ref().map_or(Vec::new(), |s| s.get_ref().clone()),
            quit: m.quit.as_ref().map(|q| q.get_ref().clone()),
            expect_all: m.expect_all.unwrap_or(false),
            // Out of usize's range is out of max_reply's: core names the limit.
            max_reply: m
                .max_reply
                .as_ref()
                .map(|n| usize::try_from(*n.get_ref()).unwrap_or(usize::MAX)),
            tls_verify: m.tls_verify.unwrap_or(false),
            tls_ca_file: m.tls_ca_file.as_ref().map(|p| p.get_ref().clone()),
            sni: m.sni.as_ref().map(|p| p.get_ref().clone()),
            tls_cert: m.tls_cert.as_ref().map(|p| p.get_ref().clone()),
            tls_key: m.tls_key.as_ref().map(|p| p.get_ref().clone()),
            expect_alert: m.expect_alert.as_ref().map(|p| p.get_ref().clone()),
            jail: m.jail.unwrap_or(false),
            ..Default::default()
        };
        let spec = options
            .spec(
                timing.timeout,
                timing.tries,
                timing.read_timeout,
                timing.dialog_timeout,
                Arc::new(rustls::time_provider::DefaultTimeProvider),
            )
            .map_err(|e| {
                let span = match e.field {
                    "send" => m.send.as_ref().map(Spanned::span),
                    "expect" => m.expect.as_ref().map(Spanned::span),
                    "preset" => m.preset.as_ref().map(Spanned::span),
                    "steps" => m.steps.as_ref().map(Spanned::span),
                    "quit" => m.quit.as_ref().map(Spanned::span),
                    "max_reply" => m.max_reply.as_ref().map(Spanned::span),
                    "tls_ca_file" => m.tls_ca_file.as_ref().map(Spanned::span),
                    "sni" => m.sni.as_ref().map(Spanned::span),
                    "tls_cert" => m.tls_cert.as_ref().map(Spanned::span),
                    "tls_key" => m.tls_key.as_ref().map(Spanned::span),
                    "expect_alert" => m.expect_alert.as_ref().map(Spanned::span),
                    _ => None,
                };
                self.err(span.unwrap_or(raw.span()), &f(e.field), e.message.clone())
            })?;
        Ok((options, spec))
    }

    /// `refused` and `mismatch` of a monitor: what a refusal and a reply that did not match
    /// come to.
    fn monitor_states(
        &self,
        m: &RawMonitor,
        options: &porthawk_core::ProbeOptions,
        f: &dyn Fn(&str) -> String,
    ) -> Result<StateMap, ConfigError> {
        self.state_map(&m.refused, &m.mismatch, options, "monitor", f)
    }

    /// `refused` and `mismatch` of a monitor or a module (`kind`). A port that must stay
    /// closed (`refused = "ok"`) is checked by its connect alone, so it takes no dialog, and
    /// no `mismatch` (there is no reply to judge).
    fn state_map(
        &self,
        refused: &Option<Spanned<String>>,
        mismatch: &Option<Spanned<String>>,
        options: &porthawk_core::ProbeOptions,
        kind: &str,
        f: &dyn Fn(&str) -> String,
    ) -> Result<StateMap, ConfigError> {
        let state = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|v| {
                    StateMap::parse_state(v.get_ref()).map_err(|e| self.err(v.span(), &f(key), e))
                })
                .transpose()
        };
        let states = StateMap {
            must_stay_closed: state(refused, "refused")?.unwrap_or(false),
            mismatch_ok: state(mismatch, "mismatch")?.unwrap_or(false),
        };
        if let Some(r) = refused.as_ref().filter(|_| states.must_stay_closed) {
            if options.has_dialog() || mismatch.is_some() {
                return Err(self.err(
                    r.span(),
                    &f("refused"),
                    format!(
                        "refused = \"ok\" makes a {kind} of a port that must stay closed, judged \
                         by its connect alone: leave out preset, send, expect, steps, tls and \
                         mismatch"
                    ),
                ));
            }
        }
        Ok(states)
    }

    /// How a name's addresses make the verdict of a port that must stay closed: every one of
    /// them must refuse (`all`, the default there), since one address that accepts is the
    /// open port the monitor is for; `addresses = "any"` would hide it and is refused.
    fn closed_addresses(
        &self,
        m: &RawMonitor,
        states: StateMap,
        addresses: AddressMode,
        f: &dyn Fn(&str) -> String,
    ) -> Result<AddressMode, ConfigError> {
        if !states.must_stay_closed {
            return Ok(addresses);
        }
        match &m.addresses {
            Some(a) if addresses == AddressMode::Any => Err(self.err(
                a.span(),
                &f("addresses"),
                "with refused = \"ok\" every address of a name must refuse (an address that \
                 accepts is the open port this monitor looks for): leave addresses out, or give \
                 \"all\"",
            )),
            _ => Ok(AddressMode::All),
        }
    }

    /// `fail_after`, `recover_after`, `flap_changes`, `flap_window`.
    fn monitor_thresholds(
        &self,
        m: &RawMonitor,
        f: &dyn Fn(&str) -> String,
    ) -> Result<Thresholds, ConfigError> {
        let mut thresholds = Thresholds::default();
        if let Some(n) = &m.fail_after {
            thresholds.fail_after = self.count(n, &f("fail_after"), 1..=1000)?;
        }
        if let Some(n) = &m.recover_after {
            thresholds.recover_after = self.count(n, &f("recover_after"), 1..=1000)?;
        }
        if let Some(n) = &m.flap_changes {
            thresholds.flap_changes = self.count(n, &f("flap_changes"), 2..=1000)?;
        }
        if let Some(w) = &m.flap_window {
            thresholds.flap_window_ms = self
                .duration(w, &f("flap_window"), Duration::from_millis(100))?
                .as_millis() as u64;
        }
        Ok(thresholds)
    }

    /// `on_down` or `on_up`: each name an `[action.NAME]` or a `[notify.NAME]`.
    fn monitor_reactions(
        &self,
        list: &[Spanned<String>],
        key: &str,
        config: &WatchConfig,
        f: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Reaction>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(j, r)| {
                let n = r.get_ref();
                if config.actions.contains_key(n) {
                    Ok(Reaction::Action(n.clone()))
                } else if config.notifiers.contains_key(n) {
                    Ok(Reaction::Notify(n.clone()))
                } else {
                    Err(self.err(
                        r.span(),
                        &f(&format!("{key}[{j}]")),
                        format!("'{n}' is neither an [action.{n}] nor a [notify.{n}]"),
                    ))
                }
            })
            .collect()
    }
}

impl Cx<'_> {
    /// `from` and `quorum`: the vantage points (`local` and fleet pools, each a valid
    /// subject token, no duplicates, pools only with `[fleet]`) and how many of them must
    /// see a target DOWN.
    fn monitor_vantages(
        &self,
        raw: &Spanned<RawMonitor>,
        f: &dyn Fn(&str) -> String,
    ) -> Result<(Vec<Arc<str>>, Quorum), ConfigError> {
        let m = raw.get_ref();
        let from: Vec<Arc<str>> = match &m.from {
            None => vec![Arc::from(LOCAL_VANTAGE)],
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.err(
                        list.span(),
                        &f("from"),
                        "needs at least one vantage point: \"local\" or a fleet pool",
                    ));
                }
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for (j, v) in list.get_ref().iter().enumerate() {
                    let field = f(&format!("from[{j}]"));
                    let name = v.get_ref();
                    check_pool(name).map_err(|msg| self.err(v.span(), &field, msg))?;
                    if !seen.insert(name.clone()) {
                        return Err(self.err(
                            v.span(),
                            &field,
                            format!("'{name}' is listed twice"),
                        ));
                    }
                    if name != LOCAL_VANTAGE && !self.fleet {
                        return Err(self.err(
                            v.span(),
                            &field,
                            format!(
                                "pool '{name}' needs fleet mode: add a [fleet] section \
                                 (nats = \"nats://...\"), or use \"local\""
                            ),
                        ));
                    }
                    if name != LOCAL_VANTAGE && !self.pools.contains(name) {
                        return Err(self.err(
                            v.span(),
                            &field,
                            format!(
                                "pool '{name}' is not in [fleet] pools: list every pool in \
                                 use there, so that its agents have work to bind to"
                            ),
                        ));
                    }
                    out.push(Arc::from(name.as_str()));
                }
                out
            }
        };
        let quorum = match &m.quorum {
            None => Quorum::All,
            Some(q) => {
                let field = f("quorum");
                let quorum = match q.get_ref() {
                    toml::Value::String(s) if s == "all" => Quorum::All,
                    toml::Value::String(s) if s == "any" => Quorum::Any,
                    toml::Value::Integer(n) if *n >= 1 => {
                        Quorum::AtLeast(u32::try_from(*n).unwrap_or(u32::MAX))
                    }
                    other => {
                        let shown = match other {
                            toml::Value::String(s) => format!("'{s}'"),
                            v => v.to_string(),
                        };
                        return Err(self.err(
                            q.span(),
                            &field,
                            format!(
                                "unknown quorum {shown}: expected \"all\", \"any\" or a \
                                 number of vantage points from 1"
                            ),
                        ));
                    }
                };
                if let Quorum::AtLeast(n) = quorum {
                    if n as usize > from.len() {
                        return Err(self.err(
                            q.span(),
                            &field,
                            format!(
                                "quorum {n} is more than the {} vantage point(s) in from",
                                from.len()
                            ),
                        ));
                    }
                }
                quorum
            }
        };
        Ok((from, quorum))
    }

    /// `on_partial`: notifications only, since a partial outage never runs an action.
    fn monitor_partial(
        &self,
        list: &[Spanned<String>],
        config: &WatchConfig,
        f: &dyn Fn(&str) -> String,
    ) -> Result<Vec<String>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(j, r)| {
                let n = r.get_ref();
                let field = f(&format!("on_partial[{j}]"));
                if config.notifiers.contains_key(n) {
                    Ok(n.clone())
                } else if config.actions.contains_key(n) {
                    Err(self.err(
                        r.span(),
                        &field,
                        format!(
                            "'{n}' is an action; a partial outage only notifies \
                             (actions run on the quorum's DOWN)"
                        ),
                    ))
                } else {
                    Err(self.err(r.span(), &field, format!("'{n}' is not a [notify.{n}]")))
                }
            })
            .collect()
    }
}

/// A monitor's timing settings, defaults applied.
struct Timing {
    interval: Duration,
    timeout: Duration,
    tries: u8,
    read_timeout: Duration,
    dialog_timeout: Duration,
}

/// A short description of how a monitor probes (`connect`, `preset smtp`, `send/expect`,
/// `... over TLS`).
fn probe_description(m: &RawMonitor) -> String {
    let probe = if let Some(p) = &m.preset {
        format!("preset {}", p.get_ref())
    } else if m.send.is_some() || m.expect.is_some() {
        "send/expect".to_string()
    } else if m.steps.is_some() {
        "steps".to_string()
    } else if m.refused.as_ref().is_some_and(|r| r.get_ref() == "ok") {
        "connect, must stay closed".to_string()
    } else {
        "connect".to_string()
    };
    if m.tls.unwrap_or(false) {
        format!("{probe} over TLS")
    } else {
        probe
    }
}

/// A digest of everything that decides how a monitor probes: equal digests probe alike, so
/// a reload keeps the state of monitors whose digest did not change.
fn fingerprint(
    m: &RawMonitor,
    ports_text: &str,
    timing: &Timing,
    options: &porthawk_core::ProbeOptions,
    from: &[Arc<str>],
) -> String {
    format!(
        "{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        m.targets
            .get_ref()
            .iter()
            .map(|t| t.get_ref().as_str())
            .collect::<Vec<_>>(),
        ports_text,
        timing.interval,
        timing.timeout,
        timing.tries,
        timing.read_timeout,
        timing.dialog_timeout,
        options.preset,
        options.send,
        options.expect,
        options.tls,
        from,
    ) + &format!(
        "|{:?}|{:?}|{:?}|{:?}|{:?}",
        options.steps,
        options.quit,
        options.expect_all,
        options.max_reply,
        // The TLS checks, file contents excepted: a renewed client certificate takes a
        // reload that changes the config, or a restart.
        (
            options.tls_verify,
            &options.tls_ca_file,
            &options.sni,
            &options.tls_cert,
            &options.tls_key,
            &options.expect_alert,
        ),
    )
}

// ------------------------------------------------------------------------------------------
// `[[sweep]]` and `[module.NAME]`: scheduled sweeps and the probe modules of `/probe`.

/// How a scheduled sweep probes (`probe = { ... }`), as the API's `probe` object says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepProbe {
    /// A protocol preset.
    pub preset: Option<String>,
    /// Data to send once connected (escapes `\r \n \t \xHH`).
    pub send: Option<String>,
    /// A regular expression the reply must match.
    pub expect: Option<String>,
    /// Make a TLS handshake first.
    pub tls: bool,
    /// How long a connect may take.
    pub timeout: Option<Duration>,
    /// Connect attempts before an unanswered port is called filtered.
    pub tries: Option<u8>,
}

/// One `[[sweep]]`: a sweep run every `every`, each run diffed against the previous finished
/// run of the same name, its changes notified through `on_change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSchedule {
    /// Its unique name.
    pub name: String,
    /// Targets as written (names are resolved at each run, as an API sweep's are).
    pub targets: Vec<String>,
    /// Ports: `22,80,8000-8100` or `all`.
    pub ports: String,
    /// Targets, or `:PORTS`, to leave out.
    pub exclude: Vec<String>,
    /// How often it runs.
    pub every: Duration,
    /// How it probes.
    pub probe: SweepProbe,
    /// Whether every result is stored (`store = "all"`) or only open ports (the default).
    pub store_all: bool,
    /// The most probes started per second.
    pub rate: Option<u64>,
    /// The `[notify.NAME]` channels its changes (and failed runs) go to.
    pub on_change: Vec<String>,
}

/// The address family a module prefers when a target name has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpProtocol {
    /// IPv4 (`ip4`).
    Ip4,
    /// IPv6 (`ip6`, blackbox_exporter's default).
    Ip6,
}

impl IpProtocol {
    /// `ip4` or `ip6`, as blackbox_exporter writes it.
    pub fn parse(text: &str) -> Option<IpProtocol> {
        match text {
            "ip4" => Some(IpProtocol::Ip4),
            "ip6" => Some(IpProtocol::Ip6),
            _ => None,
        }
    }
}

/// A probe module of the blackbox_exporter-compatible `/probe` route: from
/// `[module.NAME]` in porthawk.toml, a `tcp` module of a blackbox.yml, or the built-in
/// `tcp_connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeModule {
    /// Its name, as `?module=` gives it.
    pub name: String,
    /// What to do once connected (`None`: connect only). A `StartTls` step makes the probe
    /// report the TLS version and certificate.
    pub dialog: Option<porthawk_core::Dialog>,
    /// How long the whole probe may take.
    pub timeout: Duration,
    /// The family preferred for names with both.
    pub ip_protocol: IpProtocol,
    /// Whether the other family may be used when the name has none of the preferred one.
    pub ip_protocol_fallback: bool,
    /// The options its probe spec is built from, through [`porthawk_core::ProbeOptions::spec`]
    /// (with `dialog` as the spec's dialog): all of them for `[module.NAME]`; for a
    /// blackbox.yml module, `tls` when its dialog makes a handshake and its `tls_config`
    /// (`tls_verify`, `tls_ca_file`, `sni`, `tls_cert`, `tls_key`).
    pub options: porthawk_core::ProbeOptions,
    /// What a refusal and a reply that did not match come to in `probe_success`
    /// (`refused`, `mismatch` of a `[module.NAME]`; blackbox.yml has neither).
    pub states: StateMap,
}

/// The timeout of a module that gives none (blackbox_exporter's example modules use 5s).
pub const DEFAULT_MODULE_TIMEOUT: Duration = Duration::from_secs(5);

impl ProbeModule {
    /// The built-in `tcp_connect` module: a connect, nothing sent.
    pub fn tcp_connect() -> ProbeModule {
        ProbeModule {
            name: "tcp_connect".into(),
            dialog: None,
            timeout: DEFAULT_MODULE_TIMEOUT,
            ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            options: porthawk_core::ProbeOptions::default(),
            states: StateMap::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    targets: Spanned<Vec<Spanned<String>>>,
    ports: Spanned<String>,
    every: Spanned<String>,
    #[serde(default)]
    probe: Option<Spanned<RawSweepProbe>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    store: Option<Spanned<String>>,
    #[serde(default)]
    rate: Option<Spanned<i64>>,
    #[serde(default)]
    on_change: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweepProbe {
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    tls: Option<bool>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    tries: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    #[serde(default)]
    prober: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    preset: Option<Spanned<String>>,
    #[serde(default)]
    send: Option<Spanned<String>>,
    #[serde(default)]
    expect: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<bool>,
    #[serde(default)]
    preferred_ip_protocol: Option<Spanned<String>>,
    #[serde(default)]
    ip_protocol_fallback: Option<bool>,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    tls_ca_file: Option<Spanned<String>>,
    #[serde(default)]
    sni: Option<Spanned<String>>,
    #[serde(default)]
    tls_cert: Option<Spanned<String>>,
    #[serde(default)]
    tls_key: Option<Spanned<String>>,
    #[serde(default)]
    refused: Option<Spanned<String>>,
    #[serde(default)]
    mismatch: Option<Spanned<String>>,
    #[serde(default)]
    jail: Option<bool>,
    // Whole dialogs and the TLS alert, as a monitor has them.
    #[serde(default)]
    steps: Option<Spanned<Vec<porthawk_core::ProbeStep>>>,
    #[serde(default)]
    quit: Option<Spanned<String>>,
    #[serde(default)]
    expect_all: Option<bool>,
    #[serde(default)]
    max_reply: Option<Spanned<i64>>,
    #[serde(default)]
    expect_alert: Option<Spanned<String>>,
}

/// The shortest `every` of a scheduled sweep.
pub const MIN_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Cx<'_> {
    /// `[[sweep]]` and `[module.NAME]`, checked after the notifiers they name.
    fn sweeps_and_modules(
        &self,
        raw: &ConfigFile,
        config: &mut WatchConfig,
    ) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, s) in raw.sweep.iter().enumerate() {
            let spec = self.sweep(i, s, config)?;
            if !names.insert(spec.name.clone()) {
                return Err(self.err(
                    s.get_ref().name.span(),
                    &format!("sweep[{i}].name"),
                    format!("a sweep named '{}' is defined twice", spec.name),
                ));
            }
            config.sweeps.push(Arc::new(spec));
        }
        for (name, m) in &raw.module {
            let module = self.module(name, m)?;
            config.modules.insert(name.clone(), Arc::new(module));
        }
        Ok(())
    }

    fn sweep(
        &self,
        i: usize,
        raw: &Spanned<RawSweep>,
        config: &WatchConfig,
    ) -> Result<SweepSchedule, ConfigError> {
        let s = raw.get_ref();
        let f = |key: &str| format!("sweep[{i}].{key}");
        let name = s.name.get_ref().clone();
        check_name(&name).map_err(|m| self.err(s.name.span(), &f("name"), m))?;
        if s.targets.get_ref().is_empty() {
            return Err(self.err(s.targets.span(), &f("targets"), "needs at least one target"));
        }
        for (j, t) in s.targets.get_ref().iter().enumerate() {
            parse_target(t.get_ref())
                .map_err(|e| self.err(t.span(), &f(&format!("targets[{j}]")), e.to_string()))?;
        }
        for (j, e) in s.exclude.iter().enumerate() {
            let field = f(&format!("exclude[{j}]"));
            match e.get_ref().trim().strip_prefix(':') {
                Some(ports) => {
                    PortSet::parse(ports).map_err(|x| self.err(e.span(), &field, x.to_string()))?;
                }
                None => {
                    parse_target(e.get_ref())
                        .map_err(|x| self.err(e.span(), &field, x.to_string()))?;
                }
            }
        }
        let ports = PortSet::parse(s.ports.get_ref())
            .map_err(|e| self.err(s.ports.span(), &f("ports"), e.to_string()))?;
        if ports.is_empty() {
            return Err(self.err(s.ports.span(), &f("ports"), "names no port"));
        }
        let every = self.duration(&s.every, &f("every"), MIN_SWEEP_EVERY)?;
        let probe = match &s.probe {
            Some(p) => self.sweep_probe(p, &f)?,
            None => SweepProbe::default(),
        };
        let store_all = match &s.store {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "open" => false,
                "all" => true,
                other => {
                    return Err(self.err(
                        v.span(),
                        &f("store"),
                        format!("'{other}' is not a store mode: \"open\" or \"all\""),
                    ))
                }
            },
        };
        let rate = match &s.rate {
            Some(r) => Some(u64::from(self.count(r, &f("rate"), 1..=u32::MAX as i64)?)),
            None => None,
        };
        let mut on_change = Vec::new();
        for (j, n) in s.on_change.iter().enumerate() {
            if !config.notifiers.contains_key(n.get_ref()) {
                return Err(self.err(
                    n.span(),
                    &f(&format!("on_change[{j}]")),
                    format!("'{}' is not a [notify.NAME] entry", n.get_ref()),
                ));
            }
            on_change.push(n.get_ref().clone());
        }
        Ok(SweepSchedule {
            name,
            targets: s
                .targets
                .get_ref()
                .iter()
                .map(|t| t.get_ref().clone())
                .collect(),
            ports: s.ports.get_ref().clone(),
            exclude: s.exclude.iter().map(|e| e.get_ref().clone()).collect(),
            every,
            probe,
            store_all,
            rate,
            on_change,
        })
    }

    fn sweep_probe(
        &self,
        raw: &Spanned<RawSweepProbe>,
        f: &dyn Fn(&str) -> String,
    ) -> Result<SweepProbe, ConfigError> {
        let p = raw.get_ref();
        let options = porthawk_core::ProbeOptions {
            preset: p.preset.clone(),
            send: p.send.clone(),
            expect: p.expect.clone(),
            tls: p.tls.unwrap_or(false),
            ..Default::default()
        };
        options
            .dialog()
            .map_err(|e| self.err(raw.span(), &f(&format!("probe.{}", e.field)), e.message))?;
        let timeout = p
            .timeout
            .as_ref()
            .map(|t| self.duration(t, &f("probe.timeout"), Duration::from_millis(1)))
            .transpose()?;
        if let (Some(t), Some(raw_t)) = (timeout, &p.timeout) {
            if t > Duration::from_secs(60) {
                return Err(self.err(raw_t.span(), &f("probe.timeout"), "at most 60s"));
            }
        }
        let tries = p
            .tries
            .as_ref()
            .map(|n| self.count(n, &f("probe.tries"), 1..=10).map(|n| n as u8))
            .transpose()?;
        Ok(SweepProbe {
            preset: p.preset.clone(),
            send: p.send.clone(),
            expect: p.expect.clone(),
            tls: p.tls.unwrap_or(false),
            timeout,
            tries,
        })
    }

    fn module(&self, name: &str, raw: &Spanned<RawModule>) -> Result<ProbeModule, ConfigError> {
        let f = |key: &str| format!("module.{name}.{key}");
        check_name(name).map_err(|m| self.err(raw.span(), &format!("module.{name}"), m))?;
        let m = raw.get_ref();
        if let Some(p) = &m.prober {
            if p.get_ref() != "tcp" {
                return Err(self.err(
                    p.span(),
                    &f("prober"),
                    format!(
                        "module '{name}' uses the '{}' prober; porthawk probes TCP only (prober = \"tcp\")",
                        p.get_ref()
                    ),
                ));
            }
        }
        let options = porthawk_core::ProbeOptions {
            preset: m.preset.as_ref().map(|p| p.get_ref().clone()),
            send: m.send.as_ref().map(|p| p.get_ref().clone()),
            expect: m.expect.as_ref().map(|p| p.get_ref().clone()),
            tls: m.tls.unwrap_or(false),
            tls_verify: m.tls_verify.unwrap_or(false),
            tls_ca_file: m.tls_ca_file.as_ref().map(|p| p.get_ref().clone()),
            sni: m.sni.as_ref().map(|p| p.get_ref().clone()),
            tls_cert: m.tls_cert.as_ref().map(|p| p.get_ref().clone()),
            tls_key: m.tls_key.as_ref().map(|p| p.get_ref().clone()),
            jail: m.jail.unwrap_or(false),
            steps: m.steps.as_ref().map_or(Vec::new(), |s| s.get_ref().clone()),
            quit: m.quit.as_ref().map(|q| q.get_ref().clone()),
            expect_all: m.expect_all.unwrap_or(false),
            // Out of usize's range is out of max_reply's: core names the limit.
            max_reply: m
                .max_reply
                .as_ref()
                .map(|n| usize::try_from(*n.get_ref()).unwrap_or(usize::MAX)),
            expect_alert: m.expect_alert.as_ref().map(|p| p.get_ref().clone()),
            ..Default::default()
        };
        let states = self.state_map(&m.refused, &m.mismatch, &options, "module", &f)?;
        let timeout = match &m.timeout {
            Some(t) => self.duration(t, &f("timeout"), Duration::from_millis(1))?,
            None => DEFAULT_MODULE_TIMEOUT,
        };
        // Built once here to check it (the CA and client certificate files are read), and
        // again by each probe, so that renewed files are used.
        let spec = options
            .spec(
                timeout,
                1,
                timeout,
                timeout,
                Arc::new(rustls::time_provider::DefaultTimeProvider),
            )
            .map_err(|e| {
                let span = match e.field {
                    "send" => m.send.as_ref().map(Spanned::span),
                    "expect" => m.expect.as_ref().map(Spanned::span),
                    "preset" => m.preset.as_ref().map(Spanned::span),
                    "tls_ca_file" => m.tls_ca_file.as_ref().map(Spanned::span),
                    "sni" => m.sni.as_ref().map(Spanned::span),
                    "tls_cert" => m.tls_cert.as_ref().map(Spanned::span),
                    "tls_key" => m.tls_key.as_ref().map(Spanned::span),
                    "steps" => m.steps.as_ref().map(Spanned::span),
                    "quit" => m.quit.as_ref().map(Spanned::span),
                    "max_reply" => m.max_reply.as_ref().map(Spanned::span),
                    "expect_alert" => m.expect_alert.as_ref().map(Spanned::span),
                    _ => None,
                };
                self.err(span.unwrap_or(raw.span()), &f(e.field), e.message)
            })?;
        let dialog = spec.dialog.as_deref().cloned();
        let ip_protocol = match &m.preferred_ip_protocol {
            Some(p) => IpProtocol::parse(p.get_ref()).ok_or_else(|| {
                self.err(
                    p.span(),
                    &f("preferred_ip_protocol"),
                    format!("'{}' is neither \"ip4\" nor \"ip6\"", p.get_ref()),
                )
            })?,
            None => IpProtocol::Ip6,
        };
        Ok(ProbeModule {
            name: name.to_string(),
            dialog,
            timeout,
            ip_protocol,
            ip_protocol_fallback: m.ip_protocol_fallback.unwrap_or(true),
            options,
            states,
        })
    }
}

/// The most target-ports one monitor may check.
pub const MAX_MONITOR_SIZE: u64 = 1 << 20;

/// Whether exactly one of a section's alternative keys is given.
fn exactly_one(given: &[bool]) -> bool {
    given.iter().filter(|&&b| b).count() == 1
}

/// A vantage point's name: `local` or a fleet pool, which becomes a NATS subject token
/// (`[A-Za-z0-9_-]{1,64}`).
fn check_pool(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(format!(
            "'{name}' is not a pool name: 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a name has 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "'{name}' may only hold letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// `[fleet]` as written; [`FleetSection::check`] turns it into a [`FleetConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// The NATS URL (`nats://host:port`, `tls://host:port`).
    pub nats: Option<Spanned<String>>,
    /// The coordinator's nkey seed file.
    pub nkey: Option<Spanned<String>>,
    /// CA certificates (PEM) that sign the NATS server's certificate.
    pub tls_ca: Option<Spanned<String>>,
    /// The coordinator's client certificate (PEM).
    pub tls_cert: Option<Spanned<String>>,
    /// The key of the client certificate (PEM).
    pub tls_key: Option<Spanned<String>>,
    /// Talk to a NATS server that is not on loopback without credentials.
    pub allow_insecure: Option<bool>,
    /// The agents whose results are accepted.
    pub agents: Option<Vec<Spanned<String>>>,
    /// The pools sweeps may run from (their consumers are created at start).
    pub pools: Option<Vec<Spanned<String>>>,
    /// Positions per slice, instead of the size worked out from the pool's agents.
    pub slice_len: Option<Spanned<i64>>,
    /// How long an agent may hold a slice without a sign of life.
    pub ack_wait: Option<Spanned<String>>,
    /// Deliveries of a slice before the server gives up on it.
    pub max_deliver: Option<Spanned<i64>>,
    /// Times a slice is published (the first and again after `max_deliver` ran out).
    pub max_epochs: Option<Spanned<i64>>,
    /// The results stream's size; a full stream makes agents wait.
    pub results_max_bytes: Option<Spanned<i64>>,
    /// How long an agent stays listed after its last heartbeat.
    pub agent_ttl: Option<Spanned<String>>,
}

/// The checked `[fleet]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The NATS URL.
    pub nats: String,
    /// The coordinator's nkey seed file.
    pub nkey: Option<std::path::PathBuf>,
    /// CA certificates of the NATS server.
    pub tls_ca: Option<std::path::PathBuf>,
    /// The client certificate and its key.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The agents whose results are accepted (sorted, unique).
    pub agents: Vec<String>,
    /// The pools sweeps may run from (sorted, unique).
    pub pools: Vec<String>,
    /// Positions per slice; `None`: worked out from the pool's agents.
    pub slice_len: Option<u64>,
    /// How long an agent may hold a slice without a sign of life (30 s).
    pub ack_wait: Duration,
    /// Deliveries of a slice before the server gives up on it (5).
    pub max_deliver: i64,
    /// Times a slice is published at most (3: the first, then 2 more).
    pub max_epochs: u32,
    /// The results stream's size in bytes (4 GiB).
    pub results_max_bytes: i64,
    /// How long an agent stays listed after its last heartbeat (30 s).
    pub agent_ttl: Duration,
}

impl FleetSection {
    /// Checks the section; `file` and `text` give errors their line, `span` (the
    /// section's) the line of a missing key.
    pub fn check(
        &self,
        file: &str,
        text: &str,
        span: Range<usize>,
    ) -> Result<FleetConfig, ConfigError> {
        let lines = Lines { file, text };
        let err = |s: Range<usize>, field: &str, m: String| lines.err(s, field, m);
        let Some(nats) = &self.nats else {
            return Err(err(
                span,
                "fleet.nats",
                "missing: the NATS URL, such as nats://127.0.0.1:4222".into(),
            ));
        };
        let host = nats_host(nats.get_ref()).map_err(|m| err(nats.span(), "fleet.nats", m))?;
        let path = |v: &Option<Spanned<String>>, field: &str| match v {
            Some(p) if p.get_ref().trim().is_empty() => {
                Err(err(p.span(), field, "must not be empty".into()))
            }
            Some(p) => Ok(Some(std::path::PathBuf::from(p.get_ref()))),
            None => Ok(None),
        };
        let nkey = path(&self.nkey, "fleet.nkey")?;
        let tls_ca = path(&self.tls_ca, "fleet.tls_ca")?;
        let cert = path(&self.tls_cert, "fleet.tls_cert")?;
        let key = path(&self.tls_key, "fleet.tls_key")?;
        let tls_client = match (cert, key, &self.tls_cert, &self.tls_key) {
            (Some(c), Some(k), _, _) => Some((c, k)),
            (None, None, _, _) => None,
            (Some(_), None, Some(v), _) => {
                return Err(err(
                    v.span(),
                    "fleet.tls_key",
                    "missing: tls_cert needs its key".into(),
                ))
            }
            (_, _, _, v) => {
                let s = v.as_ref().map_or(span.clone(), |v| v.span());
                return Err(err(
                    s,
                    "fleet.tls_cert",
                    "missing: tls_key needs its certificate".into(),
                ));
            }
        };
        if !host_is_loopback(&host)
            && nkey.is_none()
            && tls_client.is_none()
            && self.allow_insecure != Some(true)
        {
            return Err(err(
                nats.span(),
                "fleet.nats",
                format!(
                    "'{host}' is not a loopback address and no credentials are set: set nkey \
                     (and tls_ca, tls_cert, tls_key), or allow_insecure = true"
                ),
            ));
        }
        let names = |list: &Option<Vec<Spanned<String>>>, key: &str, kind: &str| {
            let mut out = Vec::new();
            for (i, a) in list.iter().flatten().enumerate() {
                let name = a.get_ref();
                let ok = (1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(err(
                        a.span(),
                        &format!("fleet.{key}[{i}]"),
                        format!("invalid {kind} name '{name}': use 1 to 64 of A-Z a-z 0-9 _ -"),
                    ));
                }
                out.push(name.clone());
            }
            out.sort();
            out.dedup();
            Ok(out)
        };
        let agents = names(&self.agents, "agents", "agent")?;
        let pools = names(&self.pools, "pools", "pool")?;
        let int = |v: &Option<Spanned<i64>>,
                   field: &str,
                   range: std::ops::RangeInclusive<i64>,
                   default: i64| match v {
            None => Ok(default),
            Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(err(
                v.span(),
                field,
                format!(
                    "{} is out of range: {} to {}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        };
        let duration = |v: &Option<Spanned<String>>, field: &str, default: Duration| {
            let Some(v) = v else { return Ok(default) };
            let d = parse_duration(v.get_ref()).map_err(|m| err(v.span(), field, m))?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                return Err(err(
                    v.span(),
                    field,
                    format!("'{}' is out of range: 1s to 1h", v.get_ref()),
                ));
            }
            Ok(d)
        };
        let slice_len = match &self.slice_len {
            None => None,
            Some(_) => Some(int(&self.slice_len, "fleet.slice_len", 1..=1 << 20, 0)? as u64),
        };
        Ok(FleetConfig {
            nats: nats.get_ref().clone(),
            nkey,
            tls_ca,
            tls_client,
            agents,
            pools,
            slice_len,
            ack_wait: duration(&self.ack_wait, "fleet.ack_wait", Duration::from_secs(30))?,
            max_deliver: int(&self.max_deliver, "fleet.max_deliver", 1..=100, 5)?,
            max_epochs: int(&self.max_epochs, "fleet.max_epochs", 1..=10, 3)? as u32,
            results_max_bytes: int(
                &self.results_max_bytes,
                "fleet.results_max_bytes",
                1 << 20..=1 << 50,
                4 << 30,
            )?,
            agent_ttl: duration(&self.agent_ttl, "fleet.agent_ttl", Duration::from_secs(30))?,
        })
    }
}

/// The host of a NATS URL (`nats://`, `tls://`, or a bare `host:port`).
fn nats_host(url: &str) -> Result<String, String> {
    let rest = match url.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!("unknown scheme '{scheme}': use nats:// or tls://"))
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host: use nats://HOST:PORT"));
    }
    Ok(host.to_string())
}

fn host_is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses a test's config.
    pub(crate) fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
        super::parse(file, text)
    }

    const GOOD: &str = r#"
allow_reboot = false
retention = "7d"

[api]
listen = "127.0.0.1:9180"

[[monitor]]
name = "mail"
targets = ["127.0.0.1", "127.0.1.0/30"]
ports = "25,587"
interval = "30s"
timeout = "2s"
preset = "smtp"
fail_after = 3
recover_after = 2
on_down = ["restart-postfix", "ops-mail"]
on_up = ["ops-mail"]
remind = "1h"

[[monitor]]
name = "web"
targets = ["127.0.0.1"]
ports = [80, 443]
send = "HEAD / HTTP/1.0\r\n\r\n"
expect = "^HTTP/1\\.[01] [23]"

[action.restart-postfix]
exec = ["systemctl", "restart", "postfix"]
timeout = "30s"
cooldown = "10m"
max_per_hour = 3

[action.bounce]
restart = "nginx.service"
escalate_after = 2

[notify.ops-mail]
email = { smtp = "smtp://127.0.0.1:2525", from = "porthawk@example.com", to = ["ops@example.com"] }

[notify.ops-hook]
webhook = { url = "http://127.0.0.1:8099/hook" }

[notify.chat]
slack = { url = "https://hooks.example.com/services/x" }
"#;

    #[test]
    fn the_design_example_parses() {
        let c = parse("porthawk.toml", GOOD).unwrap();
        assert_eq!(c.monitors.len(), 2);
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        let mail = &c.monitors[0];
        assert_eq!(mail.size(), 5 * 2);
        assert_eq!(mail.thresholds.fail_after, 3);
        assert_eq!(mail.down_actions().collect::<Vec<_>>(), ["restart-postfix"]);
        assert_eq!(mail.down_notifiers().collect::<Vec<_>>(), ["ops-mail"]);
        assert_eq!(mail.remind, Some(Duration::from_secs(3600)));
        assert!(mail.spec.dialog.is_some());
        assert_eq!(c.monitors[1].ports.as_slice(), &[80, 443]);
        assert_eq!(
            c.actions["bounce"].kind.argv(),
            ["systemctl", "restart", "nginx.service"]
        );
        assert_eq!(c.actions["restart-postfix"].max_per_hour, 3);
        match &c.notifiers["ops-mail"].channel {
            Channel::Email(e) => {
                assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2525));
                assert_eq!(e.security, SmtpSecurity::None);
            }
            other => panic!("{other:?}"),
        }
        match &c.notifiers["chat"].channel {
            Channel::Slack(u) => assert_eq!(u.to_string(), "https://hooks.example.com/services/x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_configs_name_file_line_and_field() {
        let base = "[action.a]\nexec = [\"true\"]\n\n[notify.n]\nwebhook = { url = \"http://127.0.0.1:1/\" }\n\n";
        let monitor = "[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"80\"\n";
        // (text after the base, expected line, expected field, a word of the message)
        let table: &[(&str, usize, &str, &str)] = &[
            ("[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"80\"\nintervl = \"1s\"\n", 11, "monitor[0].intervl", "unknown field"),
            (&format!("{monitor}interval = \"30x\"\n"), 11, "monitor[0].interval", "duration"),
            (&format!("{monitor}interval = \"10ms\"\n"), 11, "monitor[0].interval", "too short"),
            (&format!("{monitor}on_down = [\"a\", \"nope\"]\n"), 11, "monitor[0].on_down[1]", "nope"),
            (&format!("{monitor}fail_after = 0\n"), 11, "monitor[0].fail_after", "out of range"),
            (&format!("{monitor}fail_after = \"3\"\n"), 11, "monitor[0].fail_after", "invalid type"),
            (&format!("{monitor}preset = \"gopher\"\n"), 11, "monitor[0].preset", "gopher"),
            (&format!("{monitor}expect_alert = \"nope\"\n"), 11, "monitor[0].expect_alert", "unknown TLS alert 'nope'"),
            (&format!("{monitor}tls = true\nsni = \"bad name!\"\n"), 12, "monitor[0].sni", "invalid server name"),
            (&format!("{monitor}tls = true\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n"), 12, "monitor[0].tls_cert", "/nonexistent/c.pem"),
            (&format!("{monitor}sni = \"mx.example\"\n"), 11, "monitor[0].sni", "needs a TLS dialog"),
            (&format!("{monitor}refused = \"warning\"\n"), 11, "monitor[0].refused", "no WARNING state: give \"ok\" or \"critical\""),
            (&format!("{monitor}mismatch = \"warn\"\n"), 11, "monitor[0].mismatch", "no WARNING state"),
            (&format!("{monitor}mismatch = \"fine\"\n"), 11, "monitor[0].mismatch", "'fine' is not a state"),
            (&format!("{monitor}preset = \"smtp\"\nrefused = \"ok\"\n"), 12, "monitor[0].refused", "must stay closed"),
            (&format!("{monitor}refused = \"ok\"\naddresses = \"any\"\n"), 12, "monitor[0].addresses", "every address of a name must refuse"),
            (&format!("{monitor}jail = \"yes\"\n"), 11, "monitor[0].jail", "invalid type"),
            (&format!("{monitor}preset = \"smtp\"\nexpect = \"x\"\n"), 11, "monitor[0].preset", "not both"),
            (&format!("{monitor}expect = \"(\"\n"), 11, "monitor[0].expect", "expect"),
            (&format!("{monitor}send = \"\\\\xZZ\"\n"), 11, "monitor[0].send", "send"),
            (&format!("{monitor}steps = [{{ send = \"a\" }}, {{ expect = \"(\" }}]\n"), 11, "monitor[0].steps", "in step 2: invalid pattern"),
            (&format!("{monitor}steps = [{{ expect = \"x\" }}, {{ send = \"${{1}}\" }}]\n"), 11, "monitor[0].steps", "capture 1"),
            (&format!("{monitor}preset = \"smtp\"\nsteps = [{{ send = \"x\" }}]\n"), 11, "monitor[0].preset", "STARTTLS"),
            (&format!("{monitor}max_reply = 0\n"), 11, "monitor[0].max_reply", "out of range"),
            (&format!("{monitor}max_reply = 2000000\n"), 11, "monitor[0].max_reply", "1048576"),
            (&format!("{monitor}timeout = \"5s\"\ninterval = \"1s\"\n"), 11, "monitor[0].timeout", "longer"),
            ("[[monitor]]\nname = \"m\"\ntargets = [\"999.1.1.1\"]\nports = \"80\"\n", 9, "monitor[0].targets[0]", "999"),
            ("[[monitor]]\nname = \"m\"\ntargets = []\nports = \"80\"\n", 9, "monitor[0].targets", "at least one"),
            ("[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"70000\"\n", 10, "monitor[0].ports", "70000"),
            ("[[monitor]]\nname = \"bad name\"\ntargets = [\"127.0.0.1\"]\nports = \"80\"\n", 8, "monitor[0].name", "letters"),
            (&format!("{monitor}\n{monitor}"), 13, "monitor[1].name", "twice"),
            ("[action.b]\nexec = []\n", 8, "action.b.exec", "program"),
            ("[action.b]\nexec = [\"x\"]\nrestart = \"y\"\n", 7, "action.b", "exactly one"),
            ("[action.b]\nrestart = \"-x\"\n", 8, "action.b.restart", "unit"),
            ("[action.b]\nexec = [\"x\"]\ncooldown = \"soon\"\n", 9, "action.b.cooldown", "duration"),
            ("[action.b]\nexec = [\"x\"]\nmax_per_hour = 0\n", 9, "action.b.max_per_hour", "out of range"),
            ("[action.b]\nexec = [\"x\"]\nshell = \"sh\"\n", 9, "action.b.shell", "unknown field"),
            ("[notify.m]\nemail = { smtp = \"imap://x\", from = \"a@b\", to = [\"c@d\"] }\n", 8, "notify.m.email.smtp", "smtp://"),
            ("[notify.m]\nemail = { smtp = \"smtp://x:25\", from = \"nobody\", to = [\"c@d\"] }\n", 8, "notify.m.email.from", "email address"),
            ("[notify.m]\nemail = { smtp = \"smtp://x:25\", from = \"a@b\", to = [\"c@d\"], tls = true }\n", 8, "notify.m.email.tls", "unknown field"),
            ("[notify.m]\nwebhook = { url = \"ftp://x/\" }\n", 8, "notify.m.webhook.url", "http"),
            ("[notify.m]\n", 7, "notify.m", "exactly one"),
            ("[notify.a]\nwebhook = { url = \"http://x/\" }\n", 7, "notify.a", "both"),
            ("retention = \"forever\"\n", 7, "notify.n.retention", "unknown field"),
            ("[apii]\nx = 1\n", 7, "apii", "unknown field"),
            (&format!("{monitor}from = []\n"), 11, "monitor[0].from", "at least one vantage"),
            (&format!("{monitor}from = [\"local\", \"eu west\"]\n"), 11, "monitor[0].from[1]", "not a pool name"),
            (&format!("{monitor}from = [\"local\", \"local\"]\n"), 11, "monitor[0].from[1]", "twice"),
            (&format!("{monitor}from = [\"local\", \"eu\"]\n"), 11, "monitor[0].from[1]", "[fleet]"),
            (&format!("{monitor}quorum = \"most\"\n"), 11, "monitor[0].quorum", "unknown quorum 'most'"),
            (&format!("{monitor}quorum = 0\n"), 11, "monitor[0].quorum", "unknown quorum 0"),
            (&format!("{monitor}quorum = 2\n"), 11, "monitor[0].quorum", "more than the 1 vantage"),
            (&format!("{monitor}quorum = 1.5\n"), 11, "monitor[0].quorum", "unknown quorum"),
            (&format!("{monitor}on_partial = [\"a\"]\n"), 11, "monitor[0].on_partial[0]", "only notifies"),
            (&format!("{monitor}on_partial = [\"n\", \"x\"]\n"), 11, "monitor[0].on_partial[1]", "not a [notify.x]"),
        ];
        for (tail, line, field, word) in table {
            let text = format!("{base}{tail}");
            let err = match parse("porthawk.toml", &text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => e,
            };
            let shown = err.to_string();
            assert_eq!(err.file, "porthawk.toml", "{shown}");
            assert_eq!(
                (err.line, err.field.as_str()),
                (*line, *field),
                "for\n{text}\ngot: {shown}"
            );
            assert!(
                shown.to_lowercase().contains(&word.to_lowercase()),
                "'{word}' missing in: {shown}"
            );
            assert!(
                shown.starts_with(&format!("porthawk.toml:{line}: {field}: ")),
                "{shown}"
            );
            assert!(!shown.contains('\n'), "{shown}");
        }
    }

    /// The whole file is one type: `[api]` is read with it (its values kept with their
    /// spans for the server's checks), an unknown key anywhere is named by its path, and a
    /// syntax error by its line.
    #[test]
    fn the_file_is_one_type_with_derived_field_paths() {
        let f = parse_file("porthawk.toml", GOOD).unwrap();
        let api = f.api.unwrap();
        let listen = api.listen.unwrap();
        assert_eq!(listen.get_ref(), "127.0.0.1:9180");
        assert_eq!(GOOD[..listen.span().start].lines().count(), 6);
        for (text, want) in [
            (
                "[api]\nlisten = \"x\"\ntokn = \"t\"\n",
                "porthawk.toml:3: api.tokn: unknown field `tokn`",
            ),
            (
                "[api]\nallow = [\"127.0.0.1\", 7]\n",
                "porthawk.toml:2: api.allow[1]: invalid type: integer `7`",
            ),
            (
                "[api]\nmax_connections = \"many\"\n",
                "porthawk.toml:2: api.max_connections: invalid type: string",
            ),
            (
                "[[monitor]]\nname = \"m\"\nports = \"1\"\n",
                "porthawk.toml:1: monitor[0]: missing field `targets`",
            ),
            (
                "[fleet]\nnats_url = \"x\"\n",
                "porthawk.toml:2: fleet.nats_url: unknown field `nats_url`",
            ),
            ("[api\n", "porthawk.toml:1: (toml): "),
        ] {
            let err = parse_file("porthawk.toml", text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// `from` defaults to the local engine alone and `quorum` to all, so every config
    /// written before vantage points probes and judges as it did.
    #[test]
    fn vantages_default_to_local_and_quorum_to_all() {
        let c = parse("porthawk.toml", GOOD).unwrap();
        for m in &c.monitors {
            assert_eq!(m.from, [Arc::from(LOCAL_VANTAGE)]);
            assert_eq!(m.quorum, Quorum::All);
            assert!(m.on_partial.is_empty());
            assert!(!m.multi_vantage());
        }
        let text = GOOD.replace(
            "remind = \"1h\"",
            "remind = \"1h\"\nfrom = [\"local\"]\nquorum = \"any\"\non_partial = [\"ops-hook\"]",
        );
        let c = parse("porthawk.toml", &text).unwrap();
        let mail = &c.monitors[0];
        assert_eq!(mail.quorum, Quorum::Any);
        assert_eq!(mail.on_partial, ["ops-hook"]);
        let text = GOOD.replace("remind = \"1h\"", "remind = \"1h\"\nquorum = 1");
        let c = parse("porthawk.toml", &text).unwrap();
        assert_eq!(c.monitors[0].quorum, Quorum::AtLeast(1));
        // With [fleet], pools are vantages too.
        let fleet = "\n[fleet]\nnats = \"nats://127.0.0.1:4222\"\npools = [\"eu\", \"us-2\"]\n";
        let pools = GOOD.replace(
            "remind = \"1h\"",
            "remind = \"1h\"\nfrom = [\"local\", \"eu\", \"us-2\"]\nquorum = 2",
        ) + fleet;
        let c = parse("porthawk.toml", &pools).unwrap();
        let mail = &c.monitors[0];
        assert_eq!(
            mail.from,
            [Arc::from("local"), Arc::from("eu"), Arc::from("us-2")]
        );
        assert_eq!(mail.quorum, Quorum::AtLeast(2));
        assert!(mail.multi_vantage());
        let err = parse("porthawk.toml", &pools.replace("quorum = 2", "quorum = 4")).unwrap_err();
        assert_eq!(err.field, "monitor[0].quorum");
        assert!(err.message.contains("more than the 3"), "{err}");
        let err = parse(
            "porthawk.toml",
            &pools.replace("\"us-2\"]\nquorum", "\"ap\"]\nquorum"),
        )
        .unwrap_err();
        assert_eq!(err.field, "monitor[0].from[2]");
        assert!(err.message.contains("not in [fleet] pools"), "{err}");
        assert_eq!(
            (
                Quorum::All.needed(3),
                Quorum::Any.needed(3),
                Quorum::AtLeast(2).needed(3)
            ),
            (3, 1, 2)
        );
        assert_eq!(
            [Quorum::All, Quorum::Any, Quorum::AtLeast(2)].map(|q| q.to_string()),
            ["all", "any", "2"]
        );
    }

    #[test]
    fn webhook_urls_are_http_with_a_host_and_no_credentials() {
        let u = HttpUrl::parse("http://127.0.0.1:8099/hook?x=1").unwrap();
        let url = u.as_url();
        assert_eq!(
            (url.scheme(), url.host_str(), url.port_or_known_default()),
            ("http", Some("127.0.0.1"), Some(8099))
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:8099/hook?x=1");
        let u = HttpUrl::parse("https://[::1]/h").unwrap();
        assert_eq!(u.as_url().port_or_known_default(), Some(443));
        assert_eq!(u.to_string(), "https://[::1]/h");
        assert!(HttpUrl::parse("http://u:p@x/").is_err());
        assert!(HttpUrl::parse("http://:80/").is_err());
        assert!(HttpUrl::parse("ftp://x/").is_err());
        assert!(HttpUrl::parse("hooks.example/x").is_err());
    }

    #[test]
    fn fleet_section_is_checked() {
        let fleet = |body: &str| {
            let text = format!("[fleet]\n{body}");
            let parsed = parse_file("p.toml", &text)?;
            let section = parsed.fleet.expect("a fleet section");
            section.get_ref().check("p.toml", &text, section.span())
        };
        let c = fleet(
            "nats = \"nats://127.0.0.1:4222\"\nagents = [\"b\", \"a\"]\npools = [\"lab\"]\nack_wait = \"3s\"\nslice_len = 256\n",
        )
        .unwrap();
        assert_eq!(c.agents, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(c.pools, vec!["lab".to_string()]);
        assert_eq!(
            (c.ack_wait, c.slice_len, c.max_deliver),
            (Duration::from_secs(3), Some(256), 5)
        );
        let e = fleet("nats = \"nats://10.1.2.3:4222\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:2: fleet.nats: '10.1.2.3' is not a loopback address"),
            "{e}"
        );
        fleet("nats = \"nats://10.1.2.3:4222\"\nallow_insecure = true\n").unwrap();
        fleet("nats = \"tls://nats.example:4222\"\nnkey = \"/etc/c.nk\"\n").unwrap();
        let e = fleet("nats = \"nats://[::1]:4222\"\ntls_cert = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:3: fleet.tls_key: missing"), "{e}");
        let e = fleet("nats = \"nats://127.0.0.1:1\"\nagents = [\"a b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:3: fleet.agents[0]: invalid agent name"),
            "{e}"
        );
        let e = fleet("nats = \"nats://127.0.0.1:1\"\nnats_url = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:3: fleet.nats_url: unknown field"),
            "{e}"
        );
        let e = fleet("agents = []\n").unwrap_err().to_string();
        assert!(e.contains("fleet.nats: missing"), "{e}");
        let e = fleet("nats = \"http://127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scheme 'http'"), "{e}");
    }
}

#[cfg(test)]
mod sweep_and_module_tests {
    use super::tests::parse;
    use super::*;

    const NOTIFY: &str = "[notify.ops-hook]\nwebhook = { url = \"http://127.0.0.1:9/hook\" }\n";

    fn with(extra: &str) -> Result<WatchConfig, ConfigError> {
        parse("p.toml", &format!("{NOTIFY}{extra}"))
    }

    #[test]
    fn a_scheduled_sweep_is_read_whole() {
        let c = with(
            r#"
[[sweep]]
name = "edge"
targets = ["10.0.0.0/16"]
ports = "22,80,443"
every = "24h"
exclude = ["10.0.9.0/24", ":443"]
store = "all"
rate = 5000
probe = { preset = "ssh", timeout = "2s", tries = 3 }
on_change = ["ops-hook"]
"#,
        )
        .unwrap();
        let s = &c.sweeps[0];
        assert_eq!(s.name, "edge");
        assert_eq!(s.every, Duration::from_secs(86_400));
        assert_eq!(s.exclude, ["10.0.9.0/24", ":443"]);
        assert!(s.store_all);
        assert_eq!(s.rate, Some(5000));
        assert_eq!(s.probe.preset.as_deref(), Some("ssh"));
        assert_eq!(s.probe.timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.probe.tries, Some(3));
        assert_eq!(s.on_change, ["ops-hook"]);
    }

    #[test]
    fn sweep_errors_name_file_line_and_field() {
        let cases = [
            ("every = \"1ms\"", "sweep[0].every", "too short"),
            (
                "every = \"1h\"\non_change = [\"nope\"]",
                "sweep[0].on_change[0]",
                "not a [notify.NAME]",
            ),
            (
                "every = \"1h\"\nstore = \"some\"",
                "sweep[0].store",
                "not a store mode",
            ),
            (
                "every = \"1h\"\nexclude = [\":99999\"]",
                "sweep[0].exclude[0]",
                "",
            ),
            (
                "every = \"1h\"\nprobe = { preset = \"nope\" }",
                "sweep[0].probe.preset",
                "",
            ),
            (
                "every = \"1h\"\nprobe = { tries = 0 }",
                "sweep[0].probe.tries",
                "out of range",
            ),
            (
                "every = \"1h\"\nevery_other = 1",
                "sweep[0].every_other",
                "unknown field",
            ),
        ];
        for (tail, field, message) in cases {
            let text = format!(
                "[[sweep]]\nname = \"s\"\ntargets = [\"127.0.0.1\"]\nports = \"22\"\n{tail}\n"
            );
            let e = with(&text).unwrap_err();
            assert_eq!(e.file, "p.toml");
            assert_eq!(e.field, field, "{e}");
            assert!(e.line >= 3, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let twice =
            "[[sweep]]\nname = \"s\"\ntargets = [\"127.0.0.1\"]\nports = \"22\"\nevery = \"1h\"\n";
        let e = with(&format!("{twice}{twice}")).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("sweep[1].name", 9), "{e}");
        let e = with("[[sweep]]\nname = \"s\"\ntargets = [\"not a target!\"]\nports = \"22\"\nevery = \"1h\"\n")
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sweep[0].targets[0]", 5),
            "{e}"
        );
    }

    #[test]
    fn modules_become_probe_modules() {
        let c = with(
            r#"
[module.redis]
prober = "tcp"
send = "PING\r\n"
expect = "^\\+PONG"
timeout = "3s"
preferred_ip_protocol = "ip4"
ip_protocol_fallback = false

[module.smtps]
preset = "smtps"
"#,
        )
        .unwrap();
        let r = &c.modules["redis"];
        assert_eq!(r.timeout, Duration::from_secs(3));
        assert_eq!(r.ip_protocol, IpProtocol::Ip4);
        assert!(!r.ip_protocol_fallback);
        assert!(r.dialog.as_ref().unwrap().expects());
        let smtps = &c.modules["smtps"];
        assert!(smtps
            .dialog
            .as_ref()
            .unwrap()
            .steps
            .contains(&porthawk_core::DialogStep::StartTls));
        assert_eq!(smtps.timeout, DEFAULT_MODULE_TIMEOUT);
    }

    #[test]
    fn state_mapping_and_jail_reach_monitors_and_modules() {
        let c = with(
            "[[monitor]]\nname = \"closed\"\ntargets = [\"127.0.0.1\"]\nports = \"23\"\nrefused = \"ok\"\n\n\
             [[monitor]]\nname = \"smtp\"\ntargets = [\"127.0.0.1\"]\nports = \"25\"\npreset = \"smtp\"\n\
             mismatch = \"ok\"\njail = true\n\n\
             [module.closed]\nrefused = \"ok\"\n\n[module.smtp]\npreset = \"smtp\"\nmismatch = \"ok\"\njail = true\n\n\
             [module.dialog]\nsteps = [{ expect = '^220 (\\S+)' }, { send = 'EHLO ${1}\\r\\n' }, { expect = '^250 ' }]\n\
             quit = 'QUIT\\r\\n'\nmax_reply = 8192\n\n[module.mtls]\nexpect_alert = \"certificate_required\"\n",
        )
        .unwrap();
        let closed = &c.monitors[0];
        assert!(closed.states.must_stay_closed && !closed.states.mismatch_ok);
        assert!(!closed.spec.jail);
        let smtp = &c.monitors[1];
        assert!(smtp.states.mismatch_ok && !smtp.states.must_stay_closed);
        assert!(smtp.spec.jail && smtp.wire_probe.jail);
        assert_ne!(closed.fingerprint, smtp.fingerprint);
        assert!(c.modules["closed"].states.must_stay_closed);
        assert!(c.modules["smtp"].states.mismatch_ok && c.modules["smtp"].options.jail);
        // A module takes a whole dialog and an expected alert, as a monitor does.
        let dialog = &c.modules["dialog"];
        assert_eq!(dialog.options.steps.len(), 3);
        assert_eq!(dialog.options.max_reply, Some(8192));
        assert_eq!(dialog.dialog.as_ref().map(|d| d.steps.len()), Some(4));
        assert!(c.modules["mtls"].dialog.is_some());
        // The default is check_tcp's: both CRITICAL, i.e. failures.
        let plain =
            with("[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"23\"\n").unwrap();
        assert_eq!(plain.monitors[0].states, StateMap::default());
        let e = with("[module.m]\nrefused = \"warning\"\n").unwrap_err();
        assert_eq!(e.field, "module.m.refused", "{e}");
        assert!(e.message.contains("no WARNING state"), "{e}");
        let e = with("[module.m]\nrefused = \"ok\"\nexpect = \"^220\"\n").unwrap_err();
        assert_eq!(e.field, "module.m.refused", "{e}");
        assert!(
            e.message
                .contains("makes a module of a port that must stay closed"),
            "{e}"
        );
    }

    #[test]
    fn module_errors_name_the_key() {
        let e = with("[module.web]\nprober = \"http\"\n").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("module.web.prober", 4), "{e}");
        assert!(e.message.contains("'http' prober"), "{e}");
        let e = with("[module.m]\npreferred_ip_protocol = \"ip5\"\n").unwrap_err();
        assert_eq!(e.field, "module.m.preferred_ip_protocol", "{e}");
        let e = with("[module.m]\nexpect = \"(\"\n").unwrap_err();
        assert_eq!(e.field, "module.m.expect", "{e}");
        let e = with("[module.m]\nquery = 1\n").unwrap_err();
        assert_eq!(e.field, "module.m.query", "{e}");
    }

    #[test]
    fn module_tls_keys_reach_the_options_and_are_checked() {
        let c = with(
            "[module.v]\ntls = true\ntls_verify = true\nsni = \"mx.example\"\n\n[module.p]\npreset = \"smtps\"\n",
        )
        .unwrap();
        let v = &c.modules["v"];
        assert!(v.options.tls_verify);
        assert_eq!(v.options.sni.as_deref(), Some("mx.example"));
        assert_eq!(
            v.dialog.as_ref().map(|d| d.steps.clone()),
            Some(vec![porthawk_core::DialogStep::StartTls])
        );
        assert!(!c.modules["p"].options.tls_verify);
        for (body, field, message) in [
            (
                "sni = \"mx.example\"\n",
                "module.m.sni",
                "needs a TLS dialog",
            ),
            (
                "tls = true\ntls_ca_file = \"/ca.pem\"\n",
                "module.m.tls_ca_file",
                "needs verification on",
            ),
            (
                "tls = true\ntls_verify = true\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
                "module.m.tls_ca_file",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                "tls = true\ntls_cert = \"/c.pem\"\n",
                "module.m.tls_key",
                "needs its key",
            ),
        ] {
            let e = with(&format!("[module.m]\n{body}")).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains(message), "{body}: {e}");
        }
    }
}
