//! `porthawk serve` end to end: the real binary on a free loopback port with a temp data
//! dir, driven over HTTP/1.1 by the tests' minimal client (`util::http`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{
    check_open_set, http, http_json, index_records, parse_jsonl, ports_arg, test_hosts, triples,
    with_state, Farm, ListenSnapshot, Record, Serve, TempDir, BIN,
};

/// How long a sweep may take to end.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) fn submit(addr: SocketAddr, body: &str) -> u64 {
    let (status, reply) = http_json(addr, "POST", "/v1/sweeps", Some(body));
    assert_eq!(status, 202, "POST /v1/sweeps {body}: {reply}");
    reply["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {reply}"))
}

fn status_of(addr: SocketAddr, id: u64) -> Value {
    let (status, reply) = http_json(addr, "GET", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(status, 200, "{reply}");
    reply
}

pub(crate) fn wait_ended(addr: SocketAddr, id: u64) -> Value {
    let deadline = Instant::now() + SWEEP_TIMEOUT;
    loop {
        let s = status_of(addr, id);
        if s["state"] != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "sweep {id} did not end: {s}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn results(addr: SocketAddr, id: u64, query: &str) -> Vec<Record> {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/v1/sweeps/{id}/results{query}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    parse_jsonl(&body)
}

fn targets_json(hosts: &[IpAddr]) -> Value {
    hosts.iter().map(|h| h.to_string()).collect()
}

#[test]
fn api_sweep_matches_the_farm_and_survives_a_restart() {
    let hosts = test_hosts("serve-farm", 3);
    let farm = Farm::standard(&hosts);
    let mut ports = farm.ports();
    ports.extend(61000..=61049);
    let data = TempDir::new("serve-farm");
    let before = ListenSnapshot::take();
    let mut server = Serve::start(data.path());
    let addr = server.addr;
    assert!(
        server.logs("loopback only", Duration::from_secs(5)),
        "the server does not say that without a token it serves loopback only"
    );
    let body = json!({
        "targets": targets_json(&hosts),
        "ports": ports_arg(&farm.ports(), "61000-61049"),
        "store": "all",
        "probe": {"timeout_ms": 1000, "tries": 2},
    })
    .to_string();
    let id = submit(addr, &body);
    let status = wait_ended(addr, id);
    let after = ListenSnapshot::take();
    assert_eq!(status["state"], "done", "{status}");
    let total = (hosts.len() * ports.len()) as u64;
    assert_eq!(status["total"], total, "{status}");
    assert_eq!(status["done"], total, "{status}");

    let records = results(addr, id, "");
    assert_eq!(records.len() as u64, total);
    let index = index_records(&records);
    for &ip in &hosts {
        for &port in &ports {
            assert!(index.contains_key(&(ip, port)), "{ip}:{port} not reported");
        }
    }
    for r in &records {
        assert!(r.state == "open" || r.state == "closed", "{:?}", r.fields);
        assert!(
            r.uint("rtt_us").is_some() && r.uint("tries").is_some(),
            "{:?}",
            r.fields
        );
    }
    let open = with_state(&records, "open");
    check_open_set(&open, &farm.open_set(), &hosts, &ports, &before, &after);
    assert_eq!(status["counts"]["open"], open.len() as u64, "{status}");
    let only_open: BTreeSet<(IpAddr, u16)> = results(addr, id, "?state=open")
        .iter()
        .map(|r| (r.ip, r.port))
        .collect();
    assert_eq!(only_open, open);
    let (code, csv) = http(
        addr,
        "GET",
        &format!("/v1/sweeps/{id}/results?format=csv&state=open"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(csv.lines().count(), open.len() + 1, "{csv}");

    let (code, metrics) = http(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "porthawk_probes_total{{state=\"open\"}} {}",
            open.len()
        )),
        "{metrics}"
    );

    server.stop();
    let server = Serve::start(data.path());
    let again = status_of(server.addr, id);
    assert_eq!(again["state"], "done", "{again}");
    assert_eq!(again["done"], total);
    let stored = results(server.addr, id, "");
    assert_eq!(triples(&stored), triples(&records));
    server.stop();
}

#[test]
fn kill_9_during_a_sweep_leaves_it_interrupted_with_its_rows() {
    let hosts = test_hosts("serve-kill", 2);
    let data = TempDir::new("serve-kill");
    let server = Serve::start(data.path());
    let addr = server.addr;
    // 2,000 probes at 200 per second: about ten seconds, every result stored.
    let body = json!({
        "targets": targets_json(&hosts),
        "ports": "61000-61999",
        "store": "all",
        "rate": 200,
    })
    .to_string();
    let id = submit(addr, &body);
    let deadline = Instant::now() + SWEEP_TIMEOUT;
    let seen = loop {
        let rows = results(addr, id, "?follow=false");
        if rows.len() >= 300 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "sweep {id} stored too few results"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let s = status_of(addr, id);
    assert_eq!(s["state"], "running", "{s}");
    server.kill();

    let mut server = Serve::start(data.path());
    assert!(
        server.logs("marked interrupted", Duration::from_secs(5)),
        "the restarted server does not report the interrupted sweep"
    );
    let s = status_of(server.addr, id);
    assert_eq!(s["state"], "interrupted", "{s}");
    let done = s["done"].as_u64().expect("done");
    assert!(done < 2000, "{s}");
    let stored = results(server.addr, id, "");
    assert_eq!(
        stored.len() as u64,
        done,
        "stored rows and the done count disagree: {s}"
    );
    let stored_set = triples(&stored);
    for t in triples(&seen) {
        assert!(
            stored_set.contains(&t),
            "{t:?} was reported before the kill and is lost"
        );
    }
    // An interrupted sweep cannot be cancelled.
    let (code, _) = http(server.addr, "DELETE", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(code, 409);
    server.stop();
}

#[test]
fn serve_refuses_a_public_listen_address_without_a_token() {
    let data = TempDir::new("serve-public");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .env_remove("PORTHAWK_API_TOKEN")
        .output()
        .expect("run porthawk serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an API token"), "{err}");
}

#[test]
fn serve_names_an_unknown_config_key() {
    let data = TempDir::new("serve-config");
    let config = data.write(
        "porthawk.toml",
        "[api]\nlisten = \"127.0.0.1:0\"\ntokn = \"x\"\n",
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("run porthawk serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3: api.tokn: unknown field `tokn`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
