//! Remote remediation, end to end: a nats-server of the test's own whose users are the
//! coordinator and agents made by `porthawk fleet add-agent` / `coordinator-user` (so the
//! printed rights are what is tested), a real `porthawk serve` with `[fleet]`, and a real
//! `porthawk agent --actions FILE`. The service is a listener that a test-owned script
//! starts; the agent's action runs that script again (argv, no shell in between).
//!
//! Under `CI=true` a missing nats-server or python3 fails; elsewhere the tests say why and
//! return. Traffic stays on 127.0.0.1.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use porthawk_core::{IncidentContext, RemedyOutcome, RemedyRequest, RemedyResult, WireMessage};
use serde_json::Value;

use crate::nats_util::NatsServer;
use crate::util::{require, run_for, stderr, stdout, which, Serve, TempDir, BIN};

const TOKEN: &str = "remedy-test-token";
const WAIT: Duration = Duration::from_secs(60);

/// A listener on 127.0.0.1:PORT, started by `start.sh` (python3 in the background, for at
/// most five minutes), whose pid is in `listener.pid`; killed by that pid on drop.
struct Service {
    dir: PathBuf,
    port: u16,
}

impl Service {
    fn new(dir: &TempDir) -> Service {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pid = dir.path().join("listener.pid");
        dir.write(
            "listen.py",
            &format!(
                "import os, socket, time\n\
                 s = socket.socket()\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('127.0.0.1', {port}))\n\
                 s.listen(64)\n\
                 open({pid:?}, 'w').write(str(os.getpid()))\n\
                 s.settimeout(0.2)\n\
                 end = time.time() + 300\n\
                 while time.time() < end:\n\
                 \x20   try:\n\
                 \x20       c, _ = s.accept()\n\
                 \x20       c.close()\n\
                 \x20   except socket.timeout:\n\
                 \x20       pass\n",
                pid = pid.display().to_string()
            ),
        );
        dir.write(
            "start.sh",
            &format!(
                "python3 {} >/dev/null 2>&1 &\necho \"listener started on port {port}\"\n",
                dir.path().join("listen.py").display()
            ),
        );
        Service {
            dir: dir.path().to_path_buf(),
            port,
        }
    }

    fn script(&self) -> PathBuf {
        self.dir.join("start.sh")
    }

    fn up(&self) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(500),
        )
        .is_ok()
    }

    /// Runs the script as the test and waits until the port answers.
    fn start(&self) {
        let _ = std::fs::remove_file(self.dir.join("listener.pid"));
        let out = Command::new("/bin/sh").arg(self.script()).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        self.wait(true);
    }

    fn wait(&self, up: bool) {
        let start = Instant::now();
        while self.up() != up {
            assert!(start.elapsed() < WAIT, "the listener never went up={up}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the listener by the pid it wrote, and waits until the port is closed.
    fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("listener.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        self.wait(false);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("listener.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

/// A `porthawk agent` process, killed by its pid on drop; its stderr goes to a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server with the users `web-1` and `web-2` (agents of pool `lab`) and the
/// coordinator; `porthawk serve` with `[fleet]`, its monitors and actions from `config`; the
/// agent `web-1` with `agent_actions` as its `--actions` file, when given.
struct Lab {
    nats: NatsServer,
    serve: Serve,
    agent: Option<Agent>,
    dir: TempDir,
}

fn add_user(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["fleet"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", dir.to_str().unwrap()]);
    let out = run_for(&all, Duration::from_secs(30));
    assert!(out.status.success(), "{all:?}: {}", stderr(&out));
    stdout(&out)
}

impl Lab {
    fn start(name: &str, config: &str, agent_actions: Option<&str>) -> Option<Lab> {
        Lab::start_with(name, config, agent_actions, &[], &[])
    }

    /// [`Lab::start`] with extra arguments for `porthawk serve` and `porthawk agent`.
    fn start_with(
        name: &str,
        config: &str,
        agent_actions: Option<&str>,
        serve_args: &[&str],
        agent_args: &[&str],
    ) -> Option<Lab> {
        if require(
            "python3",
            which("python3").is_none().then(|| "not found".into()),
        )
        .is_err()
        {
            return None;
        }
        let dir = TempDir::new(name);
        let keys = TempDir::new("remedy-keys");
        let web1 = add_user(keys.path(), &["add-agent", "web-1", "--pool", "lab"]);
        let web2 = add_user(keys.path(), &["add-agent", "web-2", "--pool", "lab"]);
        let coord = add_user(keys.path(), &["coordinator-user"]);
        // The printed rights: web-1 listens on its own action subject, answers on its own
        // result subject, and may not ask anyone for an action.
        assert!(web1.contains("\"porthawk.v1.action.web-1\""), "{web1}");
        assert!(
            web1.contains("\"porthawk.v1.action-result.web-1\""),
            "{web1}"
        );
        let conf = format!("authorization {{ users = [\n{web1}\n{web2}\n{coord}\n] }}\n");
        let nats = NatsServer::start(&conf).ok()?;
        for key in ["web-1", "web-2", "coordinator"] {
            let file = format!("{key}.nk");
            std::fs::copy(keys.path().join(&file), dir.path().join(&file)).unwrap();
        }
        let config = dir.write(
            "porthawk.toml",
            &format!(
                "[api]\ntoken = \"{TOKEN}\"\n\n{config}\n\n[fleet]\nnats = \"{url}\"\n\
                 nkey = \"{nkey}\"\nagents = [\"web-1\", \"web-2\"]\npools = [\"lab\"]\n",
                url = nats.url(),
                nkey = dir.path().join("coordinator.nk").display(),
            ),
        );
        let mut cmd = Serve::command(&dir.path().join("data"));
        cmd.args(serve_args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn,porthawk_server=info,porthawk_fleet=info");
        let serve = Serve::spawn(cmd);
        let mut lab = Lab {
            nats,
            serve,
            agent: None,
            dir,
        };
        lab.wait("the coordinator connected", |lab| {
            lab.api("GET", "/v1/fleet/agents", None).1["connected"] == true
        });
        if let Some(actions) = agent_actions {
            lab.start_agent(actions, agent_args);
        }
        Some(lab)
    }

    fn start_agent(&mut self, actions: &str, extra: &[&str]) {
        let file = self.dir.write("agent-actions.toml", actions);
        let log = self.dir.path().join("agent.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "--nats", self.nats.url(), "--name", "web-1"])
            .args(["--pool", "lab", "--heartbeat", "500ms", "--shards", "1"])
            .args(["--host-address", "127.0.0.1", "--actions"])
            .arg(&file)
            .args(extra)
            .arg("--nkey")
            .arg(self.dir.path().join("web-1.nk"))
            .env("RUST_LOG", "porthawk_fleet=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        self.agent = Some(Agent {
            child: cmd.spawn().unwrap(),
            log,
        });
        self.wait("the agent in the registry", |lab| {
            lab.api("GET", "/v1/fleet/agents", None).1["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == "web-1"))
        });
    }

    /// One request with the token; the status and the JSON body.
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.raw(method, path, body);
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {status} {text}"));
        (status, v)
    }

    /// One request with the token; the status and the body as text.
    fn raw(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut c = TcpStream::connect(self.serve.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.unwrap_or("");
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.serve.addr,
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
        let text = raw.split_once("\r\n\r\n").map_or("", |x| x.1);
        (status, text.to_string())
    }

    fn monitor(&self, name: &str) -> Value {
        self.api("GET", &format!("/v1/monitors/{name}"), None).1
    }

    /// Waits (bounded) until `f` holds.
    fn wait(&self, what: &str, f: impl Fn(&Lab) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {what}\nagent log:\n{}\nnats log:\n{}",
                self.agent.as_ref().map(Agent::log).unwrap_or_default(),
                self.nats.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The monitor's action records named `action`, oldest first.
fn records(monitor: &Value, action: &str) -> Vec<Value> {
    let mut r: Vec<Value> = monitor["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["action"] == action)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    r.sort_by_key(|x| x["at_ms"].as_u64());
    r
}

fn has_outcome(monitor: &Value, action: &str, outcome: &str) -> bool {
    records(monitor, action)
        .iter()
        .any(|r| r["outcome"] == outcome)
}

/// The flow of the issue: the service stops, the monitor goes DOWN, the coordinator asks the
/// agent that declared the target's address (`agent = "{target}"`) to run `start-listener`,
/// the agent runs it, the monitor checks again at once and is UP; the history has the request
/// and the run with exit code, duration and output.
#[test]
fn a_down_service_is_restarted_by_the_agent_of_its_host() {
    let dir = TempDir::new("remedy-service");
    let service = Service::new(&dir);
    service.start();
    let (hook_port, hooks) = crate::monitor::http_sink("127.0.0.1".parse().unwrap());
    let config = format!(
        "[[monitor]]\nname = \"web\"\ntargets = [\"127.0.0.1\"]\nports = \"{port}\"\n\
         interval = \"1s\"\ntimeout = \"300ms\"\nfail_after = 2\nrecover_after = 1\n\
         on_down = [\"restart-web\", \"hook\"]\ngroup_wait = \"0s\"\n\n\
         [notify.hook]\nwebhook = {{ url = \"http://127.0.0.1:{hook_port}/hook\" }}\n\n\
         [action.restart-web]\nagent = \"{{target}}\"\nrun = \"start-listener\"\n\
         timeout = \"20s\"\ncooldown = \"0s\"\nmax_per_hour = 100\n",
        port = service.port
    );
    let actions = format!(
        "[action.start-listener]\nexec = [\"/bin/sh\", \"{}\"]\ntimeout = \"10s\"\n",
        service.script().display()
    );
    let Some(mut lab) = Lab::start("remedy-restart", &config, Some(&actions)) else {
        return;
    };
    lab.wait("the monitor up", |lab| lab.monitor("web")["state"] == "up");
    service.kill();
    lab.wait("the remote action ran", |lab| {
        has_outcome(&lab.monitor("web"), "restart-web", "ok")
    });
    // The script starts python in the background: the port opens a moment after it ends.
    service.wait(true);
    lab.wait("the monitor up again", |lab| {
        lab.monitor("web")["state"] == "up"
    });
    let m = lab.monitor("web");
    let recs = records(&m, "restart-web");
    let sent = recs
        .iter()
        .find(|r| r["outcome"] == "sent")
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(sent["kind"], "remote", "{m}");
    assert_eq!(sent["trigger"], "down", "{m}");
    assert!(
        sent["detail"]
            .as_str()
            .unwrap()
            .contains("start-listener sent to web-1"),
        "{m}"
    );
    let ran = recs.iter().find(|r| r["outcome"] == "ok").unwrap();
    assert_eq!(ran["exit_code"], 0, "{m}");
    assert_eq!(ran["argv"][0], "/bin/sh", "{m}");
    assert!(
        ran["stdout"]
            .as_str()
            .unwrap()
            .contains(&format!("listener started on port {}", service.port)),
        "{m}"
    );
    let detail = ran["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("start-listener on web-1: exit 0 in "),
        "{detail}"
    );
    // The check right after the action, not at the next interval.
    assert!(
        lab.serve
            .logs("checking again after the action", Duration::from_secs(30)),
        "no check after the action"
    );
    let agent_log = lab.agent.as_ref().unwrap().log();
    assert!(agent_log.contains("running action"), "{agent_log}");
    // The status page's timeline shows it.
    let (status, page) = lab.raw("GET", "/?monitor=web", None);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("start-listener on web-1: exit 0 in "),
        "{page}"
    );
    // The notification says what ran where and how it ended.
    lab.wait("the action's notification", |_| {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("\"kind\":\"action\""))
    });
    let bodies = hooks.lock().unwrap().clone();
    let action = bodies
        .iter()
        .find(|b| b.contains("\"kind\":\"action\""))
        .unwrap();
    let v: Value = serde_json::from_str(action).unwrap();
    assert_eq!(v["outcome"], "ok", "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("start-listener on web-1: exit 0 in "),
        "{v}"
    );
}

/// What the agent's own file does not allow is refused by the agent and recorded with its
/// reason: an action it does not define, a reboot without `allow_reboot`. A dry run on the
/// agent side is not exercised here (the agent runs for real); the coordinator's
/// `{target}` with no matching agent is a failure with the reason, never a guess.
#[test]
fn refusals_are_recorded_with_the_agents_reason() {
    let config =
        "[action.unknown]\nagent = \"web-1\"\nrun = \"no-such-action\"\ncooldown = \"0s\"\n\n\
                  [action.boot]\nagent = \"web-1\"\nrun = \"reboot\"\ncooldown = \"0s\"\n\n\
                  [action.nobody]\nagent = \"{target}\"\nrun = \"reboot\"\ncooldown = \"0s\"\n\n\
                  [[monitor]]\nname = \"gone\"\ntargets = [\"127.0.0.9\"]\nports = \"9\"\n\
                  interval = \"1s\"\ntimeout = \"200ms\"\nfail_after = 1\n";
    let actions = "[action.reboot]\nreboot = true\n";
    let Some(lab) = Lab::start("remedy-refusals", config, Some(actions)) else {
        return;
    };
    let (status, rec) = lab.api("POST", "/v1/actions/unknown", Some("{}"));
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["outcome"], "refused", "{rec}");
    let detail = rec["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("web-1 refused no-such-action: unknown action 'no-such-action'"),
        "{detail}"
    );
    let (_, rec) = lab.api("POST", "/v1/actions/boot", Some("{}"));
    assert_eq!(rec["outcome"], "refused", "{rec}");
    assert!(
        rec["detail"]
            .as_str()
            .unwrap()
            .contains("reboot not allowed"),
        "{rec}"
    );
    // 127.0.0.9 is DOWN and no agent declares it.
    lab.wait("the monitor down", |lab| {
        lab.monitor("gone")["state"] == "down"
    });
    let (_, rec) = lab.api("POST", "/v1/actions/nobody", Some(r#"{"monitor":"gone"}"#));
    assert_eq!(rec["outcome"], "no_agent", "{rec}");
    assert!(
        rec["detail"]
            .as_str()
            .unwrap()
            .contains("no live agent declares 127.0.0.9"),
        "{rec}"
    );
    let agent_log = lab.agent.as_ref().unwrap().log();
    assert!(!agent_log.contains("running action"), "{agent_log}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(lab: &Lab, user: &str) -> async_nats::Client {
    let seed = std::fs::read_to_string(lab.dir.path().join(format!("{user}.nk"))).unwrap();
    async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .connection_timeout(Duration::from_secs(10))
        .connect(lab.nats.url())
        .await
        .unwrap()
}

/// Only the coordinator's user can ask: another agent's user publishing a request on
/// web-1's action subject gets a permission violation from the server, and nothing runs. A
/// request the agent ran is refused when it comes again (same id).
#[test]
fn a_replayed_request_is_refused_and_another_users_request_never_arrives() {
    let dir = TempDir::new("remedy-marks");
    let mark = dir.path().join("ran");
    let actions = format!(
        "[action.touch]\nexec = [\"/bin/sh\", \"-c\", \"echo ran >> '{}'\"]\n",
        mark.display()
    );
    let Some(lab) = Lab::start("remedy-replay", "", Some(&actions)) else {
        return;
    };
    let rt = runtime();
    let request = |id: u128| RemedyRequest {
        id,
        action: "touch".into(),
        expires_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 30_000,
        dry_run: false,
        context: IncidentContext {
            state: "manual".into(),
            ..IncidentContext::default()
        },
    };
    let outcomes = rt.block_on(async {
        use futures_util::StreamExt;
        let intruder = connect(&lab, "web-2").await;
        intruder
            .publish("porthawk.v1.action.web-1", request(1).encode().into())
            .await
            .unwrap();
        let _ = intruder.flush().await;
        let coord = connect(&lab, "coordinator").await;
        let mut answers = coord
            .subscribe("porthawk.v1.action-result.web-1")
            .await
            .unwrap();
        let bytes = request(2).encode();
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            coord
                .publish("porthawk.v1.action.web-1", bytes.clone().into())
                .await
                .unwrap();
            coord.flush().await.unwrap();
            let msg = tokio::time::timeout(WAIT, answers.next())
                .await
                .expect("an answer")
                .unwrap();
            let r = RemedyResult::decode(&msg.payload).unwrap();
            assert_eq!(r.id, 2);
            outcomes.push(r.outcome);
        }
        outcomes
    });
    assert!(
        matches!(
            &outcomes[0],
            RemedyOutcome::Ran {
                exit_code: Some(0),
                ..
            }
        ),
        "{outcomes:?}"
    );
    match &outcomes[1] {
        RemedyOutcome::Refused { reason } => assert!(reason.starts_with("replayed"), "{reason}"),
        other => panic!("a replay was not refused: {other:?}"),
    }
    // The intruder's request was dropped by the server: only the coordinator's ran, once.
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n");
    let log = lab.nats.log();
    assert!(
        log.lines().any(|l| l.contains("Publish Violation")
            && l.contains("Subject \"porthawk.v1.action.web-1\"")),
        "{log}"
    );
}

/// An agent that is not there never answers: the action times out after its `timeout`, and
/// the monitor's escalation goes on to the next `on_down` action.
#[test]
fn an_agent_that_is_down_times_out_and_escalation_proceeds() {
    let dir = TempDir::new("remedy-escalation");
    let mark = dir.path().join("escalated");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[[monitor]]\nname = \"web\"\ntargets = [\"127.0.0.1\"]\nports = \"{port}\"\n\
         interval = \"1s\"\ntimeout = \"300ms\"\nfail_after = 1\n\
         on_down = [\"restart-web\", \"mark\"]\ngroup_wait = \"0s\"\n\n\
         [action.restart-web]\nagent = \"web-1\"\nrun = \"start-listener\"\ntimeout = \"2s\"\n\
         cooldown = \"0s\"\nescalate_after = 1\n\n\
         [action.mark]\nexec = [\"/bin/sh\", \"-c\", \"echo escalated >> '{}'\"]\ncooldown = \"0s\"\n",
        mark.display()
    );
    // No agent is started: web-1 is down.
    let Some(lab) = Lab::start("remedy-down", &config, None) else {
        return;
    };
    lab.wait("the remote action timed out", |lab| {
        has_outcome(&lab.monitor("web"), "restart-web", "timeout")
    });
    lab.wait("escalation to mark", |lab| {
        has_outcome(&lab.monitor("web"), "mark", "ok")
    });
    let m = lab.monitor("web");
    let timeout = records(&m, "restart-web")
        .into_iter()
        .find(|r| r["outcome"] == "timeout")
        .unwrap();
    assert!(
        timeout["detail"]
            .as_str()
            .unwrap()
            .starts_with("start-listener on web-1: no answer within 2.0 s"),
        "{m}"
    );
    assert!(std::fs::read_to_string(&mark)
        .unwrap()
        .contains("escalated"));
}

/// `porthawk serve --dry-run` still asks the agent, marked dry-run: the agent answers with
/// the argv it would run and runs nothing; `porthawk agent --dry-run` does the same for every
/// request.
#[test]
fn dry_runs_on_either_side_report_what_would_run() {
    let dir = TempDir::new("remedy-dry");
    let mark = dir.path().join("ran");
    let actions = format!(
        "[action.touch]\nexec = [\"/bin/sh\", \"-c\", \"echo ran >> '{}'\"]\n",
        mark.display()
    );
    let config = "[action.fix]\nagent = \"web-1\"\nrun = \"touch\"\ncooldown = \"0s\"\n";
    for (serve_args, agent_args) in [(&["--dry-run"][..], &[][..]), (&[][..], &["--dry-run"][..])] {
        let Some(lab) =
            Lab::start_with("remedy-dry", config, Some(&actions), serve_args, agent_args)
        else {
            return;
        };
        let (status, rec) = lab.api("POST", "/v1/actions/fix", Some("{}"));
        assert_eq!(status, 200, "{rec}");
        assert_eq!(
            rec["outcome"], "dry_run",
            "{serve_args:?} {agent_args:?}: {rec}"
        );
        assert_eq!(rec["argv"][0], "/bin/sh", "{rec}");
        assert!(
            rec["detail"]
                .as_str()
                .unwrap()
                .starts_with("--dry-run: touch on web-1 would run"),
            "{rec}"
        );
        assert!(!mark.exists(), "a dry run ran the action");
    }
}

/// A bad `--actions` file stops the agent before it connects, with the file, the line and
/// the field; `--dry-run` needs `--actions`.
#[test]
fn a_bad_agent_action_file_is_refused_with_file_line_and_field() {
    let dir = TempDir::new("remedy-bad-file");
    let file = dir.write(
        "agent-actions.toml",
        "[action.fix]\nexec = [\"true\"]\ncooldown = \"1m\"\n",
    );
    let args = [
        "agent",
        "--nats",
        "nats://127.0.0.1:1",
        "--pool",
        "lab",
        "--name",
        "web-1",
        "--actions",
        file.to_str().unwrap(),
    ];
    let out = run_for(&args, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "{}:3: action.fix.cooldown: unknown field `cooldown`",
            file.display()
        )),
        "{text}"
    );
    assert!(!text.contains("cannot connect"), "{text}");
    let out = run_for(
        &args[..7]
            .iter()
            .chain(&["--dry-run"])
            .copied()
            .collect::<Vec<_>>(),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--actions"), "{}", stderr(&out));
}
