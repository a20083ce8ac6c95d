//! An idle `porthawk serve` sleeps: no thread wakes on a timer when there is nothing to do
//! (issue 15, item 4). The tests count wakes, not time: the context switches of each of the
//! server's threads (`/proc/PID/task/TID/status`) over a quiet window. A thread that polls
//! every 50 ms switches about 80 times in 4 s; one that sleeps until it has work, zero.
//!
//! What may legitimately wake in the window, and why it does not break the count:
//! - tokio's blocking-pool threads (used for SQLite reads, name resolution) park with a 10 s
//!   keep-alive, then wake once and exit: a thread gone by the end of the window is not
//!   counted, one still there woke at most once.
//! - The retention thread prunes at start, when a sweep ends and then hourly; the monitor
//!   runtime prunes history at start and then hourly: the windows start after the start's
//!   work is over.
//! - A monitor's check: the monitor test checks at once and measures well before the next
//!   check, a minute later.
//! - A fleet coordinator (`[fleet]`): NATS itself, at most once a minute (the results pull
//!   is renewed every 60 s; the client pings every 60 s, the server every 2 min), and each
//!   heartbeat of an agent (the one-agent test has it beat every 10 s: at most one in the
//!   window).
//!
//! The window opens once no thread has switched for [`QUIET`], so that the work of the start
//! or of the last request is over however slow a loaded machine makes it. The bound,
//! [`MAX_WAKES`] per thread over [`WINDOW`], leaves room for a stray wake (a keep-alive
//! expiry) while a periodic poll of up to a second's period cannot fit under it; a thread
//! that polls faster than [`QUIET`] also keeps the window from opening early (it then opens
//! after [`QUIET_WITHIN`], and the count fails).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nats_util::NatsServer;
use crate::serve::{submit, wait_ended};
use crate::util::{http, http_json, test_hosts, Serve, TempDir, BIN};

/// How long the quiet window lasts.
const WINDOW: Duration = Duration::from_secs(4);
/// The most context switches a thread may make in the window: a thread that polls even once
/// a second makes 4.
const MAX_WAKES: u64 = 2;
/// The window opens once no thread has switched for this long: the work of the start (or of
/// the last request) is over, however slow a loaded machine makes it.
const QUIET: Duration = Duration::from_millis(500);
/// How long to wait for that at most; a server that never quiets is then measured anyway
/// (and fails).
const QUIET_WITHIN: Duration = Duration::from_secs(15);

/// One thread's name and its context switches so far (voluntary and not).
fn switches(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let mut name = String::new();
        let mut n = 0;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                name = v.trim().to_string();
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().expect("a switch count");
            }
        }
        out.insert(tid, (name, n));
    }
    out
}

/// Waits until no thread of `pid` has switched for [`QUIET`] (at most [`QUIET_WITHIN`]).
/// Threads that ended meanwhile do not count.
fn wait_quiet(pid: u32) {
    let deadline = Instant::now() + QUIET_WITHIN;
    let mut last = switches(pid);
    while Instant::now() < deadline {
        thread::sleep(QUIET);
        let next = switches(pid);
        let quiet = next
            .iter()
            .all(|(tid, (_, n))| last.get(tid).is_some_and(|(_, was)| was == n));
        if quiet {
            return;
        }
        last = next;
    }
}

/// Waits for the server to be quiet, counts each thread's switches over [`WINDOW`] and
/// requires at most [`MAX_WAKES`] of each thread that lived through it (threads born in the
/// window count from zero).
fn assert_sleeps(server: &Serve, what: &str) {
    let pid = server.child.id();
    wait_quiet(pid);
    let before = switches(pid);
    thread::sleep(WINDOW);
    let after = switches(pid);
    let mut woke = Vec::new();
    for (tid, (name, n)) in &after {
        let was = before.get(tid).map_or(0, |(_, n)| *n);
        woke.push((name.clone(), *tid, n - was));
    }
    woke.sort_by_key(|w| std::cmp::Reverse(w.2));
    eprintln!("{what}: context switches per thread over {WINDOW:?}: {woke:?}");
    let busy: Vec<_> = woke.iter().filter(|w| w.2 > MAX_WAKES).collect();
    assert!(
        busy.is_empty(),
        "{what}: threads woke more than {MAX_WAKES} times in {WINDOW:?} with nothing to do \
         (name, tid, switches): {busy:?}"
    );
    assert!(!after.is_empty(), "no thread of pid {pid} was seen");
}

/// A server with no config and no sweep, just started and asked for `/healthz`, does not
/// wake on any timer.
#[test]
fn an_idle_server_does_not_wake() {
    let data = TempDir::new("idle-bare");
    let server = Serve::start(data.path());
    let (status, body) = http(server.addr, "GET", "/healthz", None);
    assert_eq!(status, 200, "{body}");
    assert_sleeps(&server, "no config");
    server.stop();
}

/// After a sweep has ended, the aggregator's flush timer is disarmed again: the server
/// goes back to sleep.
#[test]
fn a_server_sleeps_again_after_a_sweep() {
    let data = TempDir::new("idle-sweep");
    let host = test_hosts("idle-sweep", 1)[0];
    let server = Serve::start(data.path());
    let id = submit(
        server.addr,
        &format!(r#"{{"targets":["{host}"],"ports":"1-200"}}"#),
    );
    let end = wait_ended(server.addr, id);
    assert_eq!(end["state"], "done", "{end}");
    assert_eq!(end["done"], 200, "{end}");
    assert_sleeps(&server, "after a sweep");
    server.stop();
}

/// With a monitor configured (a 60 s interval, its config file watched for changes), the
/// server wakes for its checks only: checked now, it sleeps until the next one.
#[test]
fn a_server_with_a_monitor_sleeps_until_the_check_is_due() {
    let dir = TempDir::new("idle-monitor");
    let host = test_hosts("idle-monitor", 1)[0];
    // Nothing listens there: the check finds the port closed and the target DOWN.
    let config = dir.write(
        "porthawk.toml",
        &format!(
            "[[monitor]]\nname = \"quiet\"\ntargets = [\"{host}\"]\nports = \"9\"\n\
             interval = \"60s\"\ntimeout = \"1s\"\nfail_after = 1\n"
        ),
    );
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    let server = Serve::spawn(cmd);
    let (status, body) = http(server.addr, "POST", "/v1/monitors/quiet/check", None);
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, m): (u16, Value) = http_json(server.addr, "GET", "/v1/monitors/quiet", None);
        assert_eq!(status, 200, "{m}");
        if m["state"] == "down" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor was not checked: {m}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_sleeps(&server, "one monitor, checked");
    server.stop();
}

/// A database deleted under a sleeping server is still noticed and logged when it happens:
/// the data directory is watched (inotify), not looked at on a timer, and nothing else (no
/// write, no request) would see it here.
#[test]
fn a_deleted_database_is_logged_while_the_server_sleeps() {
    let data = TempDir::new("idle-deleted");
    let mut server = Serve::start(data.path());
    wait_quiet(server.child.id());
    std::fs::remove_file(data.path().join("porthawk.db")).expect("delete porthawk.db");
    assert!(
        server.logs("the store is unhealthy", Duration::from_secs(10)),
        "the deleted database was not logged: {:?}",
        server.seen()
    );
    let (status, body) = http(server.addr, "GET", "/healthz", None);
    assert_eq!(status, 503, "{body}");
    server.stop();
}

/// The retention thread sleeps (it prunes hourly for the age limit) but a sweep's end wakes
/// it: with `keep_sweeps = 1`, the older sweep is deleted once the newer one ends, without
/// a restart and without a timer.
#[test]
fn a_sweep_end_wakes_the_retention() {
    let dir = TempDir::new("idle-retention");
    let host = test_hosts("idle-retention", 1)[0];
    let config = dir.write("porthawk.toml", "[api]\nkeep_sweeps = 1\n");
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    let server = Serve::spawn(cmd);
    let body = format!(r#"{{"targets":["{host}"],"ports":"1-20"}}"#);
    let first = submit(server.addr, &body);
    assert_eq!(wait_ended(server.addr, first)["state"], "done");
    let second = submit(server.addr, &body);
    assert_eq!(wait_ended(server.addr, second)["state"], "done");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http(server.addr, "GET", &format!("/v1/sweeps/{first}"), None);
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "sweep {first} was not pruned after sweep {second} ended"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (status, kept) = http_json(server.addr, "GET", &format!("/v1/sweeps/{second}"), None);
    assert_eq!(status, 200, "{kept}");
    server.stop();
}

/// `porthawk serve` as a fleet coordinator (`[fleet]`, pool `lab`) on `nats`, once its fleet
/// task is connected (streams, consumers and buckets made, its loops started).
fn fleet_coordinator(dir: &TempDir, nats: &NatsServer, extra: &str) -> Serve {
    let config = dir.write(
        "porthawk.toml",
        &format!(
            "[fleet]\nnats = \"{}\"\npools = [\"lab\"]\n{extra}",
            nats.url()
        ),
    );
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    let server = Serve::spawn(cmd);
    wait_agents(&server, "the coordinator connected", |v| {
        v["connected"] == true
    });
    // nats-server pings a new client once, 2 s after it connected (its first round-trip
    // measurement), then every 2 minutes: let that one pass before the window.
    thread::sleep(Duration::from_secs(3));
    server
}

/// Waits (at most 30 s) until `GET /v1/fleet/agents` satisfies `f`.
fn wait_agents(server: &Serve, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v): (u16, Value) = http_json(server.addr, "GET", "/v1/fleet/agents", None);
        assert_eq!(status, 200, "{v}");
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A fleet coordinator with no agent, no sweep and no monitor sleeps: result frames are
/// pulled by one long-lived request (not a fetch a second), the agent registry is watched
/// by subscription (not listed a second), and the janitor, the publisher and the
/// monitors' link wait for work.
#[test]
fn an_idle_fleet_coordinator_does_not_wake() {
    let Ok(nats) = NatsServer::start("") else {
        return;
    };
    let dir = TempDir::new("idle-fleet");
    let server = fleet_coordinator(&dir, &nats, "");
    assert_sleeps(&server, "fleet coordinator, no agent");
    server.stop();
}

/// An agent process, killed by pid when dropped.
struct IdleAgent(Child);

impl IdleAgent {
    /// `porthawk agent` in pool `lab`, heartbeat every `heartbeat`, its log in `dir`.
    fn start(dir: &TempDir, nats: &NatsServer, name: &str, heartbeat: &str) -> IdleAgent {
        let log =
            std::fs::File::create(dir.path().join(format!("agent-{name}.log"))).expect("agent log");
        IdleAgent(
            Command::new(BIN)
                .args([
                    "agent",
                    "--nats",
                    nats.url(),
                    "--name",
                    name,
                    "--pool",
                    "lab",
                ])
                .args([
                    "--heartbeat",
                    heartbeat,
                    "--backend",
                    "epoll",
                    "--shards",
                    "1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start porthawk agent"),
        )
    }
}

impl Drop for IdleAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With one idle agent connected (heartbeat every 10 s), the coordinator wakes for its
/// heartbeats only: at most one in the window. Its heartbeats are still seen as they come:
/// the agent is listed, with a new `last_heartbeat` after each.
#[test]
fn an_idle_fleet_coordinator_with_an_agent_wakes_only_for_its_heartbeats() {
    let Ok(nats) = NatsServer::start("") else {
        return;
    };
    let dir = TempDir::new("idle-fleet-agent");
    let server = fleet_coordinator(&dir, &nats, "");
    let _agent = IdleAgent::start(&dir, &nats, "idle-1", "10s");
    let listed = wait_agents(&server, "the agent listed", |v| {
        v["agents"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(listed["agents"][0]["name"], "idle-1", "{listed}");
    assert_eq!(listed["agents"][0]["pools"][0], "lab", "{listed}");
    let first = listed["agents"][0]["last_heartbeat"]
        .as_f64()
        .expect("last_heartbeat");
    assert_sleeps(&server, "fleet coordinator, one idle agent");
    // The next heartbeat (10 s after the first) is seen without a poll.
    let beat = wait_agents(&server, "a newer heartbeat", |v| {
        v["agents"][0]["last_heartbeat"]
            .as_f64()
            .is_some_and(|t| t > first)
    });
    assert_eq!(beat["agents"].as_array().map(Vec::len), Some(1), "{beat}");
    server.stop();
}

/// The names `GET /v1/fleet/agents` lists.
fn agent_names(v: &Value) -> Vec<String> {
    v["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The registry is heard, not polled, and still follows the agents: two agents join and
/// stay listed while they beat (past several `agent_ttl`s: each heartbeat moves their
/// deadline); one stopped with SIGTERM (it deletes its key) leaves the list, and one killed
/// with SIGKILL (its key just expires, which nats-server 2.9 publishes nowhere) leaves it
/// once its last heartbeat is `agent_ttl` old and its key is gone.
#[test]
fn agents_join_beat_and_leave_the_list_without_a_poll() {
    let Ok(nats) = NatsServer::start("") else {
        return;
    };
    let dir = TempDir::new("idle-fleet-registry");
    let server = fleet_coordinator(&dir, &nats, "agent_ttl = \"2s\"\n");
    let stopped = IdleAgent::start(&dir, &nats, "calm", "300ms");
    let mut killed = IdleAgent::start(&dir, &nats, "doomed", "300ms");
    let both = |v: &Value| {
        let names = agent_names(v);
        names.contains(&"calm".to_string()) && names.contains(&"doomed".to_string())
    };
    let first = wait_agents(&server, "both agents listed", both);
    // Three agent_ttls later both are still there, their heartbeats newer.
    thread::sleep(Duration::from_secs(6));
    let (status, later): (u16, Value) = http_json(server.addr, "GET", "/v1/fleet/agents", None);
    assert_eq!(status, 200, "{later}");
    assert!(both(&later), "an agent that beats was dropped: {later}");
    for i in 0..2 {
        let (was, now) = (
            first["agents"][i]["last_heartbeat"].as_f64(),
            later["agents"][i]["last_heartbeat"].as_f64(),
        );
        assert!(
            was.zip(now).is_some_and(|(was, now)| now > was),
            "no newer heartbeat seen: {first} then {later}"
        );
    }
    let pid = stopped.0.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(term.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let gone = wait_agents(&server, "the stopped agent gone", |v| {
        agent_names(v) == ["doomed"]
    });
    assert_eq!(agent_names(&gone), ["doomed"], "{gone}");
    let _ = killed.0.kill();
    let _ = killed.0.wait();
    let none = wait_agents(&server, "the killed agent gone", |v| {
        agent_names(v).is_empty()
    });
    assert_eq!(none["connected"], true, "{none}");
    server.stop();
}
