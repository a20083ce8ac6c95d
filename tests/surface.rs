//! Attack-surface monitoring and blackbox_exporter's place, end to end against the real
//! `porthawk serve`: a scheduled sweep over a farm whose listeners change between two runs
//! notifies **one** grouped message to a webhook sink and keeps its history; the diff route
//! answers what `porthawk diff` prints for the same two sweeps; a restart keeps the schedule;
//! `/probe` answers Prometheus text with blackbox_exporter's names, for porthawk.toml
//! modules and a blackbox.yml used as written.

// The helpers below run only inside tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;

use crate::monitor::{http_sink, spawn_server, wait_for, Inbox, Server, Service, TOKEN};
use crate::util::{self, TempDir};

/// A free port on `ip`: bound, then let go.
fn free_port(ip: IpAddr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The runs of schedule `name`, newest first.
fn runs(server: &Server, name: &str) -> Vec<Value> {
    let v = server.json(&format!("/v1/schedules/{name}/changes"));
    v["runs"].as_array().cloned().unwrap_or_default()
}

fn hooks_of(inbox: &Inbox, kind: &str) -> Vec<Value> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn schedule_config(host: IpAddr, ports: &str, every: &str, hook: SocketAddr) -> String {
    format!(
        r#"
[api]
token = "{TOKEN}"

[[sweep]]
name = "farm"
targets = ["{host}"]
ports = "{ports}"
every = "{every}"
probe = {{ timeout = "500ms", tries = 1 }}
on_change = ["hook"]

[notify.hook]
webhook = {{ url = "http://{hook}/hook" }}
retries = 1
backoff = "100ms"
"#
    )
}

#[test]
fn scheduled_sweep_notifies_one_grouped_change_and_the_diff_route_is_the_cli_diff() {
    let net = util::test_net("surface-schedule");
    let ip = |d| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], d));
    let a = free_port(ip(1));
    let b = free_port(ip(1));
    let mut service_a = Service::start(a);
    let (hook_port, hooks) = http_sink(ip(3));
    let hook = SocketAddr::new(ip(3), hook_port);
    let dir = TempDir::new("surface-schedule");
    let ports = format!("{},{}", a.port(), b.port());
    let config = dir.write("porthawk.toml", &schedule_config(ip(1), &ports, "2s", hook));
    let data = dir.path().join("data");
    let server = spawn_server(&config, &data);
    let limit = Duration::from_secs(60);

    // The first run is the baseline: kept, not notified.
    wait_for("the baseline run", limit, &server, || {
        runs(&server, "farm")
            .iter()
            .any(|r| r["outcome"] == "baseline")
    });
    // The listeners change before the next run (due 2 s after the baseline's start).
    let mut service_b = Service::start(b);
    service_a.stop();
    wait_for("a run with changes", limit, &server, || {
        runs(&server, "farm")
            .iter()
            .any(|r| r["outcome"] == "changed")
    });
    // And one more run, which finds nothing new.
    wait_for("an unchanged run after the change", limit, &server, || {
        runs(&server, "farm")[0]["outcome"] == "unchanged"
    });
    let history = runs(&server, "farm");
    let changed = history.iter().find(|r| r["outcome"] == "changed").unwrap();
    let baseline = history.iter().find(|r| r["outcome"] == "baseline").unwrap();
    assert!(
        baseline["detail"].as_str().unwrap().contains("baseline"),
        "{baseline}"
    );
    assert_eq!(
        (changed["opened"].as_u64(), changed["closed"].as_u64()),
        (Some(1), Some(1))
    );
    let kinds: Vec<(String, u64)> = changed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        ("closed".to_string(), u64::from(a.port())),
        ("opened".to_string(), u64::from(b.port())),
    ];
    want.sort_by_key(|w| w.1);
    assert_eq!(kinds, want, "{changed}");

    // Exactly one grouped message, sent for the changed run only.
    let sent = hooks_of(&hooks, "sweep_changed");
    assert_eq!(sent.len(), 1, "{:?}", hooks.lock().unwrap());
    assert_eq!(sent[0]["schedule"], "farm");
    assert_eq!(
        (sent[0]["opened"].as_u64(), sent[0]["closed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(sent[0]["changes"].as_array().unwrap().len(), 2);
    assert_eq!(sent[0]["more"], 0);
    assert_eq!(changed["notices"][0]["outcome"], "sent", "{changed}");
    assert!(hooks_of(&hooks, "sweep_failed").is_empty());

    // The runs are normal sweeps, named by their schedule.
    let old = changed["against"].as_u64().unwrap();
    let new = changed["sweep_id"].as_u64().unwrap();
    let listing = server.json("/v1/sweeps");
    let named = listing["sweeps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["schedule"] == "farm")
        .count();
    assert!(named >= 3, "{listing}");

    // The diff route prints what `porthawk diff` prints for the two sweeps' jsonl.
    let (status, api_diff) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against={old}"),
        None,
        true,
    );
    assert_eq!(status, 200, "{api_diff}");
    let old_file = dir.write(
        "old.jsonl",
        &server
            .request("GET", &format!("/v1/sweeps/{old}/results"), None, true)
            .1,
    );
    let new_file = dir.write(
        "new.jsonl",
        &server
            .request("GET", &format!("/v1/sweeps/{new}/results"), None, true)
            .1,
    );
    let cli = util::run(&[
        "diff",
        old_file.to_str().unwrap(),
        new_file.to_str().unwrap(),
    ]);
    assert_eq!(cli.status.code(), Some(1), "{}", util::stderr(&cli));
    assert_eq!(api_diff, util::stdout(&cli));
    assert_eq!(api_diff.lines().count(), 2, "{api_diff}");
    assert!(api_diff.contains(&format!(
        r#""change":"opened","ip":"{}","port":{}"#,
        b.ip(),
        b.port()
    )));
    // Unknown ids are named; reads need the token as other reads do.
    let (status, body) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against=987654"),
        None,
        true,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("987654"), "{body}");
    let (status, _) = server.request(
        "GET",
        &format!("/v1/sweeps/{new}/diff?against={old}"),
        None,
        false,
    );
    assert_eq!(status, 401);
    // A sweep still running cannot be diffed.
    let (status, body) = server.request(
        "POST",
        "/v1/sweeps",
        Some(&format!(
            r#"{{"targets":["{}"],"ports":"1-65535","rate":1}}"#,
            ip(1)
        )),
        true,
    );
    assert_eq!(status, 202, "{body}");
    let running: Value = serde_json::from_str(&body).unwrap();
    let running = running["id"].as_u64().unwrap();
    let (status, body) = server.request(
        "GET",
        &format!("/v1/sweeps/{running}/diff?against={old}"),
        None,
        true,
    );
    assert_eq!(status, 409, "{body}");
    let (status, _) = server.request("DELETE", &format!("/v1/sweeps/{running}"), None, true);
    assert_eq!(status, 202);

    // A restart keeps the schedule: the next run is due `every` after the last one's start.
    drop(server);
    service_b.stop();
    let config = dir.write("porthawk.toml", &schedule_config(ip(1), &ports, "1h", hook));
    let server = spawn_server(&config, &data);
    let schedules = server.json("/v1/schedules");
    let farm = &schedules["schedules"][0];
    let last = farm["last_run"]["started_ms"].as_u64().unwrap();
    let next = farm["next_run_at"].as_f64().unwrap();
    assert_eq!((next * 1000.0).round() as u64, last + 3_600_000, "{farm}");
    assert_eq!(farm["every_s"], 3600.0);
    let before = runs(&server, "farm").len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        runs(&server, "farm").len(),
        before,
        "a run started before it was due"
    );
    assert_eq!(hooks_of(&hooks, "sweep_changed").len(), 1);
}
