//! Fleet mode end to end (issue 9): a real nats-server (the `NatsServer` fixture, with the
//! nkey users `porthawk fleet add-agent` prints), a real `porthawk serve` as the coordinator
//! and real `porthawk agent` processes sweep a listener farm on a private `127.a.b.0/24`
//! with a known truth, while agents, the coordinator or nats-server are killed. Every run
//! must end with the stored results equal to the truth, one row per (ip, port), the sweep
//! `done` and both streams empty.
// The helpers here are test code too: a failed set-up step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::nats_util::NatsServer;
use crate::util::{
    check_open_set, http, run_for, stderr, stdout, test_net, which, Farm, Kind, ListenSnapshot,
    Serve, TempDir, BIN,
};

/// Ports per host of the farm sweep, and the hosts: a /24 × 40 ports = 10,240 probes.
const PORTS: usize = 40;
const HOSTS: u8 = 254;

/// An agent process, killed by pid when dropped.
struct Agent {
    child: Option<Child>,
    name: String,
}

impl Agent {
    fn start(nats: &NatsServer, name: &str, key: &str, shards: u16, rate: u64) -> Agent {
        let log = std::fs::File::create(nats.dir().join(format!("agent-{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args([
                "agent",
                "--nats",
                nats.url(),
                "--name",
                name,
                "--pool",
                "lab",
            ])
            .args(["--heartbeat", "500ms", "--backend", "epoll"])
            .args(["--shards", &shards.to_string(), "--rate", &rate.to_string()])
            .arg("--nkey")
            .arg(nats.dir().join(format!("{key}.nk")))
            .env("RUST_LOG", "porthawk=info,porthawk_fleet=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            name: name.to_string(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {}", self.name);
    }

    /// `kill -9`, and reaped.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process exited, waiting up to `limit`; its exit code.
    fn exited(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nkey users of agents `a1`, `a2`, `a3` (pool `lab`), `b1` (pool `other`) and the
/// coordinator, made by `porthawk fleet`, in a server's config; the seed files in its dir.
fn users(extra: &str) -> Option<NatsServer> {
    let keys = TempDir::new("fleet-keys");
    let mut entries = String::new();
    let mut add = |args: &[&str]| {
        let mut all = vec!["fleet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", keys.path().to_str().unwrap()]);
        let out = run_for(&all, Duration::from_secs(30));
        assert!(out.status.success(), "{all:?}: {}", stderr(&out));
        entries.push_str(&stdout(&out));
        entries.push('\n');
    };
    for a in ["a1", "a2", "a3"] {
        add(&["add-agent", a, "--pool", "lab"]);
    }
    add(&["add-agent", "b1", "--pool", "other"]);
    add(&["coordinator-user"]);
    let conf = format!("authorization {{ users = [\n{entries}] }}\n{extra}");
    let server = NatsServer::start(&conf).ok()?;
    for name in ["a1", "a2", "a3", "b1", "coordinator"] {
        let file = format!("{name}.nk");
        std::fs::copy(keys.path().join(&file), server.dir().join(&file)).unwrap();
    }
    Some(server)
}

/// The farm: `Accept` listeners on ten hosts of a private /24, and the sweep's ports: theirs
/// plus closed ones up to [`PORTS`].
struct Truth {
    _farm: Farm,
    hosts: Vec<IpAddr>,
    ports: BTreeSet<u16>,
    own: BTreeSet<(IpAddr, u16)>,
    target: String,
}

fn truth(name: &str) -> Truth {
    truth_of(name, HOSTS)
}

/// [`truth`] over the first `n` hosts of the block.
fn truth_of(name: &str, n: u8) -> Truth {
    let [a, b] = test_net(name);
    let hosts: Vec<IpAddr> = (1..=n)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, a, b, d)))
        .collect();
    let spec: Vec<(IpAddr, Kind)> = hosts
        .iter()
        .step_by(25.min(n as usize))
        .map(|&ip| (ip, Kind::Accept))
        .collect();
    let farm = Farm::new(&spec);
    let own = farm.open_set();
    let mut ports = farm.ports();
    // Closed ports next to them (whatever listens there is in the snapshots).
    let mut p = 20_000u16;
    while ports.len() < PORTS {
        ports.insert(p);
        p += 1;
    }
    Truth {
        _farm: farm,
        hosts,
        ports,
        own,
        target: format!("127.{a}.{b}.1-127.{a}.{b}.{n}"),
    }
}

impl Truth {
    fn ports_arg(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn total(&self) -> u64 {
        self.hosts.len() as u64 * self.ports.len() as u64
    }
}

/// The coordinator's config: test settings (slice 512, ack_wait 3 s).
fn config(dir: &Path, nats: &NatsServer, extra: &str) -> PathBuf {
    let path = dir.join("porthawk.toml");
    std::fs::write(
        &path,
        format!(
            "[fleet]\nnats = \"{}\"\nnkey = \"{}\"\nagents = [\"a1\", \"a2\", \"a3\", \"b1\"]\n\
             pools = [\"lab\", \"other\"]\nslice_len = 512\nack_wait = \"3s\"\nagent_ttl = \"3s\"\n{extra}",
            nats.url(),
            nats.dir().join("coordinator.nk").display()
        ),
    )
    .unwrap();
    path
}

/// `porthawk serve` with the config, once its fleet task is connected (and so has made the
/// pools' consumers the agents bind to).
fn serve(data: &Path, conf: &Path) -> Serve {
    let mut cmd = Serve::command(data);
    cmd.arg("--config")
        .arg(conf)
        .env("RUST_LOG", "warn,porthawk=info,porthawk_server=info");
    let serve = Serve::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, v) = serve.http_json("GET", "/v1/fleet/agents", None);
        assert_eq!(code, 200, "{v}");
        if v["connected"] == true {
            return serve;
        }
        assert!(Instant::now() < deadline, "the coordinator never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn submit(serve: &Serve, truth: &Truth) -> u64 {
    let body = json!({
        "targets": [truth.target],
        "ports": truth.ports_arg(),
        "store": "all",
        "from": "lab",
    })
    .to_string();
    let (code, v) = serve.http_json("POST", "/v1/sweeps", Some(&body));
    assert_eq!(code, 202, "{v}");
    v["id"].as_u64().unwrap()
}

fn status(serve: &Serve, id: u64) -> Value {
    let (code, v) = serve.http_json("GET", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(code, 200, "{v}");
    v
}

/// Waits (bounded) for the sweep to end; its status.
fn wait_ended(serve: &Serve, id: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(serve, id);
        if s["state"] != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "sweep {id} still running: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded) until `f` holds for the agents list.
fn wait_agents(serve: &Serve, within: Duration, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let (code, v) = serve.http_json("GET", "/v1/fleet/agents", None);
        assert_eq!(code, 200, "{v}");
        let agents = v["agents"].as_array().cloned().unwrap_or_default();
        if f(&agents) {
            return agents;
        }
        assert!(
            Instant::now() < deadline,
            "agents never as wanted: {v}\n{}",
            agent_logs(serve)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every agent log of the test's nats-server directories (for failure messages).
fn agent_logs(_serve: &Serve) -> String {
    let mut out = String::new();
    for dir in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(inner) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for f in inner.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with("agent-") && name.ends_with(".log") {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                out.push_str(&format!("{}: {:?}\n", f.path().display(), tail));
            }
        }
    }
    out
}

fn running_slices(agent: &Value, job: &str) -> usize {
    agent["running"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|s| s["job"] == job).count())
}

/// The stored results: every line, and the set of (ip, port) → state.
fn results(serve: &Serve, id: u64) -> (usize, BTreeMap<(IpAddr, u16), String>) {
    let (code, body) = http(
        serve.addr,
        "GET",
        &format!("/v1/sweeps/{id}/results?follow=false"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let mut lines = 0;
    let mut set = BTreeMap::new();
    for l in body.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let v: Value = serde_json::from_str(l).unwrap();
        let ip: IpAddr = v["ip"].as_str().unwrap().parse().unwrap();
        let port = v["port"].as_u64().unwrap() as u16;
        set.insert((ip, port), v["state"].as_str().unwrap().to_string());
    }
    (lines, set)
}

/// The exactly-once checks: done, counts == rows == truth, one row per (ip, port).
fn check_exactly_once(serve: &Serve, id: u64, truth: &Truth, before: &ListenSnapshot) {
    let after = ListenSnapshot::take();
    let s = status(serve, id);
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["mode"], "fleet", "{s}");
    assert_eq!(s["done"].as_u64(), Some(truth.total()), "{s}");
    assert_eq!(s["slices"]["done"], s["slices"]["total"], "{s}");
    assert_eq!(s["slices"]["failed"], 0, "{s}");
    let (lines, set) = results(serve, id);
    assert_eq!(
        lines,
        set.len(),
        "COUNT(*) != COUNT(DISTINCT ip, port): a position stored twice"
    );
    assert_eq!(lines as u64, truth.total(), "rows != probes");
    let open: BTreeSet<(IpAddr, u16)> = set
        .iter()
        .filter(|(_, st)| *st == "open")
        .map(|(k, _)| *k)
        .collect();
    check_open_set(
        &open,
        &truth.own,
        &truth.hosts,
        &truth.ports,
        before,
        &after,
    );
    for ((ip, port), state) in &set {
        assert!(
            state == "open" || state == "closed",
            "{ip}:{port} is {state} on loopback"
        );
        assert!(truth.hosts.contains(ip) && truth.ports.contains(port));
    }
    let counts = &s["counts"];
    assert_eq!(counts["open"].as_u64(), Some(open.len() as u64), "{s}");
    assert_eq!(
        counts["closed"].as_u64(),
        Some(truth.total() - open.len() as u64),
        "{s}"
    );
}

/// Both streams hold nothing once the sweep is done (bounded wait: acks are asynchronous).
fn check_streams_empty(nats: &NatsServer) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let seed = std::fs::read_to_string(nats.dir().join("coordinator.nk")).unwrap();
        let client = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_string())
            .connect(nats.url())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut work = js.get_stream(porthawk_core::WORK_STREAM).await.unwrap();
            let w = work.info().await.unwrap().state.messages;
            let mut results = js.get_stream(porthawk_core::RESULTS_STREAM).await.unwrap();
            let r = results.info().await.unwrap().state.messages;
            if w == 0 && r == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "streams not empty: work {w}, results {r}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

fn metric(serve: &Serve, name: &str) -> f64 {
    let (code, text) = http(serve.addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The acceptance: three agents with 1, 2 and 3 shards; one is killed with kill -9
/// while it runs a slice that has sent frames; the agents list shows the three while they
/// run; an agent that takes another's name is refused and changes nothing. The sweep ends
/// `done` with exactly the truth, once.
#[test]
fn three_agents_one_killed_mid_slice_store_exactly_the_truth_once() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-accept");
    let conf = config(dir.path(), &nats, "");
    let serve = serve(&dir.path().join("data"), &conf);
    let mut agents = [
        Agent::start(&nats, "a1", "a1", 1, 400),
        Agent::start(&nats, "a2", "a2", 2, 400),
        Agent::start(&nats, "a3", "a3", 3, 400),
    ];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 3);
    // An agent under another's name (a1 with b1's key, of another pool) is refused by the
    // server, and the sweep below is not touched by it.
    let mut impostor = Agent::start(&nats, "a1", "b1", 1, 400);
    let code = impostor.exited(Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0),
        "an agent with another's name was not refused"
    );
    let truth = truth("fleet-accept");
    let before = ListenSnapshot::take();
    let id = submit(&serve, &truth);
    let job = format!("s{id}");
    // All three listed while they run; then a2 dies once it runs a slice with frames in.
    let listed = wait_agents(&serve, Duration::from_secs(20), |a| {
        a.len() == 3
            && a.iter()
                .any(|x| x["name"] == "a2" && running_slices(x, &job) > 0)
    });
    assert_eq!(
        listed
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        ["a1", "a2", "a3"].into_iter().collect()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mid = status(&serve, id);
    agents[1].kill();
    eprintln!("killed a2 at {mid}");
    let s = wait_ended(&serve, id, Duration::from_secs(90));
    eprintln!("ended: {s}");
    check_exactly_once(&serve, id, &truth, &before);
    assert!(
        metric(&serve, "porthawk_fleet_redelivered_wins_total") >= 1.0,
        "no slice was won by a redelivery although a2 died running one"
    );
    check_streams_empty(&nats);
}

/// The coordinator killed with kill -9 mid-sweep and started again on the same data: the
/// sweep is still `running` (not interrupted), resumes, and ends exactly once.
#[test]
fn coordinator_killed_and_restarted_mid_sweep_resumes_exactly_once() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-coord-kill");
    let conf = config(dir.path(), &nats, "");
    let data = dir.path().join("data");
    let first = serve(&data, &conf);
    let _agents = [
        Agent::start(&nats, "a1", "a1", 1, 700),
        Agent::start(&nats, "a2", "a2", 2, 700),
    ];
    wait_agents(&first, Duration::from_secs(20), |a| a.len() == 2);
    let truth = truth("fleet-coord-kill");
    let before = ListenSnapshot::take();
    let id = submit(&first, &truth);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&first, id);
        let done = s["done"].as_u64().unwrap();
        if done > 0 {
            assert!(done < truth.total(), "the sweep ended before the kill: {s}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill();
    let second = serve(&data, &conf);
    let s = status(&second, id);
    assert_eq!(s["state"], "running", "{s}");
    wait_ended(&second, id, Duration::from_secs(90));
    check_exactly_once(&second, id, &truth, &before);
    check_streams_empty(&nats);
}

/// nats-server restarted mid-sweep (file storage keeps streams, consumers and buckets): the
/// agents and the coordinator reconnect and the sweep ends exactly once.
#[test]
fn nats_server_restarted_mid_sweep_loses_nothing() {
    let Some(mut nats) = users("") else { return };
    let dir = TempDir::new("fleet-nats-restart");
    let conf = config(dir.path(), &nats, "");
    let serve = serve(&dir.path().join("data"), &conf);
    let _agents = [
        Agent::start(&nats, "a1", "a1", 1, 700),
        Agent::start(&nats, "a3", "a3", 3, 700),
    ];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 2);
    let truth = truth("fleet-nats-restart");
    let before = ListenSnapshot::take();
    let id = submit(&serve, &truth);
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&serve, id)["done"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    nats.restart();
    wait_ended(&serve, id, Duration::from_secs(90));
    check_exactly_once(&serve, id, &truth, &before);
    check_streams_empty(&nats);
}

/// An agent stopped (SIGSTOP) past ack_wait while it holds slices, then continued: its
/// slices were taken over, its stale acks are accepted by the server, and the result is
/// still exactly once.
#[test]
fn stalled_agent_past_ack_wait_still_counts_once() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-stall");
    let conf = config(dir.path(), &nats, "");
    let serve = serve(&dir.path().join("data"), &conf);
    let agents = [
        Agent::start(&nats, "a1", "a1", 1, 700),
        Agent::start(&nats, "a2", "a2", 2, 700),
    ];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 2);
    let truth = truth("fleet-stall");
    let before = ListenSnapshot::take();
    let id = submit(&serve, &truth);
    let job = format!("s{id}");
    wait_agents(&serve, Duration::from_secs(20), |a| {
        a.iter()
            .any(|x| x["name"] == "a2" && running_slices(x, &job) > 0)
    });
    agents[1].signal("-STOP");
    std::thread::sleep(Duration::from_secs(7));
    agents[1].signal("-CONT");
    wait_ended(&serve, id, Duration::from_secs(90));
    check_exactly_once(&serve, id, &truth, &before);
    check_streams_empty(&nats);
}

/// Back-pressure: a small results stream (1 MiB) and the coordinator stopped (SIGSTOP) for
/// 5 s mid-sweep. Agents wait instead of dropping; afterwards the results are exactly the
/// truth (no open port lost to a blocked shard, none invented).
#[test]
fn paused_coordinator_with_a_small_results_stream_loses_nothing() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-pause");
    let conf = config(dir.path(), &nats, "results_max_bytes = 1048576\n");
    let serve = serve(&dir.path().join("data"), &conf);
    let _agents = [
        Agent::start(&nats, "a1", "a1", 2, 3000),
        Agent::start(&nats, "a2", "a2", 2, 3000),
    ];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 2);
    let truth = truth("fleet-pause");
    let before = ListenSnapshot::take();
    let id = submit(&serve, &truth);
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&serve, id)["done"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = serve.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(5));
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_ended(&serve, id, Duration::from_secs(90));
    check_exactly_once(&serve, id, &truth, &before);
    check_streams_empty(&nats);
}

/// `from` on a server without `[fleet]` is a 400 naming the field; a pool the config does
/// not have is too; `GET /v1/fleet/agents` says there is no fleet.
#[test]
fn from_without_fleet_or_with_an_unknown_pool_is_refused() {
    let dir = TempDir::new("fleet-none");
    let plain = Serve::start(&dir.path().join("data"));
    let body = json!({"targets": ["127.0.0.1"], "ports": "1", "from": "lab"}).to_string();
    let (code, v) = plain.http_json("POST", "/v1/sweeps", Some(&body));
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["field"], "from", "{v}");
    let (code, _) = plain.http_json("GET", "/v1/fleet/agents", None);
    assert_eq!(code, 404);
    drop(plain);
    let Some(nats) = users("") else { return };
    let conf = config(dir.path(), &nats, "");
    let serve = serve(&dir.path().join("data2"), &conf);
    let body = json!({"targets": ["127.0.0.1"], "ports": "1", "from": "mars"}).to_string();
    let (code, v) = serve.http_json("POST", "/v1/sweeps", Some(&body));
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["field"], "from", "{v}");
}

/// A poison slice: whichever agent takes slice 0 is killed, twice. With `max_deliver 2` and
/// `max_epochs 1` the server's max-deliveries advisory makes the coordinator fail the slice:
/// the sweep ends `interrupted` with `failed_slices: [0]`, its counts and rows those of the
/// other slices (never `done` with positions silently missing).
#[test]
fn poison_slice_ends_as_failed_slices_never_silently_missing() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-poison");
    let conf = config(dir.path(), &nats, "max_deliver = 2\nmax_epochs = 1\n");
    let serve = serve(&dir.path().join("data"), &conf);
    let mut agents = [
        Agent::start(&nats, "a1", "a1", 1, 100),
        Agent::start(&nats, "a2", "a2", 1, 100),
    ];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 2);
    // 26 hosts × 40 ports: slices of 512, 512 and 16 positions.
    let truth = truth_of("fleet-poison", 26);
    let id = submit(&serve, &truth);
    let job = format!("s{id}");
    // The attempts killed so far: a heartbeat of a dead agent may still be listed.
    let mut killed: Vec<String> = Vec::new();
    for kill in 0..2 {
        let slice0 = |x: &Value| -> Option<String> {
            x["running"].as_array()?.iter().find_map(|s| {
                let attempt = s["attempt"].as_str()?.to_string();
                (s["job"] == job && s["slice"] == 0 && !killed.contains(&attempt))
                    .then_some(attempt)
            })
        };
        let listed = wait_agents(&serve, Duration::from_secs(30), |a| {
            a.iter().any(|x| slice0(x).is_some())
        });
        let (name, attempt) = listed
            .iter()
            .find_map(|x| Some((x["name"].as_str()?.to_string(), slice0(x)?)))
            .unwrap();
        let i = agents.iter().position(|a| a.name == name).unwrap();
        agents[i].kill();
        eprintln!("kill {kill}: {name} ran slice 0 as attempt {attempt}");
        killed.push(attempt);
        // Back under the same name: a fresh process, a fresh attempt.
        agents[i] = Agent::start(&nats, &name, &name, 1, 100);
    }
    let s = wait_ended(&serve, id, Duration::from_secs(90));
    assert_eq!(s["state"], "interrupted", "{s}");
    assert_eq!(s["failed_slices"], json!([0]), "{s}");
    assert_eq!(s["slices"]["failed"], 1, "{s}");
    assert_eq!(s["slices"]["done"], 2, "{s}");
    let done = s["done"].as_u64().unwrap();
    assert_eq!(done, truth.total() - 512, "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("1 of 3 slices failed"),
        "{s}"
    );
    let (lines, set) = results(&serve, id);
    assert_eq!((lines as u64, set.len() as u64), (done, done));
    assert!(metric(&serve, "porthawk_fleet_slices") >= 0.0);
}

/// mTLS: nats-server requires client certificates (made here with openssl), the coordinator
/// and the agent present theirs, and a sweep runs to the truth.
#[test]
fn sweep_over_mutual_tls_with_client_certificates() {
    if which("openssl").is_none()
        && crate::util::require("openssl", Some("not installed".into())).is_err()
    {
        return;
    }
    let certs = TempDir::new("fleet-certs");
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    );
    let Some(nats) = users(&tls) else { return };
    let dir = TempDir::new("fleet-tls");
    let conf = config(
        dir.path(),
        &nats,
        &format!(
            "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            p("ca.pem"),
            p("client.pem"),
            p("client.key")
        ),
    );
    let serve = serve(&dir.path().join("data"), &conf);
    let log = std::fs::File::create(nats.dir().join("agent-tls.log")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "agent",
            "--nats",
            nats.url(),
            "--name",
            "a1",
            "--pool",
            "lab",
        ])
        .args([
            "--heartbeat",
            "500ms",
            "--backend",
            "epoll",
            "--shards",
            "1",
        ])
        .arg("--nkey")
        .arg(nats.dir().join("a1.nk"))
        .args(["--tls-ca", &p("ca.pem"), "--tls-cert", &p("client.pem")])
        .args(["--tls-key", &p("client.key")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let truth = truth_of("fleet-tls", 26);
    let before = ListenSnapshot::take();
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 1);
    let id = submit(&serve, &truth);
    wait_ended(&serve, id, Duration::from_secs(60));
    let after = ListenSnapshot::take();
    let s = status(&serve, id);
    assert_eq!(s["state"], "done", "{s}");
    let (lines, set) = results(&serve, id);
    assert_eq!(
        (lines as u64, set.len() as u64),
        (truth.total(), truth.total())
    );
    let open: BTreeSet<(IpAddr, u16)> = set
        .iter()
        .filter(|(_, st)| *st == "open")
        .map(|(k, _)| *k)
        .collect();
    check_open_set(
        &open,
        &truth.own,
        &truth.hosts,
        &truth.ports,
        &before,
        &after,
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=porthawk test CA",
        ],
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
}

/// `DELETE` of a running fleet sweep: queued slices are purged, agents stop its slices, and
/// it ends `cancelled` keeping what was found, as a local sweep does: the slices done plus
/// each running slice's newest attempt so far (more than whole slices), with counts ==
/// rows, one row per (ip, port), every kept verdict true, and no work left.
#[test]
fn cancelling_a_fleet_sweep_keeps_what_its_running_slices_found() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-cancel");
    let conf = config(dir.path(), &nats, "");
    let serve = serve(&dir.path().join("data"), &conf);
    let _agents = [Agent::start(&nats, "a1", "a1", 1, 300)];
    wait_agents(&serve, Duration::from_secs(20), |a| a.len() == 1);
    let truth = truth("fleet-cancel");
    let id = submit(&serve, &truth);
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&serve, id)["done"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next slices are running now (512 positions take the agent about 3 s at 300/s
    // over its two slots): let them send frames for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, v) = serve.http_json("DELETE", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(code, 202, "{v}");
    let s = status(&serve, id);
    eprintln!("cancelled: {s}");
    assert_eq!(s["state"], "cancelled", "{s}");
    let done = s["done"].as_u64().unwrap();
    let whole = s["slices"]["done"].as_u64().unwrap() * 512;
    assert!(
        done > whole && done < truth.total(),
        "the running slices' results were not kept: {s}"
    );
    assert!(
        s["slices"]["partial"].as_u64().unwrap() >= 1,
        "the status counts the slices kept as partial results: {s}"
    );
    let counts = &s["counts"];
    assert_eq!(
        counts["open"].as_u64().unwrap() + counts["closed"].as_u64().unwrap(),
        done,
        "{s}"
    );
    let (lines, set) = results(&serve, id);
    assert_eq!(
        (lines as u64, set.len() as u64),
        (done, done),
        "COUNT(*) must equal the count and COUNT(DISTINCT ip, port)"
    );
    let open = set.values().filter(|st| *st == "open").count() as u64;
    assert_eq!(counts["open"].as_u64(), Some(open), "{s}");
    for ((ip, port), state) in &set {
        assert!(truth.hosts.contains(ip) && truth.ports.contains(port));
        if truth.own.contains(&(*ip, *port)) {
            assert_eq!(state, "open", "{ip}:{port} listens");
        }
    }
    let (code, v) = serve.http_json("DELETE", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(code, 409, "{v}");
    check_streams_empty(&nats);
    // Nothing more is counted after the cancellation (the agent's last frames are
    // superseded).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&serve, id)["done"].as_u64(), Some(done));
    assert_eq!(results(&serve, id).0 as u64, done);
}

/// Kills whichever agent runs slice `slice` of `job` as an attempt not in `killed`, and
/// starts it again under the same name; the attempt killed.
fn kill_runner_of(
    serve: &Serve,
    nats: &NatsServer,
    agents: &mut [Agent],
    job: &str,
    slice: u64,
    killed: &[String],
) -> String {
    let running = |x: &Value| -> Option<String> {
        x["running"].as_array()?.iter().find_map(|s| {
            let attempt = s["attempt"].as_str()?.to_string();
            (s["job"] == job && s["slice"] == slice && !killed.contains(&attempt))
                .then_some(attempt)
        })
    };
    let listed = wait_agents(serve, Duration::from_secs(60), |a| {
        a.iter().any(|x| running(x).is_some())
    });
    let (name, attempt) = listed
        .iter()
        .find_map(|x| Some((x["name"].as_str()?.to_string(), running(x)?)))
        .unwrap();
    let i = agents.iter().position(|a| a.name == name).unwrap();
    agents[i].kill();
    eprintln!("killed {name} running slice {slice} as attempt {attempt}");
    agents[i] = Agent::start(nats, &name, &name, 1, 100);
    attempt
}

/// A slice whose work runs out of deliveries while the coordinator is down: the server's
/// max-deliveries advisory (a core NATS message) is lost, and the message stays in the work
/// stream, never delivered again. The restarted coordinator's janitor finds it from the
/// pool consumer's progress, deletes it and publishes the slice with epoch 2 (within
/// `max_epochs 2`), and the sweep ends done, exactly once — never stuck.
#[test]
fn deliveries_run_out_while_the_coordinator_is_down_and_the_slice_still_ends() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-missed-advisory");
    let conf = config(dir.path(), &nats, "max_deliver = 2\nmax_epochs = 2\n");
    let data = dir.path().join("data");
    let first = serve(&data, &conf);
    let mut agents = [
        Agent::start(&nats, "a1", "a1", 1, 100),
        Agent::start(&nats, "a2", "a2", 1, 100),
    ];
    wait_agents(&first, Duration::from_secs(20), |a| a.len() == 2);
    // 26 hosts × 40 ports: slices of 512, 512 and 16 positions.
    let truth = truth_of("fleet-missed-advisory", 26);
    let before = ListenSnapshot::take();
    let id = submit(&first, &truth);
    let job = format!("s{id}");
    let one = kill_runner_of(&first, &nats, &mut agents, &job, 0, &[]);
    // The second and last delivery of slice 0 runs: the coordinator goes, then its agent.
    let running = |x: &Value| {
        x["running"].as_array().is_some_and(|r| {
            r.iter().any(|s| {
                s["job"] == job.as_str() && s["slice"] == 0 && s["attempt"] != one.as_str()
            })
        })
    };
    let listed = wait_agents(&first, Duration::from_secs(60), |a| a.iter().any(running));
    let name = listed
        .iter()
        .find(|x| running(x))
        .and_then(|x| x["name"].as_str())
        .unwrap()
        .to_string();
    first.kill();
    let i = agents.iter().position(|a| a.name == name).unwrap();
    agents[i].kill();
    agents[i] = Agent::start(&nats, &name, &name, 1, 100);
    // ack_wait (3 s) runs out; the agents' next pulls make the server give up on the
    // message and send its advisory to nobody.
    std::thread::sleep(Duration::from_secs(8));
    let second = serve(&data, &conf);
    let s = wait_ended(&second, id, Duration::from_secs(90));
    eprintln!("ended: {s}");
    check_exactly_once(&second, id, &truth, &before);
    assert!(
        metric(&second, "porthawk_fleet_redeliveries_total") >= 1.0,
        "the restarted coordinator did not publish the slice again"
    );
    check_streams_empty(&nats);
}

/// A slice whose agents keep vanishing with its work (here a client that takes work items
/// and acks them without a frame, as if its frames were lost with a NATS host): the
/// janitor publishes it again with the next epoch, and counts that against `max_epochs`,
/// so the slice ends failed after exactly `max_epochs` publishes instead of being
/// published forever.
#[test]
fn janitor_republishes_count_against_max_epochs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-janitor-epochs");
    let conf = config(dir.path(), &nats, "max_epochs = 2\n");
    let serve = serve(&dir.path().join("data"), &conf);
    let stop = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let seed = std::fs::read_to_string(nats.dir().join("coordinator.nk")).unwrap();
    let url = nats.url().to_string();
    let vanisher = {
        let (stop, taken) = (Arc::clone(&stop), Arc::clone(&taken));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use async_nats::jetstream::consumer::PullConsumer;
                use futures_util::StreamExt;
                let client = async_nats::ConnectOptions::new()
                    .nkey(seed.trim().to_string())
                    .connect(url)
                    .await
                    .unwrap();
                let js = async_nats::jetstream::new(client);
                let work = js.get_stream(porthawk_core::WORK_STREAM).await.unwrap();
                let pool: PullConsumer = work.get_consumer("pool-lab").await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let mut batch = pool
                        .fetch()
                        .max_messages(10)
                        .expires(Duration::from_millis(500))
                        .messages()
                        .await
                        .unwrap();
                    while let Some(Ok(m)) = batch.next().await {
                        taken.fetch_add(1, Ordering::SeqCst);
                        m.double_ack().await.unwrap();
                    }
                }
            });
        })
    };
    // Two hosts × 40 ports: one slice.
    let truth = truth_of("fleet-janitor-epochs", 2);
    let id = submit(&serve, &truth);
    let s = wait_ended(&serve, id, Duration::from_secs(60));
    // A republish after the end would show here.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    vanisher.join().unwrap();
    eprintln!("ended: {s}");
    assert_eq!(s["state"], "interrupted", "{s}");
    assert_eq!(s["failed_slices"], json!([0]), "{s}");
    assert_eq!(s["done"].as_u64(), Some(0), "{s}");
    assert_eq!(
        taken.load(Ordering::SeqCst),
        2,
        "the slice must be published exactly max_epochs times"
    );
    assert_eq!(results(&serve, id).0, 0);
    check_streams_empty(&nats);
}

/// An existing deployment whose consumers were made with another `ack_wait` (an older
/// default, or `[fleet] ack_wait` changed) is updated at start, not refused; a consumer that
/// differs in anything else still is.
#[test]
fn consumers_with_another_ack_wait_are_updated_at_start_not_refused() {
    let Some(nats) = users("") else { return };
    let dir = TempDir::new("fleet-ack-wait");
    let conf = config(dir.path(), &nats, "");
    let data = dir.path().join("data");
    serve(&data, &conf).kill();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = std::fs::read_to_string(nats.dir().join("coordinator.nk")).unwrap();
    let js = rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_string())
            .connect(nats.url())
            .await
            .unwrap();
        async_nats::jetstream::new(client)
    });
    // Set a consumer's config field (nats-server 2.9 treats a create as an update) and
    // return the ack_wait it reads back.
    type ConsumerConfig = async_nats::jetstream::consumer::Config;
    let set = |stream: &str, name: &str, f: &dyn Fn(&mut ConsumerConfig)| {
        rt.block_on(async {
            let stream = js.get_stream(stream).await.unwrap();
            let mut config = stream.consumer_info(name).await.unwrap().config;
            f(&mut config);
            let mut c = stream.create_consumer(config).await.unwrap();
            c.info().await.unwrap().config.ack_wait
        })
    };
    let results = porthawk_core::RESULTS_STREAM;
    let work = porthawk_core::WORK_STREAM;
    let coordinator = porthawk_core::COORDINATOR_CONSUMER;
    assert_eq!(
        set(results, coordinator, &|c| c.ack_wait =
            Duration::from_secs(60)),
        Duration::from_secs(60)
    );
    assert_eq!(
        set(work, "pool-lab", &|c| c.ack_wait = Duration::from_secs(7)),
        Duration::from_secs(7)
    );
    let second = serve(&data, &conf);
    assert_eq!(set(results, coordinator, &|_| ()), Duration::from_secs(15));
    assert_eq!(set(work, "pool-lab", &|_| ()), Duration::from_secs(3));
    second.kill();
    // Another max_ack_pending is refused: the coordinator never connects, and says why.
    set(results, coordinator, &|c| c.max_ack_pending = 17);
    let mut cmd = Serve::command(&data);
    cmd.arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "warn,porthawk=info,porthawk_server=info");
    let mut third = Serve::spawn(cmd);
    assert!(
        third.logs("max_ack_pending", Duration::from_secs(20)),
        "a consumer with another max_ack_pending was not refused"
    );
    let (code, v) = third.http_json("GET", "/v1/fleet/agents", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["connected"], false, "{v}");
}
