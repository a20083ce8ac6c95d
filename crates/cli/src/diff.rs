//! `porthawk diff OLD NEW`: what changed between two sweeps' results, as JSON lines; exit 0
//! when nothing changed and 1 when something did, as diff(1) does.
//!
//! Each file is the jsonl of `porthawk scan --format jsonl` or nmap XML (`--format xml`, or
//! `nmap -oX` itself): a file whose first non-blank character is `<` is read as XML.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use porthawk_core::{diff_results, PortState, ProbeRecord, ResultLine};

use crate::args::DiffArgs;

pub fn run(args: &DiffArgs) -> Result<ExitCode> {
    let old = read_lines(&args.old)?;
    let new = read_lines(&args.new)?;
    let changes = diff_results(&old, &new);
    let mut out = BufWriter::new(io::stdout().lock());
    for change in &changes {
        let json = serde_json::to_string(change).context("cannot encode a change")?;
        writeln!(out, "{json}").context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::from(u8::from(!changes.is_empty())))
}

/// The result lines of a `porthawk scan --format jsonl` file; an error names the file and the
/// line that is not a result line.
fn read_lines(path: &Path) -> Result<Vec<ResultLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    if text.trim_start().starts_with('<') {
        return read_nmap_xml(&text).with_context(|| format!("'{}'", path.display()));
    }
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ResultLine = serde_json::from_str(line).with_context(|| {
            format!(
                "'{}' line {}: not a porthawk result line",
                path.display(),
                n + 1
            )
        })?;
        lines.push(parsed);
    }
    Ok(lines)
}

/// The result lines of an nmap XML document: one per `port` element of each `host`, with the
/// state, the service's name, product and version, the banner script's output and the
/// certificate facts of an `ssl-cert` script. Round trip times are not in nmap XML: they are
/// 0, which the diff does not compare.
fn read_nmap_xml(text: &str) -> Result<Vec<ResultLine>> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).context("not valid XML")?;
    let root = doc.root_element();
    if !root.has_tag_name("nmaprun") {
        bail!(
            "line {}: not nmap XML (the root element is <{}>, not <nmaprun>)",
            doc.text_pos_at(root.range().start).row,
            root.tag_name().name()
        );
    }
    let mut lines = Vec::new();
    for host in root.children().filter(|n| n.has_tag_name("host")) {
        let at = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
        let Some(address) = host
            .children()
            .find(|n| n.has_tag_name("address") && n.attribute("addrtype") != Some("mac"))
        else {
            bail!("line {}: a <host> without an IP <address>", at(host));
        };
        let ip = address
            .attribute("addr")
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("line {}: not an IP address", at(address)))?;
        let name = host
            .descendants()
            .find(|n| n.has_tag_name("hostname") && n.attribute("type") != Some("PTR"))
            .and_then(|n| n.attribute("name"));
        let ports = host.descendants().filter(|n| {
            n.has_tag_name("port") && n.attribute("protocol").unwrap_or("tcp") == "tcp"
        });
        for port in ports {
            let portid = port
                .attribute("portid")
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("line {}: portid is not a port number", at(port)))?;
            let child = |tag: &str| port.children().find(|n| n.has_tag_name(tag));
            let Some(state) = child("state") else {
                bail!("line {}: a <port> without a <state>", at(port));
            };
            let state = nmap_state(
                state.attribute("state").unwrap_or_default(),
                state.attribute("reason").unwrap_or_default(),
            );
            let mut line = ResultLine::new(&ProbeRecord::new(ip, portid, state, 0, 1), name, 0);
            if let Some(service) = child("service") {
                let text = |a: &str| service.attribute(a).map(str::to_string);
                line.service = text("name");
                line.product = text("product");
                line.version = text("version");
            }
            for script in port.children().filter(|n| n.has_tag_name("script")) {
                let output = script.attribute("output").unwrap_or_default();
                match script.attribute("id") {
                    Some("banner") => line.banner = Some(output.to_string()),
                    Some("ssl-cert") => read_cert(&mut line, output),
                    _ => {}
                }
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

/// porthawk's verdict for nmap's port state and reason.
fn nmap_state(state: &str, reason: &str) -> PortState {
    match state {
        "open" => PortState::Open,
        "closed" => PortState::Closed,
        "filtered" if reason.ends_with("unreach") => PortState::Unreachable,
        "filtered" | "open|filtered" | "closed|filtered" | "unfiltered" => PortState::Filtered,
        _ => PortState::Error,
    }
}

/// The certificate facts of an `ssl-cert` script's output (`Subject: ...` lines, as porthawk
/// and nmap write them).
fn read_cert(line: &mut ResultLine, output: &str) {
    for row in output.lines() {
        let Some((key, value)) = row.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_string());
        match key.trim() {
            "TLS version" => line.tls_version = value,
            "Subject" => line.cert_subject = value,
            "Issuer" => line.cert_issuer = value,
            "Not valid after" => line.cert_not_after = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `nmap -sV -oX` output (trimmed): a MAC address, a PTR name, a UDP port
    /// and a port without a service, next to the user's name and a TCP service.
    const NMAP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>
<nmaprun scanner="nmap" args="nmap -sV -oX - mx" start="1700000000" version="7.93" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="2" services="22,25"/>
<verbose level="0"/><debugging level="0"/>
<host starttime="1700000000" endtime="1700000001"><status state="up" reason="arp-response" reason_ttl="0"/>
<address addr="10.0.0.7" addrtype="ipv4"/>
<address addr="52:54:00:12:34:56" addrtype="mac" vendor="QEMU"/>
<hostnames><hostname name="mx" type="user"/><hostname name="mx.example" type="PTR"/></hostnames>
<ports><extraports state="closed" count="998"/>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="64"/><service name="ssh" product="OpenSSH" version="9.2p1 Debian 2+deb12u3" extrainfo="protocol 2.0" method="probed" conf="10"><cpe>cpe:/a:openbsd:openssh:9.2p1</cpe></service></port>
<port protocol="tcp" portid="25"><state state="filtered" reason="host-unreach" reason_ttl="64"/></port>
<port protocol="udp" portid="53"><state state="open" reason="udp-response" reason_ttl="64"/></port>
</ports>
</host>
<runstats><finished time="1700000001" timestr="Tue Nov 14 22:13:21 2023" elapsed="1.00" exit="success"/><hosts up="1" down="0" total="1"/></runstats>
</nmaprun>
"#;

    #[test]
    fn nmap_xml_becomes_result_lines() {
        let lines = read_nmap_xml(NMAP).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let ssh = &lines[0];
        assert_eq!(ssh.ip.to_string(), "10.0.0.7");
        assert_eq!(ssh.host.as_deref(), Some("mx"));
        assert_eq!((ssh.port, ssh.state), (22, PortState::Open));
        assert_eq!(ssh.service.as_deref(), Some("ssh"));
        assert_eq!(ssh.product.as_deref(), Some("OpenSSH"));
        assert_eq!(ssh.version.as_deref(), Some("9.2p1 Debian 2+deb12u3"));
        assert_eq!(
            (lines[1].port, lines[1].state),
            (25, PortState::Unreachable)
        );
    }

    #[test]
    fn porthawk_xml_reads_back_as_the_lines_it_was_made_of() {
        let mut line = ResultLine::new(
            &ProbeRecord::new("::1".parse().unwrap(), 443, PortState::Open, 0, 1),
            Some("web"),
            0,
        );
        line.service = Some("http".into());
        line.banner = Some("HTTP/1.0 200 <ok> & \\x00".into());
        line.tls_version = Some("TLSv1.3".into());
        line.cert_subject = Some("CN=web, O=Example: Inc".into());
        line.cert_issuer = Some("CN=ca".into());
        line.cert_not_after = Some("2027-01-15T08:00:00Z".into());
        let closed = ResultLine::new(
            &ProbeRecord::new("10.0.0.1".parse().unwrap(), 22, PortState::Closed, 0, 1),
            None,
            0,
        );
        let lines = vec![closed, line];
        let xml = porthawk_core::nmap_xml(&porthawk_core::XmlRun::default(), &lines);
        assert_eq!(read_nmap_xml(&xml).unwrap(), lines, "{xml}");
    }

    #[test]
    fn broken_xml_is_an_error_with_a_line() {
        let err = read_nmap_xml("<nmaprun>\n<host>\n</nmaprun>").unwrap_err();
        assert!(format!("{err:#}").contains("3:"), "{err:#}");
        let err = read_nmap_xml(
            "<nmaprun><host><status state=\"up\" reason=\"x\" reason_ttl=\"0\"/></host></nmaprun>",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("without an IP"), "{err:#}");
    }
}
