//! `porthawk scan --format xml` (and the API's `format=xml` results) read by nmap's own tools
//! (xmllint against Debian's nmap.dtd, ndiff), and `porthawk diff` between two sweeps of a
//! farm whose listeners changed.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use crate::serve::{submit, wait_ended};
use crate::util::{
    assert_success, check_open_set, http, parse_jsonl, ports_arg, require, run, run_command,
    stderr, stdout, test_hosts, which, Farm, Kind, ListenSnapshot, Serve, TempDir, RUN_TIMEOUT,
};

/// The DTD that Debian's nmap package ships.
const NMAP_DTD: &str = "/usr/share/nmap/nmap.dtd";

/// A banner with everything that breaks careless XML: markup, an entity, a CDATA end, a NUL,
/// an escape character.
const HOSTILE: &[u8] = b"220 <script>&amp; ]]> \x00 \x1b[31m ok\r\n";

/// `Ok(())` when `tool` (from Debian's `package`) is installed; otherwise what
/// [`require`] decides (a failure under `CI=true`).
fn need_tool(tool: &str, package: &str) -> Result<(), String> {
    let missing = which(tool).is_none().then(|| {
        format!("{tool} is not installed (apt-get install {package}; .ci/run installs it)")
    });
    require(tool, missing)
}

fn need_dtd() -> Result<(), String> {
    let missing = (!Path::new(NMAP_DTD).is_file())
        .then(|| format!("{NMAP_DTD} is missing (apt-get install nmap)"));
    require("nmap.dtd", missing)
}

/// Runs `porthawk scan HOSTS -p PORTS --all EXTRA... -o FILE`, requiring exit 0.
fn sweep_to(file: &Path, hosts: &[IpAddr], ports: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec!["scan".into()];
    args.extend(hosts.iter().map(IpAddr::to_string));
    args.extend(["-p".into(), ports.into(), "--all".into(), "-o".into()]);
    args.push(file.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&argv);
    assert_success(&argv, &out);
    std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn xmllint_valid(file: &Path) {
    let mut cmd = Command::new("xmllint");
    cmd.args(["--noout", "--dtdvalid", NMAP_DTD]).arg(file);
    let out = run_command(cmd, None, RUN_TIMEOUT);
    assert!(
        out.status.success(),
        "xmllint says {} is not valid against {NMAP_DTD}:\n{}",
        file.display(),
        stderr(&out)
    );
}

/// Python's own XML parser reads the document (a second, independent reader): one
/// `ip port state` line per port, then one `banner ...` line per banner script.
const READ_XML: &str = r#"
import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
assert root.tag == 'nmaprun', root.tag
for host in root.iter('host'):
    ip = host.find('address').get('addr')
    for port in host.iter('port'):
        print(ip, port.get('portid'), port.find('state').get('state'))
        for script in port.iter('script'):
            if script.get('id') == 'banner':
                print('banner', repr(script.get('output')))
"#;

fn read_xml(file: &Path) -> (BTreeSet<(IpAddr, u16)>, usize, Vec<String>) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", READ_XML]).arg(file);
    let out = run_command(cmd, None, RUN_TIMEOUT);
    assert!(
        out.status.success(),
        "python3 cannot read the XML: {}",
        stderr(&out)
    );
    let mut open = BTreeSet::new();
    let mut ports = 0;
    let mut banners = Vec::new();
    for line in stdout(&out).lines() {
        if let Some(banner) = line.strip_prefix("banner ") {
            banners.push(banner.to_string());
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        ports += 1;
        if f[2] == "open" {
            open.insert((
                f[0].parse().expect("an address"),
                f[1].parse().expect("a port"),
            ));
        }
    }
    (open, ports, banners)
}

#[test]
fn xml_output_validates_against_nmap_dtd_and_lists_the_open_ports() {
    if need_tool("xmllint", "libxml2-utils").is_err() || need_dtd().is_err() {
        return;
    }
    let hosts = test_hosts("xml_output_validates_against_nmap_dtd", 3);
    let farm = Farm::new(&[
        (hosts[0], Kind::Greet(HOSTILE)),
        (
            hosts[0],
            Kind::Greet(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
        ),
        (hosts[1], Kind::Accept),
        (hosts[1], Kind::Reset),
        (hosts[2], Kind::Greet(b"\x00\x01\x02<&>\x7f\xff\r\n")),
    ]);
    let mut ports = farm.ports();
    ports.extend(61000..=61009);
    let dir = TempDir::new("xml-valid");
    let file = dir.path().join("scan.xml");
    let before = ListenSnapshot::take();
    let xml = sweep_to(
        &file,
        &hosts,
        &ports_arg(&farm.ports(), "61000-61009"),
        &["--format", "xml", "--identify", "--timeout", "500ms"],
    );
    let after = ListenSnapshot::take();
    assert!(
        !xml.bytes().any(|b| b < 0x20 && !b"\t\n\r".contains(&b)),
        "raw control bytes in the XML:\n{xml}"
    );
    xmllint_valid(&file);
    let (open, listed, banners) = read_xml(&file);
    // --all: every probe is a port element.
    assert_eq!(listed, hosts.len() * ports.len(), "{xml}");
    check_open_set(&open, &farm.open_set(), &hosts, &ports, &before, &after);
    // The hostile banner arrives as text, its bytes escaped the way jsonl escapes them.
    assert!(
        banners
            .iter()
            .any(|b| b.contains(r"220 <script>&amp; ]]> \\x00 \\x1b[31m ok")),
        "banners: {banners:?}\n{xml}"
    );
    assert!(
        xml.contains(
            r#"<service name="ssh" product="OpenSSH" version="9.2p1" method="probed" conf="10"><cpe>cpe:/a:openbsd:openssh:9.2p1</cpe></service>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            r#"<scaninfo type="connect" protocol="tcp" numservices="{}""#,
            ports.len()
        )),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<hosts up="3" down="0" total="3"/>"#),
        "{xml}"
    );
}

/// Runs a tool that exits 1 on differences (ndiff, porthawk diff).
fn run_tool(cmd: Command) -> Output {
    run_command(cmd, None, RUN_TIMEOUT)
}

#[test]
fn ndiff_names_the_port_that_closed_between_two_xml_sweeps() {
    if need_tool("xmllint", "libxml2-utils").is_err()
        || need_tool("ndiff", "ndiff").is_err()
        || need_dtd().is_err()
    {
        return;
    }
    let hosts = test_hosts("ndiff_names_the_port_that_closed", 1);
    let farm = Farm::new(&[(hosts[0], Kind::Accept)]);
    let gone = TcpListener::bind(SocketAddr::new(hosts[0], 0)).unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    let mut ports = farm.ports();
    ports.insert(gone_port);
    let ports = ports_arg(&ports, "");
    let dir = TempDir::new("xml-ndiff");
    let (old, new) = (dir.path().join("old.xml"), dir.path().join("new.xml"));
    sweep_to(&old, &hosts, &ports, &["--format", "xml"]);
    drop(gone);
    sweep_to(&new, &hosts, &ports, &["--format", "xml"]);
    xmllint_valid(&old);
    xmllint_valid(&new);

    let mut cmd = Command::new("ndiff");
    cmd.arg(&old).arg(&new);
    let out = run_tool(cmd);
    let text = stdout(&out);
    // ndiff exits 1 when the scans differ, 2 on an error.
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(&format!("-{gone_port}/tcp open")),
        "ndiff output:\n{text}"
    );
    assert!(
        text.contains(&format!("+{gone_port}/tcp closed")),
        "ndiff output:\n{text}"
    );
    let farm_port = farm.listeners()[0].0.port();
    assert!(!text.contains(&format!("{farm_port}/tcp")), "{text}");
}

fn porthawk_diff(old: &Path, new: &Path) -> Output {
    let mut cmd = Command::new(crate::util::BIN);
    cmd.arg("diff").arg(old).arg(new);
    run_tool(cmd)
}

#[test]
fn diff_reports_one_opened_and_one_closed_port_between_two_sweeps() {
    let hosts = test_hosts("diff_reports_one_opened_and_one_closed_port", 1);
    let farm = Farm::new(&[(hosts[0], Kind::Accept)]);
    let gone = TcpListener::bind(SocketAddr::new(hosts[0], 0)).unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    // A port that is closed in the first sweep and listened on in the second.
    let later_addr = {
        let probe = TcpListener::bind(SocketAddr::new(hosts[0], 0)).unwrap();
        probe.local_addr().unwrap()
    };
    let mut ports = farm.ports();
    ports.extend([gone_port, later_addr.port()]);
    let ports = ports_arg(&ports, "");
    let dir = TempDir::new("diff");
    let (old, new) = (dir.path().join("old.jsonl"), dir.path().join("new.jsonl"));
    let (old_xml, new_xml) = (dir.path().join("old.xml"), dir.path().join("new.xml"));
    sweep_to(&old, &hosts, &ports, &["--format", "jsonl"]);
    sweep_to(&old_xml, &hosts, &ports, &["--format", "xml"]);
    drop(gone);
    let _later = TcpListener::bind(later_addr).unwrap();
    sweep_to(&new, &hosts, &ports, &["--format", "jsonl"]);
    sweep_to(&new_xml, &hosts, &ports, &["--format", "xml"]);

    let out = porthawk_diff(&old, &new);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let changes = parse_jsonl_values(&stdout(&out));
    let seen: Vec<(String, u64)> = changes
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        ("closed".to_string(), u64::from(gone_port)),
        ("opened".to_string(), u64::from(later_addr.port())),
    ];
    want.sort_by_key(|(_, p)| *p);
    assert_eq!(seen, want, "{}", stdout(&out));
    for c in &changes {
        assert_eq!(c["ip"].as_str(), Some(hosts[0].to_string().as_str()));
        let state = &c["fields"]["state"];
        let (before, after) = if c["change"] == "opened" {
            ("closed", "open")
        } else {
            ("open", "closed")
        };
        assert_eq!(state["before"], before, "{c}");
        assert_eq!(state["after"], after, "{c}");
    }

    // The XML of the same sweeps says the same, alone or against the jsonl.
    for (a, b) in [(&old_xml, &new_xml), (&old, &new_xml), (&old_xml, &new)] {
        let xml_out = porthawk_diff(a, b);
        assert_eq!(xml_out.status.code(), Some(1), "{}", stderr(&xml_out));
        assert_eq!(
            stdout(&xml_out),
            stdout(&out),
            "{} {}",
            a.display(),
            b.display()
        );
    }
    let same = porthawk_diff(&old_xml, &old);
    assert_eq!(same.status.code(), Some(0), "{}", stdout(&same));

    // The same results: nothing to say, exit 0.
    let out = porthawk_diff(&new, &new);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // Both inputs really are result lines.
    assert!(!parse_jsonl(&std::fs::read_to_string(&old).unwrap()).is_empty());
}

fn parse_jsonl_values(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn diff_usage_errors_name_the_file_and_line_and_exit_2() {
    let dir = TempDir::new("diff-usage");
    let good = dir.write(
        "good.jsonl",
        "{\"ip\":\"10.0.0.1\",\"port\":22,\"state\":\"open\",\"rtt_us\":5,\"tries\":1}\n",
    );
    let bad = dir.write(
        "bad.jsonl",
        "{\"ip\":\"10.0.0.1\",\"port\":22,\"state\":\"open\",\"rtt_us\":5,\"tries\":1}\nnot json\n",
    );
    let out = porthawk_diff(&good, &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.jsonl' line 2"), "{err}");

    let html = dir.write("page.xml", "<html>\n<body/></html>\n");
    let out = porthawk_diff(&good, &html);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("page.xml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not nmap XML"), "{}", stderr(&out));

    let missing = dir.path().join("missing.jsonl");
    let out = porthawk_diff(&missing, &good);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.jsonl"), "{}", stderr(&out));

    let out = run(&["diff", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn api_results_as_xml_validate_against_nmap_dtd() {
    if need_tool("xmllint", "libxml2-utils").is_err() || need_dtd().is_err() {
        return;
    }
    let ip = test_hosts("api_results_as_xml", 1)[0];
    let farm = Farm::new(&[
        (ip, Kind::Greet(HOSTILE)),
        (ip, Kind::Greet(b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n")),
        (ip, Kind::Reset),
    ]);
    let ports = ports_arg(&farm.ports(), "61000-61004");
    let data = TempDir::new("api-xml");
    let serve = Serve::start(data.path());
    let body = serde_json::json!({
        "targets": [ip.to_string()],
        "ports": ports,
        "store": "all",
        "probe": {"preset": "identify"},
    })
    .to_string();
    let id = submit(serve.addr, &body);
    // Following the sweep: the document comes once it has ended.
    let (code, xml) = http(
        serve.addr,
        "GET",
        &format!("/v1/sweeps/{id}/results?format=xml"),
        None,
    );
    assert_eq!(code, 200, "{xml}");
    let status = wait_ended(serve.addr, id);
    assert_eq!(status["state"], "done", "{status}");
    let file = data.write("api.xml", &xml);
    xmllint_valid(&file);
    let (open, listed, banners) = read_xml(&file);
    assert_eq!(listed, farm.ports().len() + 5, "{xml}");
    assert_eq!(open, farm.open_set(), "{xml}");
    assert!(
        banners.iter().any(|b| b.contains("<script>&amp; ]]>")),
        "{banners:?}"
    );
    assert!(xml.contains(" exit=\"success\"/>"), "{xml}");

    let (code, err) = http(
        serve.addr,
        "GET",
        &format!("/v1/sweeps/{id}/results?format=yaml"),
        None,
    );
    assert_eq!(code, 400, "{err}");
    assert!(err.contains("jsonl, csv or xml"), "{err}");
}
