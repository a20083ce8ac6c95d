//! The status page and the sweep pages of a real `porthawk serve`, in headless Chromium when
//! it is installed (a missing browser fails under `CI=true`): a monitor whose history has UP,
//! DOWN, an action with its exit code and notifications shows a heartbeat bar and a
//! response-time chart with the right ticks, points and DOWN colours; a monitor of 10,240
//! target-ports and a sweep of 10,000 open ports stay paged and filterable; the uptime the
//! page shows is the API's; a banner with `<script>` stays text; the pages need the token
//! like the API. Screenshots go to `target/test-artifacts/`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, http, Farm, Kind, Serve, TempDir};

/// A listener on a fixed address that accepts and closes until stopped.
struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Service {
    fn start(addr: SocketAddr) -> Service {
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
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP sink that answers 200 to every request and counts them.
fn webhook_sink(ip: IpAddr) -> (u16, Arc<Mutex<usize>>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0));
    let out = Arc::clone(&count);
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
            let _ = r.read_exact(&mut body);
            *out.lock().unwrap() += 1;
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, count)
}

fn artifact_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Headless Chromium, or `None` (a failure under `CI=true`) when it is not installed.
struct Chromium {
    bin: PathBuf,
    profile: TempDir,
}

impl Chromium {
    fn find() -> Option<Chromium> {
        let Some(bin) = util::which("chromium").or_else(|| util::which("chromium-browser")) else {
            let _ = util::require(
                "chromium",
                Some("not installed (apt-get install chromium)".into()),
            );
            return None;
        };
        Some(Chromium {
            bin,
            profile: TempDir::new("page-chromium"),
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
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
        .arg(format!("--user-data-dir={}", self.profile.path().display()));
        cmd
    }

    /// The DOM of `url` after the browser parsed it.
    fn dom(&self, url: &str) -> String {
        let mut cmd = self.command();
        cmd.arg("--dump-dom").arg(url);
        let out = util::run_command(cmd, None, Duration::from_secs(60));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A screenshot of `url` kept as `target/test-artifacts/NAME`.
    fn screenshot(&self, url: &str, name: &str) {
        let shot = artifact_dir().join(name);
        let _ = std::fs::remove_file(&shot);
        let mut cmd = self.command();
        cmd.arg("--window-size=1280,1400")
            .arg(format!("--screenshot={}", shot.display()))
            .arg(url);
        util::run_command(cmd, None, Duration::from_secs(60));
        assert!(shot.exists(), "no screenshot at {}", shot.display());
        eprintln!("screenshot: {}", shot.display());
    }
}

/// GET `path`; the body, and how long the server took to answer it (printed, not asserted).
fn get(addr: SocketAddr, path: &str) -> String {
    let start = Instant::now();
    let (status, body) = http(addr, "GET", path, None);
    let took = start.elapsed();
    assert_eq!(status, 200, "GET {path}: {body}");
    eprintln!("GET {path}: {} bytes in {took:?}", body.len());
    body
}

fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `f` holds, at most `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {text}"));
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The value of attribute `name` in the first tag that contains `marker`.
fn attr(text: &str, marker: &str, name: &str) -> String {
    let tag = between(text, marker, ">");
    let needle = format!("{name}=\"");
    let at = tag
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {tag}"));
    let v = &tag[at + needle.len()..];
    v[..v.find('"').unwrap()].to_string()
}

/// Runs one check of `web` now and waits for its verdict; the check's time (ms).
fn check_now(addr: SocketAddr, want_ok: bool) -> u64 {
    let before = json(addr, "/v1/monitors/web")["target_list"][0]["last"]["at_ms"].as_u64();
    let (status, body) = http(addr, "POST", "/v1/monitors/web/check", None);
    assert_eq!(status, 202, "{body}");
    let mut at = 0;
    wait_for("the check", Duration::from_secs(10), || {
        let v = json(addr, "/v1/monitors/web");
        let last = &v["target_list"][0]["last"];
        match last["at_ms"].as_u64() {
            Some(t) if Some(t) != before => {
                assert_eq!(last["ok"].as_bool(), Some(want_ok), "{last}");
                at = t;
                true
            }
            _ => false,
        }
    });
    at
}

/// The monitor's page tells its story: heartbeat ticks, chart points and down periods,
/// certificate, timeline; the uptime on the page is the API's; 10,240 target-ports stay
/// paged and filterable.
#[test]
fn status_page_shows_heartbeats_charts_and_the_apis_uptime() {
    let net = util::test_net("page-monitor");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let big = util::test_net("page-big");
    let svc = TcpListener::bind((ip(1), 0)).unwrap().local_addr().unwrap();
    let mut service = Some(Service::start(svc));
    let steady = Farm::new(&[(ip(2), Kind::Accept)]);
    let steady_addr = steady.listeners()[0].0;
    let (hook_port, hooks) = webhook_sink(ip(3));
    let dir = TempDir::new("page-monitor");
    // Long intervals: every check of `web` and `steady` below is one the test asks for (a
    // check asked for moves the next scheduled one a whole interval on).
    let config = dir.write(
        "porthawk.toml",
        &format!(
            r#"
[[monitor]]
name = "web"
group = "frontend"
targets = ["{svc_ip}"]
ports = "{svc_port}"
interval = "24h"
timeout = "500ms"
fail_after = 1
recover_after = 1
group_wait = "0s"
on_down = ["mark", "hook"]
on_up = ["hook"]

[[monitor]]
name = "steady"
group = "frontend"
targets = ["{steady_ip}"]
ports = "{steady_port}"
interval = "24h"
recover_after = 1

[[monitor]]
name = "big"
group = "backend"
targets = ["127.{b0}.{b1}.0/24"]
ports = "1-40"
interval = "24h"

[action.mark]
exec = ["sh", "-c", "exit 3"]
timeout = "5s"
cooldown = "0s"

[notify.hook]
webhook = {{ url = "http://{hook_ip}:{hook_port}/hook" }}
"#,
            svc_ip = svc.ip(),
            svc_port = svc.port(),
            steady_ip = steady_addr.ip(),
            steady_port = steady_addr.port(),
            b0 = big[0],
            b1 = big[1],
            hook_ip = ip(3),
        ),
    );
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    let mut server = Serve::spawn(cmd);
    assert!(server.logs("watching 3 monitor", Duration::from_secs(10)));
    let addr = server.addr;

    // UP three times, DOWN once (fail_after = 1: the action runs and exits 3; the webhook
    // is told), the check the monitor makes right after an action (still DOWN), UP twice:
    // seven batches of one check each.
    let (status, _) = http(addr, "POST", "/v1/monitors/steady/check", None);
    assert_eq!(status, 202);
    let mut ok_at = Vec::new();
    for _ in 0..3 {
        ok_at.push(check_now(addr, true));
    }
    drop(service.take());
    check_now(addr, false);
    wait_for("the action", Duration::from_secs(10), || {
        json(addr, "/v1/monitors/web")["actions"][0]["exit_code"] == 3
    });
    // The re-check after the action, before the service comes back: five samples.
    wait_for(
        "the re-check after the action",
        Duration::from_secs(10),
        || get(addr, "/?monitor=web&state=all").contains("data-beats=\"5\""),
    );
    service = Some(Service::start(svc));
    for _ in 0..2 {
        ok_at.push(check_now(addr, true));
    }
    wait_for("two webhooks", Duration::from_secs(10), || {
        *hooks.lock().unwrap() >= 2
    });
    wait_for("steady up", Duration::from_secs(10), || {
        json(addr, "/v1/monitors/steady")["state"] == "up"
    });
    // The samples are written by the store's writer after the verdicts: wait for the page
    // to show all seven.
    let page_url = "/?monitor=web&state=all";
    wait_for("seven ticks", Duration::from_secs(10), || {
        get(addr, page_url).contains("data-beats=\"7\"")
    });
    let html = get(addr, page_url);
    let panel = between(&html, "<section id=\"monitor-panel\"", "</section>");
    assert_eq!(attr(panel, "class=\"beats big\"", "data-beats"), "7");
    assert_eq!(attr(panel, "class=\"beats big\"", "data-down"), "2");
    assert_eq!(panel.matches("class=\"beat down\"").count(), 2, "{panel}");
    assert_eq!(panel.matches("class=\"beat up\"").count(), 5, "{panel}");
    assert!(panel.contains("closed (connection refused)"), "{panel}");
    // One point per 5-minute bucket with a passing check; one down period.
    let buckets = |width: u64| {
        ok_at
            .iter()
            .map(|t| t / width)
            .collect::<BTreeSet<_>>()
            .len()
    };
    let points = buckets(5 * 60_000).to_string();
    assert_eq!(attr(panel, "id=\"rtt-chart\"", "data-points"), points);
    assert_eq!(attr(panel, "id=\"rtt-chart\"", "data-down-spans"), "1");
    assert_eq!(panel.matches("<rect class=\"down-span\"").count(), 1);
    assert!(panel.contains("<path class=\"rtt\""), "{panel}");
    let week = get(addr, "/?monitor=web&state=all&range=7d");
    assert_eq!(attr(&week, "id=\"rtt-chart\"", "data-range"), "7d");
    assert_eq!(
        attr(&week, "id=\"rtt-chart\"", "data-points"),
        buckets(30 * 60_000).to_string()
    );
    // The timeline: down and up, the action with its exit code, the notifications.
    let timeline = between(&html, "<ol id=\"events\"", "</ol>");
    assert!(timeline.contains("went down"), "{timeline}");
    assert!(timeline.contains("went up"), "{timeline}");
    assert!(timeline.contains("action mark"), "{timeline}");
    assert!(timeline.contains("exit code 3"), "{timeline}");
    assert!(timeline.contains("notified hook"), "{timeline}");
    // No certificate on a plain TCP check.
    assert!(
        panel.contains("certificate: <span class=\"muted\">–</span>"),
        "{panel}"
    );

    // The uptime on the page is the API's: steady is up all along (the page used to show
    // "–" for it while the API said 1.0); web's grows while it stays up, so the page's
    // value lies between the API's just before and just after.
    let api = |name: &str| -> Value {
        json(addr, "/v1/monitors")["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["uptime"]
            .clone()
    };
    let before = api("web");
    let home = get(addr, "/");
    let after = api("web");
    let row = |name: &str| format!("class=\"monitor\" data-monitor=\"{name}\"");
    assert_eq!(api("steady")["h24"].as_f64(), Some(1.0));
    // A monitor's uptime is that of all its targets, whatever page of them is asked for.
    let none_down = json(addr, "/v1/monitors/steady?state=down");
    assert_eq!(none_down["matching"], 0);
    assert_eq!(
        none_down["uptime"]["h24"].as_f64(),
        Some(1.0),
        "{none_down}"
    );
    assert_eq!(attr(&home, &row("steady"), "data-uptime-h24"), "1.000000");
    let steady_row = between(&home, &row("steady"), "</tr>");
    assert!(
        !steady_row.contains("<td class=\"num\">–</td>"),
        "{steady_row}"
    );
    assert_eq!(steady_row.matches("<td class=\"num\">100%</td>").count(), 3);
    for k in ["h24", "d7", "d30"] {
        let page: f64 = attr(&home, &row("web"), &format!("data-uptime-{k}"))
            .parse()
            .unwrap();
        let (lo, hi) = (before[k].as_f64().unwrap(), after[k].as_f64().unwrap());
        assert!(
            lo - 1e-6 <= page && page <= hi + 1e-6 && page < 1.0,
            "{k}: page {page}, API {lo} then {hi}"
        );
    }
    // A monitor with no verdict yet: unknown on both.
    assert!(api("big")["h24"].is_null());
    assert!(!between(&home, &row("big"), ">").contains("data-uptime-h24"));

    // 10,240 target-ports: a page of 50, the next page, and a filter.
    let bigpage = get(addr, "/?monitor=big&state=all");
    assert_eq!(bigpage.matches("<tr class=\"target\"").count(), 50);
    assert!(bigpage.contains("1–50 of 10240"), "pager");
    let next = get(addr, "/?monitor=big&state=all&offset=10200");
    assert_eq!(next.matches("<tr class=\"target\"").count(), 40);
    let host7 = format!("127.{}.{}.7:", big[0], big[1]);
    let filtered = get(addr, &format!("/?monitor=big&state=all&q={host7}"));
    assert_eq!(filtered.matches("<tr class=\"target\"").count(), 40);
    assert!(filtered.contains("1–40 of 40"), "filter");
    get(addr, "/?state=all");

    let Some(chromium) = Chromium::find() else {
        return;
    };
    let url = |path: &str| format!("http://{addr}{path}");
    let dom = chromium.dom(&url(page_url));
    let panel = between(&dom, "<section id=\"monitor-panel\"", "</section>");
    assert_eq!(panel.matches("class=\"beat down\"").count(), 2, "{panel}");
    assert_eq!(panel.matches("class=\"beat up\"").count(), 5, "{panel}");
    assert_eq!(
        panel.matches("<circle class=\"pt\"").count(),
        buckets(5 * 60_000)
    );
    assert!(panel.contains("<svg id=\"rtt-chart\""), "{panel}");
    // DOWN is red in the page's style.
    assert!(dom.contains(".down,.closed{background:#c62828}"), "style");
    chromium.screenshot(&url(page_url), "status-monitor-page.png");
    chromium.screenshot(&url("/?state=all&limit=20"), "status-page-overview.png");
    let dom = chromium.dom(&url(&format!("/?monitor=big&state=all&q={host7}")));
    assert_eq!(dom.matches("<tr class=\"target\"").count(), 40);
    drop(service);
    server.stop();
}

/// Ports on which every one of `hosts` can listen: the test's 10,000 listeners.
fn bind_grid(hosts: &[IpAddr], want: usize) -> (Vec<u16>, Vec<TcpListener>) {
    let mut ports = Vec::new();
    let mut held = Vec::new();
    for port in 20_000u16..24_000 {
        if ports.len() == want {
            break;
        }
        let bound: Vec<TcpListener> = hosts
            .iter()
            .map_while(|ip| TcpListener::bind((*ip, port)).ok())
            .collect();
        if bound.len() == hosts.len() {
            ports.push(port);
            held.extend(bound);
        }
    }
    assert_eq!(ports.len(), want, "free ports on every host");
    (ports, held)
}

fn sweep(addr: SocketAddr, body: &str) -> u64 {
    let (status, v) = util::http_json(addr, "POST", "/v1/sweeps", Some(body));
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_u64().unwrap();
    wait_for("the sweep", Duration::from_secs(120), || {
        json(addr, &format!("/v1/sweeps/{id}"))["state"] == "done"
    });
    id
}

/// A sweep of 10,000 open ports: listed, paged and filtered by port, service and text; a
/// `<script>` banner stays text; a second run links to its diff against the first.
#[test]
fn sweep_pages_page_and_filter_ten_thousand_open_ports() {
    let hosts = util::test_hosts("page-sweep", 40);
    let (ports, _listeners) = bind_grid(&hosts, 250);
    let greet_ip = util::test_hosts("page-greet", 1)[0];
    let greet = Farm::new(&[(greet_ip, Kind::Greet(b"<script>alert(1)</script> ok\r\n"))]);
    let greet_addr = greet.listeners()[0].0;
    let dir = TempDir::new("page-sweep");
    let server = Serve::start(&dir.path().join("data"));
    let addr = server.addr;
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let big = sweep(
        addr,
        &format!(
            r#"{{"targets":["{}-{}"],"ports":"{}"}}"#,
            hosts[0],
            hosts[39],
            port_list.join(",")
        ),
    );
    let status = json(addr, &format!("/v1/sweeps/{big}"));
    assert_eq!(status["counts"]["open"], 10_000, "{status}");
    let small = format!(
        r#"{{"targets":["{}"],"ports":"{}","probe":{{"expect":"ok","timeout_ms":2000}}}}"#,
        greet_addr.ip(),
        greet_addr.port()
    );
    let first = sweep(addr, &small);
    let second = sweep(addr, &small);

    // A running sweep's page shows its progress and refreshes itself; once it has ended it
    // stops refreshing. The listener here accepts and never answers, so the probe waits
    // for its 3 s reply timeout.
    let mute = Farm::new(&[(util::test_hosts("page-mute", 1)[0], Kind::Accept)]);
    let mute_addr = mute.listeners()[0].0;
    let (status, v) = util::http_json(
        addr,
        "POST",
        "/v1/sweeps",
        Some(&format!(
            r#"{{"targets":["{}"],"ports":"{}","probe":{{"expect":"x","timeout_ms":3000,"tries":1}}}}"#,
            mute_addr.ip(),
            mute_addr.port()
        )),
    );
    assert_eq!(status, 202, "{v}");
    let slow = v["id"].as_u64().unwrap();
    let running = get(addr, &format!("/sweeps/{slow}"));
    if json(addr, &format!("/v1/sweeps/{slow}"))["state"] == "running" {
        assert!(running.contains("data-state=\"running\""), "{running}");
        assert!(running.contains("http-equiv=\"refresh\""), "{running}");
        assert!(
            running.contains("data-done=\"0\" data-total=\"1\""),
            "{running}"
        );
    }
    wait_for("the slow sweep", Duration::from_secs(30), || {
        json(addr, &format!("/v1/sweeps/{slow}"))["state"] == "done"
    });
    let ended = get(addr, &format!("/sweeps/{slow}"));
    assert!(ended.contains("data-state=\"done\""), "{ended}");
    assert!(!ended.contains("http-equiv=\"refresh\""), "{ended}");

    let list = get(addr, "/sweeps");
    for id in [big, first, second, slow] {
        assert!(list.contains(&format!("data-sweep=\"{id}\"")), "{list}");
    }
    let page = get(addr, &format!("/sweeps/{big}"));
    assert_eq!(attr(&page, "id=\"results\"", "data-matching"), "10000");
    assert_eq!(page.matches("<tr class=\"result\"").count(), 100);
    assert!(page.contains("1–100 of 10000"), "pager");
    let last = get(addr, &format!("/sweeps/{big}?offset=9950"));
    assert_eq!(last.matches("<tr class=\"result\"").count(), 50);
    let p = ports[7];
    let by_port = get(addr, &format!("/sweeps/{big}?port={p}"));
    assert_eq!(attr(&by_port, "id=\"results\"", "data-matching"), "40");
    assert_eq!(
        by_port.matches(&format!("data-port=\"{p}\"")).count(),
        40,
        "{by_port}"
    );
    let host = hosts[6].to_string();
    let both = get(addr, &format!("/sweeps/{big}?port={p}&q={host}"));
    assert_eq!(attr(&both, "id=\"results\"", "data-matching"), "1");
    let by_text = get(addr, &format!("/sweeps/{big}?q={host}&limit=1000"));
    assert_eq!(attr(&by_text, "id=\"results\"", "data-matching"), "250");
    assert_eq!(by_text.matches("<tr class=\"result\"").count(), 250);
    let (status, body) = http(addr, "GET", &format!("/sweeps/{big}?port=http"), None);
    assert_eq!(status, 400, "{body}");

    // The banner is text, and the second run links to what changed since the first.
    let greet_page = get(addr, &format!("/sweeps/{second}"));
    assert!(greet_page.contains("&lt;script&gt;alert(1)&lt;/script&gt; ok"));
    assert!(!greet_page.contains("<script>"));
    assert!(
        greet_page.contains(&format!("/v1/sweeps/{second}/diff?against={first}")),
        "{greet_page}"
    );
    let first_page = get(addr, &format!("/sweeps/{first}"));
    assert!(!first_page.contains("id=\"diff-previous\""));

    if let Some(chromium) = Chromium::find() {
        let url = |path: &str| format!("http://{addr}{path}");
        let dom = chromium.dom(&url(&format!("/sweeps/{big}?port={p}")));
        assert_eq!(dom.matches("<tr class=\"result\"").count(), 40);
        let dom = chromium.dom(&url(&format!("/sweeps/{second}")));
        assert!(
            dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; ok"),
            "{dom}"
        );
        assert!(!dom.contains("<script>"), "{dom}");
        chromium.screenshot(&url(&format!("/sweeps/{big}")), "sweep-page.png");
        chromium.screenshot(&url("/sweeps"), "sweeps-list.png");
    }
    server.stop();
}

/// The pages keep the API's rules: with a token, `/sweeps` needs it, and `/` needs it
/// unless `[api] public` opens it.
#[test]
fn pages_need_the_token_unless_public() {
    let dir = TempDir::new("page-auth");
    for (public, home) in [("[\"/healthz\"]", 401), ("[\"/healthz\", \"/\"]", 200)] {
        let config = dir.write(
            "porthawk.toml",
            &format!("[api]\ntoken = \"page-secret\"\npublic = {public}\n"),
        );
        let mut cmd = Serve::command(&dir.path().join("data"));
        cmd.arg("--config").arg(&config);
        let server = Serve::spawn(cmd);
        let addr = server.addr;
        assert_eq!(http(addr, "GET", "/", None).0, home, "{public}");
        assert_eq!(http(addr, "GET", "/sweeps", None).0, 401);
        assert_eq!(http(addr, "GET", "/sweeps/1", None).0, 401);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET /sweeps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer page-secret\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("<table id=\"sweeps\">"), "{raw}");
        server.stop();
    }
}
