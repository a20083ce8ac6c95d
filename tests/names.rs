//! Names with several addresses (issue 11, item 4) and names that do not resolve.
//!
//! Each test writes a hosts file of its own and runs `porthawk` under `unshare --mount`, with
//! that file bind-mounted over `/etc/hosts` in the child's private mount namespace: the name
//! `dual.porthawk.test` has an IPv4 address (`127.a.b.1`, the test's own block) and `::1`,
//! and the service listens on the IPv4 address only, so `::1` refuses. The machine's own
//! `/etc/hosts` is never touched. Needs root and `unshare` (under `CI=true` their absence
//! fails the test).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    http, require, run_command, stdout, test_hosts, ListenSnapshot, Serve, TempDir, BIN,
    RUN_TIMEOUT,
};

/// The name with both addresses.
const DUAL: &str = "dual.porthawk.test";
/// A name with an IPv4 address only.
const V4ONLY: &str = "v4only.porthawk.test";

/// Runs `sh -c` as `unshare --mount sh -c 'mount --bind HOSTS /etc/hosts && exec BIN ARGS'`.
pub(crate) fn private_hosts(hosts: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(hosts)
    .arg(BIN)
    .args(args)
    .env_remove("PORTHAWK_API_TOKEN")
    .env_remove("RUST_LOG");
    cmd
}

/// Whether this machine can run the tests: root, `unshare`, and a bind mount in a private
/// mount namespace.
pub(crate) fn can_run(test: &str) -> bool {
    let missing = match Command::new("unshare")
        .args(["--mount", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .output()
    {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "unshare --mount with a bind mount failed (root needed): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    };
    require(test, missing).is_ok()
}

/// A listener on the test's IPv4 address, on a port where nothing listens on `::1` or `::`
/// (so that `::1` refuses), and the hosts file that names both addresses.
struct Setup {
    dir: TempDir,
    v4: IpAddr,
    port: u16,
    _listener: TcpListener,
}

impl Setup {
    fn new(test: &str) -> Setup {
        let v4 = test_hosts(test, 1)[0];
        for _ in 0..20 {
            let listener = TcpListener::bind(SocketAddr::new(v4, 0)).expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let snap = ListenSnapshot::take();
            if snap
                .loose_ports(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
                .contains(&port)
            {
                continue;
            }
            let dir = TempDir::new(test);
            let setup = Setup {
                dir,
                v4,
                port,
                _listener: listener,
            };
            setup.write_hosts(true);
            return setup;
        }
        panic!("no port free on ::1 after 20 tries");
    }

    fn hosts(&self) -> std::path::PathBuf {
        self.dir.path().join("hosts")
    }

    /// Writes the hosts file in place (the bind mount follows the inode), with or without
    /// the dual name.
    fn write_hosts(&self, with_dual: bool) {
        let mut text = format!("127.0.0.1 localhost\n{} {V4ONLY}\n", self.v4);
        if with_dual {
            text.push_str(&format!("{} {DUAL}\n::1 {DUAL}\n", self.v4));
        }
        std::fs::write(self.hosts(), text).expect("write hosts");
    }

    fn check(&self, name: &str, extra: &[&str]) -> Output {
        let target = format!("{name}:{}", self.port);
        let mut args = vec!["check", target.as_str(), "--timeout", "2s"];
        args.extend_from_slice(extra);
        run_command(private_hosts(&self.hosts(), &args), None, RUN_TIMEOUT)
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn check_passes_on_one_address_of_a_name_unless_all_are_asked_for() {
    if !can_run("names check") {
        return;
    }
    let s = Setup::new("names check");
    let v4 = s.v4.to_string();

    let out = s.check(DUAL, &[]);
    let line = stdout(&out);
    assert_eq!(code(&out), 0, "{line}");
    assert!(line.starts_with("PORTHAWK OK - "), "{line}");
    assert!(line.contains(&format!("via {v4} ")), "{line}");
    assert!(line.contains("(::1: connection refused)"), "{line}");
    assert!(line.contains(&format!("'time {v4}'=")), "{line}");
    assert!(line.contains("'time ::1'=U"), "{line}");

    let out = s.check(DUAL, &["--addresses", "all"]);
    let line = stdout(&out);
    assert_eq!(code(&out), 2, "{line}");
    assert!(
        line.starts_with(&format!(
            "PORTHAWK CRITICAL - {DUAL} port {}: ::1: connection refused |",
            s.port
        )),
        "{line}"
    );

    // -6: only ::1, which refuses; -4: only the listener.
    let out = s.check(DUAL, &["-6"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stdout(&out).contains("::1: connection refused"));
    let out = s.check(DUAL, &["-4", "--addresses", "all"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("via {v4} |")),
        "{}",
        stdout(&out)
    );

    // Preferred family with fallback: ::1 when the name has it, else IPv4.
    let out = s.check(DUAL, &["--prefer-family", "ipv6"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    let out = s.check(V4ONLY, &["--prefer-family", "ipv6"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    // A family the name lacks is CRITICAL with the reason.
    let out = s.check(V4ONLY, &["-6"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "cannot resolve '{V4ONLY}': it has no ipv6 address (only {v4})"
        )),
        "{}",
        stdout(&out)
    );

    // scan reports every address, and honours -6.
    let ports = s.port.to_string();
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", DUAL, "-p", &ports, "--all", "--format", "jsonl"];
        args.extend_from_slice(extra);
        stdout(&run_command(
            private_hosts(&s.hosts(), &args),
            None,
            RUN_TIMEOUT,
        ))
    };
    let both = scan(&[]);
    assert_eq!(both.lines().count(), 2, "{both}");
    assert!(both.contains(&format!("\"ip\":\"{v4}\"")), "{both}");
    assert!(both.contains("\"ip\":\"::1\""), "{both}");
    let only6 = scan(&["-6"]);
    assert_eq!(only6.lines().count(), 1, "{only6}");
    assert!(only6.contains("\"ip\":\"::1\""), "{only6}");
}

const CONFIG: &str = r#"
[[monitor]]
name = "any"
targets = ["DUAL"]
ports = "PORT"
interval = "200ms"
timeout = "200ms"
fail_after = 1
recover_after = 1

[[monitor]]
name = "all"
targets = ["DUAL"]
ports = "PORT"
interval = "200ms"
timeout = "200ms"
fail_after = 1
recover_after = 1
addresses = "all"

[[monitor]]
name = "v6"
targets = ["DUAL"]
ports = "PORT"
interval = "200ms"
timeout = "200ms"
fail_after = 1
recover_after = 1
ip_family = "ipv6"
"#;

fn monitor(server: &Serve, name: &str) -> Value {
    let (status, body) = http(server.addr, "GET", &format!("/v1/monitors/{name}"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits (at most 20 s) until monitor `name` is in `state`; its detail.
fn wait_state(server: &Serve, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = monitor(server, name);
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "monitor {name} not {state} within 20 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(s: &Setup) -> Serve {
    let config = CONFIG
        .replace("DUAL", DUAL)
        .replace("PORT", &s.port.to_string());
    let cfg = s.dir.write("porthawk.toml", &config);
    let data = s.dir.path().join("data");
    let (cfg, data) = (cfg.to_string_lossy(), data.to_string_lossy());
    Serve::spawn(private_hosts(
        &s.hosts(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data,
            "--config",
            &cfg,
        ],
    ))
}

#[test]
fn monitor_of_a_name_is_up_with_any_and_down_with_all() {
    if !can_run("names monitor") {
        return;
    }
    let s = Setup::new("names monitor");
    let server = serve(&s);
    let any = wait_state(&server, "any", "up");
    let t = &any["target_list"][0];
    assert_eq!(t["target"], DUAL, "{any}");
    assert_eq!(t["host"], DUAL, "{any}");
    let all = wait_state(&server, "all", "down");
    let reason = all["target_list"][0]["last"]["reason"]
        .as_str()
        .unwrap_or("");
    assert_eq!(reason, "::1: closed (connection refused)", "{all}");
    let v6 = wait_state(&server, "v6", "down");
    assert_eq!(
        v6["target_list"][0]["last"]["reason"], "::1: closed (connection refused)",
        "{v6}"
    );
    // `any` stays up while ::1 keeps refusing.
    assert_eq!(monitor(&server, "any")["state"], "up");
    server.terminate();
}

#[test]
fn monitor_of_a_name_that_does_not_resolve_is_down_with_the_reason_until_it_does() {
    if !can_run("names unresolved") {
        return;
    }
    let s = Setup::new("names unresolved");
    s.write_hosts(false);
    let server = serve(&s);
    let down = wait_state(&server, "any", "down");
    let t = &down["target_list"][0];
    assert_eq!(t["target"], DUAL, "{down}");
    let reason = t["last"]["reason"].as_str().unwrap_or("").to_string();
    assert!(
        reason.starts_with(&format!("cannot resolve '{DUAL}': ")),
        "{down}"
    );
    // History says so: the state change carries the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = monitor(&server, "any");
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let said = events.iter().any(|e| {
            e["what"] == "state"
                && e["kind"] == "down"
                && e["target"] == format!("{DUAL}:{}", s.port)
                && e["detail"].as_str() == Some(reason.as_str())
        });
        if said {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no down event with the reason: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The name appears: UP again (it resolves and its IPv4 address answers).
    s.write_hosts(true);
    wait_state(&server, "any", "up");
    wait_state(&server, "all", "down");
    let v = wait_state(&server, "any", "up");
    let events = v["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["what"] == "state" && e["kind"] == "up"),
        "{v}"
    );
    server.terminate();
}
