//! Monitors end to end: the real `porthawk serve --config` watches a listener this test owns;
//! the test stops it and expects the exec action, an email at an SMTP sink and a webhook at
//! an HTTP sink, then brings it back and expects the recovery; the history API and the
//! status page (in headless Chromium, when installed) tell the story.

// The sinks and helpers below run only inside tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, TempDir, BIN};

pub(crate) const TOKEN: &str = "monitor-test-token";

/// A listener that accepts and closes connections until stopped; stopping closes the port.
pub(crate) struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Service {
    pub(crate) fn start(addr: SocketAddr) -> Service {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Service {
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a sink received.
pub(crate) type Inbox = Arc<Mutex<Vec<String>>>;

/// A tiny SMTP server: greeting, EHLO/MAIL/RCPT/DATA/QUIT; keeps each message.
fn smtp_sink(ip: IpAddr) -> (u16, Inbox) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let out = Arc::clone(&inbox);
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let out = Arc::clone(&out);
            thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(c.try_clone().unwrap());
                let _ = c.write_all(b"220 sink ESMTP\r\n");
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            let _ = c.write_all(b"354 go ahead\r\n");
                            let mut msg = String::new();
                            loop {
                                let mut l = String::new();
                                if r.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                                    break;
                                }
                                msg.push_str(&l);
                            }
                            out.lock().unwrap().push(msg);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = c.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = c.write_all(reply);
                }
            });
        }
    });
    (port, inbox)
}

/// A tiny HTTP server that answers 200 and keeps each request body.
pub(crate) fn http_sink(ip: IpAddr) -> (u16, Inbox) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let out = Arc::clone(&inbox);
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                out.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, inbox)
}

/// A running `porthawk serve`, killed on drop, its stderr collected.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

pub(crate) fn spawn_server(config: &Path, data: &Path) -> Server {
    spawn_server_with(config, data, &[])
}

/// [`spawn_server`] with more arguments for `serve`.
pub(crate) fn spawn_server_with(config: &Path, data: &Path, more: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(more)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("server did not start: {}", log.lock().unwrap());
        }
    };
    Server { child, addr, log }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// One HTTP request; (status, body).
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: bool,
    ) -> (u16, String) {
        let mut c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let auth = if token {
            format!("Authorization: Bearer {TOKEN}\r\n")
        } else {
            String::new()
        };
        let body = body.unwrap_or("");
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
        (status, body)
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path, None, true);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Waits until `f` holds, at most `limit`.
pub(crate) fn wait_for(
    what: &str,
    limit: Duration,
    server: &Server,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out after {limit:?} waiting for {what}; server log:\n{}",
        server.log()
    );
}

fn monitor_state(server: &Server) -> String {
    let v = server.json("/v1/monitors/web");
    v["state"].as_str().unwrap_or("").to_string()
}

fn has(inbox: &Inbox, needle: &str) -> bool {
    inbox.lock().unwrap().iter().any(|m| m.contains(needle))
}

fn artifact_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[test]
fn monitor_acts_notifies_and_recovers() {
    let net = util::test_net("monitor-e2e");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let service_addr = {
        // A free port on the service's address, held by the service from now on.
        let probe = TcpListener::bind((ip(1), 0)).unwrap();
        probe.local_addr().unwrap()
    };
    let mut service = Service::start(service_addr);
    let (smtp_port, mail) = smtp_sink(ip(2));
    let (hook_port, hooks) = http_sink(ip(3));
    let dir = TempDir::new("monitor-e2e");
    let marker = dir.path().join("marker");
    let config_text = format!(
        r#"
[api]
token = "{TOKEN}"
# The status page stays open to the browser below; reads of the API need the token.
public = ["/healthz", "/metrics", "/"]

[[monitor]]
name = "web"
group = "frontend"
targets = ["{svc_ip}"]
ports = "{svc_port}"
interval = "300ms"
timeout = "200ms"
fail_after = 2
recover_after = 1
group_wait = "0s"
on_down = ["mark", "mail", "hook"]
on_up = ["mail", "hook"]

[action.mark]
exec = ["sh", "-c", "echo $PORTHAWK_MONITOR $PORTHAWK_TARGETS >> '{marker}'"]
timeout = "5s"
cooldown = "0s"

[notify.mail]
email = {{ smtp = "smtp://{smtp_ip}:{smtp_port}", from = "porthawk@example.com", to = ["ops@example.com"] }}
retries = 2
backoff = "100ms"

[notify.hook]
webhook = {{ url = "http://{hook_ip}:{hook_port}/hook" }}
"#,
        svc_ip = service_addr.ip(),
        svc_port = service_addr.port(),
        marker = marker.display(),
        smtp_ip = ip(2),
        hook_ip = ip(3),
    );
    let config = dir.write("porthawk.toml", &config_text);
    let server = spawn_server(&config, &dir.path().join("data"));
    // The server logs its monitors just after the listening line: wait for it (a loaded
    // machine may not have written it yet).
    wait_for(
        "the monitor to be watched",
        Duration::from_secs(10),
        &server,
        || server.log().contains("watching 1 monitor"),
    );

    wait_for(
        "the monitor to be up",
        Duration::from_secs(10),
        &server,
        || monitor_state(&server) == "up",
    );

    // The service stops: within interval × fail_after plus slack, the action has run and
    // both notifications have arrived.
    service.stop();
    let limit = Duration::from_millis(300 * 2) + Duration::from_secs(4);
    // The shell creates the file (`>>`) before it writes the line: wait for the whole line,
    // not for the file.
    let took = wait_for("the exec action", limit, &server, || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t.ends_with('\n'))
    });
    let marker_text = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(marker_text.trim(), format!("web {service_addr}"));
    wait_for("the DOWN email", limit, &server, || has(&mail, "DOWN"));
    wait_for("the DOWN webhook", limit, &server, || {
        has(&hooks, "\"state\":\"down\"")
    });
    eprintln!("action ran {took:?} after the service stopped");
    assert_eq!(monitor_state(&server), "down");
    let email = mail.lock().unwrap()[0].clone();
    assert!(email.contains("Subject: [porthawk] web: DOWN:"), "{email}");
    assert!(email.contains(&service_addr.to_string()), "{email}");
    let hook: Value = serde_json::from_str(&hooks.lock().unwrap()[0]).unwrap();
    assert_eq!(hook["monitor"], "web");
    assert_eq!(hook["target"], service_addr.ip().to_string());
    assert_eq!(hook["port"], service_addr.port());
    assert!(
        hook["reason"].as_str().unwrap().contains("closed"),
        "{hook}"
    );
    assert!(hook["time"].as_str().unwrap().ends_with('Z'));

    // It comes back: the recovery is notified.
    let _service = Service::start(service_addr);
    wait_for(
        "the recovery email",
        Duration::from_secs(5),
        &server,
        || has(&mail, "recovered"),
    );
    wait_for(
        "the recovery webhook",
        Duration::from_secs(5),
        &server,
        || has(&hooks, "\"state\":\"up\""),
    );
    assert_eq!(monitor_state(&server), "up");

    // The history API tells the story.
    let v = server.json("/v1/monitors/web");
    let events = v["events"].as_array().unwrap();
    let kinds: Vec<String> = events
        .iter()
        .filter(|e| e["what"] == "state")
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.starts_with(&["up".into(), "down".into()]),
        "{kinds:?}"
    );
    let action = &v["actions"][0];
    assert_eq!(action["action"], "mark");
    assert_eq!(action["outcome"], "ok");
    assert_eq!(action["exit_code"], 0);
    let sent = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["outcome"] == "sent")
        .count();
    assert_eq!(sent, 4, "{}", v["notifications"]);
    let target = &v["target_list"][0];
    assert_eq!(target["state"], "up");
    let up = target["uptime"]["h24"].as_f64().unwrap();
    assert!(up > 0.0 && up < 1.0, "{up}");
    let list = server.json("/v1/monitors");
    assert_eq!(list["monitors"][0]["name"], "web");

    // Metrics.
    let (_, metrics) = server.request("GET", "/metrics", None, false);
    for needle in [
        &format!(
            "porthawk_monitor_up{{monitor=\"web\",target=\"{}\",port=\"{}\"}} 1",
            service_addr.ip(),
            service_addr.port()
        ),
        "porthawk_monitor_actions_total{name=\"mark\",outcome=\"ok\"} 1",
        "porthawk_monitor_notifications_total{name=\"mail\",outcome=\"sent\"} 2",
        "porthawk_monitor_check_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    // Actions by hand: token required, configured actions only.
    let (status, _) = server.request("POST", "/v1/actions/mark", None, false);
    assert_eq!(status, 401);
    let (status, body) = server.request("POST", "/v1/actions/rm", Some("{}"), true);
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.request(
        "POST",
        "/v1/actions/mark",
        Some(r#"{"command": ["rm", "-rf", "/"]}"#),
        true,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.request(
        "POST",
        "/v1/actions/mark",
        Some(r#"{"monitor":"web"}"#),
        true,
    );
    assert_eq!(status, 200, "{body}");
    let rec: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["trigger"], "manual");

    // Silence and check-now.
    let (status, body) = server.request(
        "POST",
        "/v1/monitors/web/silence",
        Some(r#"{"for":"1h"}"#),
        true,
    );
    assert_eq!(status, 200, "{body}");
    assert!(server.json("/v1/monitors/web")["silenced_until"].is_string());
    let (status, _) = server.request("POST", "/v1/monitors/web/check", None, true);
    assert_eq!(status, 202);
    let (status, _) = server.request("POST", "/v1/monitors/nope/check", None, true);
    assert_eq!(status, 404);

    // The status page, in a real browser when there is one.
    let (status, html) = server.request("GET", "/", None, false);
    assert_eq!(status, 200);
    assert!(html.contains("data-monitor=\"web\""), "{html}");
    status_page_in_chromium(&server);

    // A broken config is rejected on reload, with file, line and field; the old one runs on.
    let broken = config_text.replace("interval = \"300ms\"", "interval = \"300 parsecs\"");
    std::fs::write(&config, &broken).unwrap();
    wait_for(
        "the reload to be rejected",
        Duration::from_secs(10),
        &server,
        || server.log().contains("rejected"),
    );
    let log = server.log();
    let line = broken.lines().position(|l| l.contains("parsecs")).unwrap() + 1;
    assert!(
        log.contains(&format!("porthawk.toml:{line}: monitor[0].interval:")),
        "{log}"
    );
    assert_eq!(monitor_state(&server), "up");
    // A good change is applied, and the target keeps its state.
    std::fs::write(
        &config,
        config_text.replace("fail_after = 2", "fail_after = 3"),
    )
    .unwrap();
    wait_for(
        "the reload to be applied",
        Duration::from_secs(10),
        &server,
        || server.log().contains("config reloaded"),
    );
    assert_eq!(monitor_state(&server), "up");
}

fn status_page_in_chromium(server: &Server) {
    let Some(chromium) = util::which("chromium").or_else(|| util::which("chromium-browser")) else {
        let _ = util::require(
            "chromium",
            Some("not installed (apt-get install chromium)".into()),
        );
        return;
    };
    let profile = TempDir::new("monitor-chromium");
    let url = format!("http://{}/?state=all", server.addr);
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut cmd = Command::new(&chromium);
    base(&mut cmd);
    cmd.arg("--dump-dom").arg(&url);
    let out = util::run_command(cmd, None, Duration::from_secs(60));
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("porthawk status"), "{dom}");
    assert!(dom.contains("<h2 class=\"group\">frontend</h2>"), "{dom}");
    assert!(
        dom.contains("class=\"monitor\" data-monitor=\"web\" data-state=\"up\""),
        "{dom}"
    );
    assert!(dom.contains("class=\"target\""), "{dom}");
    assert!(dom.contains("id=\"events\""), "{dom}");
    let shot = artifact_dir().join("status-page.png");
    let mut cmd = Command::new(&chromium);
    base(&mut cmd);
    cmd.arg("--window-size=1280,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url);
    util::run_command(cmd, None, Duration::from_secs(60));
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn a_broken_config_stops_serve_with_file_line_and_field() {
    let dir = TempDir::new("monitor-bad-config");
    let config = dir.write(
        "bad.toml",
        "[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"80\"\non_down = [\"nobody\"]\n",
    );
    let data = dir.path().join("data");
    let out = util::run_for(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = util::stderr(&out);
    assert!(err.contains("bad.toml:5: monitor[0].on_down[0]:"), "{err}");
    assert!(err.contains("nobody"), "{err}");
}
