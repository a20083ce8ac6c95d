//! Whole dialogs (issue 11 items 8 to 12): several `--send`/`--expect` steps in order, captures
//! (`${1}`) in later sends and in the result, `--quit`, `--expect-all`, line-aware `^`/`$`,
//! `--max-reply`, `check --mismatch/--refused/--jail` and zero thresholds, reasons that quote
//! the lines that matter; from `check`, `scan` (both backends), a monitor and the API. Monitors
//! and `/probe` modules map states too: `refused = "ok"` (a port that must stay closed),
//! `mismatch = "ok"`, `jail = true`.
//!
//! The cases follow what monitoring-plugins' `check_tcp.t` and blackbox_exporter's
//! `prober/tcp_test.go` assert (several expects, all of them with `-A`, mismatch and refusal
//! states, the jail; query/response steps with captured groups in later sends, line-by-line
//! `^...$`), against a small scripted SMTP-like server the test runs, and against a real exim
//! for steps that continue inside TLS after STARTTLS.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon_util::{free_port, programs, root_for, CertMaker, Daemon};
use crate::serve::{submit, wait_ended};
use crate::util::{
    assert_success, http, parse_jsonl, run, stdout, test_net, uring_unavailable, Record, Serve,
    TempDir,
};

/// The greeting of [`Script`]; its host name is what the tests capture.
const GREETING: &str = "220 mx.dialogs.test ESMTP ready\r\n";

/// Bytes of the long reply to `LONG` before its last line, `END`.
const LONG_REPLY: usize = 20_000;

/// A scripted SMTP-like server: greets, answers `EHLO` with a multi-line reply, `MAIL FROM`
/// with its argument, `LONG` with a reply of [`LONG_REPLY`] bytes and `END`, `QUIT` with 221
/// (then closes), anything else with 500. It keeps the lines each connection sent, in order.
struct Script {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<Vec<String>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Script {
    fn start(ip: IpAddr) -> Script {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind script server");
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let lines: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let (flag, log) = (Arc::clone(&stop), Arc::clone(&lines));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let n = {
                            let mut all = log.lock().expect("script log");
                            all.push(Vec::new());
                            all.len() - 1
                        };
                        let (flag, log) = (Arc::clone(&flag), Arc::clone(&log));
                        thread::spawn(move || serve_one(conn, n, &flag, &log));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Script {
            addr,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The lines of every connection so far.
    fn sessions(&self) -> Vec<Vec<String>> {
        self.lines.lock().expect("script log").clone()
    }

    /// Waits (at most 5 s) until the last connection sent a line equal to `last`, and returns
    /// that connection's lines: the client may still be sending when the check has ended.
    fn last_session_until(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let session = self.sessions().pop().unwrap_or_default();
            if session.iter().any(|l| l == last) || Instant::now() > deadline {
                return session;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection of [`Script`], bounded to 20 s.
fn serve_one(
    conn: std::net::TcpStream,
    n: usize,
    stop: &AtomicBool,
    log: &Mutex<Vec<Vec<String>>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    if out.write_all(GREETING.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let end = Instant::now() + Duration::from_secs(20);
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            // A timeout keeps what was read of the line so far; read on.
            Err(_) => continue,
        }
        let command = line.trim_end().to_string();
        line.clear();
        log.lock().expect("script log")[n].push(command.clone());
        let reply = if let Some(name) = command.strip_prefix("EHLO ") {
            format!("250-mx.dialogs.test greets {name}\r\n250-SIZE 10240000\r\n250 HELP\r\n")
        } else if let Some(from) = command.strip_prefix("MAIL FROM:") {
            format!("250 2.1.0 OK {from}\r\n")
        } else if command == "LONG" {
            let mut text = String::new();
            let mut i = 0;
            while text.len() < LONG_REPLY {
                text.push_str(&format!("214-line {i:05} of a long reply that goes on\r\n"));
                i += 1;
            }
            text + "END\r\n"
        } else if command == "QUIT" {
            let _ = out.write_all(b"221 bye\r\n");
            return;
        } else {
            "500 unknown command\r\n".to_string()
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The outcome of one `porthawk check`: exit code and its one status line.
#[derive(Debug)]
struct Check {
    code: i32,
    line: String,
}

fn check(args: &[&str]) -> Check {
    let mut argv = vec!["check", "--read-timeout", "2s"];
    argv.extend_from_slice(args);
    let out = run(&argv);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "porthawk {argv:?}: one status line, got {text:?}"
    );
    let c = Check {
        code: out.status.code().unwrap_or(-1),
        line: lines[0].to_string(),
    };
    eprintln!("porthawk {} -> {} {}", argv.join(" "), c.code, c.line);
    c
}

fn assert_status(c: &Check, code: i32, label: &str) {
    assert_eq!(c.code, code, "exit code: {}", c.line);
    assert!(
        c.line.starts_with(&format!("PORTHAWK {label} - ")),
        "want {label}: {}",
        c.line
    );
}

/// The test's own address: host 1 of its `127.a.b.0/24`.
fn test_ip(name: &str) -> IpAddr {
    let [a, b] = test_net(name);
    IpAddr::V4(Ipv4Addr::new(127, a, b, 1))
}

/// Both backends, or epoll alone where io_uring is unavailable.
fn backends(ip: IpAddr) -> Vec<&'static str> {
    let port = free_port(ip).to_string();
    let out = run(&["scan", &ip.to_string(), "-p", &port, "--backend", "uring"]);
    if uring_unavailable(&out) {
        eprintln!("io_uring is not available here: epoll only");
        return vec!["epoll"];
    }
    vec!["uring", "epoll"]
}

/// `porthawk scan` of one port in `format` with `args`; its standard output.
fn scan(addr: SocketAddr, backend: &str, format: &str, args: &[&str]) -> String {
    let ip = addr.ip().to_string();
    let port = addr.port().to_string();
    let mut argv = vec![
        "scan",
        &ip,
        "-p",
        &port,
        "--all",
        "--tries",
        "1",
        "--format",
        format,
        "--backend",
        backend,
        "--read-timeout",
        "2s",
    ];
    argv.extend_from_slice(args);
    let out = run(&argv);
    assert_success(&argv, &out);
    stdout(&out)
}

fn scan_one(addr: SocketAddr, backend: &str, args: &[&str]) -> Record {
    let mut records = parse_jsonl(&scan(addr, backend, "jsonl", args));
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

/// The SMTP-like dialog with captures: the host name from the greeting goes into EHLO, the
/// size from the EHLO reply into MAIL FROM.
const CAPTURING: [&str; 12] = [
    "--expect",
    r"^220 (\S+) ESMTP",
    "--send",
    r"EHLO ${1}\r\n",
    "--expect",
    r"^250-SIZE (\d+)$",
    "--send",
    r"MAIL FROM:<porthawk@${1}> SIZE=${2}\r\n",
    "--expect",
    r"^250 2\.1\.0 OK",
    "--quit",
    r"QUIT\r\n",
];

#[test]
fn check_runs_the_steps_in_order_with_captures_and_quit() {
    let server = Script::start(test_ip("dialogs-check-steps"));
    let target = server.target();
    let mut args = vec![target.as_str()];
    args.extend_from_slice(&CAPTURING);
    let c = check(&args);
    assert_status(&c, 0, "OK");
    assert!(
        c.line
            .contains("[220 mx.dialogs.test ESMTP ready] captures: mx.dialogs.test, 10240000 |"),
        "{}",
        c.line
    );
    assert_eq!(
        server.last_session_until("QUIT"),
        [
            "EHLO mx.dialogs.test",
            "MAIL FROM:<porthawk@mx.dialogs.test> SIZE=10240000",
            "QUIT"
        ]
    );
    // The same flags in another order are another dialog: the send before the greeting is
    // read, and a capture that no expect before it took is refused up front (UNKNOWN).
    let c = check(&[
        &target,
        "--send",
        r"EHLO ${1}\r\n",
        "--expect",
        r"^220 (\S+)",
    ]);
    assert_status(&c, 3, "UNKNOWN");
    assert!(c.line.contains("refers to capture 1"), "{}", c.line);
}

#[test]
fn scan_reports_captures_on_both_backends_in_jsonl_and_csv() {
    let ip = test_ip("dialogs-scan-captures");
    let server = Script::start(ip);
    for backend in backends(ip) {
        let r = scan_one(server.addr, backend, &CAPTURING);
        assert_eq!(r.state, "open", "{backend}: {:?}", r.fields);
        assert_eq!(
            r.fields.get("matched"),
            Some(&Value::Bool(true)),
            "{backend}: {:?}",
            r.fields
        );
        assert_eq!(
            r.fields.get("captures"),
            Some(&json!(["mx.dialogs.test", "10240000"])),
            "{backend}: {:?}",
            r.fields
        );
        assert_eq!(r.str("banner"), Some("220 mx.dialogs.test ESMTP ready"));
        // In CSV, one cell holds the same JSON array.
        let text = scan(server.addr, backend, "csv", &CAPTURING);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().expect("csv header").clone();
        let at = header
            .iter()
            .position(|h| h == "captures")
            .expect("a captures column");
        let row = reader.records().next().expect("one row").expect("csv row");
        assert_eq!(
            row.get(at),
            Some(r#"["mx.dialogs.test","10240000"]"#),
            "{backend}: {text}"
        );
    }
}

#[test]
fn expect_all_and_line_anchors_match_as_check_tcp_and_blackbox_do() {
    let server = Script::start(test_ip("dialogs-expect-all"));
    let target = server.target();
    let ehlo = ["--send", r"EHLO x\r\n"];
    let with = |extra: &[&str]| {
        let mut args = vec![target.as_str()];
        args.extend_from_slice(&ehlo);
        args.extend_from_slice(extra);
        check(&args)
    };
    // Both lines are in the EHLO reply, in the other order: one read, all patterns (-A).
    let c = with(&[
        "--expect",
        "^250 HELP$",
        "--expect",
        r"^250-SIZE \d+$",
        "--expect-all",
    ]);
    assert_status(&c, 0, "OK");
    // Without --expect-all each expect reads a reply of its own: the second waits in vain.
    let c = with(&["--expect", "^250 HELP$", "--expect", r"^250-SIZE \d+$"]);
    assert_status(&c, 2, "CRITICAL");
    assert!(
        c.line
            .contains(r"step 3: expect ^250-SIZE \d+$ timed out after 2s"),
        "{}",
        c.line
    );
    // One pattern missing: the reason names it, and quotes the first and the last line.
    let c = with(&[
        "--expect",
        "^250 HELP$",
        "--expect",
        "^250-PIPELINING$",
        "--expect-all",
    ]);
    assert_status(&c, 2, "CRITICAL");
    assert!(
        c.line.contains(
            "step 2: got '220 mx.dialogs.test ESMTP ready' ... '250 HELP', wanted all of 2 \
             patterns, missing ^250-PIPELINING$"
        ),
        "{}",
        c.line
    );
    // `^` and `$` are line anchors, CRLF included: `^HELP$` is not the line `250 HELP`.
    let c = with(&["--expect", "^HELP$"]);
    assert_status(&c, 2, "CRITICAL");
    assert!(
        c.line.contains("wanted ^HELP$ (timed out after 2s)"),
        "{}",
        c.line
    );
    let c = with(&["--expect", r"^250-mx\.dialogs\.test greets x$"]);
    assert_status(&c, 0, "OK");
}

#[test]
fn mismatch_refused_and_zero_thresholds_map_to_the_states_asked_for() {
    let ip = test_ip("dialogs-states");
    let server = Script::start(ip);
    let target = server.target();
    let wrong = [target.as_str(), "--expect", "^554 "];
    let c = check(&wrong);
    assert_status(&c, 2, "CRITICAL");
    assert!(
        c.line
            .contains("step 1: got '220 mx.dialogs.test ESMTP ready', wanted ^554  (timed out"),
        "{}",
        c.line
    );
    for (state, code, label) in [
        ("warn", 1, "WARNING"),
        ("ok", 0, "OK"),
        ("critical", 2, "CRITICAL"),
    ] {
        let mut args = wrong.to_vec();
        args.extend_from_slice(&["--mismatch", state]);
        assert_status(&check(&args), code, label);
    }
    // Silence is not a mismatch: a server that never answers stays CRITICAL.
    let silent = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
    let silent_target = silent.local_addr().expect("address").to_string();
    let c = check(&[&silent_target, "--expect", "^220", "--mismatch", "ok"]);
    assert_status(&c, 2, "CRITICAL");
    assert!(c.line.contains("expect ^220 timed out"), "{}", c.line);
    // A refused connection: CRITICAL by default, or what --refused says.
    let closed = format!("{ip}:{}", free_port(ip));
    let c = check(&[&closed]);
    assert_status(&c, 2, "CRITICAL");
    assert!(c.line.contains("connection refused"), "{}", c.line);
    for (state, code, label) in [
        ("ok", 0, "OK"),
        ("warning", 1, "WARNING"),
        ("crit", 2, "CRITICAL"),
    ] {
        let c = check(&[&closed, "--refused", state]);
        assert_status(&c, code, label);
        assert!(c.line.contains("connection refused"), "{}", c.line);
    }
    // Zero thresholds are accepted (and always reached).
    assert_status(&check(&[&target, "--warn", "0"]), 1, "WARNING");
    assert_status(
        &check(&[&target, "--warn", "0", "--crit", "0s"]),
        2,
        "CRITICAL",
    );
    assert_status(
        &check(&[&target, "--warn", "10s", "--crit", "20s"]),
        0,
        "OK",
    );
}

#[test]
fn the_jail_keeps_the_peers_bytes_out_of_the_status_line() {
    let server = Script::start(test_ip("dialogs-jail"));
    let target = server.target();
    let c = check(&[&target, "--banner", "--jail"]);
    assert_status(&c, 0, "OK");
    assert!(!c.line.contains("dialogs.test"), "{}", c.line);
    let c = check(&[&target, "--expect", "^554 ", "--jail"]);
    assert_status(&c, 2, "CRITICAL");
    assert!(!c.line.contains("dialogs.test"), "{}", c.line);
    assert!(
        c.line.contains(&format!(
            "step 1: got {} bytes, wanted ^554 ",
            GREETING.len()
        )),
        "{}",
        c.line
    );
    // scan: the result's reason says how many bytes came, on both backends.
    let jailed = format!("step 1: got {} bytes, wanted ^554 ", GREETING.len());
    for backend in backends(server.addr.ip()) {
        let r = scan_one(server.addr, backend, &["--expect", "^554 ", "--jail"]);
        let reason = r.str("reason").unwrap_or("");
        assert!(reason.starts_with(&jailed), "{backend}: {:?}", r.fields);
        let r = scan_one(server.addr, backend, &["--expect", "^554 "]);
        assert!(
            r.str("reason").unwrap_or("").contains("dialogs.test"),
            "{backend}: {:?}",
            r.fields
        );
    }
}

#[test]
fn long_replies_are_read_up_to_max_reply_and_the_reason_says_when_it_is_hit() {
    let ip = test_ip("dialogs-max-reply");
    let server = Script::start(ip);
    let target = server.target();
    let long = [target.as_str(), "--send", r"LONG\r\n", "--expect", "^END$"];
    let c = check(&long);
    assert_status(&c, 2, "CRITICAL");
    assert!(
        c.line
            .contains("wanted ^END$ (stopped at the reply limit of 4096 bytes)"),
        "{}",
        c.line
    );
    // The reason quotes the reply's first line and the last one read, not its first 80 bytes.
    assert!(
        c.line
            .contains("step 2: got '220 mx.dialogs.test ESMTP ready' ... '214-line 0"),
        "{}",
        c.line
    );
    let mut args = long.to_vec();
    args.extend_from_slice(&["--max-reply", "65536"]);
    assert_status(&check(&args), 0, "OK");
    let mut args = long.to_vec();
    args.extend_from_slice(&["--max-reply", "2000000"]);
    let c = check(&args);
    assert_status(&c, 3, "UNKNOWN");
    assert!(c.line.contains("--max-reply"), "{}", c.line);
    for backend in backends(ip) {
        let r = scan_one(server.addr, backend, &long[1..]);
        assert_eq!(
            r.fields.get("matched"),
            Some(&Value::Bool(false)),
            "{backend}"
        );
        assert!(
            r.str("reason")
                .unwrap_or("")
                .contains("reply limit of 4096 bytes"),
            "{backend}"
        );
        let mut args = long[1..].to_vec();
        args.extend_from_slice(&["--max-reply", "1048576"]);
        let r = scan_one(server.addr, backend, &args);
        assert_eq!(
            r.fields.get("matched"),
            Some(&Value::Bool(true)),
            "{backend}: {:?}",
            r.fields
        );
    }
}

#[test]
fn monitors_run_steps_with_captures_and_say_which_line_failed() {
    let ip = test_ip("dialogs-monitor");
    let server = Script::start(ip);
    let data = TempDir::new("dialogs-monitor");
    let port = server.addr.port();
    let config = data.write(
        "porthawk.toml",
        &format!(
            r#"
[[monitor]]
name = "good"
targets = ["{ip}"]
ports = "{port}"
interval = "1s"
fail_after = 1
steps = [{{ expect = '^220 (\S+) ESMTP' }}, {{ send = 'EHLO ${{1}}\r\n' }}, {{ expect = '^250 HELP$' }}, {{ expect = '^250-SIZE' }}]
expect_all = true
quit = 'QUIT\r\n'
max_reply = 8192

[[monitor]]
name = "bad"
targets = ["{ip}"]
ports = "{port}"
interval = "1s"
fail_after = 1
steps = [{{ send = 'EHLO m\r\n' }}, {{ expect = '^250 NOPE$' }}]
"#
        ),
    );
    let mut cmd = Serve::command(data.path());
    cmd.arg("--config").arg(&config);
    let serve = Serve::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut good, mut bad) = (Value::Null, Value::Null);
    while Instant::now() < deadline {
        good = serve.http_json("GET", "/v1/monitors/good", None).1;
        bad = serve.http_json("GET", "/v1/monitors/bad", None).1;
        if good["state"] == "up" && bad["state"] == "down" {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(good["state"], "up", "{good}");
    assert_eq!(bad["state"], "down", "{bad}");
    let text = bad.to_string();
    assert!(
        text.contains(
            "step 2: got '220 mx.dialogs.test ESMTP ready' ... '250 HELP', wanted ^250 NOPE$"
        ),
        "{text}"
    );
    // The good monitor's sessions: the captured name in EHLO, then QUIT.
    let sessions = server.sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s == &["EHLO mx.dialogs.test".to_string(), "QUIT".to_string()]),
        "{sessions:?}"
    );
    serve.stop();
}

#[test]
fn api_sweeps_take_steps_and_name_the_field_of_a_bad_one() {
    let ip = test_ip("dialogs-api");
    let server = Script::start(ip);
    let data = TempDir::new("dialogs-api");
    let serve = Serve::start(data.path());
    let sweep = |probe: Value| {
        let body = json!({
            "targets": [ip.to_string()],
            "ports": server.addr.port().to_string(),
            "store": "all",
            "probe": probe,
        })
        .to_string();
        let id = submit(serve.addr, &body);
        let status = wait_ended(serve.addr, id);
        assert_eq!(status["state"], "done", "{status}");
        let (code, text) = http(serve.addr, "GET", &format!("/v1/sweeps/{id}/results"), None);
        assert_eq!(code, 200, "{text}");
        let mut records = parse_jsonl(&text);
        assert_eq!(records.len(), 1, "{text}");
        records.remove(0)
    };
    let r = sweep(json!({
        "steps": [
            {"expect": r"^220 (\S+) ESMTP"},
            {"send": r"EHLO ${1}\r\n"},
            {"expect": "^250 HELP$"},
            {"expect": r"^250-SIZE \d+$"},
        ],
        "expect_all": true,
        "quit": r"QUIT\r\n",
        "max_reply": 8192,
    }));
    assert_eq!(
        r.fields.get("matched"),
        Some(&Value::Bool(true)),
        "{:?}",
        r.fields
    );
    assert_eq!(
        server.last_session_until("QUIT"),
        ["EHLO mx.dialogs.test", "QUIT"]
    );
    // The API's stored results carry the captures, as the CLI's lines do.
    assert_eq!(
        r.fields.get("captures"),
        Some(&json!(["mx.dialogs.test"])),
        "{:?}",
        r.fields
    );
    let r =
        sweep(json!({"steps": [{"send": r"LONG\r\n"}, {"expect": "^END$"}], "max_reply": 1024}));
    assert_eq!(
        r.fields.get("matched"),
        Some(&Value::Bool(false)),
        "{:?}",
        r.fields
    );
    assert!(
        r.str("reason")
            .unwrap_or("")
            .ends_with("(stopped at the reply limit of 1024 bytes)"),
        "{:?}",
        r.fields
    );
    // probe.jail: the stored reason says how many bytes came instead of quoting them.
    let r = sweep(json!({"expect": "^554 ", "jail": true}));
    let reason = r.str("reason").unwrap_or("");
    assert!(
        reason.starts_with(&format!(
            "step 1: got {} bytes, wanted ^554 ",
            GREETING.len()
        )),
        "{:?}",
        r.fields
    );
    for (probe, field) in [
        (json!({"steps": [{"send": "${1}"}]}), "probe.steps"),
        (json!({"steps": [{"expect": "("}]}), "probe.steps"),
        (json!({"steps": [{"sned": "x"}]}), "probe.steps[0]"),
        (json!({"max_reply": 0}), "probe.max_reply"),
        (
            json!({"send": "x", "steps": [{"send": "y"}]}),
            "probe.steps",
        ),
    ] {
        let body = json!({"targets": [ip.to_string()], "ports": "25", "probe": probe}).to_string();
        let (code, reply) = serve.http_json("POST", "/v1/sweeps", Some(&body));
        assert_eq!(code, 400, "{body}: {reply}");
        assert!(
            reply["error"]["field"]
                .as_str()
                .unwrap_or("")
                .starts_with(field),
            "{body}: {reply}"
        );
    }
    serve.stop();
}

/// exim with STARTTLS: the steps after the smtp-starttls preset run inside the TLS session
/// (EHLO again, then QUIT), and what exim says there is what they see: it no longer offers
/// STARTTLS.
#[test]
fn steps_after_starttls_run_inside_tls_against_exim() {
    let Some([exim]) = programs("exim4", ["exim4"]) else {
        return;
    };
    if !root_for("exim4") {
        return;
    }
    let ip = test_ip("dialogs-exim");
    let tmp = TempDir::new("dialogs-exim");
    let Some(certs) = CertMaker::new(tmp.path()) else {
        return;
    };
    let cert = certs.make_for_days("mx.porthawk.test", 45);
    let smtp = free_port(ip);
    let d = tmp.path().display();
    let conf = tmp.write(
        "exim.conf",
        &format!(
            "primary_hostname = mx.porthawk.test\nkeep_environment =\n\
             spool_directory = {d}/spool\nlog_file_path = {d}/exim-%s.log\n\
             pid_file_path = {d}/exim.pid\n\
             local_interfaces = {ip}\ndaemon_smtp_ports = {smtp}\n\
             exim_user = root\nexim_group = root\nnever_users =\n\
             tls_certificate = {}\ntls_privatekey = {}\ntls_advertise_hosts = *\n\
             acl_smtp_rcpt = refuse\n\
             begin acl\nrefuse:\n  deny\n",
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let mut cmd = Command::new(&exim);
    cmd.arg("-bdf").arg("-C").arg(&conf);
    let mut daemon = Daemon::start("exim", cmd, &tmp.path().join("exim.out"), "TERM")
        .also_log(tmp.path().join("exim-main.log"));
    let addr = SocketAddr::new(ip, smtp);
    daemon.wait_listening(&[addr]);
    let inside = [
        "--preset",
        "smtp-starttls",
        "--send",
        r"EHLO porthawk\r\n",
        "--expect",
        r"^250-(\S+) Hello",
        "--expect",
        "^250 ",
        "--expect-all",
        "--quit",
        r"QUIT\r\n",
    ];
    for backend in backends(ip) {
        let r = scan_one(addr, backend, &inside);
        assert_eq!(
            r.fields.get("matched"),
            Some(&Value::Bool(true)),
            "{backend}: {:?}",
            r.fields
        );
        assert_eq!(
            r.str("tls_version").map(|v| v.starts_with("TLSv1.")),
            Some(true),
            "{backend}"
        );
        assert_eq!(
            r.fields.get("captures"),
            Some(&json!(["mx.porthawk.test"])),
            "{backend}"
        );
        // Inside TLS exim does not offer STARTTLS again: an expect for it fails at step 8
        // (greeting, EHLO, reply, STARTTLS, go-ahead, handshake, EHLO, this expect).
        let r = scan_one(
            addr,
            backend,
            &[
                "--preset",
                "smtp-starttls",
                "--send",
                r"EHLO porthawk\r\n",
                "--expect",
                "^250-STARTTLS$",
            ],
        );
        assert_eq!(
            r.fields.get("matched"),
            Some(&Value::Bool(false)),
            "{backend}"
        );
        let reason = r.str("reason").unwrap_or("");
        assert!(
            reason.starts_with("step 8: got '250-mx.porthawk.test Hello"),
            "{reason}"
        );
    }
    let target = addr.to_string();
    let mut args = vec![target.as_str()];
    args.extend_from_slice(&inside);
    let c = check(&args);
    assert_status(&c, 0, "OK");
    drop(daemon);
}

/// Polls `path` on `serve` until `done` holds for its JSON, at most 30 s; the last value.
fn poll_json(serve: &Serve, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = serve.http_json("GET", path, None).1;
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The last check's reason of a monitor's one target.
fn last_reason(v: &Value) -> String {
    v["target_list"][0]["last"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A monitor of a port that must stay closed (`refused = "ok"`): UP while the port refuses,
/// DOWN with the reason (in the API, the history and the webhook) once a listener accepts,
/// UP again when it is gone. `/probe` with a module saying the same answers
/// `probe_success` 1, then 0, then 1. Beside it, `mismatch = "ok"` keeps a monitor with a
/// wrong reply UP, and `jail = true` keeps the reply out of the reason.
#[test]
fn a_monitor_of_a_port_that_must_stay_closed_goes_down_when_it_accepts() {
    let ip = test_ip("dialogs-closed");
    let port = free_port(ip);
    let closed = SocketAddr::new(ip, port);
    let script = Script::start(ip);
    let (hook_port, hook) = crate::monitor::http_sink(ip);
    let data = TempDir::new("dialogs-closed");
    let config = data.write(
        "porthawk.toml",
        &format!(
            r#"
[[monitor]]
name = "closed"
targets = ["{ip}"]
ports = "{port}"
interval = "1s"
fail_after = 1
recover_after = 1
group_wait = "0s"
refused = "ok"
on_down = ["hook"]
on_up = ["hook"]

[[monitor]]
name = "wrong-is-ok"
targets = ["{ip}"]
ports = "{sport}"
interval = "1s"
fail_after = 1
expect = "^554 "
mismatch = "ok"

[[monitor]]
name = "jailed"
targets = ["{ip}"]
ports = "{sport}"
interval = "1s"
fail_after = 1
expect = "^554 "
jail = true

[notify.hook]
webhook = {{ url = "http://{ip}:{hook_port}/hook" }}

[module.closed]
refused = "ok"
timeout = "1s"

[module.steps]
steps = [{{ expect = '^220 (\S+) ESMTP' }}, {{ send = 'EHLO ${{1}}\r\n' }}, {{ expect = '^250 HELP$' }}]
quit = 'QUIT\r\n'
max_reply = 8192
timeout = "2s"

[module.jailed]
expect = "^554 "
jail = true
timeout = "1s"
"#,
            sport = script.addr.port(),
        ),
    );
    let mut cmd = Serve::command(data.path());
    cmd.arg("--config").arg(&config);
    let serve = Serve::spawn(cmd);
    let probe_success = || {
        let (status, body) = http(
            serve.addr,
            "GET",
            &format!("/probe?target={closed}&module=closed"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix("probe_success "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no probe_success in {body}"))
    };
    let path = "/v1/monitors/closed";
    // Refused: UP.
    let v = poll_json(&serve, path, |v| v["state"] == "up");
    assert_eq!(v["state"], "up", "{v}");
    assert_eq!(v["probe"], "connect, must stay closed", "{v}");
    assert_eq!(probe_success(), "1");
    // A listener appears: DOWN, and the reason says why.
    let mut service = crate::monitor::Service::start(closed);
    let v = poll_json(&serve, path, |v| v["state"] == "down");
    assert_eq!(v["state"], "down", "{v}");
    let why = "open: accepts connections, but refused = \"ok\" wants it closed";
    assert_eq!(last_reason(&v), why, "{v}");
    assert_eq!(probe_success(), "0");
    let deadline = Instant::now() + Duration::from_secs(30);
    let hooked = |needle: &str| hook.lock().unwrap().iter().any(|m| m.contains(needle));
    while !hooked("refused = \\\"ok\\\" wants it closed") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        hooked("refused = \\\"ok\\\" wants it closed"),
        "{:?}",
        hook.lock().unwrap()
    );
    // Gone again: UP.
    service.stop();
    let v = poll_json(&serve, path, |v| v["state"] == "up");
    assert_eq!(v["state"], "up", "{v}");
    assert!(v["events"].to_string().contains("wants it closed"), "{v}");
    assert_eq!(probe_success(), "1");
    // A wrong reply is UP with mismatch = "ok"; jailed, the reason has no peer bytes.
    let ok = poll_json(&serve, "/v1/monitors/wrong-is-ok", |v| {
        v["state"] != "pending"
    });
    assert_eq!(ok["state"], "up", "{ok}");
    let jailed = poll_json(&serve, "/v1/monitors/jailed", |v| v["state"] == "down");
    assert_eq!(jailed["state"], "down", "{jailed}");
    let reason = last_reason(&jailed);
    assert!(
        reason.contains(&format!("got {} bytes, wanted ^554", GREETING.len())),
        "{jailed}"
    );
    assert!(!jailed.to_string().contains("dialogs.test"), "{jailed}");
    // `/probe` modules run whole dialogs, and keep the peer's bytes out when jailed.
    let (status, body) = http(
        serve.addr,
        "GET",
        &format!("/probe?target={}&module=steps", script.addr),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nprobe_success 1\n"), "{body}");
    assert!(
        script
            .sessions()
            .iter()
            .any(|s| s == &["EHLO mx.dialogs.test".to_string(), "QUIT".to_string()]),
        "{:?}",
        script.sessions()
    );
    let (status, body) = http(
        serve.addr,
        "GET",
        &format!("/probe?target={}&module=jailed&debug=true", script.addr),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nprobe_success 0\n"), "{body}");
    assert!(
        body.contains(&format!("got {} bytes, wanted ^554", GREETING.len())),
        "{body}"
    );
    assert!(!body.contains("dialogs.test"), "{body}");
    serve.stop();
}
