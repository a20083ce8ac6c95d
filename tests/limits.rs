//! Low descriptor limits (issue 14 items 2, 4, 14): `porthawk serve` and `porthawk scan` work
//! under an ordinary `ulimit -n 1024`, and a tiny limit makes probes wait for descriptors
//! instead of reporting `error EMFILE` as if it were a fact about the target.
//!
//! The limits are set on the child only, with util-linux's `prlimit`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{
    check_open_set, http, http_json, index_records, parse_jsonl, ports_arg, run_command, stderr,
    stdout, test_hosts, which, with_state, Farm, ListenSnapshot, Record, Serve, TempDir, BIN,
};

/// `prlimit`, or `None` (a failure under CI) when it is missing.
fn prlimit() -> Option<std::path::PathBuf> {
    let found = which("prlimit");
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "prlimit (util-linux) is needed under CI"
        );
        eprintln!("skipping: prlimit (util-linux) not found");
    }
    found
}

/// `porthawk ARGS` with the descriptor limit set to `soft:hard`.
fn limited(prlimit: &std::path::Path, nofile: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(prlimit);
    cmd.arg(format!("--nofile={nofile}")).arg(BIN).args(args);
    cmd
}

/// Every (host, port) reported once, open exactly where the farm (or the machine) listens,
/// closed everywhere else; and no line says `error`.
fn check_exact(
    records: &[Record],
    farm: &Farm,
    hosts: &[IpAddr],
    ports: &BTreeSet<u16>,
    before: &ListenSnapshot,
    after: &ListenSnapshot,
) {
    let errors: Vec<_> = records
        .iter()
        .filter(|r| r.state != "open" && r.state != "closed")
        .take(5)
        .map(|r| &r.fields)
        .collect();
    assert!(errors.is_empty(), "not open or closed: {errors:?}");
    assert_eq!(records.len(), hosts.len() * ports.len());
    let index = index_records(records);
    for &ip in hosts {
        for &port in ports {
            assert!(index.contains_key(&(ip, port)), "{ip}:{port} not reported");
        }
    }
    let open = with_state(records, "open");
    check_open_set(&open, &farm.open_set(), hosts, ports, before, after);
}

/// Issue 14 item 14: with far fewer descriptors than probes, `scan --all` waits for
/// descriptors and gives exactly the ground truth on both backends, exit 0.
#[test]
fn scan_with_a_tiny_descriptor_limit_waits_instead_of_reporting_emfile() {
    let Some(prlimit) = prlimit() else { return };
    let hosts = test_hosts("limits-tiny", 3);
    let farm = Farm::standard(&hosts);
    let mut ports = farm.ports();
    ports.extend(61000..=61399);
    let ports_text = ports_arg(&farm.ports(), "61000-61399");
    let targets: Vec<String> = hosts.iter().map(IpAddr::to_string).collect();
    for backend in ["uring", "epoll"] {
        // 20 descriptors: stdio, the rings or epoll and a few probes at a time, for 16
        // probes in flight.
        let mut args = vec![
            "scan",
            "--all",
            "--format",
            "jsonl",
            "--timeout",
            "2s",
            "--backend",
            backend,
            "-p",
            &ports_text,
        ];
        args.extend(targets.iter().map(String::as_str));
        let before = ListenSnapshot::take();
        let out = run_command(
            limited(&prlimit, "20:20", &args),
            None,
            Duration::from_secs(120),
        );
        let after = ListenSnapshot::take();
        let err = stderr(&out);
        if backend == "uring" && !out.status.success() && err.contains("io_uring is unavailable") {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{err}");
            eprintln!("skipping io_uring: {err}");
            continue;
        }
        assert!(
            out.status.success(),
            "{backend}: exit {:?}\n{err}",
            out.status.code()
        );
        assert!(
            !stdout(&out).contains("EMFILE"),
            "{backend}: EMFILE reported"
        );
        let records = parse_jsonl(&stdout(&out));
        check_exact(&records, &farm, &hosts, &ports, &before, &after);
    }
}

/// Issue 14 item 14: when no descriptor ever frees up (the limit leaves none for a probe), the
/// probes end as `error EMFILE` after a bounded wait, and `scan` exits 1 saying that the
/// results are ours to blame, not the targets'.
#[test]
fn scan_that_never_gets_a_descriptor_exits_1_naming_the_shortage() {
    let Some(prlimit) = prlimit() else { return };
    let hosts = test_hosts("limits-none", 1);
    let target = hosts[0].to_string();
    // stdin, stdout, stderr and the epoll instance: nothing is left for a socket.
    let args = [
        "scan",
        "--all",
        "--format",
        "jsonl",
        "--backend",
        "epoll",
        "--shards",
        "1",
        "-p",
        "61000,61001",
        &target,
    ];
    let out = run_command(
        limited(&prlimit, "4:4", &args),
        None,
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let records = parse_jsonl(&stdout(&out));
    assert_eq!(records.len(), 2, "{}", stdout(&out));
    for r in &records {
        assert_eq!(r.state, "error", "{:?}", r.fields);
        assert_eq!(r.str("errno"), Some("EMFILE"), "{:?}", r.fields);
    }
    assert!(
        err.contains("2 probes failed for lack of local resources"),
        "{err}"
    );
}

/// Issue 14 item 2: `scan` under an ordinary `ulimit -n 1024` gives exact results.
#[test]
fn scan_under_an_ordinary_descriptor_limit_is_exact() {
    let Some(prlimit) = prlimit() else { return };
    let hosts = test_hosts("limits-scan", 2);
    let farm = Farm::standard(&hosts);
    let mut ports = farm.ports();
    ports.extend(61000..=61999);
    let ports_text = ports_arg(&farm.ports(), "61000-61999");
    let mut args = vec!["scan", "--all", "--format", "jsonl", "-p", &ports_text];
    let targets: Vec<String> = hosts.iter().map(IpAddr::to_string).collect();
    args.extend(targets.iter().map(String::as_str));
    let before = ListenSnapshot::take();
    let out = run_command(
        limited(&prlimit, "1024:1024", &args),
        None,
        Duration::from_secs(120),
    );
    let after = ListenSnapshot::take();
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        stderr(&out)
    );
    let records = parse_jsonl(&stdout(&out));
    check_exact(&records, &farm, &hosts, &ports, &before, &after);
}

/// `porthawk serve` on `data` under `prlimit --nofile=NOFILE`.
fn serve_limited(prlimit: &std::path::Path, nofile: &str, data: &std::path::Path) -> Serve {
    let data = data.to_string_lossy().into_owned();
    let mut cmd = limited(
        prlimit,
        nofile,
        &["serve", "--listen", "127.0.0.1:0", "--data", &data],
    );
    cmd.env_remove("PORTHAWK_API_TOKEN");
    Serve::spawn(cmd)
}

/// The soft and hard descriptor limits of process `pid`.
fn nofile_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut words = line["Max open files".len()..].split_whitespace();
    (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    )
}

/// Issue 14 item 2: `porthawk serve` starts under `ulimit -n 1024` (its default in-flight
/// count once made a ring the kernel refused) and completes an API sweep exactly; and it
/// raises its soft limit to the hard one.
#[test]
fn serve_sweeps_under_an_ordinary_descriptor_limit() {
    let Some(prlimit) = prlimit() else { return };
    let hosts = test_hosts("limits-serve", 2);
    let farm = Farm::standard(&hosts);
    let mut ports = farm.ports();
    ports.extend(61000..=61299);
    let data = TempDir::new("limits-serve");
    let before = ListenSnapshot::take();
    let server = serve_limited(&prlimit, "1024:1024", data.path());
    let targets: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let body = serde_json::json!({
        "targets": targets,
        "ports": ports_arg(&farm.ports(), "61000-61299"),
        "store": "all",
        "probe": {"timeout_ms": 1000, "tries": 1},
    })
    .to_string();
    let (code, reply) = http_json(server.addr, "POST", "/v1/sweeps", Some(&body));
    assert_eq!(code, 202, "{reply}");
    let id = reply["id"].as_u64().expect("id");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let (code, status) = http_json(server.addr, "GET", &format!("/v1/sweeps/{id}"), None);
        assert_eq!(code, 200, "{status}");
        if status["state"] != "running" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sweep {id} did not end: {status}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let after = ListenSnapshot::take();
    assert_eq!(status["state"], "done", "{status}");
    let (code, results) = http(
        server.addr,
        "GET",
        &format!("/v1/sweeps/{id}/results"),
        None,
    );
    assert_eq!(code, 200, "{results}");
    let records = parse_jsonl(&results);
    check_exact(&records, &farm, &hosts, &ports, &before, &after);
    drop(server);

    // Every command raises the soft limit to the hard one (the engine does it at start).
    let server = serve_limited(&prlimit, "1024:4096", data.path());
    let (soft, hard) = nofile_of(server.child.id());
    assert_eq!(soft, hard, "serve did not raise its descriptor limit");
    assert_ne!(soft, "1024");
}
