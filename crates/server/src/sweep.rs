//! Sweeps: the request and its validation, the plan it becomes (a target space and a probe
//! spec), the live state of a running sweep, and the status the API reports.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use porthawk_core::{
    parse_target, AddrRange, HostSetBuilder, PortSet, PortState, ProbeOptions, ProbeSpec,
    TargetSpace, TargetToken, MAX_PORT_ELEMENTS, MAX_TARGETS,
};
use porthawk_engine::JobHandle;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Limits;
use crate::error::ApiError;

pub use porthawk_store::{Counts, SweepState};

/// Which results a sweep keeps in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Only open ports (the default).
    #[default]
    Open,
    /// Every probed port.
    All,
}

impl StoreMode {
    /// Whether every result is stored.
    pub fn is_all(self) -> bool {
        self == StoreMode::All
    }
}

/// How to probe each target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// Data to send once connected (escapes `\r \n \t \xHH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// A regular expression the reply must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// A protocol preset (smtp, ssh, http, https, redis, ...), instead of send/expect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Make a TLS handshake first and report the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    // TLS checks (issue 11 items 5, 6, 13, 14); all but expect_alert need a TLS dialog.
    /// Verify the certificate (chain to the system's CAs or `tls_ca_file`, dates, name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// A PEM file on the server of the CAs to trust instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// The server name to present in TLS and verify, instead of the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// A PEM client certificate file on the server, for servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// The PEM private key file of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// The TLS alert the server must answer the handshake with (`certificate_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_alert: Option<String>,
    /// With the `identify` preset: the most protocol probes sent to a silent port (default
    /// 5; 0 reads the banner only; more than the plan has sends every probe of the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_probes: Option<u8>,
    /// How long a connect may take, in milliseconds (1 to 60000; default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// Connect attempts before an unanswered port is called filtered (1 to 10; default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub tries: Option<u8>,
    /// Dialog steps in order, `[{"send": "..."}, {"expect": "..."}]`; `${N}` in a send is the
    /// Nth capture group of the expects before it. Instead of `send`/`expect`, or after a
    /// STARTTLS preset (inside its TLS session).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<porthawk_core::ProbeStep>,
    /// Data sent after the last step (`QUIT\r\n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit: Option<String>,
    /// Expects with no send between them must all match the same reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_all: Option<bool>,
    /// Bytes a reply may run to while the dialog waits for its pattern (1 to 1048576;
    /// default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1048576)]
    pub max_reply: Option<usize>,
    /// Keep the peer's bytes out of the results' reasons: they say how many bytes came
    /// instead of quoting them (check_tcp's `-j`); a banner the probe asks for is still
    /// reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<bool>,
}

/// The body of `POST /v1/sweeps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"targets": ["127.0.0.1"], "ports": "22,80,8000-8100"}))]
#[serde(deny_unknown_fields)]
pub struct SweepRequest {
    /// Addresses, CIDR blocks, ranges or host names (resolved once, at submission).
    pub targets: Vec<String>,
    /// Ports: `22,80,8000-8100` or `all`.
    pub ports: String,
    /// Targets to leave out, or `:PORTS` to leave out ports.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How to probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeRequest>,
    /// The most probes started per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub rate: Option<u64>,
    /// Which results to store: `open` (default) or `all`.
    #[serde(default)]
    pub store: StoreMode,
    /// Of host names, probe only the addresses of this family: `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "ipv4")]
    pub ip_family: Option<porthawk_core::IpFamily>,
    /// Of host names, probe the addresses of this family when the name has any, else the
    /// other's: `ipv4` or `ipv6` (not with `ip_family`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "ipv6")]
    pub prefer_family: Option<porthawk_core::IpFamily>,
    /// Run the sweep on the agents of this pool (fleet mode, `[fleet] pools`) instead of this
    /// server's own engine. `rate` is then a cap per agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Where a sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SweepMode {
    /// On this server's engine.
    #[default]
    Local,
    /// On the agents of a pool.
    Fleet,
}

/// A fleet sweep's slices by state.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SliceCounts {
    /// Slices done (counted once, by their first complete attempt).
    pub done: u32,
    /// Slices in the sweep.
    pub total: u32,
    /// Slices that failed: every agent that took them crashed or stalled; their positions
    /// are not in the results.
    pub failed: u32,
    /// Slices of a cancelled sweep whose newest attempt was kept as a partial result.
    pub partial: u32,
}

/// An agent's share of a running fleet sweep.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentRate {
    /// The agent.
    pub name: String,
    /// Its probes per second, as its last heartbeat said.
    pub probes_per_s: u64,
}

/// A sweep as `GET /v1/sweeps/{id}` reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SweepStatus {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
    /// Probes reported.
    pub done: u64,
    /// Probes in the sweep.
    pub total: u64,
    /// Probes per verdict.
    pub counts: Counts,
    /// Probes per second, averaged over the sweep so far.
    pub probes_per_s: f64,
    /// Seconds left at that rate; absent once the sweep has ended or before it has a rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// When it was submitted, in seconds since the Unix epoch.
    pub created_at: f64,
    /// When it ended, in seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// Why it failed (state `failed`), such as "store write failed: database or disk is full".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request as accepted.
    pub request: SweepRequest,
    /// The `[[sweep]]` schedule it is a run of, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Where it runs.
    pub mode: SweepMode,
    /// Fleet sweeps: slices by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<SliceCounts>,
    /// Fleet sweeps: which slices failed (at most 100, lowest first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_slices: Option<Vec<u32>>,
    /// Fleet sweeps while they run: the live agents of the pool and their probes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentRate>>,
}

impl SweepStatus {
    /// The status of a sweep that has run for `elapsed`.
    pub fn new(row: porthawk_store::SweepRow<SweepRequest>, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            row.done as f64 / secs
        } else {
            0.0
        };
        let eta_s = (!row.state.is_final() && rate > 0.0)
            .then(|| row.total.saturating_sub(row.done) as f64 / rate);
        SweepStatus {
            id: row.id,
            state: row.state,
            done: row.done,
            total: row.total,
            counts: row.counts,
            probes_per_s: rate,
            eta_s,
            created_at: row.created_ms as f64 / 1000.0,
            finished_at: row.finished_ms.map(|ms| ms as f64 / 1000.0),
            reason: row.reason,
            request: row.request,
            schedule: None,
            mode: SweepMode::Local,
            slices: None,
            failed_slices: None,
            agents: None,
        }
    }
}

/// A sweep this process is running: progress counters the aggregator updates and the API reads.
pub struct LiveSweep {
    /// The sweep id (the store's).
    pub id: u64,
    /// The engine job.
    pub job: porthawk_core::JobId,
    /// The request as accepted.
    pub request: SweepRequest,
    /// The target space, for host names.
    pub space: Arc<TargetSpace>,
    /// Probes in the sweep.
    pub total: u64,
    /// When it was submitted.
    pub created_ms: u64,
    /// When it was submitted, on the monotonic clock.
    pub started: Instant,
    /// The engine's handle, set right after submission.
    pub handle: OnceLock<JobHandle>,
    /// Set by `DELETE`: the job's `cancelled` end is a cancellation rather than an interruption.
    pub user_cancelled: AtomicBool,
    /// Probes reported and stored: the aggregator adds a batch's probes once the store
    /// write that carries them has committed, so these never run ahead of the store.
    pub done: AtomicU64,
    /// Probes per verdict, in [`PortState::ALL`] order, counted as `done` is.
    pub counts: [AtomicU64; 5],
    /// Set when a store write of the sweep failed: the sweep is stopped and ends `failed`.
    pub failure: OnceLock<String>,
    /// When it ended, once it has ended but its final state could not be stored.
    pub ended_ms: OnceLock<u64>,
    /// Bumped after each store write that touched the sweep, and when it ends.
    pub stored: tokio::sync::watch::Sender<u64>,
}

impl LiveSweep {
    /// The live state of a sweep just stored under `id`.
    pub fn new(
        id: u64,
        job: porthawk_core::JobId,
        request: SweepRequest,
        space: Arc<TargetSpace>,
        created_ms: u64,
    ) -> Self {
        LiveSweep {
            id,
            job,
            request,
            total: space.len(),
            space,
            created_ms,
            started: Instant::now(),
            handle: OnceLock::new(),
            user_cancelled: AtomicBool::new(false),
            done: AtomicU64::new(0),
            counts: Default::default(),
            failure: OnceLock::new(),
            ended_ms: OnceLock::new(),
            stored: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = |s: PortState| self.counts[s.index()].load(Ordering::Relaxed);
        Counts {
            open: c(PortState::Open),
            closed: c(PortState::Closed),
            filtered: c(PortState::Filtered),
            unreachable: c(PortState::Unreachable),
            error: c(PortState::Error),
        }
    }

    /// The status of the sweep as this process knows it: `running`, or `failed` once a
    /// store write of it has failed.
    pub fn status(&self) -> SweepStatus {
        let failure = self.failure.get().cloned();
        let row = porthawk_store::SweepRow {
            id: self.id,
            state: if failure.is_some() {
                SweepState::Failed
            } else {
                SweepState::Running
            },
            request: self.request.clone(),
            total: self.total,
            done: self.done.load(Ordering::Relaxed),
            counts: self.counts(),
            created_ms: self.created_ms,
            finished_ms: self.ended_ms.get().copied(),
            reason: failure,
        };
        SweepStatus::new(row, self.started.elapsed())
    }
}

/// One changed port, as `porthawk diff` prints it (the schema of `porthawk_core::LineChange`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ChangeRecord {
    /// `opened` (open now, not before), `closed` (open before, not now) or `changed`.
    #[schema(pattern = "^(opened|closed|changed)$")]
    pub change: String,
    /// The address.
    pub ip: String,
    /// The port.
    pub port: u16,
    /// The fields that differ, by name: `state`, `service`, `product`, `version`,
    /// `tls_version`, `cert_subject`, `cert_issuer`, `cert_not_after`.
    pub fields: std::collections::BTreeMap<String, FieldChangeRecord>,
}

/// One field's value before and after (absent where it had none).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct FieldChangeRecord {
    /// The old value.
    pub before: Option<String>,
    /// The new value.
    pub after: Option<String>,
}

/// Rows read from the store per page when a sweep's results are read whole.
const LINES_PAGE: u32 = 4096;

/// Every stored result line of sweep `id`, in the order they were stored, with the
/// certificate's days left counted at `now` (seconds since the epoch), as the API streams
/// them. Blocking: it reads the store on the caller's thread.
pub fn stored_lines(
    store: &porthawk_store::Store,
    id: u64,
    now: i64,
) -> Result<Vec<porthawk_core::ResultLine>, porthawk_store::StoreError> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let rows = store.results_page(id, after, None, LINES_PAGE)?;
        let Some(last) = rows.last() else { break };
        after = last.rowid;
        lines.extend(rows.into_iter().map(|r| r.line_at(now)));
    }
    Ok(lines)
}

/// What a validated request becomes.
pub struct SweepPlan {
    /// The request, normalised.
    pub request: SweepRequest,
    /// The targets × ports to probe.
    pub space: Arc<TargetSpace>,
    /// How to probe them.
    pub spec: ProbeSpec,
}

/// The range checks serde cannot express, and the caps that bound a request's cost before
/// any work: each error names its field.
pub fn validate(request: &SweepRequest) -> Result<(), ApiError> {
    if request.targets.is_empty() {
        return Err(ApiError::bad_request(
            "targets",
            "targets must name at least one target",
        ));
    }
    for (field, list) in [("targets", &request.targets), ("exclude", &request.exclude)] {
        if list.len() > MAX_TARGETS {
            return Err(ApiError::bad_request(
                field,
                format!(
                    "{field} has {} entries, more than {MAX_TARGETS}",
                    list.len()
                ),
            ));
        }
    }
    // Each element costs at most one comma, so this bounds the port parser's work before it
    // runs; the parser checks the exact count again.
    let elements = request.ports.bytes().filter(|&b| b == b',').count() + 1;
    if elements > MAX_PORT_ELEMENTS {
        return Err(ApiError::bad_request(
            "ports",
            format!("ports has {elements} elements, more than {MAX_PORT_ELEMENTS}"),
        ));
    }
    if request.rate == Some(0) {
        return Err(ApiError::bad_request(
            "rate",
            "rate must be an integer of at least 1",
        ));
    }
    if let Some(p) = &request.probe {
        if p.timeout_ms.is_some_and(|t| !(1..=60_000).contains(&t)) {
            return Err(ApiError::bad_request(
                "probe.timeout_ms",
                "probe.timeout_ms must be an integer from 1 to 60000",
            ));
        }
        if p.tries.is_some_and(|t| !(1..=10).contains(&t)) {
            return Err(ApiError::bad_request(
                "probe.tries",
                "probe.tries must be an integer from 1 to 10",
            ));
        }
    }
    Ok(())
}

/// The probe spec of a request.
///
/// This is the one place where the probe fields of the API meet the engine's `ProbeSpec`.
/// `send` and `expect` become a dialog as `porthawk scan --send --expect` makes it; presets
/// are refused until they land in core, and will be mapped here.
pub fn probe_spec(probe: Option<&ProbeRequest>) -> Result<ProbeSpec, ApiError> {
    let Some(p) = probe else {
        return Ok(ProbeSpec::default());
    };
    let default = ProbeSpec::default();
    probe_options(p)
        .spec(
            p.timeout_ms
                .map_or(default.connect_timeout, Duration::from_millis),
            p.tries.unwrap_or(default.tries),
            default.read_timeout,
            default.dialog_timeout,
            Arc::new(rustls::time_provider::DefaultTimeProvider),
        )
        .map_err(|e| ApiError::bad_request(format!("probe.{}", e.field), e.message))
}

/// The probe options of a request's `probe` object: the one mapping of its fields.
fn probe_options(p: &ProbeRequest) -> ProbeOptions {
    ProbeOptions {
        preset: p.preset.clone(),
        send: p.send.clone(),
        expect: p.expect.clone(),
        tls: p.tls.unwrap_or(false),
        steps: p.steps.clone(),
        quit: p.quit.clone(),
        expect_all: p.expect_all.unwrap_or(false),
        max_reply: p.max_reply,
        tls_verify: p.tls_verify.unwrap_or(false),
        tls_ca_file: p.tls_ca_file.clone(),
        sni: p.sni.clone(),
        tls_cert: p.tls_cert.clone(),
        tls_key: p.tls_key.clone(),
        expect_alert: p.expect_alert.clone(),
        max_probes: p.max_probes,
        jail: p.jail.unwrap_or(false),
        ..ProbeOptions::default()
    }
}

/// The probe of a fleet sweep's spec: what [`probe_spec`] builds, as agents rebuild it.
/// Options that name files are refused: an agent would read its own host's files, not the
/// ones the request meant.
pub fn sweep_probe(probe: Option<&ProbeRequest>) -> Result<porthawk_core::SweepProbe, ApiError> {
    let default = ProbeSpec::default();
    let options = probe.map_or_else(ProbeOptions::default, probe_options);
    for (field, given) in [
        ("probe.tls_ca_file", options.tls_ca_file.is_some()),
        ("probe.tls_cert", options.tls_cert.is_some()),
        ("probe.tls_key", options.tls_key.is_some()),
    ] {
        if given {
            return Err(ApiError::bad_request(
                field,
                format!(
                    "{field} names a file of this server, which a fleet sweep's agents cannot                      read: run this sweep locally (without \"from\")"
                ),
            ));
        }
    }
    Ok(porthawk_core::SweepProbe::new(
        &options,
        probe
            .and_then(|p| p.timeout_ms)
            .map_or(default.connect_timeout, Duration::from_millis),
        probe.and_then(|p| p.tries).unwrap_or(default.tries),
        default.read_timeout,
        default.dialog_timeout,
    ))
}

/// Turns a request into a plan: parses and resolves targets, applies exclusions, checks the
/// allow-list and the size limit. Blocking (host names are resolved here). Nothing is created.
pub fn plan(
    request: SweepRequest,
    allow: &[AddrRange],
    limits: &Limits,
    seed: u64,
) -> Result<SweepPlan, ApiError> {
    validate(&request)?;
    let spec = probe_spec(request.probe.as_ref())?;
    if request.ip_family.is_some() && request.prefer_family.is_some() {
        return Err(ApiError::bad_request(
            "prefer_family",
            "give ip_family (only that family) or prefer_family (with fallback), not both",
        ));
    }
    let family = porthawk_core::FamilyChoice::new(request.ip_family, request.prefer_family);
    let mut includes: Vec<(usize, Vec<AddrRange>, Option<String>)> = Vec::new();
    for (i, t) in request.targets.iter().enumerate() {
        let field = format!("targets[{i}]");
        match parse_target(t).map_err(|e| ApiError::bad_request(&field, e.to_string()))? {
            TargetToken::Range(r) => includes.push((i, vec![r], None)),
            TargetToken::Host(name) => {
                let ips = resolve(&name).map_err(|m| ApiError::bad_request(&field, m))?;
                if let Some(why) = family.nothing_left(&ips) {
                    return Err(ApiError::bad_request(
                        &field,
                        format!("cannot resolve host '{name}': {why}"),
                    ));
                }
                includes.push((
                    i,
                    family
                        .select(&ips)
                        .into_iter()
                        .map(AddrRange::single)
                        .collect(),
                    Some(name),
                ));
            }
        }
    }
    let mut excluded: Vec<AddrRange> = Vec::new();
    let mut excluded_ports: Vec<(usize, &str)> = Vec::new();
    for (i, e) in request.exclude.iter().enumerate() {
        if let Some(ports) = e.trim().strip_prefix(':') {
            excluded_ports.push((i, ports));
            continue;
        }
        let field = format!("exclude[{i}]");
        match parse_target(e).map_err(|err| ApiError::bad_request(&field, err.to_string()))? {
            TargetToken::Range(r) => excluded.push(r),
            TargetToken::Host(name) => {
                let ips = resolve(&name).map_err(|m| ApiError::bad_request(&field, m))?;
                excluded.extend(ips.into_iter().map(AddrRange::single));
            }
        }
    }
    let mut ports = PortSet::parse(&request.ports)
        .map_err(|e| ApiError::bad_request("ports", e.to_string()))?;
    for (i, p) in excluded_ports {
        let set = PortSet::parse(p)
            .map_err(|e| ApiError::bad_request(format!("exclude[{i}]"), e.to_string()))?;
        ports.remove(&set);
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "ports",
            "no port left after exclusions",
        ));
    }

    // The allow-list, target by target: every address a target leaves after exclusions must
    // be allowed. One set of what is excluded or allowed, built once, answers every target.
    let mut permitted = HostSetBuilder::default();
    for r in excluded.iter().chain(allow) {
        permitted.include(*r);
    }
    let permitted = permitted.build();
    for (i, ranges, _) in &includes {
        if let Some(first) = ranges.iter().find_map(|r| permitted.first_outside(*r)) {
            return Err(ApiError::forbidden(
                format!("targets[{i}]"),
                format!(
                    "target '{}' is outside the addresses API sweeps may reach ({} is not allowed)",
                    request.targets[*i], first
                ),
            ));
        }
    }

    let mut builder = HostSetBuilder::default();
    for (_, ranges, name) in &includes {
        for r in ranges {
            match name {
                Some(n) => {
                    builder.include_named(r.first(), n);
                }
                None => {
                    builder.include(*r);
                }
            }
        }
    }
    for r in &excluded {
        builder.exclude(*r);
    }
    let hosts = builder.build();
    if hosts.is_empty() {
        return Err(ApiError::bad_request(
            "targets",
            "no target address left after exclusions",
        ));
    }
    let total = hosts.len().saturating_mul(ports.len() as u128);
    if total > u128::from(limits.max_sweep_probes) {
        return Err(ApiError::too_large(
            Some("targets"),
            format!(
                "sweep too large: {} addresses × {} ports = {total} probes, more than the limit of {}",
                hosts.len(),
                ports.len(),
                limits.max_sweep_probes
            ),
        ));
    }
    let space = TargetSpace::new(hosts, ports, seed)
        .map_err(|e| ApiError::too_large(Some("targets"), e.to_string()))?;
    Ok(SweepPlan {
        request,
        space: Arc::new(space),
        spec,
    })
}

fn resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{name}': {e}"))?;
    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(format!("cannot resolve host '{name}': it has no address"));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_allow;

    fn req(json: &str) -> Result<SweepRequest, ApiError> {
        let r: SweepRequest = crate::extract::parse_json(json.as_bytes())?;
        validate(&r)?;
        Ok(r)
    }

    fn field_of(r: Result<impl Sized, ApiError>) -> Option<String> {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.field,
        }
    }

    #[test]
    fn request_errors_name_the_field() {
        assert_eq!(field_of(req(r#"{"ports":"22"}"#)), Some("targets".into()));
        assert_eq!(
            field_of(req(r#"{"targets":["a",1],"ports":"22"}"#)),
            Some("targets[1]".into())
        );
        assert_eq!(field_of(req(r#"{"targets":["a"]}"#)), Some("ports".into()));
        assert_eq!(
            field_of(req(r#"{"targets":["a"],"ports":"22","x":1}"#)),
            Some("x".into())
        );
        assert_eq!(
            field_of(req(r#"{"targets":["a"],"ports":"22","probe":{"tries":0}}"#)),
            Some("probe.tries".into())
        );
        assert_eq!(
            field_of(req(r#"{"targets":["a"],"ports":"22","probe":{"bogus":1}}"#)),
            Some("probe.bogus".into())
        );
        assert_eq!(
            field_of(req(r#"{"targets":["a"],"ports":"22","rate":0}"#)),
            Some("rate".into())
        );
        assert_eq!(
            field_of(req(r#"{"targets":["a"],"ports":"22","store":"x"}"#)),
            Some("store".into())
        );
        // A struct may come as a JSON array of its fields (serde's derive); a wrong one is
        // still named by position.
        assert_eq!(field_of(req("[1]")), Some("[0]".into()));
        assert_eq!(field_of(req("{")), None);
    }

    #[test]
    fn presets_make_their_dialog_and_unknown_ones_name_the_field() {
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"preset":"smtp"}}"#).unwrap();
        assert!(probe_spec(r.probe.as_ref()).unwrap().dialog.is_some());
        let r =
            req(r#"{"targets":["127.0.0.1"],"ports":"443","probe":{"preset":"https"}}"#).unwrap();
        assert!(probe_spec(r.probe.as_ref()).unwrap().tls_config.is_some());
        let r =
            req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"preset":"smtpx"}}"#).unwrap();
        let e = probe_spec(r.probe.as_ref()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("probe.preset"));
        assert!(
            e.message.contains("unknown preset 'smtpx'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn send_and_expect_make_a_dialog_or_name_the_field() {
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"send":"PING\\r\\n","expect":"^\\+PONG"}}"#)
            .unwrap();
        assert!(probe_spec(r.probe.as_ref()).unwrap().dialog.is_some());
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"expect":"("}}"#).unwrap();
        let e = probe_spec(r.probe.as_ref()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("probe.expect"));
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"send":"\\xZZ"}}"#).unwrap();
        let e = probe_spec(r.probe.as_ref()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("probe.send"));
    }

    #[test]
    fn probe_fields_map_to_the_spec() {
        let r =
            req(r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"timeout_ms":250,"tries":3}}"#)
                .unwrap();
        let spec = probe_spec(r.probe.as_ref()).unwrap();
        assert_eq!(spec.connect_timeout, Duration::from_millis(250));
        assert_eq!(spec.tries, 3);
    }

    #[test]
    fn plan_checks_allow_list_after_exclusions() {
        let limits = Limits::default();
        let r = req(r#"{"targets":["127.0.0.0/24","10.0.0.1"],"ports":"22"}"#).unwrap();
        let e = plan(r, &default_allow(), &limits, 1).err().unwrap();
        assert_eq!(e.status.as_u16(), 403);
        assert_eq!(e.field.as_deref(), Some("targets[1]"));
        assert!(e.message.contains("10.0.0.1"));
        let r = req(r#"{"targets":["126.255.255.255-127.0.0.3"],"ports":"22","exclude":["126.0.0.0/8",":23"]}"#)
            .unwrap();
        let p = plan(r, &default_allow(), &limits, 1).unwrap();
        assert_eq!(p.space.len(), 4);
    }

    #[test]
    fn address_families_are_read_and_checked() {
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","ip_family":"ipv6"}"#).unwrap();
        assert_eq!(r.ip_family, Some(porthawk_core::IpFamily::Ipv6));
        assert!(req(r#"{"targets":["127.0.0.1"],"ports":"22","ip_family":"ipv5"}"#).is_err());
        let r = req(
            r#"{"targets":["127.0.0.1"],"ports":"22","ip_family":"ipv4","prefer_family":"ipv6"}"#,
        )
        .unwrap();
        let e = plan(r, &default_allow(), &Limits::default(), 1)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("prefer_family"));
        // Addresses are not names: a family does not filter them.
        let r = req(r#"{"targets":["127.0.0.1"],"ports":"22","ip_family":"ipv6"}"#).unwrap();
        let p = plan(r, &default_allow(), &Limits::default(), 1).unwrap();
        assert_eq!(p.space.len(), 1);
    }

    #[test]
    fn plan_refuses_sweeps_over_the_limit() {
        let limits = Limits {
            max_sweep_probes: 100,
            ..Limits::default()
        };
        let r = req(r#"{"targets":["127.0.0.0/24"],"ports":"1-1000"}"#).unwrap();
        let e = plan(r, &default_allow(), &limits, 1).err().unwrap();
        assert_eq!(e.status.as_u16(), 413);
        let r = req(r#"{"targets":["127.0.0.0/8"],"ports":"all"}"#).unwrap();
        let e = plan(r, &default_allow(), &Limits::default(), 1)
            .err()
            .unwrap();
        assert_eq!(e.status.as_u16(), 413);
    }
}
