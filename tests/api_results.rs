//! The API's results are the CLI's (issue 10 item 1): one farm swept by `porthawk scan` and by
//! `porthawk serve`, the same lines (less `rtt_us`) and the same CSV header.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon_util::{free_port, CertMaker};
use crate::serve::{submit, wait_ended};
use crate::util::{assert_success, http, run, stdout, test_hosts, Farm, Kind, Serve, TempDir};

/// Lines of NDJSON or CSV as the comparison sees them: `rtt_us` (the one field that
/// legitimately differs between two sweeps) removed, sorted.
fn normalised_jsonl(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let obj = v
                .as_object_mut()
                .unwrap_or_else(|| panic!("not an object: {l}"));
            assert!(obj.remove("rtt_us").is_some(), "no rtt_us in {l}");
            v.to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// CSV rows without the `rtt_us` column, sorted; the header separately.
fn normalised_csv(text: &str) -> (String, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("csv header")
        .iter()
        .map(str::to_string)
        .collect();
    let rtt = header
        .iter()
        .position(|h| h == "rtt_us")
        .expect("rtt_us column");
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| {
            let r = r.expect("csv row");
            r.iter()
                .enumerate()
                .filter(|(i, _)| *i != rtt)
                .map(|(_, c)| c.to_string())
                .collect()
        })
        .collect();
    rows.sort();
    (header.join(","), rows)
}

/// Sweeps `target:ports` with the CLI (`cli_probe` flags) and with the API (`api_probe`),
/// every result kept by both, and requires the same lines and the same CSV.
fn compare(serve: &Serve, ip: IpAddr, ports: &str, cli_probe: &[&str], api_probe: Value) {
    let ip_text = ip.to_string();
    let scan = |format: &str| {
        let mut args = vec!["scan", &ip_text, "-p", ports, "--all", "--format", format];
        args.extend_from_slice(cli_probe);
        let out = run(&args);
        assert_success(&args, &out);
        stdout(&out)
    };
    let cli_jsonl = scan("jsonl");
    let cli_csv = scan("csv");

    let body = json!({
        "targets": [ip.to_string()],
        "ports": ports,
        "store": "all",
        "probe": api_probe,
    })
    .to_string();
    let id = submit(serve.addr, &body);
    let status = wait_ended(serve.addr, id);
    assert_eq!(status["state"], "done", "{status}");
    let (code, api_jsonl) = http(serve.addr, "GET", &format!("/v1/sweeps/{id}/results"), None);
    assert_eq!(code, 200, "{api_jsonl}");
    let (code, api_csv) = http(
        serve.addr,
        "GET",
        &format!("/v1/sweeps/{id}/results?format=csv"),
        None,
    );
    assert_eq!(code, 200, "{api_csv}");

    let cli = normalised_jsonl(&cli_jsonl);
    let api = normalised_jsonl(&api_jsonl);
    assert!(!cli.is_empty(), "the CLI found nothing");
    assert_eq!(
        api, cli,
        "API and CLI lines differ\nAPI:\n{api_jsonl}\nCLI:\n{cli_jsonl}"
    );
    let (cli_header, cli_rows) = normalised_csv(&cli_csv);
    let (api_header, api_rows) = normalised_csv(&api_csv);
    assert_eq!(api_header, cli_header, "CSV headers differ");
    assert_eq!(
        api_rows, cli_rows,
        "CSV rows differ\nAPI:\n{api_csv}\nCLI:\n{cli_csv}"
    );
    eprintln!("{} identical lines:\n{}", cli.len(), cli.join("\n"));
}

/// Open ports with banners of different services, a silent one that gets the identify
/// probe, one that resets, and closed ports: `scan --identify --all` and an API sweep with
/// `probe.preset = "identify"`, `store = "all"` give the same lines.
#[test]
fn api_results_equal_cli_results_for_an_identified_farm() {
    let ip = test_hosts("api-results", 1)[0];
    let farm = Farm::new(&[
        (ip, Kind::Greet(b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n")),
        (
            ip,
            Kind::Greet(b"220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n"),
        ),
        (ip, Kind::Greet(b"+OK Dovecot (Debian) ready.\r\n")),
        (ip, Kind::Greet(b"=cmd, \"quoted\"\r\n\x01\xff")),
        (ip, Kind::Accept),
        (ip, Kind::Reset),
    ]);
    let mut ports: Vec<u16> = farm.ports().into_iter().collect();
    ports.extend([free_port(ip), free_port(ip)]);
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(",");
    let data = TempDir::new("api-results");
    let serve = Serve::start(data.path());
    compare(
        &serve,
        ip,
        &ports,
        &["--identify"],
        json!({"preset": "identify"}),
    );
    serve.stop();
    drop(farm);
}

/// An `openssl s_server` with a test certificate, stopped (by its handle) on drop.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS listener: the TLS version and the certificate's subject, issuer, end and days left
/// are the same from the API as from `scan --identify --tls`.
#[test]
fn api_results_equal_cli_results_for_a_tls_listener() {
    let ip = test_hosts("api-results-tls", 1)[0];
    let dir = TempDir::new("api-results-tls");
    let Some(maker) = CertMaker::new(dir.path()) else {
        return;
    };
    let cert = maker.make_for_days("api-results.test", 40);
    let port = free_port(ip);
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(SocketAddr::new(ip, port).to_string())
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let _server = TlsServer(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        thread::sleep(Duration::from_millis(50));
    }
    let data = TempDir::new("api-results-tls-data");
    let serve = Serve::start(data.path());
    compare(
        &serve,
        ip,
        &port.to_string(),
        &["--identify", "--tls"],
        json!({"preset": "identify", "tls": true}),
    );
    serve.stop();
}
