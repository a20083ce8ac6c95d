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
    banner_text, errno_name, parse_target, AddressMode, FamilyChoice, HostSetBuilder, PortSet,
    PortState, ProbeRecord, TargetSpace, TargetToken,
};
use porthawk_engine::{result_channel, Engine, EngineConfig, Job};

use crate::args::{CheckArgs, StateArg};
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

impl From<StateArg> for Status {
    fn from(state: StateArg) -> Status {
        match state {
            StateArg::Ok => Status::Ok,
            StateArg::Warning => Status::Warning,
            StateArg::Critical => Status::Critical,
        }
    }
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

/// The addresses to check (of a name, those `family` chooses); `Err` for a target that is
/// not one host (a usage error).
fn addresses(host: &str, family: FamilyChoice) -> Result<Resolved> {
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
            if let Some(why) = family.nothing_left(&ips) {
                return Ok(Resolved::Unresolved(format!(
                    "cannot resolve '{name}': {why}"
                )));
            }
            Ok(Resolved::Found(family.select(&ips), Some(name)))
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
    let (ips, name) = match addresses(&host, args.family.choice())? {
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

/// What one address of the check came to.
struct Outcome {
    ip: IpAddr,
    status: Status,
    /// Why it is not OK.
    why: Option<String>,
    /// The response time, for an address that answered.
    secs: Option<f64>,
    /// Certificate days left.
    days: Option<i64>,
    /// What the status line adds after the address: ` [banner]` and the captures of the
    /// dialog's expects (nothing with `--jail`).
    info: String,
}

/// Judges one address's record against the thresholds.
fn outcome(r: &ProbeRecord, args: &CheckArgs, now: i64) -> Outcome {
    let secs = (f64::from(r.rtt_us) + f64::from(r.dialog_us.unwrap_or(0))) / 1e6;
    let mut out = Outcome {
        ip: r.ip,
        status: Status::Ok,
        why: None,
        secs: (r.state == PortState::Open).then_some(secs),
        days: None,
        info: String::new(),
    };
    if r.state != PortState::Open {
        // A refusal is what `--refused` says (ok for a port that must stay closed); no answer
        // or an error is always CRITICAL.
        out.status = if r.state == PortState::Closed {
            args.refused.into()
        } else {
            Status::Critical
        };
        out.why = Some(match (r.state, r.errno) {
            (PortState::Closed, _) => "connection refused".to_string(),
            (PortState::Filtered, _) => format!("no answer in {:?}", args.timeout),
            (_, Some(e)) => format!("{} ({})", r.state, errno_name(e)),
            _ => r.state.to_string(),
        });
        return out;
    }
    if let Some(reason) = &r.reason {
        // A reply that did not match is what `--mismatch` says; silence, a reset or a failed
        // TLS handshake is CRITICAL.
        out.status = if r.mismatch {
            args.mismatch.into()
        } else {
            Status::Critical
        };
        out.why = Some(reason.clone());
        return out;
    }
    if args.crit.is_some_and(|c| secs >= c.as_secs_f64()) {
        out.status = Status::Critical;
        out.why = Some(format!("{secs:.3}s response time"));
    } else if args.warn.is_some_and(|w| secs >= w.as_secs_f64()) {
        out.status = Status::Warning;
        out.why = Some(format!("{secs:.3}s response time"));
    }
    // The chain's first certificate to expire (the leaf's own when it is first).
    if let Some(cert) = r.tls.as_ref().and_then(|t| t.expiring()) {
        let days = cert.days_left(now);
        out.days = Some(days);
        let cert_status = if days <= args.cert_crit_days {
            Status::Critical
        } else if days <= args.cert_warn_days {
            Status::Warning
        } else {
            Status::Ok
        };
        if cert_status > Status::Ok {
            let leaf = r.tls.as_ref().and_then(|t| t.cert.as_ref());
            let which = if leaf.is_some_and(|l| l.subject != cert.subject) {
                format!("certificate '{}' of the chain", cert.subject)
            } else {
                "certificate".to_string()
            };
            let what = if days < 0 {
                format!("{which} expired {} days ago", -days)
            } else {
                format!("{which} expires in {days} days")
            };
            out.why = Some(match out.why.take() {
                Some(w) => format!("{w}, {what}"),
                None => what,
            });
            out.status = out.status.max(cert_status);
        }
    }
    if !args.probe.jail {
        if let Some(b) = &r.banner {
            out.info = format!(" [{}]", banner_text(b).chars().take(80).collect::<String>());
        }
        // What the dialog's expects captured, as `${1}`, `${2}` ... name them.
        if !r.captures.is_empty() {
            let captures: Vec<String> = r
                .captures
                .iter()
                .map(|c| porthawk_core::printable(c, 80))
                .collect();
            out.info
                .push_str(&format!(" captures: {}", captures.join(", ")));
        }
    }
    out
}

/// The status and the status line of a check's records (one per address). With
/// `--addresses any` the best address decides (the name answers if one of its addresses
/// does) and the line says which one it was; with `all` the worst one does. Either way every
/// failing address is named, and with several addresses the perfdata has a time per address
/// (`U` for one that did not answer).
fn verdict(
    records: &[ProbeRecord],
    host: &str,
    port: u16,
    args: &CheckArgs,
    now: i64,
) -> (Status, String) {
    let outcomes: Vec<Outcome> = records.iter().map(|r| outcome(r, args, now)).collect();
    let several = outcomes.len() > 1;
    // The addresses the verdict rests on: the best one for `any` (the fastest of the best
    // status), every one for `all`.
    let chosen: Vec<&Outcome> = match args.addresses {
        AddressMode::All => outcomes.iter().collect(),
        AddressMode::Any => {
            let best = outcomes.iter().min_by(|a, b| {
                a.status.cmp(&b.status).then(
                    a.secs
                        .unwrap_or(f64::MAX)
                        .total_cmp(&b.secs.unwrap_or(f64::MAX)),
                )
            });
            best.into_iter().collect()
        }
    };
    let worst = chosen
        .iter()
        .map(|o| o.status)
        .max()
        .unwrap_or(Status::Critical);
    let slowest = chosen.iter().filter_map(|o| o.secs).fold(0.0f64, f64::max);
    let fewest_days = chosen.iter().filter_map(|o| o.days).min();
    let info = chosen
        .iter()
        .map(|o| o.info.clone())
        .find(|i| !i.is_empty())
        .unwrap_or_default();
    let problems: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.why.as_ref().map(|why| format!("{}: {why}", o.ip)))
        .collect();
    let fmt_opt =
        |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64()));
    let (warn, crit) = (fmt_opt(args.warn), fmt_opt(args.crit));
    let mut perf = format!("time={slowest:.6}s;{warn};{crit};0;");
    if let Some(days) = fewest_days {
        perf.push_str(&format!(
            " cert_days={days};{};{};;",
            args.cert_warn_days, args.cert_crit_days
        ));
    }
    if several {
        for o in &outcomes {
            // A label with `:` or spaces is quoted, as the plugin guidelines allow.
            match o.secs {
                Some(t) => perf.push_str(&format!(" 'time {}'={t:.6}s;{warn};{crit};0;", o.ip)),
                None => perf.push_str(&format!(" 'time {}'=U", o.ip)),
            }
        }
    }
    // OK with a reason (a mismatch or refusal mapped to OK) reads as the problem it is.
    let summary = if worst == Status::Ok && chosen.iter().all(|o| o.why.is_none()) {
        // Which address answered, wherever the target was not that address itself.
        let named = chosen.iter().any(|o| o.ip.to_string() != host);
        let via = if several || named {
            let ips: Vec<String> = chosen.iter().map(|o| o.ip.to_string()).collect();
            format!(" via {}", ips.join(", "))
        } else {
            String::new()
        };
        let others = if problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", problems.join("; "))
        };
        format!("{slowest:.3} second response time on {host} port {port}{via}{info}{others}")
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
    use porthawk_core::{CertInfo, TlsInfo};

    fn args(extra: &[&str]) -> CheckArgs {
        let mut argv = vec!["porthawk", "check", "127.0.0.1:25"];
        argv.extend_from_slice(extra);
        match crate::args::parse_from(argv).unwrap().command {
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
        let (s, line) = verdict(&[open(12_000)], "127.0.0.1", 25, &a, 0);
        assert_eq!(s, Status::Ok);
        assert_eq!(
            line,
            "PORTHAWK OK - 0.012 second response time on 127.0.0.1 port 25 | time=0.012000s;0.200;1.000;0;"
        );
        let (_, line) = verdict(&[open(12_000)], "mx", 25, &a, 0);
        assert!(line.contains("on mx port 25 via 127.0.0.1 |"), "{line}");
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
    fn a_name_passes_on_one_address_unless_all_are_asked_for() {
        let v4 = open(1_000);
        let v6 = ProbeRecord::new("::1".parse().unwrap(), 25, PortState::Closed, 90, 1);
        let records = [v4, v6];
        let (s, line) = verdict(&records, "mx", 25, &args(&[]), 0);
        assert_eq!(s, Status::Ok);
        assert_eq!(
            line,
            "PORTHAWK OK - 0.001 second response time on mx port 25 via 127.0.0.1 \
             (::1: connection refused) | time=0.001000s;;;0; 'time 127.0.0.1'=0.001000s;;;0; \
             'time ::1'=U"
        );
        let (s, line) = verdict(&records, "mx", 25, &args(&["--addresses", "all"]), 0);
        assert_eq!(s, Status::Critical);
        assert!(
            line.starts_with("PORTHAWK CRITICAL - mx port 25: ::1: connection refused |"),
            "{line}"
        );
        // Any: the best address decides, a slow one is WARNING when the other is refused.
        let a = args(&["--warn", "200ms"]);
        let slow = [open(300_000), records[1].clone()];
        let (s, line) = verdict(&slow, "mx", 25, &a, 0);
        assert_eq!(s, Status::Warning);
        assert!(line.contains("127.0.0.1: 0.300s response time"), "{line}");
        assert!(line.contains("::1: connection refused"), "{line}");
        // Every address down: CRITICAL either way, each named.
        let down = ProbeRecord::new("127.0.0.1".parse().unwrap(), 25, PortState::Closed, 9, 1);
        let (s, line) = verdict(&[down, records[1].clone()], "mx", 25, &args(&[]), 0);
        assert_eq!(s, Status::Critical);
        assert!(
            line.contains("127.0.0.1: connection refused; ::1: connection refused"),
            "{line}"
        );
    }

    #[test]
    fn mismatches_and_refusals_map_to_the_states_asked_for() {
        let mismatch = ProbeRecord {
            reason: Some("step 1: got '554 no', wanted ^220 ".into()),
            matched: Some(false),
            mismatch: true,
            ..open(100)
        };
        let silent = ProbeRecord {
            reason: Some("step 1: expect ^220  timed out after 2s".into()),
            matched: Some(false),
            ..open(100)
        };
        let refused = ProbeRecord::new("127.0.0.1".parse().unwrap(), 25, PortState::Closed, 9, 1);
        let status = |flags: &[&str], r: &ProbeRecord| {
            verdict(std::slice::from_ref(r), "mx", 25, &args(flags), 0)
        };
        assert_eq!(status(&[], &mismatch).0, Status::Critical);
        assert_eq!(
            status(&["--mismatch", "warn"], &mismatch).0,
            Status::Warning
        );
        let (s, line) = status(&["--mismatch", "ok"], &mismatch);
        assert_eq!(s, Status::Ok);
        assert!(
            line.starts_with("PORTHAWK OK - mx port 25: 127.0.0.1: step 1: got '554 no'"),
            "{line}"
        );
        // Silence is not a mismatch: still CRITICAL.
        assert_eq!(status(&["--mismatch", "ok"], &silent).0, Status::Critical);
        assert_eq!(status(&[], &refused).0, Status::Critical);
        let (s, line) = status(&["--refused", "ok"], &refused);
        assert_eq!(s, Status::Ok);
        assert!(line.contains("connection refused"), "{line}");
        assert_eq!(
            status(&["--refused", "warning"], &refused).0,
            Status::Warning
        );
        // Zero thresholds are accepted, and always reached.
        assert_eq!(status(&["--warn", "0"], &open(1)).0, Status::Warning);
        assert_eq!(
            status(&["--warn", "0", "--crit", "0s"], &open(1)).0,
            Status::Critical
        );
        // The jail keeps the banner out of the status line.
        let talker = ProbeRecord {
            banner: Some(b"220 secret-host ESMTP\r\n".to_vec()),
            ..open(100)
        };
        assert!(status(&[], &talker).1.contains("secret-host"));
        assert!(!status(&["--jail"], &talker).1.contains("secret-host"));
    }

    #[test]
    fn sends_and_expects_keep_their_command_line_order() {
        use porthawk_core::ProbeStep;
        let a = args(&[
            "--expect",
            "^220",
            "--send",
            "EHLO x\\r\\n",
            "--expect",
            "^250",
            "--send",
            "QUIT\\r\\n",
        ]);
        assert_eq!(
            a.probe.steps,
            [
                ProbeStep::Expect("^220".into()),
                ProbeStep::Send("EHLO x\\r\\n".into()),
                ProbeStep::Expect("^250".into()),
                ProbeStep::Send("QUIT\\r\\n".into()),
            ]
        );
    }

    #[test]
    fn family_flags_make_a_choice() {
        use porthawk_core::IpFamily;
        assert_eq!(args(&[]).family.choice(), FamilyChoice::Both);
        assert_eq!(
            args(&["-6"]).family.choice(),
            FamilyChoice::Only(IpFamily::Ipv6)
        );
        assert_eq!(
            args(&["--prefer-family", "ipv4"]).family.choice(),
            FamilyChoice::Prefer(IpFamily::Ipv4)
        );
        let conflict = crate::args::parse_from(["porthawk", "check", "mx:25", "-4", "-6"]);
        assert!(conflict.is_err());
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
                expires_first: None,
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
        // An intermediate that ends first decides, and is named.
        let mut chain = with_cert(60);
        if let Some(tls) = chain.tls.as_mut() {
            tls.expires_first = Some(CertInfo {
                subject: "CN=Intermediate".into(),
                issuer: "CN=Root".into(),
                not_before: 0,
                not_after: 10 * 86_400,
            });
        }
        let (s, line) = verdict(&[chain], "mx", 25, &a, 0);
        assert_eq!(s, Status::Warning);
        assert!(
            line.contains("certificate 'CN=Intermediate' of the chain expires in 10 days"),
            "{line}"
        );
        assert!(line.ends_with("cert_days=10;21;7;;"), "{line}");
    }
}
