//! A nats-server of the test's own, for the fleet tests (agent and coordinator).
//!
//! [`NatsServer::start`] writes a config (listen on `127.0.0.1:-1`, JetStream with its store
//! in a temporary directory, plus whatever the test adds: `authorization`, `tls`), starts
//! Debian's `nats-server -c CONF --ports_file_dir DIR` (never the packaged systemd unit),
//! reads the port it picked from its ports file, and stops it by pid on drop. Under `CI=true`
//! a missing `nats-server` fails the test; elsewhere the test is skipped with a reason.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{require, which, TempDir};

/// A running nats-server, stopped (SIGKILL by pid, then reaped) on drop.
pub struct NatsServer {
    child: Child,
    url: String,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server whose config is the standard part plus `conf_extra`. `Err` (after a
    /// printed reason) when nats-server is missing outside CI; panics when it fails to start.
    pub fn start(conf_extra: &str) -> Result<NatsServer, String> {
        let Some(program) = which("nats-server") else {
            require(
                "nats-server",
                Some("not installed (apt-get install nats-server)".into()),
            )?;
            unreachable!("require returns Err when something is missing");
        };
        let dir = TempDir::new("nats");
        let store = dir.path().join("js");
        let conf = dir.write(
            "nats-server.conf",
            &format!(
                "listen: \"127.0.0.1:-1\"\njetstream {{ store_dir: {:?} }}\n{conf_extra}\n",
                store.display().to_string()
            ),
        );
        let log = std::fs::File::create(dir.path().join("nats-server.log"))
            .unwrap_or_else(|e| panic!("cannot create the nats-server log: {e}"));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let mut server = NatsServer {
            child,
            url: String::new(),
            dir,
        };
        server.url = server.wait_for_port();
        Ok(server)
    }

    /// Reads `nats-server_<pid>.ports` (written once the server listens), for up to 15 s.
    fn wait_for_port(&mut self) -> String {
        let ports = self
            .dir
            .path()
            .join(format!("nats-server_{}.ports", self.child.id()));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The file may be read while the server is still writing it: an empty or cut
            // text is not an answer yet.
            if let Ok(text) = std::fs::read_to_string(&ports) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if let Some(url) = v["nats"][0].as_str() {
                    return url.to_string();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nats-server exited ({status}) before listening; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server wrote no ports file in 15 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's temporary directory (config, log, store); tests may put key files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (for assertion messages and permission violations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port, config and store
    /// (file storage restores streams, consumers and buckets); waits until it listens.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap_or_default().to_string();
        let conf = self.dir.path().join("nats-server.conf");
        let text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("cannot read the nats-server config: {e}"));
        let text = text.replace("127.0.0.1:-1", &format!("127.0.0.1:{port}"));
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("cannot rewrite the config: {e}"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("nats-server.log"))
            .unwrap_or_else(|e| panic!("cannot open the nats-server log: {e}"));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
        let program = which("nats-server").unwrap_or_else(|| panic!("nats-server is gone"));
        self.child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot restart nats-server: {e}"));
        let url = self.wait_for_port();
        assert_eq!(url, self.url, "nats-server came back on another port");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Child::kill signals this child's own pid; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture's server listens on loopback and greets with its INFO line, JetStream on.
#[test]
fn fixture_starts_a_jetstream_server_on_loopback() {
    use std::io::{BufRead, BufReader};
    let Ok(server) = NatsServer::start("") else {
        return;
    };
    let addr = server
        .url()
        .strip_prefix("nats://")
        .unwrap_or_else(|| panic!("unexpected url {}", server.url()));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO {"), "{line}");
    assert!(line.contains("\"jetstream\":true"), "{line}");
}
