//! `GET /probe?target=HOST:PORT&module=NAME`, blackbox_exporter's probe route: one probe,
//! run as an engine job like every other, answered as Prometheus text with blackbox's tcp
//! metric names and types (`probe_success`, `probe_duration_seconds`,
//! `probe_dns_lookup_time_seconds`, `probe_ip_protocol`, `probe_failed_due_to_regex`, and
//! for TLS `probe_ssl_earliest_cert_expiry` and `probe_tls_version_info{version}`).
//!
//! Modules come from porthawk.toml's `[module.NAME]` (the config in force: reloads apply),
//! then from the blackbox.yml of `serve --blackbox-config`, then the built-in `tcp_connect`.
//! As blackbox answers: a probe that fails is `probe_success 0` with status 200; a bad
//! request (no target, an unknown or refused module) is 400 with a line of text. A target
//! outside `[api] allow` is 403, and a local shortage (EMFILE, ENOBUFS, ...) is 503: it says
//! nothing about the target. `debug=true` answers the probe's log, its metrics and the
//! module instead.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use porthawk_core::{
    is_local_errno, HostSetBuilder, PortSet, PortState, ProbeRecord, ProbeSpec, TargetSpace,
};
use porthawk_engine::{result_channel, Job};
use porthawk_watch::config::{IpProtocol, ProbeModule, StateMap};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::shared::{AppState, Shared};

/// How long past its module's timeout a probe's result may take before the route gives up
/// waiting (the engine's own timeouts end every probe; this only bounds the wait).
const RESULT_GRACE: Duration = Duration::from_secs(5);

/// The Prometheus text format blackbox_exporter answers in.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/probe", get(probe))
}

/// The parameters of `/probe`, in any order; others (blackbox's `hostname`, Prometheus'
/// own) are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProbeQuery {
    /// `HOST:PORT` (`[v6]:PORT` for an IPv6 address); a host name is resolved.
    target: Option<String>,
    /// The module (default `tcp_connect`).
    module: Option<String>,
    /// `true`: the probe's log, its metrics and the module as text instead of the metrics.
    debug: Option<String>,
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A blackbox_exporter-compatible probe: one target, one module, Prometheus text.
#[utoipa::path(
    get,
    path = "/probe",
    params(ProbeQuery),
    responses(
        (status = 200, description = "Prometheus text with blackbox_exporter's tcp metrics (probe_success 0 for a probe that failed)", content_type = "text/plain"),
        (status = 400, description = "No target, a target without a port, or an unknown or refused module (named)", content_type = "text/plain"),
        (status = 401, description = "Missing or wrong bearer token", body = crate::error::ErrorBody),
        (status = 403, description = "A target outside the addresses the API may reach", content_type = "text/plain"),
        (status = 503, description = "A local shortage (descriptors, buffers, memory) kept the probe from running", content_type = "text/plain"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn probe(
    State(state): State<AppState>,
    query: Result<Query<ProbeQuery>, QueryRejection>,
) -> Response {
    let start = Instant::now();
    let Ok(Query(q)) = query else {
        return text(StatusCode::BAD_REQUEST, "Bad query string\n".into());
    };
    let name = q.module.unwrap_or_else(|| "tcp_connect".into());
    let module = match find_module(&state.0, &name).await {
        Ok(m) => m,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let Some(target) = q.target.filter(|t| !t.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Target parameter is missing\n".into(),
        );
    };
    let Some((host, port)) = split_target(&target) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("target '{target}' is not HOST:PORT (a port from 1 to 65535)\n"),
        );
    };
    let mut log = Vec::new();
    let shared = Arc::clone(&state.0);
    let resolved = {
        let host = host.clone();
        let m = Arc::clone(&module);
        tokio::task::spawn_blocking(move || choose_address(&host, &m)).await
    };
    let dns_start = Instant::now();
    let (address, dns_s) = match resolved {
        Ok((Ok(ip), secs)) => (Some(ip), secs),
        Ok((Err(e), secs)) => {
            log.push(format!("cannot resolve '{host}': {e}"));
            (None, secs)
        }
        Err(e) => {
            log.push(format!("the resolver task failed: {e}"));
            (None, dns_start.elapsed().as_secs_f64())
        }
    };
    let mut out = Outcome {
        dns_s,
        ip_protocol: address.map_or(0, |ip| if ip.is_ipv4() { 4 } else { 6 }),
        record: None,
        failed_at_handshake: false,
        states: module.states,
    };
    if let Some(ip) = address {
        log.push(format!("resolved '{host}' to {ip}"));
        if !shared.config.allow.iter().any(|r| r.contains(ip)) {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "target '{target}' is outside the addresses this server may probe ({ip} is not in [api] allow)\n"
                ),
            );
        }
        let named = (host.parse::<IpAddr>().is_err()).then_some(host.clone());
        match run_probe(&shared, ip, port, named, &module).await {
            Ok(record) => {
                if let Some(errno) = record.errno.filter(|e| is_local_errno(*e)) {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the probe could not run: {} on this machine (a local shortage, not a fact about the target)\n",
                            porthawk_core::errno_name(errno)
                        ),
                    );
                }
                log.push(format!("state {}", record.state.as_str()));
                if let Some(r) = &record.reason {
                    log.push(format!("dialog: {r}"));
                }
                out.failed_at_handshake = failed_at_handshake(&record, &module);
                out.record = Some(record);
            }
            Err(why) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
            }
        }
    }
    let metrics = out.encode(start.elapsed().as_secs_f64(), module.timeout);
    if q.debug.as_deref() == Some("true") {
        let mut body = String::from("Logs for the probe:\n");
        for line in &log {
            let _ = writeln!(body, "{line}");
        }
        let _ = write!(
            body,
            "\n\n\nMetrics that would have been returned:\n{metrics}\n\n\nModule configuration:\n{module:#?}\n"
        );
        return text(StatusCode::OK, body);
    }
    (StatusCode::OK, [(CONTENT_TYPE, TEXT_FORMAT)], metrics).into_response()
}

/// Module `name`: porthawk.toml's, then the blackbox.yml's, then the built-in
/// `tcp_connect`; an unknown or refused module is the message to answer.
async fn find_module(shared: &Shared, name: &str) -> Result<Arc<ProbeModule>, String> {
    let key = name.to_string();
    let from_toml = shared
        .watch
        .view(move |w, _| w.config().modules.get(&key).cloned())
        .await
        .flatten()
        .or_else(|| shared.config.watch.modules.get(name).cloned());
    if let Some(m) = from_toml {
        return Ok(m);
    }
    match shared.config.blackbox.get(name) {
        Some(Ok(m)) => return Ok(Arc::clone(m)),
        Some(Err(why)) => return Err(why.clone()),
        None => {}
    }
    if name == "tcp_connect" {
        return Ok(Arc::new(ProbeModule::tcp_connect()));
    }
    Err(format!("Unknown module \"{name}\""))
}

/// `HOST:PORT` or `[V6]:PORT`, with a port from 1 to 65535.
fn split_target(target: &str) -> Option<(String, u16)> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return (addr.port() != 0).then(|| (addr.ip().to_string(), addr.port()));
    }
    let (host, port) = target.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(':') && host.parse::<IpAddr>().is_err() {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port != 0).then(|| (host.to_string(), port))
}

/// The address to probe for `host` as the module prefers its family (blackbox's rules:
/// the preferred family, else with fallback the other), and the seconds the lookup took.
/// Blocking.
fn choose_address(host: &str, m: &ProbeModule) -> (Result<IpAddr, String>, f64) {
    let start = Instant::now();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return (Ok(ip), start.elapsed().as_secs_f64());
    }
    let found = (host, 0).to_socket_addrs().map_err(|e| e.to_string());
    let secs = start.elapsed().as_secs_f64();
    let addrs: Vec<IpAddr> = match found {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(e) => return (Err(e), secs),
    };
    let preferred = |ip: &IpAddr| match m.ip_protocol {
        IpProtocol::Ip4 => ip.is_ipv4(),
        IpProtocol::Ip6 => ip.is_ipv6(),
    };
    let chosen = addrs
        .iter()
        .find(|ip| preferred(ip))
        .or_else(|| addrs.first().filter(|_| m.ip_protocol_fallback))
        .copied()
        .ok_or_else(|| {
            format!(
                "no {} address and ip_protocol_fallback is off",
                match m.ip_protocol {
                    IpProtocol::Ip4 => "IPv4",
                    IpProtocol::Ip6 => "IPv6",
                }
            )
        });
    (chosen, secs)
}

/// The probe spec of a module: its options through `ProbeOptions::spec` (TLS set-up,
/// verification, SNI, client certificate), its timeout for the connect and for the dialog
/// after it, one try (blackbox does not retry), and its dialog.
fn spec_of(m: &ProbeModule) -> Result<ProbeSpec, String> {
    let mut spec = m
        .options
        .spec(
            m.timeout,
            1,
            m.timeout,
            m.timeout,
            Arc::new(rustls::time_provider::DefaultTimeProvider),
        )
        .map_err(|e| format!("module '{}': {}: {e}", m.name, e.field))?;
    // A blackbox.yml dialog (STARTTLS in its middle, blackbox's line matching) is not one
    // that options describe; for a porthawk.toml module this is the options' own dialog.
    spec.dialog = m.dialog.clone().map(Arc::new);
    Ok(spec)
}

/// Probes `ip:port` as an engine job with a result sink of its own; its one record.
async fn run_probe(
    shared: &Arc<Shared>,
    ip: IpAddr,
    port: u16,
    name: Option<String>,
    m: &ProbeModule,
) -> Result<ProbeRecord, String> {
    let spec = spec_of(m)?;
    let mut hosts = HostSetBuilder::default();
    match &name {
        Some(n) => hosts.include_named(ip, n),
        None => hosts.include(porthawk_core::AddrRange::single(ip)),
    };
    let ports = PortSet::parse(&port.to_string()).map_err(|e| e.to_string())?;
    let space = TargetSpace::new(hosts.build(), ports, 0).map_err(|e| e.to_string())?;
    let (sink, results) = result_channel(4);
    let id = shared.engine.next_job_id();
    let handle = shared.engine.submit(Job {
        id,
        positions: 0..space.len(),
        space: Arc::new(space),
        spec,
        rate: None,
        sink,
    });
    // Connect and dialog each have the module's timeout; the engine ends the probe by then.
    let wait = m.timeout.saturating_mul(2).saturating_add(RESULT_GRACE);
    let outcome = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + wait;
        let mut record = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match results.recv_timeout(left) {
                Ok(batch) => {
                    if record.is_none() {
                        record = batch.records.into_iter().next();
                    }
                    if batch.job_done {
                        return record.ok_or_else(|| "the probe ended without a result".into());
                    }
                }
                Err(_) => {
                    handle.cancel();
                    return Err(format!("no result within {wait:?}"));
                }
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|e| Err(format!("the probe task failed: {e}")))
}

/// What a probe found, for its metrics.
struct Outcome {
    dns_s: f64,
    ip_protocol: u8,
    record: Option<ProbeRecord>,
    /// The dialog failed at a TLS handshake (or its verification), not at an expect.
    failed_at_handshake: bool,
    /// The module's mapping of a refusal and a reply that did not match.
    states: StateMap,
}

/// Whether the record's dialog failed at one of the module's TLS handshake steps: a failed
/// handshake or verification is no regex failure for blackbox (`probe_failed_due_to_regex`
/// stays 0). The dialog names the failing step first in its reason (`step 2: ...`).
fn failed_at_handshake(record: &ProbeRecord, m: &ProbeModule) -> bool {
    let step = record
        .reason
        .as_deref()
        .and_then(|r| r.strip_prefix("step "))
        .and_then(|r| r.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    match (step, &m.dialog) {
        (Some(n), Some(d)) => n
            .checked_sub(1)
            .and_then(|i| d.steps.get(i))
            .is_some_and(|s| *s == porthawk_core::DialogStep::StartTls),
        _ => false,
    }
}

impl Outcome {
    /// blackbox's metrics, with its help texts and types.
    fn encode(&self, duration_s: f64, timeout: Duration) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {}", number(*value));
            }
        };
        let plain = |v: f64| vec![(String::new(), v)];
        gauge(
            "probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds",
            &plain(self.dns_s),
        );
        gauge(
            "probe_duration_seconds",
            "Returns how long the probe took to complete in seconds",
            &plain(duration_s),
        );
        let connected = self.record.as_ref().filter(|r| r.state == PortState::Open);
        if let Some(r) = connected {
            gauge(
                "probe_failed_due_to_regex",
                "Indicates if probe failed due to regex",
                &plain(if r.matched == Some(false) && !self.failed_at_handshake {
                    1.0
                } else {
                    0.0
                }),
            );
        }
        gauge(
            "probe_ip_protocol",
            "Specifies whether probe ip protocol is IP4 or IP6",
            &plain(f64::from(self.ip_protocol)),
        );
        if let Some(tls) = connected.and_then(|r| r.tls.as_ref()) {
            // blackbox reports the earliest expiry of the presented chain.
            if let Some(cert) = tls.expiring() {
                gauge(
                    "probe_ssl_earliest_cert_expiry",
                    "Returns last SSL chain expiry in unixtime",
                    &plain(cert.not_after as f64),
                );
            }
            gauge(
                "probe_tls_version_info",
                "Returns the TLS version used or NaN when unknown",
                &[(
                    format!("{{version=\"{}\"}}", blackbox_tls_version(&tls.version)),
                    1.0,
                )],
            );
        }
        // The verdict a monitor would give, with the module's `refused`/`mismatch`.
        let success = self
            .record
            .as_ref()
            .is_some_and(|r| porthawk_watch::watch::verdict(r, self.states).0);
        gauge(
            "probe_success",
            "Displays whether or not the probe was a success",
            &plain(if success { 1.0 } else { 0.0 }),
        );
        gauge(
            "probe_timeout_seconds",
            "Returns how long the probe timeout is in seconds",
            &plain(timeout.as_secs_f64()),
        );
        out
    }
}

/// A sample value as Prometheus' Go client writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// blackbox's names of TLS versions (`TLS 1.3`) for porthawk's (`TLSv1.3`).
fn blackbox_tls_version(v: &str) -> String {
    match v.strip_prefix("TLSv") {
        Some(n) => format!("TLS {n}"),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_host_and_port() {
        assert_eq!(split_target("127.0.0.1:22"), Some(("127.0.0.1".into(), 22)));
        assert_eq!(split_target("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(
            split_target("mx.example:25"),
            Some(("mx.example".into(), 25))
        );
        assert_eq!(split_target("127.0.0.1"), None);
        assert_eq!(split_target("::1"), None);
        assert_eq!(split_target(":25"), None);
        assert_eq!(split_target("host:http"), None);
        assert_eq!(split_target("127.0.0.1:0"), None);
        assert_eq!(split_target("mx.example:0"), None);
    }

    #[test]
    fn metrics_use_blackbox_names_and_types() {
        let mut record = ProbeRecord::new("127.0.0.1".parse().unwrap(), 25, PortState::Open, 10, 1);
        record.matched = Some(false);
        record.reason = Some("step 1: got '554', wanted ^220".into());
        let text = Outcome {
            dns_s: 0.0,
            ip_protocol: 4,
            record: Some(record),
            failed_at_handshake: false,
            states: StateMap::default(),
        }
        .encode(0.25, Duration::from_secs(5));
        assert!(
            text.contains("# TYPE probe_success gauge\nprobe_success 0\n"),
            "{text}"
        );
        assert!(text.contains("probe_failed_due_to_regex 1\n"), "{text}");
        assert!(text.contains("probe_ip_protocol 4\n"), "{text}");
        assert!(text.contains("probe_duration_seconds 0.25\n"), "{text}");
        assert!(text.contains("probe_timeout_seconds 5\n"), "{text}");
        let closed = Outcome {
            dns_s: 0.0,
            ip_protocol: 6,
            record: Some(ProbeRecord::new(
                "::1".parse().unwrap(),
                1,
                PortState::Closed,
                1,
                1,
            )),
            failed_at_handshake: false,
            states: StateMap::default(),
        }
        .encode(0.01, Duration::from_secs(1));
        assert!(closed.contains("probe_success 0\n"));
        // Like blackbox, no regex verdict without a connection.
        assert!(!closed.contains("probe_failed_due_to_regex"));
        assert_eq!(blackbox_tls_version("TLSv1.3"), "TLS 1.3");
    }

    #[test]
    fn a_modules_refused_and_mismatch_decide_probe_success() {
        let record = |state| ProbeRecord::new("127.0.0.1".parse().unwrap(), 23, state, 1, 1);
        let success = |record: ProbeRecord, states: StateMap| {
            Outcome {
                dns_s: 0.0,
                ip_protocol: 4,
                record: Some(record),
                failed_at_handshake: false,
                states,
            }
            .encode(0.01, Duration::from_secs(1))
            .contains("probe_success 1\n")
        };
        let closed_ok = StateMap {
            must_stay_closed: true,
            ..StateMap::default()
        };
        assert!(success(record(PortState::Closed), closed_ok));
        assert!(!success(record(PortState::Open), closed_ok));
        assert!(!success(record(PortState::Filtered), closed_ok));
        assert!(!success(record(PortState::Closed), StateMap::default()));
        let wrong = ProbeRecord {
            reason: Some("step 1: got 'x', wanted ^220".into()),
            matched: Some(false),
            mismatch: true,
            ..record(PortState::Open)
        };
        let mismatch_ok = StateMap {
            mismatch_ok: true,
            ..StateMap::default()
        };
        assert!(success(wrong.clone(), mismatch_ok));
        assert!(!success(wrong, StateMap::default()));
    }

    #[test]
    fn a_failed_handshake_is_no_regex_failure() {
        let mut m = ProbeModule::tcp_connect();
        m.dialog = Some(porthawk_core::Dialog {
            steps: vec![
                porthawk_core::DialogStep::StartTls,
                porthawk_core::DialogStep::Expect {
                    expect: porthawk_core::Pattern::regex("^220").unwrap(),
                    reject: None,
                },
            ],
        });
        let mut record =
            ProbeRecord::new("127.0.0.1".parse().unwrap(), 465, PortState::Open, 10, 1);
        record.matched = Some(false);
        record.reason = Some("step 1: certificate verification failed: unknown issuer".into());
        assert!(failed_at_handshake(&record, &m));
        let text = Outcome {
            dns_s: 0.0,
            ip_protocol: 4,
            record: Some(record.clone()),
            failed_at_handshake: true,
            states: StateMap::default(),
        }
        .encode(0.1, Duration::from_secs(5));
        assert!(text.contains("probe_failed_due_to_regex 0\n"), "{text}");
        assert!(text.contains("probe_success 0\n"), "{text}");
        record.reason = Some("step 2: got '554 no', wanted ^220".into());
        assert!(!failed_at_handshake(&record, &m));
        record.reason = None;
        assert!(!failed_at_handshake(&record, &m));
    }
}
