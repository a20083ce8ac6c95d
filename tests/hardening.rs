//! `porthawk serve` under attack, over real sockets: half-sent requests that would hold its
//! descriptors, idle and stalled connections, cross-site and rebinding requests, and a probed
//! host whose banner tries to ping a Slack channel.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{self, Serve, TempDir};

/// `porthawk serve` with `config` as its config file, data in `dir`.
fn serve_with(dir: &TempDir, config: &str) -> Serve {
    let config = dir.write("porthawk.toml", config);
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(config);
    Serve::spawn(cmd)
}

/// Sends `raw` and reads the whole answer (the request says `Connection: close`, or the
/// server closes); returns the status and the body (not de-chunked: enough for these checks).
fn exchange(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    s.write_all(raw.as_bytes()).expect("send");
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => {}
        Err(e) => panic!("reading the answer to {raw:?}: {e}"),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// A whole request with `Connection: close`.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the server has closed `s` (EOF or reset), reading whatever it sent first.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Waits (bounded) until the server has closed every stream.
fn wait_all_closed(streams: &mut [TcpStream], limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    let mut open: Vec<&mut TcpStream> = streams.iter_mut().collect();
    for s in &mut open {
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
    }
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of the {what} are still open after {limit:?}",
            open.len()
        );
        open.retain_mut(|s| !closed_by_server(s));
        thread::sleep(Duration::from_millis(50));
    }
}

const HALF_SENT: usize = 300;
const CAP: usize = 32;

#[test]
fn half_sent_requests_cannot_starve_the_server_of_descriptors() {
    let dir = TempDir::new("hardening-slowloris");
    let server = serve_with(
        &dir,
        &format!("[api]\nmax_connections = {CAP}\nheader_timeout = \"1s\"\n"),
    );
    let addr = server.addr;
    let (status, _) = exchange(addr, &request(addr, "GET", "/healthz", "", ""));
    assert_eq!(status, 200);
    let baseline = server.settled_fds();
    let before = server.fd_targets();

    // Each opens a request and never finishes its head. Connections over the cap wait in
    // the kernel's backlog; the server must hold no descriptor for them.
    let mut slow: Vec<TcpStream> = (0..HALF_SENT)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {i}: {e}"));
            s.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ").as_bytes(),
            )
            .expect("half a request");
            s
        })
        .collect();
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(server.fds());
        thread::sleep(Duration::from_millis(50));
    }
    // The cap, plus a little for the store and the monitors' thread.
    assert!(
        most <= baseline + CAP + 16,
        "the server held {most} descriptors with {HALF_SENT} half-sent requests (baseline \
         {baseline}, cap {CAP})"
    );

    // A normal client still gets its answer: the half-sent requests ahead of it in the
    // backlog are dropped after the header timeout, a cap's worth at a time.
    let (status, body) = exchange(addr, &request(addr, "GET", "/healthz", "", ""));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    // Every half-sent request is closed by the server, and its descriptors come back.
    wait_all_closed(&mut slow, Duration::from_secs(60), "half-sent requests");
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.fds() > baseline + 4 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let after = server.fds();
    assert!(
        after <= baseline + 4,
        "{after} descriptors after, {baseline} before:\nbefore {before:?}\nafter {:?}",
        server.fd_targets()
    );
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    let dir = TempDir::new("hardening-idle");
    let server = serve_with(
        &dir,
        "[api]\nheader_timeout = \"1s\"\nidle_timeout = \"1s\"\n",
    );
    let addr = server.addr;
    // A kept-alive connection that goes idle after one answer.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("send");
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    // A request whose body stops coming.
    let mut stalled = TcpStream::connect(addr).expect("connect");
    stalled
        .write_all(
            format!(
                "POST /v1/sweeps HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"targets\":"
            )
            .as_bytes(),
        )
        .expect("send");
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    wait_all_closed(&mut [idle], Duration::from_secs(30), "idle connections");
    let (status, body) = exchange(addr, &request(addr, "GET", "/v1/sweeps", "", ""));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"sweeps\":[]"),
        "the stalled sweep was created: {body}"
    );
}

#[test]
fn cross_site_and_rebinding_requests_are_refused_by_a_real_server() {
    let dir = TempDir::new("hardening-xsite");
    let server = serve_with(&dir, "");
    let addr = server.addr;
    let sweep = r#"{"targets":["127.0.0.1"],"ports":"1"}"#;
    // What a page of another site can send without a preflight.
    let (status, body) = exchange(
        addr,
        &request(
            addr,
            "POST",
            "/v1/sweeps",
            "Content-Type: text/plain\r\n",
            sweep,
        ),
    );
    assert_eq!(status, 415, "{body}");
    let (status, body) = exchange(
        addr,
        &request(
            addr,
            "POST",
            "/v1/sweeps",
            "Content-Type: application/json\r\nOrigin: http://attacker.example\r\n",
            sweep,
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("foreign_origin"), "{body}");
    let (_, body) = exchange(addr, &request(addr, "GET", "/v1/sweeps", "", ""));
    assert!(
        body.contains("\"sweeps\":[]"),
        "a sweep was created: {body}"
    );
    // A rebinding page: its requests carry its own name.
    let raw = format!(
        "GET /v1/sweeps HTTP/1.1\r\nHost: attacker.example:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    let (status, body) = exchange(addr, &raw);
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"), "{body}");
    // The legitimate client.
    let (status, body) = exchange(
        addr,
        &request(
            addr,
            "POST",
            "/v1/sweeps",
            "Content-Type: application/json\r\n",
            sweep,
        ),
    );
    assert_eq!(status, 202, "{body}");
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    assert_eq!(exchange(addr, &raw).0, 200);
}

/// Serves `banner` to every connection on `ip`, then closes.
fn hostile_service(ip: IpAddr, banner: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind the service");
    let addr = l.local_addr().expect("address");
    thread::spawn(move || {
        for mut c in l.incoming().map_while(Result::ok) {
            let _ = c.write_all(banner);
        }
    });
    addr
}

/// An HTTP sink that answers 200 and keeps each request body.
fn webhook_sink(ip: IpAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind((ip, 0)).expect("bind the sink");
    let addr = l.local_addr().expect("address");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&bodies);
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(clone) = c.try_clone() else { continue };
            let mut r = BufReader::new(clone);
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
                if let Ok(mut b) = out.lock() {
                    b.push(String::from_utf8_lossy(&body).into_owned());
                }
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, bodies)
}

#[test]
fn a_probed_host_cannot_ping_the_slack_channel() {
    let net = util::test_net("hardening-slack");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let service = hostile_service(
        ip(1),
        b"500 <!channel> <https://evil.example/|click for the fix> & <@U024BE7LH>\r\n",
    );
    let (sink, bodies) = webhook_sink(ip(2));
    let dir = TempDir::new("hardening-slack");
    let _server = serve_with(
        &dir,
        &format!(
            r#"
[[monitor]]
name = "mail"
targets = ["{}"]
ports = "{}"
expect = "^220 "
interval = "500ms"
timeout = "400ms"
fail_after = 1
group_wait = "0s"
on_down = ["chat"]

[notify.chat]
slack = {{ url = "http://{sink}/services/T0/B0/x" }}
"#,
            service.ip(),
            service.port()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let got = bodies.lock().map(|b| b.first().cloned()).unwrap_or(None);
        if let Some(body) = got {
            break body;
        }
        assert!(Instant::now() < deadline, "no Slack message within 30 s");
        thread::sleep(Duration::from_millis(50));
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("the Slack body is JSON");
    let message = v["text"].as_str().expect("a text field");
    assert!(message.contains("DOWN"), "{message}");
    // The banner reached the message, as text.
    assert!(message.contains("&lt;!channel&gt;"), "{message}");
    assert!(
        message
            .contains("&lt;https://evil.example/|click for the fix&gt; &amp; &lt;@U024BE7LH&gt;"),
        "{message}"
    );
    assert!(!message.contains(['<', '>']), "{message}");
}
