//! Monitors seen from several vantage points, end to end: two fleet pools, `a` and `b`, each
//! one real `porthawk agent` in a network namespace of its own; the coordinator (`porthawk
//! serve` with `[fleet]`) and a nats-server of the test's own on the host side of a bridge
//! that only this test's namespaces are attached to; a listener on that bridge address,
//! reachable from both namespaces; nftables in `b` drops the listener's port on its way out.
//!
//! A monitor `from = ["a", "b"]`: with `quorum = "all"` the port is `partial` (seen DOWN from
//! `b` only) and its DOWN action never runs; with `quorum = "any"` it is DOWN and the action
//! runs.
//!
//! Needs root, `ip`, `nft` and `nats-server`: without them the test says why and returns
//! (under `CI=true` it fails). Traffic stays on the bridge and in the namespaces the test
//! makes (198.18.0.0/15, the benchmarking range, is what their addresses are taken from).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nats_util::NatsServer;
use crate::util::{require, run_command, stderr, which, TempDir, BIN};

const TOKEN: &str = "vantage-test-token";
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A bridge in the host namespace with the address `198.18.<n>.1/24`, and one network
/// namespace per pool attached to it by a veth pair (`198.18.<n>.2`, `.3`, ...). Everything
/// is deleted on drop.
struct Net {
    ip: PathBuf,
    bridge: String,
    host: Ipv4Addr,
    namespaces: Vec<String>,
}

impl Net {
    /// Sets it up for `pools`; `Err` says what is missing.
    fn create(pools: &[&str]) -> Result<Net, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ip = which("ip").ok_or("`ip` (iproute2) not found")?;
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{k}", std::process::id() % 100_000);
        let taken = ip_out(&ip, &["-4", "-o", "addr", "show"])?;
        let subnet = (0..250u32)
            .map(|i| ((std::process::id() + k * 7 + i) % 250 + 1) as u8)
            .find(|n| !taken.contains(&format!("198.18.{n}.")))
            .ok_or("no free 198.18.n.0/24 for the test bridge")?;
        let mut net = Net {
            bridge: format!("phvb{tag}"),
            host: Ipv4Addr::new(198, 18, subnet, 1),
            namespaces: Vec::new(),
            ip,
        };
        let bridge = net.bridge.clone();
        net.ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.ip(&["addr", "add", &format!("{}/24", net.host), "dev", &bridge])?;
        net.ip(&["link", "set", &bridge, "up"])?;
        for (i, pool) in pools.iter().enumerate() {
            let ns = format!("ph-vantage-{tag}-{pool}");
            net.ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let veth = format!("phv{tag}{i}");
            net.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            net.ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = Ipv4Addr::new(198, 18, subnet, 2 + i as u8);
            net.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            net.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            net.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        ip_out(&self.ip, args).map(drop)
    }

    /// `ip netns exec <namespace of pool i> program args...`
    fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.namespaces[i], program]);
        cmd
    }

    /// Loads an nftables ruleset in the namespace of pool `i`.
    fn nft(&self, i: usize, ruleset: &str) -> Result<(), String> {
        let mut cmd = self.command(i, "nft");
        cmd.args(["-f", "-"]);
        let out = run_command(cmd, Some(ruleset), SETUP_TIMEOUT);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {}: {}",
                self.namespaces[i],
                stderr(&out).trim()
            ))
        }
    }
}

fn ip_out(ip: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(ip);
    cmd.args(args);
    let out = run_command(cmd, None, SETUP_TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr(&out).trim()))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the host end.
        for ns in &self.namespaces {
            let _ = ip_out(&self.ip, &["netns", "del", ns]);
        }
        if let Err(e) = ip_out(&self.ip, &["link", "del", &self.bridge]) {
            eprintln!("warning: could not delete the test bridge: {e}");
        }
    }
}

/// A listener that accepts and closes connections until dropped.
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ip: IpAddr) -> Listener {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process (server or agent) with its stderr kept; killed by its own pid on drop.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd`; returns it and the first stderr line's text after `marker`, if any is
    /// awaited.
    fn spawn(mut cmd: Command, marker: Option<&str>) -> (Proc, Option<String>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let (tx, rx) = std::sync::mpsc::channel();
        let awaited = marker.map(str::to_string);
        let marker = awaited.clone();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(m) = &marker {
                    if let Some(rest) = line.split(m.as_str()).nth(1) {
                        if let Some(tx) = tx.take() {
                            let _ =
                                tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                        }
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut p = Proc { child, log };
        let found = awaited.map(|m| match rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                let _ = p.child.kill();
                panic!("no '{m}' line; stderr:\n{}", p.log());
            }
        });
        (p, found)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `porthawk serve` and how to ask it things.
struct Serve {
    proc: Proc,
    addr: SocketAddr,
}

impl Serve {
    fn start(config: &Path, data: &Path) -> Serve {
        let mut cmd = Command::new(BIN);
        cmd.env(
            "RUST_LOG",
            "warn,porthawk=info,porthawk_server=info,porthawk_fleet=info",
        )
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data);
        let (proc, addr) = Proc::spawn(cmd, Some("listening on http://"));
        Serve {
            addr: addr.unwrap().parse().unwrap(),
            proc,
        }
    }

    fn json(&self, path: &str) -> Value {
        let mut c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        let body = raw.split_once("\r\n\r\n").map_or("", |x| x.1);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {raw}"))
    }

    /// Waits until `f` holds of the monitor's status, at most `limit`; returns it.
    fn wait_monitor(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.json("/v1/monitors/mx");
            if f(&v) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}: {v}\nserver log:\n{}",
                self.proc.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sets up the two pools, the listener and the coordinator for a monitor judged by
/// `quorum`, then checks what the monitor says once both pools' agents report.
fn vantage_case(quorum: &str, check: impl FnOnce(&Serve, &Path)) {
    if require(
        "root",
        (!crate::daemon_util::is_root()).then(|| "not root".into()),
    )
    .is_err()
        || require("nft", which("nft").is_none().then(|| "not found".into())).is_err()
    {
        return;
    }
    let net = match Net::create(&["a", "b"]) {
        Ok(n) => n,
        Err(why) => {
            let _ = require("network namespaces with a bridge", Some(why));
            return;
        }
    };
    let Ok(nats) = NatsServer::start(&format!("listen: \"{}:-1\"", net.host)) else {
        return;
    };
    let listener = Listener::start(IpAddr::V4(net.host));
    let port = listener.addr.port();
    // Pool b's path to the service is broken: its packets to the port are dropped.
    net.nft(
        1,
        &format!(
            "table inet vantage {{\n\tchain output {{\n\t\ttype filter hook output priority 0; \
             policy accept;\n\t\tip daddr {} tcp dport {port} drop\n\t}}\n}}\n",
            net.host
        ),
    )
    .unwrap();

    let dir = TempDir::new("vantage");
    let mark = dir.path().join("action-ran");
    let config = dir.write(
        "porthawk.toml",
        &format!(
            r#"
[api]
token = "{TOKEN}"

[[monitor]]
name = "mx"
targets = ["{host}"]
ports = "{port}"
interval = "1s"
timeout = "300ms"
fail_after = 2
recover_after = 1
from = ["a", "b"]
quorum = "{quorum}"
on_down = ["mark"]
group_wait = "0s"

[action.mark]
exec = ["sh", "-c", "echo ran >> '{mark}'"]
cooldown = "0s"
max_per_hour = 100

[fleet]
nats = "{url}"
allow_insecure = true
agents = ["a-1", "b-1"]
pools = ["a", "b"]
ack_wait = "3s"
"#,
            host = net.host,
            url = nats.url(),
            mark = mark.display(),
        ),
    );
    let data = dir.path().join("data");
    let serve = Serve::start(&config, &data);
    // Agents bind to the pools' consumers, which the coordinator creates once connected.
    let start = Instant::now();
    loop {
        let v = serve.json("/v1/fleet/agents");
        if v["connected"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the coordinator never connected to {}: {v}; server log:\n{}",
            nats.url(),
            serve.proc.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let mut agents = Vec::new();
    for (i, pool) in ["a", "b"].into_iter().enumerate() {
        let mut cmd = net.command(i, BIN);
        cmd.args([
            "agent",
            "--nats",
            nats.url(),
            "--pool",
            pool,
            "--name",
            &format!("{pool}-1"),
            "--allow-insecure",
            "--shards",
            "1",
            "--heartbeat",
            "1s",
        ]);
        agents.push(Proc::spawn(cmd, None).0);
    }
    let start = Instant::now();
    loop {
        let v = serve.json("/v1/monitors/mx");
        let live = v["vantages"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["agents"] == 1));
        if live {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pools never had a live agent each: {v}\nserver log:\n{}\nagent a:\n{}\n\
             agent b:\n{}",
            serve.proc.log(),
            agents[0].log(),
            agents[1].log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    check(&serve, &mark);
    // Agents first, so that none of them outlives the namespace it runs in.
    drop(agents);
    drop(serve);
    drop(listener);
    drop(nats);
    drop(net);
}

/// `quorum = "all"`: the port answers from pool a and not from pool b. The monitor is
/// `partial`, its vantages say what each sees, and the DOWN action never runs.
#[test]
fn quorum_all_with_one_pool_cut_off_is_partial_and_runs_no_action() {
    vantage_case("all", |serve, mark| {
        // Pool b may see it DOWN before pool a has reported at all: wait for both.
        let v = serve.wait_monitor("partial, seen up from a", Duration::from_secs(30), |v| {
            v["state"] == "partial" && v["vantages"][0]["state"] == "up"
        });
        let vantages = v["vantages"].as_array().unwrap();
        assert_eq!(
            (vantages[0]["name"].as_str(), vantages[0]["state"].as_str()),
            (Some("a"), Some("up")),
            "{v}"
        );
        assert_eq!(
            (vantages[1]["name"].as_str(), vantages[1]["state"].as_str()),
            (Some("b"), Some("down")),
            "{v}"
        );
        assert!(
            vantages[1]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("filtered"),
            "{v}"
        );
        let t = &v["target_list"][0];
        assert_eq!(
            (t["state"].as_str(), t["partial"].as_bool()),
            (Some("up"), Some(true)),
            "{v}"
        );
        // Three more rounds: still partial, and no action has run or been recorded.
        thread::sleep(Duration::from_secs(3));
        let v = serve.json("/v1/monitors/mx");
        assert_eq!(v["state"], "partial", "{v}");
        assert!(!mark.exists(), "a partial outage ran the DOWN action");
        assert_eq!(v["actions"].as_array().map(Vec::len), Some(0), "{v}");
    });
}

/// `quorum = "any"`: the same cut-off pool is enough: the monitor is DOWN, its incident names
/// the vantages, and the action runs.
#[test]
fn quorum_any_with_one_pool_cut_off_is_down_and_runs_the_action() {
    vantage_case("any", |serve, mark| {
        let v = serve.wait_monitor("down", Duration::from_secs(30), |v| v["state"] == "down");
        assert_eq!(v["target_list"][0]["state"], "down", "{v}");
        let start = Instant::now();
        while !std::fs::read_to_string(mark).is_ok_and(|t| t.contains("ran")) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the action never ran"
            );
            thread::sleep(Duration::from_millis(100));
        }
        let v = serve.wait_monitor("the action recorded", Duration::from_secs(30), |v| {
            v["actions"].as_array().is_some_and(|a| !a.is_empty())
        });
        assert_eq!(v["actions"][0]["action"], "mark", "{v}");
        let events = v["events"].to_string();
        assert!(events.contains("down from b"), "{v}");
    });
}
