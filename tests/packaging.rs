//! What an admin installs next to the binary: shell completions, the manual page, the systemd
//! unit, the Prometheus alert rules and the Grafana dashboard in `contrib/`; and the one-line
//! errors they read when `serve` cannot start.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::serve::{submit, wait_ended};
use crate::util::{
    assert_success, http, require, run, run_command, stderr, stdout, test_net, which, Serve,
    TempDir, BIN, RUN_TIMEOUT,
};

/// The repository's `contrib/` directory.
fn contrib(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib")
        .join(file)
}

fn read_contrib(file: &str) -> String {
    let path = contrib(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `porthawk ARGS` that must succeed; its stdout.
fn output_of(args: &[&str]) -> String {
    let out = run(args);
    assert_success(args, &out);
    stdout(&out)
}

#[test]
fn bash_completion_is_valid_bash_and_lists_the_subcommands() {
    let script = output_of(&["completions", "bash"]);
    let mut bash = Command::new("bash");
    bash.arg("-n");
    let out = run_command(bash, Some(&script), RUN_TIMEOUT);
    assert!(
        out.status.success(),
        "bash -n rejects the completion script: {}",
        stderr(&out)
    );
    for sub in ["scan", "check", "bench", "serve", "completions", "man"] {
        assert!(script.contains(sub), "no {sub} in the bash completion");
    }
    // Flags of a subcommand are completed too, not only the subcommand names.
    assert!(
        script.contains("--listen"),
        "serve's --listen is not completed"
    );
}

#[test]
fn zsh_and_fish_completions_know_scan() {
    for shell in ["zsh", "fish"] {
        let script = output_of(&["completions", shell]);
        assert!(!script.trim().is_empty(), "empty {shell} completion");
        assert!(script.contains("scan"), "no scan in the {shell} completion");
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_is_roff_that_man_renders() {
    let page = output_of(&["man"]);
    // clap_mangen starts with the `Aq` string definition, then the title.
    let first_macro = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap_or("");
    assert!(first_macro.starts_with(".TH porthawk 1"), "{first_macro}");
    assert!(page.contains(".SH \"PORTHAWK SERVE\""), "no serve section");
    let (program, args): (&str, &[&str]) = if which("man").is_some() {
        ("man", &["-l", "-"])
    } else if which("groff").is_some() {
        ("groff", &["-man", "-Tutf8", "-ww", "-z"])
    } else {
        ("", &[])
    };
    if require(
        "rendering the man page",
        program
            .is_empty()
            .then(|| "neither man (Debian man-db) nor groff (groff-base) is installed".to_string()),
    )
    .is_err()
    {
        return;
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0");
    let out = run_command(cmd, Some(&page), RUN_TIMEOUT);
    let errors = stderr(&out);
    assert!(
        out.status.success() && errors.trim().is_empty(),
        "{program} {args:?}: {:?}: {errors}",
        out.status.code()
    );
    if program == "man" {
        let text = without_overstrike(&stdout(&out));
        assert!(text.contains("PORTHAWK SERVE"), "{text}");
        assert!(text.contains("--listen"), "{text}");
    }
}

/// `man`'s output without the backspace overstrikes it uses for bold and underline.
fn without_overstrike(text: &str) -> String {
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = read_contrib("porthawk.service");
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=porthawk",
        "--data /var/lib/porthawk",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening:?}");
    }
    let Some(analyze) = which("systemd-analyze") else {
        let _ = require(
            "verifying the unit",
            Some("systemd-analyze is not installed".into()),
        );
        return;
    };
    // verify insists that ExecStart names an existing executable: the binary under test.
    assert!(unit.contains("ExecStart=/usr/local/bin/porthawk serve"));
    let dir = TempDir::new("unit");
    let copy = dir.write(
        "porthawk.service",
        &unit.replace(
            "ExecStart=/usr/local/bin/porthawk",
            &format!("ExecStart={BIN}"),
        ),
    );
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(&copy);
    let out = run_command(cmd, None, RUN_TIMEOUT);
    assert!(
        out.status.success() && stderr(&out).trim().is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// contrib/alerts.yml, as Prometheus reads rule files (the fields used here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    _for: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

/// The `porthawk_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("porthawk_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Every metric name the alert rules and the dashboard use.
fn contrib_metric_names() -> BTreeSet<String> {
    let rules: RuleFile = serde_norway::from_str(&read_contrib("alerts.yml"))
        .unwrap_or_else(|e| panic!("contrib/alerts.yml: {e}"));
    let mut names = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert!(alerts.insert(rule.alert.clone()), "{} twice", rule.alert);
            assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            let used = metric_names(&rule.expr);
            assert!(!used.is_empty(), "{}: no porthawk metric", rule.alert);
            names.extend(used);
        }
    }
    for alert in [
        "PorthawkMonitorDown",
        "PorthawkSweepsFailing",
        "PorthawkStoreErrors",
    ] {
        assert!(alerts.contains(alert), "no {alert} rule");
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&read_contrib("grafana-dashboard.json"))
            .unwrap_or_else(|e| panic!("contrib/grafana-dashboard.json: {e}"));
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{}: no porthawk metric", panel["title"]);
            names.extend(used);
        }
    }
    names
}

/// The sample names a `/metrics` page can have: each `# TYPE` family with its suffixes.
fn served_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn alerts_and_dashboard_use_only_metrics_that_serve_exports() {
    let wanted = contrib_metric_names();

    // A server with something behind every family: an up and a down monitor, an action and
    // a failing notification for the down one, a finished sweep and a rejected reload (empty
    // families are not exported at all).
    let [a, b] = test_net("packaging-metrics");
    let ip = IpAddr::V4(Ipv4Addr::new(127, a, b, 1));
    let open = TcpListener::bind((ip, 0)).expect("bind the open port");
    let open_port = open.local_addr().expect("addr").port();
    let closed_port = {
        let gone = TcpListener::bind((ip, 0)).expect("bind");
        gone.local_addr().expect("addr").port()
    };
    let dir = TempDir::new("packaging-metrics");
    let config = dir.write(
        "porthawk.toml",
        &format!(
            r#"
# Fleet mode against a NATS URL where nothing answers: the fleet families are exported
# (pools start at 0 live agents) while the coordinator keeps retrying.
[fleet]
nats = "nats://127.0.0.1:1"
pools = ["lab"]
agents = ["lab-1"]

[[monitor]]
name = "up"
targets = ["{ip}"]
ports = "{open_port}"
interval = "300ms"
timeout = "200ms"

[[monitor]]
name = "down"
targets = ["{ip}"]
ports = "{closed_port}"
interval = "300ms"
timeout = "200ms"
fail_after = 1
group_wait = "0s"
on_down = ["mark", "hook"]

[action.mark]
exec = ["true"]
timeout = "5s"

[notify.hook]
webhook = {{ url = "http://{ip}:{closed_port}/hook" }}
retries = 0

# A scheduled sweep, whose first run (a baseline) makes porthawk_schedule_runs_total.
[[sweep]]
name = "surface"
targets = ["{ip}"]
ports = "{open_port}"
every = "1h"
"#
        ),
    );
    let mut cmd = Serve::command(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    let server = Serve::spawn(cmd);
    let id = submit(
        server.addr,
        &format!(r#"{{"targets": ["{ip}"], "ports": "{open_port}"}}"#),
    );
    wait_ended(server.addr, id);
    std::fs::write(&config, "[[monitor]]\nname = 1\n").expect("write a bad config");
    let pid = server.child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(hup.is_ok_and(|s| s.success()), "kill -HUP {pid}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let (status, page) = http(server.addr, "GET", "/metrics", None);
        assert_eq!(status, 200, "{page}");
        let served = served_names(&page);
        let missing: Vec<&String> = wanted.iter().filter(|n| !served.contains(*n)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break format!("{missing:?}\n/metrics:\n{page}");
        }
        thread::sleep(Duration::from_millis(200));
    };
    drop(open);
    assert!(
        missing.starts_with("[]"),
        "contrib/ uses metrics that porthawk serve does not export: {missing}"
    );
    let (status, _) = server.terminate();
    assert!(status.success(), "serve exited with {status:?}");
}

#[test]
fn serve_on_a_busy_port_says_so_once_and_what_to_do() {
    let [a, b] = test_net("packaging-busy");
    let busy = TcpListener::bind((IpAddr::V4(Ipv4Addr::new(127, a, b, 1)), 0)).expect("bind");
    let addr: SocketAddr = busy.local_addr().expect("addr");
    let dir = TempDir::new("packaging-busy");
    let data = dir.path().join("data");
    let out = run(&[
        "serve",
        "--listen",
        &addr.to_string(),
        "--data",
        data.to_str().expect("UTF-8 path"),
    ]);
    drop(busy);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("--listen"), "no advice in {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
