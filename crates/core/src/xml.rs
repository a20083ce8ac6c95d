//! nmap-compatible XML: a sweep's [`ResultLine`]s as the document `nmap -oX` writes, valid
//! against the `nmap.dtd` that nmap ships, so that ndiff and the tools that import nmap XML
//! read porthawk's results.
//!
//! The encoding carries the facts of the line: the state with nmap's reason
//! (`syn-ack`, `conn-refused`, `no-response`, `host-unreach`), the identified service,
//! product and version (`method="probed"`), the banner as the output of a `banner` script (as
//! nmap's banner.nse reports it), the TLS version and certificate as an `ssl-cert` script, and
//! a dialog's failure reason and captures as `porthawk-dialog` and `porthawk-captures` scripts.
//! The DTD only allows `scanner="nmap"`; porthawk names itself in `version` and `args`.
//!
//! Everything that came from a peer is escaped: `<`, `>`, `&`, `"` and `'` as entities,
//! tab, line feed and carriage return as character references (so attribute values keep
//! them), and every character XML 1.0 does not allow (other control characters,
//! U+FFFE, U+FFFF) as the text `\xHH` or `\u{HHHH}`, so the document stays well-formed
//! whatever a banner holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::{rfc3339, PortState, ResultLine};

/// The `xmloutputversion` of the nmap releases whose DTD this document follows.
pub const NMAP_XML_OUTPUT_VERSION: &str = "1.05";

/// What the document says about the run besides its result lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XmlRun {
    /// The command line, as `args` (`porthawk scan 10.0.0.0/24 --format xml`).
    pub args: String,
    /// porthawk's version, as `version`.
    pub version: String,
    /// The start, in seconds since the epoch.
    pub start_unix: i64,
    /// The end, in seconds since the epoch.
    pub end_unix: i64,
    /// How long the sweep took, in seconds.
    pub elapsed_secs: f64,
    /// The probed ports, in ascending order.
    pub ports: Vec<u16>,
    /// How many hosts were probed.
    pub hosts_total: u64,
    /// Hosts that answered on some port (open or closed), including ports whose lines are
    /// not in the document (a sweep that lists only open ports still knows a host is up).
    pub answered: BTreeSet<IpAddr>,
    /// Why the run did not finish as it should (interrupted, probes lost to local
    /// shortages): `exit="error"` with this `errormsg`; `None` is `exit="success"`.
    pub error: Option<String>,
}

/// The nmap XML document for `lines` of the run `run`: one `host` per address (in address
/// order, ports in port order), `status` up where the host answered, `runstats` with the
/// finish time and host counts.
pub fn nmap_xml(run: &XmlRun, lines: &[ResultLine]) -> String {
    let mut by_host: BTreeMap<IpAddr, Vec<&ResultLine>> = BTreeMap::new();
    for line in lines {
        by_host.entry(line.ip).or_default().push(line);
    }
    let mut answered = run.answered.clone();
    answered.extend(
        lines
            .iter()
            .filter(|l| matches!(l.state, PortState::Open | PortState::Closed))
            .map(|l| l.ip),
    );

    let mut out = String::with_capacity(512 + 256 * lines.len());
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE nmaprun>\n");
    let start = rfc3339(run.start_unix);
    let _ = writeln!(
        out,
        "<nmaprun scanner=\"nmap\" args=\"{}\" start=\"{}\" startstr=\"{}\" version=\"{}\" \
         xmloutputversion=\"{NMAP_XML_OUTPUT_VERSION}\">",
        escape(&run.args),
        run.start_unix,
        start,
        escape(&format!("porthawk {}", run.version)),
    );
    let _ = writeln!(
        out,
        "<scaninfo type=\"connect\" protocol=\"tcp\" numservices=\"{}\" services=\"{}\"/>",
        run.ports.len(),
        port_ranges(&run.ports)
    );
    out.push_str("<verbose level=\"0\"/>\n<debugging level=\"0\"/>\n");
    for (ip, lines) in &mut by_host {
        lines.sort_by_key(|l| l.port);
        write_host(&mut out, *ip, lines, answered.contains(ip));
    }
    let up = answered.len() as u64;
    let end = rfc3339(run.end_unix);
    let exit = match &run.error {
        None => "exit=\"success\"".to_string(),
        Some(why) => format!("exit=\"error\" errormsg=\"{}\"", escape(why)),
    };
    let _ = write!(
        out,
        "<runstats><finished time=\"{}\" timestr=\"{end}\" elapsed=\"{:.2}\" \
         summary=\"porthawk done: {} hosts ({up} up) probed in {:.2} seconds\" {exit}/>\
         <hosts up=\"{up}\" down=\"{}\" total=\"{}\"/>\n</runstats>\n</nmaprun>\n",
        run.end_unix,
        run.elapsed_secs,
        run.hosts_total,
        run.elapsed_secs,
        run.hosts_total.saturating_sub(up),
        run.hosts_total.max(up),
    );
    out
}

fn write_host(out: &mut String, ip: IpAddr, lines: &[&ResultLine], up: bool) {
    let (state, reason) = if !up {
        ("down", "no-response")
    } else if lines.iter().any(|l| l.state == PortState::Open) {
        ("up", "syn-ack")
    } else {
        ("up", "conn-refused")
    };
    let addrtype = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let _ = writeln!(
        out,
        "<host><status state=\"{state}\" reason=\"{reason}\" reason_ttl=\"0\"/>\n\
         <address addr=\"{ip}\" addrtype=\"{addrtype}\"/>"
    );
    let names: BTreeSet<&str> = lines.iter().filter_map(|l| l.host.as_deref()).collect();
    if !names.is_empty() {
        out.push_str("<hostnames>");
        for name in names {
            let _ = write!(out, "<hostname name=\"{}\" type=\"user\"/>", escape(name));
        }
        out.push_str("</hostnames>\n");
    }
    out.push_str("<ports>");
    for line in lines {
        write_port(out, line);
    }
    out.push_str("</ports>\n</host>\n");
}

/// nmap's port state and reason for a verdict (nmap calls an unreachable port filtered, with
/// the ICMP reason).
fn state_reason(line: &ResultLine) -> (&'static str, &'static str) {
    match line.state {
        PortState::Open => ("open", "syn-ack"),
        PortState::Closed => ("closed", "conn-refused"),
        PortState::Filtered => ("filtered", "no-response"),
        PortState::Unreachable => match line.errno.as_deref() {
            Some("ENETUNREACH") => ("filtered", "net-unreach"),
            _ => ("filtered", "host-unreach"),
        },
        PortState::Error => ("unknown", "error"),
    }
}

fn write_port(out: &mut String, line: &ResultLine) {
    let (state, reason) = state_reason(line);
    let _ = write!(
        out,
        "\n<port protocol=\"tcp\" portid=\"{}\"><state state=\"{state}\" reason=\"{reason}\" \
         reason_ttl=\"0\"/>",
        line.port
    );
    if let Some(service) = &line.service {
        let _ = write!(out, "<service name=\"{}\"", escape(service));
        let extrainfo = match (&line.protocol_version, &line.info) {
            (Some(p), Some(i)) => Some(format!("protocol {p}; {i}")),
            (Some(p), None) => Some(format!("protocol {p}")),
            (None, Some(i)) => Some(i.clone()),
            (None, None) => None,
        };
        for (name, value) in [
            ("product", &line.product),
            ("version", &line.version),
            ("extrainfo", &extrainfo),
        ] {
            if let Some(value) = value {
                let _ = write!(out, " {name}=\"{}\"", escape(value));
            }
        }
        let tunnel = if line.tls_version.is_some() {
            " tunnel=\"ssl\""
        } else {
            ""
        };
        out.push_str(" method=\"probed\" conf=\"10\"");
        out.push_str(tunnel);
        match &line.cpe {
            Some(cpe) => {
                let _ = write!(out, "><cpe>{}</cpe></service>", escape(cpe));
            }
            None => out.push_str("/>"),
        }
    }
    if let Some(banner) = &line.banner {
        let _ = write!(out, "<script id=\"banner\" output=\"{}\"/>", escape(banner));
    }
    let cert = [
        ("TLS version", &line.tls_version),
        ("Subject", &line.cert_subject),
        ("Issuer", &line.cert_issuer),
        ("Not valid after", &line.cert_not_after),
    ];
    if cert.iter().any(|(_, v)| v.is_some()) {
        let text: Vec<String> = cert
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
            .collect();
        let _ = write!(
            out,
            "<script id=\"ssl-cert\" output=\"{}\"/>",
            escape(&text.join("\n"))
        );
    }
    if let Some(why) = &line.reason {
        let _ = write!(
            out,
            "<script id=\"porthawk-dialog\" output=\"{}\"/>",
            escape(why)
        );
    }
    if let Some(captures) = &line.captures {
        // One line per capture, numbered as `${N}` in a send refers to it.
        let text: Vec<String> = captures
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}: {c}", i + 1))
            .collect();
        let _ = write!(
            out,
            "<script id=\"porthawk-captures\" output=\"{}\"/>",
            escape(&text.join("\n"))
        );
    }
    out.push_str("</port>");
}

/// `ports` as nmap writes `services`: ascending ranges, `1-3,8080`.
pub fn port_ranges(ports: &[u16]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ports.len() {
        let first = ports[i];
        let mut last = first;
        while i + 1 < ports.len() && ports[i + 1] == last.wrapping_add(1) && last != u16::MAX {
            i += 1;
            last = ports[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if first == last {
            let _ = write!(out, "{first}");
        } else {
            let _ = write!(out, "{first}-{last}");
        }
        i += 1;
    }
    out
}

/// `text` as XML character data or attribute value: markup characters as entities, tab and
/// line breaks as character references, characters XML 1.0 forbids as `\xHH`/`\u{HHHH}`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeRecord;

    fn line(ip: &str, port: u16, state: PortState) -> ResultLine {
        ResultLine::new(
            &ProbeRecord::new(ip.parse().unwrap(), port, state, 10, 1),
            None,
            0,
        )
    }

    #[test]
    fn escape_keeps_the_document_well_formed() {
        assert_eq!(
            escape("a<b>&\"'c]]>\0\x1b\t\r\n\u{fffe}é"),
            "a&lt;b&gt;&amp;&quot;&apos;c]]&gt;\\x00\\x1b&#9;&#13;&#10;\\u{fffe}é"
        );
    }

    #[test]
    fn port_ranges_are_nmaps_services() {
        assert_eq!(port_ranges(&[]), "");
        assert_eq!(port_ranges(&[22]), "22");
        assert_eq!(port_ranges(&[1, 2, 3, 80, 443, 444]), "1-3,80,443-444");
        assert_eq!(port_ranges(&[65534, 65535]), "65534-65535");
    }

    #[test]
    fn hosts_ports_and_stats() {
        let mut open = line("10.0.0.7", 25, PortState::Open);
        open.host = Some("mx&co".into());
        open.service = Some("smtp".into());
        open.product = Some("Postfix".into());
        open.banner = Some("220 <mx> ]]> \\x00".into());
        open.captures = Some(vec!["mx".into(), "a<b".into()]);
        let lines = [
            open,
            line("10.0.0.7", 22, PortState::Closed),
            line("10.0.0.9", 80, PortState::Filtered),
            line("::1", 80, PortState::Closed),
        ];
        let run = XmlRun {
            args: "porthawk scan x".into(),
            version: "0.1.0".into(),
            start_unix: 1_800_000_000,
            end_unix: 1_800_000_002,
            elapsed_secs: 2.0,
            ports: vec![22, 25, 80],
            hosts_total: 4,
            answered: BTreeSet::new(),
            error: None,
        };
        let xml = nmap_xml(&run, &lines);
        assert!(xml.contains("<scaninfo type=\"connect\" protocol=\"tcp\" numservices=\"3\" services=\"22,25,80\"/>"), "{xml}");
        assert!(xml.contains("<host><status state=\"up\" reason=\"syn-ack\" reason_ttl=\"0\"/>\n<address addr=\"10.0.0.7\" addrtype=\"ipv4\"/>\n<hostnames><hostname name=\"mx&amp;co\" type=\"user\"/></hostnames>"), "{xml}");
        // Ports in port order.
        let p22 = xml.find("portid=\"22\"").unwrap();
        let p25 = xml.find("portid=\"25\"").unwrap();
        assert!(p22 < p25);
        assert!(xml.contains("<state state=\"open\" reason=\"syn-ack\" reason_ttl=\"0\"/><service name=\"smtp\" product=\"Postfix\" method=\"probed\" conf=\"10\"/><script id=\"banner\" output=\"220 &lt;mx&gt; ]]&gt; \\x00\"/>"), "{xml}");
        assert!(
            xml.contains(
                "<script id=\"porthawk-captures\" output=\"1: mx&#10;2: a&lt;b\"/></port>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<status state=\"down\" reason=\"no-response\" reason_ttl=\"0\"/>\n<address addr=\"10.0.0.9\""), "{xml}");
        assert!(
            xml.contains("<address addr=\"::1\" addrtype=\"ipv6\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<hosts up=\"2\" down=\"2\" total=\"4\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<finished time=\"1800000002\""), "{xml}");
        assert!(xml.contains(" exit=\"success\"/>"), "{xml}");
        let failed = XmlRun {
            error: Some("interrupted <ctrl-c>".into()),
            ..run
        };
        assert!(nmap_xml(&failed, &lines)
            .contains(" exit=\"error\" errormsg=\"interrupted &lt;ctrl-c&gt;\"/>"));
    }

    #[test]
    fn a_host_known_to_answer_is_up_without_lines_that_say_so() {
        let run = XmlRun {
            hosts_total: 1,
            answered: ["10.0.0.9".parse().unwrap()].into(),
            ..XmlRun::default()
        };
        let xml = nmap_xml(&run, &[line("10.0.0.9", 80, PortState::Filtered)]);
        assert!(
            xml.contains("<status state=\"up\" reason=\"conn-refused\""),
            "{xml}"
        );
        assert!(
            xml.contains("<hosts up=\"1\" down=\"0\" total=\"1\"/>"),
            "{xml}"
        );
    }
}
