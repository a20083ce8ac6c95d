//! Attack-surface monitoring and blackbox_exporter's place, end to end against the real
//! `porthawk serve`: a scheduled sweep over a farm whose listeners change between two runs
//! notifies **one** grouped message to a webhook sink and keeps its history; the diff route
//! answers what `porthawk diff` prints for the same two sweeps; a restart keeps the schedule;
//! `/probe` answers Prometheus text with blackbox_exporter's names, for porthawk.toml
//! modules and a blackbox.yml used as written.

// The helpers below run only inside tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;

use crate::monitor::{
    http_sink, spawn_server, spawn_server_with, wait_for, Inbox, Server, Service, TOKEN,
};
use crate::util::{self, TempDir};

/// A free port on `ip`: bound, then let go.
fn free_port(ip: IpAddr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The body of a chunked (streamed) answer, as `Server::request` returns it raw.
fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    // Bounded by the body: each turn consumes a chunk or ends.
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size in {raw:?}"));
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
    out
}

/// The results of sweep `id` as `porthawk scan --format jsonl` prints them.
fn results(server: &Server, id: u64) -> String {
    let (status, body) = server.request("GET", &format!("/v1/sweeps/{id}/results"), None, true);
    assert_eq!(status, 200, "{body}");
    dechunk(&body)
}

/// The runs of schedule `name`, newest first.
fn runs(server: &Server, name: &str) -> Vec<Value> {
    let v = server.json(&format!("/v1/schedules/{name}/changes"));
    v["runs"].as_array().cloned().unwrap_or_default()
}

fn hooks_of(inbox: &Inbox, kind: &str) -> Vec<Value> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn schedule_config(host: IpAddr, ports: &str, every: &str, hook: SocketAddr) -> String {
    format!(
        r#"
[api]
token = "{TOKEN}"

[[sweep]]
name = "farm"
targets = ["{host}"]
ports = "{ports}"
every = "{every}"
probe = {{ timeout = "500ms", tries = 1 }}
on_change = ["hook"]

[notify.hook]
webhook = {{ url = "http://{hook}/hook" }}
retries = 1
backoff = "100ms"
"#
    )
}

#[test]
fn scheduled_sweep_notifies_one_grouped_change_and_the_diff_route_is_the_cli_diff() {
    let net = util::test_net("surface-schedule");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let a = free_port(ip(1));
    let b = free_port(ip(1));
    let mut service_a = Service::start(a);
    let (hook_port, hooks) = http_sink(ip(3));
    let hook = SocketAddr::new(ip(3), hook_port);
    let dir = TempDir::new("surface-schedule");
    let ports = format!("{},{}", a.port(), b.port());
    let config = dir.write("porthawk.toml", &schedule_config(ip(1), &ports, "2s", hook));
    let data = dir.path().join("data");
    let server = spawn_server(&config, &data);
    let limit = Duration::from_secs(60);

    // The first run is the baseline: kept, not notified.
    wait_for("the baseline run", limit, &server, || {
        runs(&server, "farm")
            .iter()
            .any(|r| r["outcome"] == "baseline")
    });
    // The listeners change before the next run (due 2 s after the baseline's start).
    let mut service_b = Service::start(b);
    service_a.stop();
    wait_for("a run with changes", limit, &server, || {
        runs(&server, "farm")
            .iter()
            .any(|r| r["outcome"] == "changed")
    });
    // And one more run, which finds nothing new.
    wait_for("an unchanged run after the change", limit, &server, || {
        runs(&server, "farm")[0]["outcome"] == "unchanged"
    });
    let history = runs(&server, "farm");
    let changed = history.iter().find(|r| r["outcome"] == "changed").unwrap();
    let baseline = history.iter().find(|r| r["outcome"] == "baseline").unwrap();
    assert!(
        baseline["detail"].as_str().unwrap().contains("baseline"),
        "{baseline}"
    );
    assert_eq!(
        (changed["opened"].as_u64(), changed["closed"].as_u64()),
        (Some(1), Some(1))
    );
    let kinds: Vec<(String, u64)> = changed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        ("closed".to_string(), u64::from(a.port())),
        ("opened".to_string(), u64::from(b.port())),
    ];
    want.sort_by_key(|w| w.1);
    assert_eq!(kinds, want, "{changed}");

    // Exactly one grouped message, sent for the changed run only.
    let sent = hooks_of(&hooks, "sweep_changed");
    assert_eq!(sent.len(), 1, "{:?}", hooks.lock().unwrap());
    assert_eq!(sent[0]["schedule"], "farm");
    assert_eq!(
        (sent[0]["opened"].as_u64(), sent[0]["closed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(sent[0]["changes"].as_array().unwrap().len(), 2);
    assert_eq!(sent[0]["more"], 0);
    assert_eq!(changed["notices"][0]["outcome"], "sent", "{changed}");
    assert!(hooks_of(&hooks, "sweep_failed").is_empty());

    // The runs are normal sweeps, named by their schedule.
    let old = changed["against"].as_u64().unwrap();
    let new = changed["sweep_id"].as_u64().unwrap();
    let listing = server.json("/v1/sweeps");
    let named = listing["sweeps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["schedule"] == "farm")
        .count();
    assert!(named >= 3, "{listing}");
    assert_eq!(
        server.json(&format!("/v1/sweeps/{new}"))["schedule"],
        "farm"
    );

    // The diff route prints what `porthawk diff` prints for the two sweeps' jsonl.
    let (status, api_diff) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against={old}"),
        None,
        true,
    );
    assert_eq!(status, 200, "{api_diff}");
    let old_file = dir.write("old.jsonl", &results(&server, old));
    let new_file = dir.write("new.jsonl", &results(&server, new));
    let cli = util::run(&[
        "diff",
        old_file.to_str().unwrap(),
        new_file.to_str().unwrap(),
    ]);
    assert_eq!(cli.status.code(), Some(1), "{}", util::stderr(&cli));
    assert_eq!(api_diff, util::stdout(&cli));
    assert_eq!(api_diff.lines().count(), 2, "{api_diff}");
    assert!(api_diff.contains(&format!(
        r#""change":"opened","ip":"{}","port":{}"#,
        b.ip(),
        b.port()
    )));
    // Unknown ids are named; reads need the token as other reads do.
    let (status, body) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against=987654"),
        None,
        true,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("987654"), "{body}");
    let (status, _) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against={old}"),
        None,
        false,
    );
    assert_eq!(status, 401);
    // /probe follows the token as the other reads do, unless [api] public lists it.
    let (status, _) = server.request("GET", &format!("/probe?target={b}"), None, false);
    assert_eq!(status, 401);
    // A sweep still running cannot be diffed.
    let (status, body) = server.request(
        "POST",
        "/v1/sweeps",
        Some(&format!(
            r#"{{"targets":["{}"],"ports":"1-65535","rate":1}}"#,
            ip(1)
        )),
        true,
    );
    assert_eq!(status, 202, "{body}");
    let running: Value = serde_json::from_str(&body).unwrap();
    let running = running["id"].as_u64().unwrap();
    let (status, body) = server.request(
        "GET",
        &format!("/v1/sweeps/{running}/diff?against={old}"),
        None,
        true,
    );
    assert_eq!(status, 409, "{body}");
    let (status, _) = server.request("DELETE", &format!("/v1/sweeps/{running}"), None, true);
    assert_eq!(status, 202);

    // A restart keeps the schedule: the next run is due `every` after the last one's start.
    drop(server);
    service_b.stop();
    let config = dir.write("porthawk.toml", &schedule_config(ip(1), &ports, "1h", hook));
    let server = spawn_server(&config, &data);
    let schedules = server.json("/v1/schedules");
    let farm = &schedules["schedules"][0];
    let last = farm["last_run"]["started_ms"].as_u64().unwrap();
    let next = farm["next_run_at"].as_f64().unwrap();
    assert_eq!((next * 1000.0).round() as u64, last + 3_600_000, "{farm}");
    assert_eq!(farm["every_s"], 3600.0);
    let before = runs(&server, "farm").len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        runs(&server, "farm").len(),
        before,
        "a run started before it was due"
    );
    assert_eq!(hooks_of(&hooks, "sweep_changed").len(), 1);

    // A reload applies: a new schedule runs at once, and one whose sweep cannot start is a
    // failed run, notified as a failure (never as "everything closed").
    let mut text = schedule_config(ip(1), &ports, "1h", hook);
    text.push_str(&format!(
        "\n[[sweep]]\nname = \"broken\"\ntargets = [\"{}\"]\nports = \"22\"\n\
         exclude = [\":22\"]\nevery = \"1h\"\non_change = [\"hook\"]\n",
        ip(1)
    ));
    dir.write("porthawk.toml", &text);
    let (status, body) = server.request("POST", "/v1/config/reload", None, true);
    assert_eq!(status, 200, "{body}");
    wait_for("the broken schedule's failed run", limit, &server, || {
        runs(&server, "broken")
            .first()
            .is_some_and(|r| r["outcome"] == "failed")
    });
    let failed = &runs(&server, "broken")[0];
    assert!(
        failed["detail"].as_str().unwrap().contains("no port left"),
        "{failed}"
    );
    assert_eq!(failed["opened"], 0);
    assert_eq!(failed["closed"], 0);
    let notices = hooks_of(&hooks, "sweep_failed");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["schedule"], "broken");
    let listed = server.json("/v1/schedules");
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(hooks_of(&hooks, "sweep_changed").len(), 1);
}

/// A scripted line server: to each connection's first line `PING` it answers `+PONG`, then
/// closes; anything else is closed at once.
fn ping_server(addr: SocketAddr) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        // Bounded: the test makes a handful of probes.
        for conn in listener.incoming().take(32) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(c.try_clone().unwrap()).read_line(&mut line);
            if line == "PING\n" || line == "PING\r\n" {
                let _ = c.write_all(b"+PONG\r\n");
            }
        }
    })
}

/// The value of the sample `name` (with its labels, if any) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

const BLACKBOX_YML: &str = r#"# A blackbox_exporter config, as an admin has it.
modules:
  http_2xx:
    prober: http
    http:
      preferred_ip_protocol: ip4
  redis_ping:
    prober: tcp
    timeout: 2s
    tcp:
      query_response:
        - send: "PING"
        - expect: "^\\+PONG$"
  redis_wrong:
    prober: tcp
    timeout: 2s
    tcp:
      query_response:
        - send: "PING"
        - expect: "^\\+PANG"
  tls_connect:
    prober: tcp
    timeout: 3s
    tcp:
      tls: true
      tls_config:
        insecure_skip_verify: true
  tls_min_version:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        min_version: TLS13
"#;

#[test]
fn probe_answers_blackbox_metrics_for_toml_and_blackbox_yml_modules() {
    let net = util::test_net("surface-probe");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let open = free_port(ip(1));
    let _service = Service::start(open);
    let closed = free_port(ip(1));
    let redis = free_port(ip(2));
    let _redis = ping_server(redis);
    let dir = TempDir::new("surface-probe");
    let config = dir.write(
        "porthawk.toml",
        &format!(
            r#"
[api]
token = "{TOKEN}"
# Prometheus scrapes /probe as it scrapes /metrics.
public = ["/healthz", "/metrics", "/probe"]

[module.redis_toml]
send = "PING\r\n"
expect = "^\\+PONG"
timeout = "2s"
"#
        ),
    );
    let blackbox = dir.write("blackbox.yml", BLACKBOX_YML);
    let server = spawn_server_with(
        &config,
        &dir.path().join("data"),
        &["--blackbox-config", blackbox.to_str().unwrap()],
    );
    let probe = |query: &str| server.request("GET", &format!("/probe?{query}"), None, false);

    // The acceptance curl: probe_success 1 for an open port, 0 for a closed one.
    let (status, body) = probe(&format!("target={open}&module=tcp_connect"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "probe_ip_protocol"), Some(4.0), "{body}");
    assert!(sample(&body, "probe_duration_seconds").unwrap() > 0.0);
    assert!(sample(&body, "probe_dns_lookup_time_seconds").is_some());
    assert!(body.contains("# TYPE probe_success gauge"), "{body}");
    let (status, body) = probe(&format!("target={closed}&module=tcp_connect"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(0.0), "{body}");
    // A scrape config's URL: params in either order, the target URL-encoded.
    let encoded = open.to_string().replace(':', "%3A");
    for query in [
        format!("module=tcp_connect&target={encoded}"),
        format!("target={encoded}&module=tcp_connect"),
        format!("target={open}"),
    ] {
        let (status, body) = probe(&query);
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(sample(&body, "probe_success"), Some(1.0), "{query}: {body}");
    }

    // The blackbox.yml's query_response module, as written; and porthawk.toml's module.
    for module in ["redis_ping", "redis_toml"] {
        let (status, body) = probe(&format!("module={module}&target={redis}"));
        assert_eq!(status, 200, "{module}: {body}");
        assert_eq!(
            sample(&body, "probe_success"),
            Some(1.0),
            "{module}: {body}"
        );
        assert_eq!(
            sample(&body, "probe_failed_due_to_regex"),
            Some(0.0),
            "{module}: {body}"
        );
    }
    let (status, body) = probe(&format!("module=redis_wrong&target={redis}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(0.0), "{body}");
    assert_eq!(
        sample(&body, "probe_failed_due_to_regex"),
        Some(1.0),
        "{body}"
    );
    let (status, body) = probe(&format!("module=redis_wrong&target={redis}&debug=true"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Logs for the probe:") && body.contains("probe_failed_due_to_regex 1"),
        "{body}"
    );

    // Refusals, as blackbox answers them: plain text naming what is wrong.
    let (status, body) = probe(&format!("module=http_2xx&target={open}"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("module 'http_2xx'") && body.contains("'http' prober"),
        "{body}"
    );
    let (status, body) = probe(&format!("module=tls_min_version&target={open}"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("module 'tls_min_version'") && body.contains("tcp.tls_config.min_version"),
        "{body}"
    );
    let (status, body) = probe(&format!("module=nope&target={open}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Unknown module \"nope\""), "{body}");
    let (status, body) = probe("module=tcp_connect");
    assert_eq!(status, 400, "{body}");
    // The allow-list applies (loopback only by default): nothing is sent to 192.0.2.1.
    let (status, body) = probe("module=tcp_connect&target=192.0.2.1:22");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("192.0.2.1"), "{body}");
    assert!(
        server.log().contains("http_2xx"),
        "the refused module is logged at start"
    );

    // TLS against openssl s_server: version and certificate expiry.
    let Some(maker) = crate::daemon_util::CertMaker::new(dir.path()) else {
        return;
    };
    let cert = maker.make_for_days("probe.test", 30);
    let tls = free_port(ip(3));
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(tls.to_string())
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let _tls_server = KillOnDrop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&tls, Duration::from_secs(1)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = probe(&format!("module=tls_connect&target={tls}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "probe_ssl_earliest_cert_expiry"),
        Some(cert.not_after as f64),
        "{body}"
    );
    let version = body
        .lines()
        .find(|l| l.starts_with("probe_tls_version_info{"))
        .unwrap_or_else(|| panic!("no probe_tls_version_info: {body}"));
    assert!(
        version.starts_with("probe_tls_version_info{version=\"TLS 1."),
        "{version}"
    );
    assert!(version.ends_with(" 1"), "{version}");
}

/// A test PKI made with `openssl`: a root, an intermediate that expires before the server's
/// leaf (so the chain's earliest expiry is not the leaf's), the leaf for `probe.test`, and a
/// client certificate signed by the root.
struct ProbePki {
    root: std::path::PathBuf,
    intermediate: std::path::PathBuf,
    intermediate_not_after: i64,
    leaf: std::path::PathBuf,
    leaf_key: std::path::PathBuf,
    client: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

/// Runs `openssl` with `args`; panics with its stderr when it fails.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ProbePki {
    /// `None` (with the skip message; a failure under CI=true) without openssl.
    fn new(dir: &std::path::Path) -> Option<ProbePki> {
        let missing = util::which("openssl").is_none();
        if util::require("openssl", missing.then(|| "not installed".into())).is_err() {
            return None;
        }
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name);
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let key = |name: &str| {
            let k = path(name);
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &s(&k),
            ]);
            k
        };
        let root_key = key("root.key");
        let root = path("root.pem");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &s(&root_key),
            "-subj",
            "/O=porthawk tests/CN=Probe Test Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &s(&root),
        ]);
        // Signs a new key's certificate for `cn` with `issuer`, for `days`, with `ext`.
        let sign = |name: &str,
                    cn: &str,
                    issuer: (&std::path::Path, &std::path::Path),
                    days: &str,
                    ext: &str| {
            let k = key(&format!("{name}.key"));
            let csr = path(&format!("{name}.csr"));
            openssl(&[
                "req",
                "-new",
                "-key",
                &s(&k),
                "-subj",
                &format!("/O=porthawk tests/CN={cn}"),
                "-out",
                &s(&csr),
            ]);
            let extfile = path(&format!("{name}.ext"));
            std::fs::write(&extfile, ext).unwrap();
            let cert = path(&format!("{name}.pem"));
            openssl(&[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(issuer.0),
                "-CAkey",
                &s(issuer.1),
                "-CAcreateserial",
                "-days",
                days,
                "-extfile",
                &s(&extfile),
                "-out",
                &s(&cert),
            ]);
            (cert, k)
        };
        let (intermediate, intermediate_key) = sign(
            "intermediate",
            "Probe Test Intermediate",
            (&root, &root_key),
            "10",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        let (leaf, leaf_key) = sign(
            "leaf",
            "probe.test",
            (&intermediate, &intermediate_key),
            "300",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:probe.test\n",
        );
        let (client, client_key) = sign(
            "client",
            "porthawk client",
            (&root, &root_key),
            "300",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
        let end = openssl(&["x509", "-noout", "-enddate", "-in", &s(&intermediate)]);
        let end = end.trim().trim_start_matches("notAfter=");
        let out = std::process::Command::new("date")
            .args(["-u", "-d", end, "+%s"])
            .output()
            .expect("date");
        let intermediate_not_after = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("date -d '{end}': {e}"));
        Some(ProbePki {
            root,
            intermediate,
            intermediate_not_after,
            leaf,
            leaf_key,
            client,
            client_key,
        })
    }

    /// `openssl s_server` on `addr` with the leaf and the intermediate, and `extra` arguments.
    fn serve(&self, addr: SocketAddr, extra: &[&str]) -> KillOnDrop {
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&self.leaf)
            .arg("-key")
            .arg(&self.leaf_key)
            .arg("-cert_chain")
            .arg(&self.intermediate)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let server = KillOnDrop(child);
        crate::util::wait_accepting(addr, "openssl s_server");
        server
    }
}

/// blackbox.yml's `tls_config` as blackbox reads it, and the same TLS keys in
/// porthawk.toml's `[module.NAME]`, against `openssl s_server` with a test CA: verification
/// is on by default (an unknown issuer fails it), `ca_file` and `server_name` make it pass,
/// `insecure_skip_verify: true` turns it off, and `cert_file`/`key_file` are presented to a
/// server that requires a client certificate.
#[test]
fn probe_verifies_tls_as_blackbox_yml_and_module_keys_say() {
    let net = util::test_net("surface-probe-tls");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let dir = TempDir::new("surface-probe-tls");
    let Some(pki) = ProbePki::new(dir.path()) else {
        return;
    };
    let (root, client, client_key) = (
        pki.root.display(),
        pki.client.display(),
        pki.client_key.display(),
    );
    let blackbox = dir.write(
        "blackbox.yml",
        &format!(
            r#"modules:
  tls_ca:
    prober: tcp
    timeout: 3s
    tcp:
      tls: true
      tls_config:
        ca_file: {root}
        server_name: probe.test
  tls_default:
    prober: tcp
    timeout: 3s
    tcp:
      tls: true
      tls_config:
        server_name: probe.test
  tls_skip:
    prober: tcp
    timeout: 3s
    tcp:
      tls: true
      tls_config:
        insecure_skip_verify: true
  tls_client:
    prober: tcp
    timeout: 3s
    tcp:
      tls: true
      tls_config:
        ca_file: {root}
        server_name: probe.test
        cert_file: {client}
        key_file: {client_key}
"#
        ),
    );
    let config = dir.write(
        "porthawk.toml",
        &format!(
            r#"
[api]
token = "{TOKEN}"
public = ["/healthz", "/metrics", "/probe"]

[module.toml_ca]
tls = true
tls_verify = true
tls_ca_file = "{root}"
sni = "probe.test"
timeout = "3s"

[module.toml_client]
tls = true
tls_verify = true
tls_ca_file = "{root}"
sni = "probe.test"
tls_cert = "{client}"
tls_key = "{client_key}"
timeout = "3s"
"#
        ),
    );
    let server = spawn_server_with(
        &config,
        &dir.path().join("data"),
        &["--blackbox-config", blackbox.to_str().unwrap()],
    );
    let probe = |query: &str| {
        let (status, body) = server.request("GET", &format!("/probe?{query}"), None, false);
        assert_eq!(status, 200, "{query}: {body}");
        body
    };
    let success = |module: &str, target: SocketAddr| {
        let body = probe(&format!("module={module}&target={target}"));
        (sample(&body, "probe_success"), body)
    };

    let plain = free_port(ip(1));
    let _plain = pki.serve(plain, &[]);
    for module in ["tls_ca", "toml_ca", "tls_skip"] {
        let (ok, body) = success(module, plain);
        assert_eq!(ok, Some(1.0), "{module}: {body}");
        // The chain's earliest expiry: the intermediate's, before the leaf's.
        assert_eq!(
            sample(&body, "probe_ssl_earliest_cert_expiry"),
            Some(pki.intermediate_not_after as f64),
            "{module}: {body}"
        );
    }
    // blackbox verifies by default: against the system's roots the test CA is unknown.
    let (ok, body) = success("tls_default", plain);
    assert_eq!(ok, Some(0.0), "{body}");
    assert!(body.contains("probe_ssl_earliest_cert_expiry"), "{body}");
    // As in blackbox, a failed verification is no regex failure.
    assert_eq!(
        sample(&body, "probe_failed_due_to_regex"),
        Some(0.0),
        "{body}"
    );
    let debug = probe(&format!("module=tls_default&target={plain}&debug=true"));
    assert!(debug.contains("certificate verification failed"), "{debug}");

    // A server that requires a client certificate (TLS 1.2: a missing one fails the
    // handshake itself): the module with cert_file/key_file passes, one without fails.
    let mutual = free_port(ip(2));
    let root_arg = pki.root.to_str().unwrap().to_string();
    let _mutual = pki.serve(mutual, &["-Verify", "1", "-CAfile", &root_arg, "-tls1_2"]);
    for module in ["tls_client", "toml_client"] {
        let (ok, body) = success(module, mutual);
        assert_eq!(ok, Some(1.0), "{module}: {body}");
    }
    let (ok, body) = success("tls_ca", mutual);
    assert_eq!(ok, Some(0.0), "{body}");
}

/// A child process (openssl s_server), killed by its handle on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_unreadable_blackbox_config_stops_serve_naming_the_file() {
    let dir = TempDir::new("surface-blackbox-missing");
    let missing = dir.path().join("nope").join("blackbox.yml");
    let data = dir.path().join("data");
    let out = util::run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--blackbox-config",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!("{}: cannot read it", missing.display())),
        "{err}"
    );
    let bad = dir.write("blackbox.yml", "modules: [1, 2\n");
    let out = util::run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--blackbox-config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("blackbox.yml"),
        "{}",
        util::stderr(&out)
    );
}
