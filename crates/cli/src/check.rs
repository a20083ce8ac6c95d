//! `porthawk check`: one service, Nagios plugin conventions.
//!
//! The check runs as a job on the same engine as every sweep; this module only turns its
//! records into a verdict, a status line and an exit code.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use porthawk_core::{
    banner_text, errno_name, parse_target, HostSetBuilder, PortSet, PortState, ProbeRecord,
    TargetSpace, TargetToken,
};
use porthawk_engine::{result_channel, Engine, EngineConfig, Job};

use crate::args::CheckArgs;
use crate::output::unix_now;

/// Nagios plugin states, in order of severity (UNKNOWN is reported apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Exit 0.
    Ok,
    /// Exit 1.
    Warning,
    /// Exit 2.
    Critical,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
        }
    }

    fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }
}

/// Exit code of a check that could not run (bad arguments), or that was asked only for its
/// help or version.
pub const UNKNOWN: u8 = 3;

/// Splits `host:port`, `[v6]:port`.
fn split_target(text: &str) -> Result<(String, u16)> {
    let bad = || anyhow!("invalid target '{text}': expected HOST:PORT or [IPv6]:PORT");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            bail!("invalid target '{text}': write an IPv6 address as [ADDRESS]:PORT");
        }
        (host, port)
    };
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            anyhow!("invalid port '{port}' in '{text}': ports go from 1 to 65535")
        })?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// What a check's host turned into.
#[derive(Debug)]
enum Resolved {
    /// The addresses to check, with the name they came from.
    Found(Vec<IpAddr>, Option<String>),
    /// A name the resolver could not turn into addresses, and why: the service cannot be
    /// reached, which is CRITICAL (as check_tcp has it), not UNKNOWN.
    Unresolved(String),
}

/// The addresses to check; `Err` for a target that is not one host (a usage error).
fn addresses(host: &str) -> Result<Resolved> {
    match parse_target(host)? {
        TargetToken::Range(r) if r.len() == 1 => Ok(Resolved::Found(vec![r.first()], None)),
        TargetToken::Range(_) => bail!("'{host}' is a range: check takes a single host"),
        TargetToken::Host(name) => {
            use std::net::ToSocketAddrs;
            let mut ips: Vec<IpAddr> = match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(e) => {
                    return Ok(Resolved::Unresolved(format!(
                        "cannot resolve '{name}': {e}"
                    )))
                }
            };
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                return Ok(Resolved::Unresolved(format!(
                    "cannot resolve '{name}': it has no address"
                )));
            }
            Ok(Resolved::Found(ips, Some(name)))
        }
    }
}

/// Runs the check; usage errors come back as `Err` and exit UNKNOWN.
pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let (host, port) = split_target(&args.target)?;
    let spec = crate::probe::spec(&args.probe, args.timeout, args.tries)?;
    if let (Some(w), Some(c)) = (args.warn, args.crit) {
        if w > c {
            bail!("--warn must not be above --crit");
        }
    }
    // Arguments first: a bad flag is UNKNOWN even when the name does not resolve either.
    let (ips, name) = match addresses(&host)? {
        Resolved::Found(ips, name) => (ips, name),
        Resolved::Unresolved(why) => {
            let line = unresolved_line(&host, port, &why);
            println!("{line}");
            return Ok(ExitCode::from(Status::Critical.code()));
        }
    };
    let mut hosts = HostSetBuilder::default();
    for ip in &ips {
        match &name {
            Some(n) => hosts.include_named(*ip, n),
            None => hosts.include(porthawk_core::AddrRange::single(*ip)),
        };
    }
    let space = TargetSpace::new(hosts.build(), PortSet::from_ports(vec![port]), 0)?;
    let config = EngineConfig {
        shards: 1,
        inflight: ips.len().max(1),
        backend: args.backend,
        flush_interval: Duration::from_millis(5),
        ..EngineConfig::default()
    };
    let engine = Engine::start(&config)?;
    let (sink, results) = result_channel(16);
    engine.submit(Job {
        id: engine.next_job_id(),
        positions: 0..space.len(),
        space: Arc::new(space),
        spec,
        rate: None,
        sink,
    });
    let mut records = Vec::new();
    loop {
        let batch = results.recv().context("the engine stopped")?;
        records.extend(batch.records);
        if batch.job_done {
            break;
        }
    }
    records.sort_by_key(|r| r.ip);
    let (status, line) = verdict(&records, &host, port, &args, unix_now());
    println!("{line}");
    Ok(ExitCode::from(status.code()))
}

/// The status line of a check whose name did not resolve: no perfdata, as there was no
/// response to time.
fn unresolved_line(host: &str, port: u16, why: &str) -> String {
    let text = format!("{host} port {port}: {why}").replace('|', "\\x7c");
    format!("PORTHAWK {} - {text}", Status::Critical.label())
}

/// The status and the status line of a check's records (one per address).
fn verdict(
    records: &[ProbeRecord],
    host: &str,
    port: u16,
    args: &CheckArgs,
    now: i64,
) -> (Status, String) {
    let mut worst = Status::Ok;
    let mut problems = Vec::new();
    let mut slowest = 0.0f64;
    let mut fewest_days: Option<i64> = None;
    let mut info = String::new();
    for r in records {
        let secs = (f64::from(r.rtt_us) + f64::from(r.dialog_us.unwrap_or(0))) / 1e6;
        let mut status = Status::Ok;
        let mut why = None;
        if r.state == PortState::Open {
            slowest = slowest.max(secs);
        }
        if r.state != PortState::Open {
            status = Status::Critical;
            why = Some(match (r.state, r.errno) {
                (PortState::Closed, _) => "connection refused".to_string(),
                (PortState::Filtered, _) => format!("no answer in {:?}", args.timeout),
                (_, Some(e)) => format!("{} ({})", r.state, errno_name(e)),
                _ => r.state.to_string(),
            });
        } else if let Some(reason) = &r.reason {
            status = Status::Critical;
            why = Some(reason.clone());
        } else {
            if args.crit.is_some_and(|c| secs >= c.as_secs_f64()) {
                status = Status::Critical;
                why = Some(format!("{secs:.3}s response time"));
            } else if args.warn.is_some_and(|w| secs >= w.as_secs_f64()) {
                status = Status::Warning;
                why = Some(format!("{secs:.3}s response time"));
            }
            if let Some(cert) = r.tls.as_ref().and_then(|t| t.cert.as_ref()) {
                let days = cert.days_left(now);
                fewest_days = Some(fewest_days.map_or(days, |d| d.min(days)));
                let cert_status = if days <= args.cert_crit_days {
                    Status::Critical
                } else if days <= args.cert_warn_days {
                    Status::Warning
                } else {
                    Status::Ok
                };
                if cert_status > Status::Ok {
                    let what = if days < 0 {
                        format!("certificate expired {} days ago", -days)
                    } else {
                        format!("certificate expires in {days} days")
                    };
                    why = Some(match why {
                        Some(w) => format!("{w}, {what}"),
                        None => what,
                    });
                    status = status.max(cert_status);
                }
            }
            if info.is_empty() {
                if let Some(b) = &r.banner {
                    info = format!(" [{}]", banner_text(b).chars().take(80).collect::<String>());
                }
            }
        }
        if let Some(why) = why {
            problems.push(format!("{}: {why}", r.ip));
        }
        worst = worst.max(status);
    }
    let fmt_opt =
        |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64()));
    let mut perf = format!(
        "time={slowest:.6}s;{};{};0;",
        fmt_opt(args.warn),
        fmt_opt(args.crit)
    );
    if let Some(days) = fewest_days {
        perf.push_str(&format!(
            " cert_days={days};{};{};;",
            args.cert_warn_days, args.cert_crit_days
        ));
    }
    let summary = if problems.is_empty() {
        format!("{slowest:.3} second response time on {host} port {port}{info}")
    } else {
        format!("{host} port {port}: {}", problems.join("; "))
    };
    // The first `|` of a plugin's output starts its perfdata, so one in the banner or in a
    // reason (peer bytes, a pattern) would garble it: write it as the escape banners use.
    let summary = summary.replace('|', "\\x7c");
    (
        worst,
        format!("PORTHAWK {} - {summary} | {perf}", worst.label()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use porthawk_core::{CertInfo, TlsInfo};

    fn args(extra: &[&str]) -> CheckArgs {
        let mut argv = vec!["porthawk", "check", "127.0.0.1:25"];
        argv.extend_from_slice(extra);
        match crate::args::Cli::parse_from(argv).command {
            crate::args::Command::Check(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn open(rtt_us: u32) -> ProbeRecord {
        ProbeRecord::new("127.0.0.1".parse().unwrap(), 25, PortState::Open, rtt_us, 1)
    }

    #[test]
    fn targets_split_into_host_and_port() {
        assert_eq!(
            split_target("mx.example:25").unwrap(),
            ("mx.example".into(), 25)
        );
        assert_eq!(split_target("[::1]:443").unwrap(), ("::1".into(), 443));
        for bad in [
            "mx.example",
            "::1:443",
            "host:0",
            "host:99999",
            ":25",
            "[::1]443",
        ] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_follow_the_thresholds() {
        let a = args(&["--warn", "200ms", "--crit", "1s"]);
        let (s, line) = verdict(&[open(12_000)], "mx", 25, &a, 0);
        assert_eq!(s, Status::Ok);
        assert_eq!(
            line,
            "PORTHAWK OK - 0.012 second response time on mx port 25 | time=0.012000s;0.200;1.000;0;"
        );
        let (s, _) = verdict(&[open(300_000)], "mx", 25, &a, 0);
        assert_eq!(s, Status::Warning);
        let (s, line) = verdict(&[open(1_500_000)], "mx", 25, &a, 0);
        assert_eq!(s, Status::Critical);
        assert!(line.contains("1.500s response time"), "{line}");
        let closed = ProbeRecord::new("127.0.0.1".parse().unwrap(), 25, PortState::Closed, 90, 1);
        let (s, line) = verdict(&[closed], "mx", 25, &a, 0);
        assert_eq!(s, Status::Critical);
        assert!(line.contains("connection refused"), "{line}");
        let failed = ProbeRecord {
            reason: Some("step 1: expect ^220 timed out after 2s".into()),
            matched: Some(false),
            ..open(100)
        };
        let (s, line) = verdict(&[failed], "mx", 25, &a, 0);
        assert_eq!(s, Status::Critical);
        assert!(line.contains("expect ^220 timed out"), "{line}");
        // A `|` from the peer (a MariaDB greeting's random scramble has them) must not start
        // the perfdata early.
        let piped = ProbeRecord {
            banner: Some(b"220 a|b ESMTP\r\n".to_vec()),
            ..open(100)
        };
        let (_, line) = verdict(&[piped], "mx", 25, &a, 0);
        assert_eq!(line.matches('|').count(), 1, "{line}");
        assert!(line.contains("[220 a\\x7cb ESMTP]"), "{line}");
    }

    #[test]
    fn certificate_days_count() {
        let a = args(&[]);
        let with_cert = |days: i64| ProbeRecord {
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: String::new(),
                cert: Some(CertInfo {
                    subject: "CN=mx".into(),
                    issuer: "CN=ca".into(),
                    not_before: 0,
                    not_after: days * 86_400,
                }),
            }),
            ..open(100)
        };
        assert_eq!(verdict(&[with_cert(60)], "mx", 25, &a, 0).0, Status::Ok);
        assert_eq!(
            verdict(&[with_cert(20)], "mx", 25, &a, 0).0,
            Status::Warning
        );
        let (s, line) = verdict(&[with_cert(5)], "mx", 25, &a, 0);
        assert_eq!(s, Status::Critical);
        assert!(line.ends_with("cert_days=5;21;7;;"), "{line}");
        let (s, line) = verdict(&[with_cert(-2)], "mx", 25, &a, 0);
        assert_eq!(s, Status::Critical);
        assert!(line.contains("certificate expired 2 days ago"), "{line}");
    }
}
