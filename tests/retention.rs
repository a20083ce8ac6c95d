//! `porthawk serve` keeps only the sweeps its retention allows, lists them without their
//! requests, and logs through `tracing` (`--log-format json` makes every log line a JSON
//! object).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{test_hosts, TempDir, BIN};

/// How long the server may take to say where it listens, to log a line, or a sweep to end.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The line `.ci/run` and the tests read: user-facing output, not a log line.
const LISTENING: &str = "porthawk: listening on http://";

/// A running `porthawk serve`, killed (by its handle) if the test ends without stopping it.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    seen: Vec<String>,
}

impl Serve {
    fn start(data: &Path, config: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(extra)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .env_remove("PORTHAWK_API_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start porthawk serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            seen: Vec::new(),
        };
        let line = serve.wait_for_line(|l| l.starts_with(LISTENING));
        let rest = &line[LISTENING.len()..];
        serve.addr = rest
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad address in {line:?}"));
        serve
    }

    /// Waits (at most [`TIMEOUT`]) for a stderr line for which `f` holds.
    fn wait_for_line(&mut self, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "porthawk serve did not log the line awaited: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Stops it with SIGTERM, requires a clean exit, and returns every stderr line.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait().expect("wait") {
                Some(status) => {
                    assert!(status.success(), "porthawk serve exited with {status}");
                    break;
                }
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                None => panic!("porthawk serve did not stop within 20 s of SIGTERM"),
            }
        }
        // The reader thread ends with the pipe.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }

    /// One HTTP/1.1 exchange (`Connection: close`) with a `Content-Length` answer.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head}"));
        let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, json)
    }

    /// Submits a sweep and waits until it is `done`; its id.
    fn sweep_done(&self, body: &str) -> u64 {
        let (status, reply) = self.http("POST", "/v1/sweeps", Some(body));
        assert_eq!(status, 202, "{reply}");
        let id = reply["id"].as_u64().expect("id");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (status, s) = self.http("GET", &format!("/v1/sweeps/{id}"), None);
            assert_eq!(status, 200, "{s}");
            if s["state"] == "done" {
                return id;
            }
            assert!(Instant::now() < deadline, "sweep {id} did not end: {s}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Issue 14 item 8: with `[api] keep_sweeps = 2`, a restarted server has pruned the older
/// sweeps (with their results), keeps the two newest, and lists them without requests; the
/// request is still served for one sweep.
#[test]
fn serve_keeps_only_the_newest_sweeps_and_lists_no_requests() {
    let dir = TempDir::new("retention-count");
    let config = dir.write("porthawk.toml", "[api]\nkeep_sweeps = 2\n");
    let data = dir.path().join("data");
    let ip = test_hosts("retention-count", 1)[0];
    // Port 9 on a loopback address nothing listens on: closed, quickly.
    let body =
        serde_json::json!({"targets": [ip.to_string()], "ports": "9", "store": "all"}).to_string();
    let serve = Serve::start(&data, &config, &[]);
    let ids: Vec<u64> = (0..4).map(|_| serve.sweep_done(&body)).collect();
    serve.stop();

    let mut serve = Serve::start(&data, &config, &[]);
    let line = serve.wait_for_line(|l| l.contains("pruned old sweeps"));
    assert!(line.contains("sweeps=2"), "{line}");
    let (status, list) = serve.http("GET", "/v1/sweeps?limit=1000", None);
    assert_eq!(status, 200, "{list}");
    let listed: Vec<u64> = list["sweeps"]
        .as_array()
        .expect("sweeps")
        .iter()
        .map(|s| s["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(listed, vec![ids[3], ids[2]], "{list}");
    for s in list["sweeps"].as_array().unwrap() {
        assert!(
            s.get("request").is_none(),
            "a listed sweep carries its request: {s}"
        );
        assert_eq!(s["state"], "done", "{s}");
    }
    let (status, newest) = serve.http("GET", &format!("/v1/sweeps/{}", ids[3]), None);
    assert_eq!(status, 200);
    assert_eq!(newest["request"]["ports"], "9", "{newest}");
    for pruned in &ids[..2] {
        let (status, e) = serve.http("GET", &format!("/v1/sweeps/{pruned}"), None);
        assert_eq!(status, 404, "sweep {pruned} was kept: {e}");
    }
    let (status, e) = serve.http("GET", "/v1/sweeps?limit=1001", None);
    assert_eq!(status, 400, "the page size is capped: {e}");
    serve.stop();
}

/// Issue 10 item 7: with `--log-format json`, every line the server writes to stderr other
/// than the listening line is a JSON object with a level and fields, including the error of
/// a rejected config reload and the warning of a monitor target going down.
#[test]
fn serve_logs_json_objects_with_log_format_json() {
    let dir = TempDir::new("retention-json");
    let ip = test_hosts("retention-json", 1)[0];
    let good = format!(
        "[[monitor]]\nname = \"closed\"\ntargets = [\"{ip}\"]\nports = \"9\"\n\
         interval = \"200ms\"\nfail_after = 1\n"
    );
    let config = dir.write("porthawk.toml", &good);
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, &config, &["--log-format", "json"]);
    // Nothing listens there: the monitor's target goes DOWN, which is logged.
    serve.wait_for_line(|l| l.contains("changed state"));
    // A broken file (another size, so the change is seen whatever the clock) is rejected on
    // reload: an error in the log.
    std::fs::write(
        &config,
        good.replace(
            "interval = \"200ms\"",
            "interval = \"200 parsecs, give or take\"",
        ),
    )
    .unwrap();
    serve.wait_for_line(|l| l.contains("rejected"));
    let lines = serve.stop();

    let mut levels = Vec::new();
    let mut rejected = None;
    for line in lines.iter().filter(|l| !l.starts_with(LISTENING)) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        assert!(v["fields"].is_object(), "no fields: {line}");
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        levels.push(level.to_string());
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rejected"))
        {
            rejected = Some(v);
        }
    }
    let rejected = rejected.expect("the rejected reload is logged");
    assert_eq!(rejected["level"], "ERROR", "{rejected}");
    let error = rejected["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("interval"), "{rejected}");
    for want in ["ERROR", "WARN", "INFO"] {
        assert!(
            levels.iter().any(|l| l == want),
            "no {want} line in {levels:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with(LISTENING)),
        "the listening line stays plain text"
    );
}
