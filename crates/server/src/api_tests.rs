//! Handler tests: every route and every error path, through `oneshot` on [`app`].

use std::net::TcpListener;
use std::time::Instant;

use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::test_support::{test_server, TempDir};
use crate::{Server, ServerConfig};

struct Reply {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Checks the error shape and returns (code, field).
    fn error(&self, status: u16) -> (String, Option<String>) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        (
            e["code"].as_str().unwrap().to_string(),
            e["field"].as_str().map(str::to_string),
        )
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        content_type,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn setup(name: &str, tweak: impl FnOnce(&mut ServerConfig)) -> (Server, TempDir, Router) {
    let (server, dir) = test_server(name, tweak);
    let app = app(server.state());
    (server, dir, app)
}

async fn wait_ended(app: &Router, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(app, "GET", &format!("/v1/sweeps/{id}"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let v = r.json();
        if v["state"] != "running" && v["state"] != "queued" {
            return v;
        }
        assert!(Instant::now() < deadline, "sweep {id} still running: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_runs_and_reports_status_results_and_list() {
    let (server, _dir, app) = setup("api-sweep", |_| {});
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = json!({"targets": ["127.0.0.1"], "ports": port.to_string(), "store": "all",
                      "probe": {"timeout_ms": 500, "tries": 1}});
    let r = call(&app, "POST", "/v1/sweeps", Some(&body.to_string()), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["id"].as_u64().unwrap();

    let v = wait_ended(&app, id).await;
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["done"], 1);
    assert_eq!(v["total"], 1);
    assert_eq!(v["counts"]["open"], 1, "{v}");
    assert_eq!(v["request"]["ports"], port.to_string());

    let r = call(&app, "GET", &format!("/v1/sweeps/{id}/results"), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, "application/x-ndjson");
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.text);
    assert_eq!(lines[0]["ip"], "127.0.0.1");
    assert_eq!(lines[0]["port"], port);
    assert_eq!(lines[0]["state"], "open");
    assert!(lines[0]["rtt_us"].is_u64() && lines[0]["tries"] == 1);

    let r = call(
        &app,
        "GET",
        &format!("/v1/sweeps/{id}/results?state=open&format=csv"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/csv"));
    let mut lines = r.text.lines();
    // The header of `porthawk scan --format csv`.
    assert_eq!(
        lines.next(),
        Some(
            "ip,port,state,rtt_us,tries,host,errno,matched,service,product,version,banner,\
             reason,tls_version,cert_subject,cert_issuer,cert_not_after,cert_days_left,captures,\
             cert_expires_first,protocol_version,info,cpe"
        )
    );
    assert!(lines
        .next()
        .unwrap()
        .starts_with(&format!("127.0.0.1,{port},open,")));
    assert_eq!(lines.next(), None);

    let r = call(
        &app,
        "GET",
        &format!("/v1/sweeps/{id}/results?state=closed"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text, "");

    let r = call(&app, "GET", "/v1/sweeps?limit=1", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["sweeps"][0]["id"], id);
    assert_eq!(v["sweeps"][0]["state"], "done");
    // The listing carries no request (issue 14 item 8); the sweep itself does.
    assert!(v["sweeps"][0].get("request").is_none(), "{v}");
    let r = call(&app, "GET", &format!("/v1/sweeps/{id}"), None, None).await;
    assert!(r.json()["request"]["targets"].is_array());
    assert_eq!(v["next_offset"], 1);
    let r = call(&app, "GET", "/v1/sweeps?limit=1&offset=1", None, None).await;
    assert_eq!(r.json()["sweeps"].as_array().unwrap().len(), 0);

    // It has ended: nothing to cancel.
    let r = call(&app, "DELETE", &format!("/v1/sweeps/{id}"), None, None).await;
    assert_eq!(r.error(409).0, "conflict");

    let r = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for needle in [
        "porthawk_probes_total{state=\"open\"} 1",
        "porthawk_sweeps{state=\"done\"} 1",
        "porthawk_result_batches_total",
        "porthawk_connect_latency_seconds_count 1",
        "route=\"/v1/sweeps/{id}\"",
    ] {
        assert!(r.text.contains(needle), "{needle} missing:\n{}", r.text);
    }
    drop(listener);
    server.shutdown();
}

#[tokio::test]
async fn fixed_routes_answer() {
    let (server, _dir, app) = setup("api-fixed", |_| {});
    let r = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = call(&app, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    for path in [
        "/v1/sweeps",
        "/v1/sweeps/{id}",
        "/v1/sweeps/{id}/results",
        "/metrics",
        "/healthz",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let r = call(&app, "GET", "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("porthawk"));
    let r = call(&app, "GET", "/nope", None, None).await;
    assert_eq!(r.error(404).0, "not_found");
    let r = call(&app, "GET", "/v1/sweeps", None, None).await;
    assert_eq!(r.json()["sweeps"], json!([]));
    server.shutdown();
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let (server, _dir, app) = setup("api-bad", |c| c.limits.max_sweep_probes = 1000);
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("{not json", 400, None),
        ("[]", 400, None),
        (r#"{"ports":"22"}"#, 400, Some("targets")),
        (
            r#"{"targets":["127.0.0.0/33"],"ports":"22"}"#,
            400,
            Some("targets[0]"),
        ),
        (
            r#"{"targets":["127.0.0.1","300.1.1.1"],"ports":"22"}"#,
            400,
            Some("targets[1]"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"90-80"}"#,
            400,
            Some("ports"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"0"}"#,
            400,
            Some("ports"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"22","exclude":["x/y"]}"#,
            400,
            Some("exclude[0]"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"preset":"smtpx"}}"#,
            400,
            Some("probe.preset"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"22","probe":{"timeout_ms":0}}"#,
            400,
            Some("probe.timeout_ms"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"22","rate":-1}"#,
            400,
            Some("rate"),
        ),
        (
            r#"{"targets":["127.0.0.1"],"ports":"22","colour":"red"}"#,
            400,
            Some("colour"),
        ),
        (
            r#"{"targets":["10.0.0.1"],"ports":"22"}"#,
            403,
            Some("targets[0]"),
        ),
        (
            r#"{"targets":["127.0.0.1","::2"],"ports":"22"}"#,
            403,
            Some("targets[1]"),
        ),
        (
            r#"{"targets":["127.0.0.0/24"],"ports":"1-100"}"#,
            413,
            Some("targets"),
        ),
    ];
    for (body, status, field) in cases {
        let r = call(&app, "POST", "/v1/sweeps", Some(body), None).await;
        let (_, f) = r.error(*status);
        assert_eq!(f.as_deref(), *field, "{body}: {}", r.text);
        if *status == 403 {
            assert!(r.text.contains(if body.contains("::2") {
                "::2"
            } else {
                "10.0.0.1"
            }));
        }
    }
    // Nothing was created by any of them.
    let r = call(&app, "GET", "/v1/sweeps", None, None).await;
    assert_eq!(r.json()["sweeps"], json!([]));
    assert_eq!(server.shared.store.sweep_summaries(10, 0).unwrap().len(), 0);

    for uri in [
        "/v1/sweeps/12345",
        "/v1/sweeps/abc",
        "/v1/sweeps/12345/results",
    ] {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.error(404).0, "not_found", "{uri}");
    }
    let r = call(&app, "DELETE", "/v1/sweeps/12345", None, None).await;
    r.error(404);
    for (uri, field) in [
        ("/v1/sweeps?limit=0", "limit"),
        ("/v1/sweeps?limit=5000", "limit"),
        ("/v1/sweeps?limit=abc", "query"),
    ] {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.error(400).1.as_deref(), Some(field), "{uri}");
    }
    server.shutdown();
}

#[tokio::test]
async fn results_query_is_checked() {
    let (server, _dir, app) = setup("api-results-query", |_| {});
    let body = r#"{"targets":["127.0.0.1"],"ports":"1"}"#;
    let r = call(&app, "POST", "/v1/sweeps", Some(body), None).await;
    let id = r.json()["id"].as_u64().unwrap();
    wait_ended(&app, id).await;
    for (q, field) in [
        ("state=shut", "state"),
        ("format=yaml", "format"),
        ("state=closed", "state"),
    ] {
        let r = call(
            &app,
            "GET",
            &format!("/v1/sweeps/{id}/results?{q}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.error(400).1.as_deref(), Some(field), "{q}: {}", r.text);
    }
    server.shutdown();
}

#[tokio::test]
async fn mutating_routes_need_the_token() {
    let (server, _dir, app) = setup("api-token", |c| c.token = Some("s3cret".into()));
    let body = r#"{"targets":["127.0.0.1"],"ports":"1"}"#;
    let r = call(&app, "POST", "/v1/sweeps", Some(body), None).await;
    assert_eq!(r.error(401).0, "unauthorized");
    let r = call(&app, "POST", "/v1/sweeps", Some(body), Some("wrong")).await;
    assert_eq!(r.error(401).0, "unauthorized");
    let r = call(&app, "DELETE", "/v1/sweeps/1", None, None).await;
    r.error(401);
    // The token is checked before the body is even read.
    let r = call(&app, "POST", "/v1/sweeps", Some("{bad"), None).await;
    r.error(401);
    assert_eq!(server.shared.store.sweep_summaries(10, 0).unwrap().len(), 0);
    // Reading needs the token too (see `reads_need_the_token_once_one_is_set`).
    let r = call(&app, "GET", "/v1/sweeps", None, None).await;
    r.error(401);
    let r = call(&app, "POST", "/v1/sweeps", Some(body), Some("s3cret")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sweeps_and_cancel() {
    let (server, _dir, app) = setup("api-limits", |c| {
        c.limits.max_concurrent_sweeps = 1;
        c.limits.max_body_bytes = 200;
    });
    // Slow: 1,000 probes at 20 per second.
    let slow = r#"{"targets":["127.0.0.1"],"ports":"61000-61999","rate":20}"#;
    let r = call(&app, "POST", "/v1/sweeps", Some(slow), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["id"].as_u64().unwrap();
    let r = call(&app, "POST", "/v1/sweeps", Some(slow), None).await;
    assert_eq!(r.error(429).0, "too_many_sweeps");
    let big =
        json!({"targets": ["127.0.0.1"], "ports": "1", "exclude": ["x".repeat(300)]}).to_string();
    let r = call(&app, "POST", "/v1/sweeps", Some(&big), None).await;
    assert_eq!(r.error(413).0, "too_large");
    assert_eq!(server.shared.store.sweep_summaries(10, 0).unwrap().len(), 1);

    let r = call(&app, "GET", &format!("/v1/sweeps/{id}"), None, None).await;
    assert_eq!(r.json()["state"], "running");
    let r = call(&app, "DELETE", &format!("/v1/sweeps/{id}"), None, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let v = wait_ended(&app, id).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["done"].as_u64().unwrap() < 1000, "{v}");
    // The slot is free again.
    let r = call(
        &app,
        "POST",
        "/v1/sweeps",
        Some(r#"{"targets":["127.0.0.1"],"ports":"1"}"#),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_while_the_sweep_runs() {
    let (server, _dir, app) = setup("api-stream", |_| {});
    // 300 probes at 100 per second, every one stored: the stream has to follow for ~3 s.
    let body = r#"{"targets":["127.0.0.1"],"ports":"61000-61299","rate":100,"store":"all"}"#;
    let r = call(&app, "POST", "/v1/sweeps", Some(body), None).await;
    let id = r.json()["id"].as_u64().unwrap();
    let started = Instant::now();
    let r = call(&app, "GET", &format!("/v1/sweeps/{id}/results"), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the stream did not follow the sweep"
    );
    let mut ports: Vec<u64> = r
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, (61000..61300).collect::<Vec<u64>>());
    let v = wait_ended(&app, id).await;
    assert_eq!(v["state"], "done");
    assert_eq!(v["done"], 300);
    server.shutdown();
}

#[test]
fn shutdown_marks_running_sweeps_interrupted() {
    let dir = TempDir::new("api-shutdown");
    let id = {
        let (server, _d) = {
            let mut config = ServerConfig {
                data_dir: dir.path().to_path_buf(),
                ..ServerConfig::default()
            };
            config.engine.shards = 1;
            config.engine.inflight = 8;
            config.engine.backend = porthawk_engine::BackendChoice::Epoll;
            (Server::start(config).unwrap(), ())
        };
        let request = crate::extract::parse_json::<SweepRequest>(
            br#"{"targets":["127.0.0.1"],"ports":"61000-61999","rate":10}"#,
        )
        .unwrap();
        let plan = sweep::plan(request, &crate::default_allow(), &Default::default(), 1).unwrap();
        let id = server.shared.create(plan).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server.shutdown();
        id
    };
    let (store, _) = crate::store::Store::open(dir.path()).unwrap();
    let row: crate::store::SweepRow = store.sweep(id).unwrap().unwrap();
    assert_eq!(row.state, SweepState::Interrupted);
    assert!(row.done < 1000);
}

/// A request with the given headers (and nothing else added): what a browser or an attacker
/// would send.
async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (Reply, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply = Reply {
        status,
        content_type,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    };
    (reply, headers)
}

const SWEEP: &str = r#"{"targets":["127.0.0.1"],"ports":"1"}"#;

#[tokio::test]
async fn cross_site_sweep_with_a_simple_content_type_is_refused_and_nothing_created() {
    let (server, _dir, app) = setup("guard-ctype", |_| {});
    // The content types a page of another site may send without asking (no preflight), and
    // a body with no content type at all (a `fetch` of a Blob).
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let len = SWEEP.len().to_string();
        let mut h = vec![("content-length", len.as_str())];
        h.extend(ct.map(|c| ("content-type", c)));
        let (r, _) = call_with(&app, "POST", "/v1/sweeps", &h, Some(SWEEP)).await;
        let (code, field) = r.error(415);
        assert_eq!(code, "unsupported_media_type", "{ct:?}");
        assert_eq!(field.as_deref(), Some("Content-Type"));
    }
    assert_eq!(server.shared.store.sweep_summaries(10, 0).unwrap().len(), 0);
    // A route without a body refuses a non-JSON type too.
    let (r, _) = call_with(
        &app,
        "POST",
        "/v1/config/reload",
        &[("content-type", "text/plain")],
        None,
    )
    .await;
    r.error(415);
    // The legitimate client still works, with parameters on the type too.
    let h = [("content-type", "application/json; charset=utf-8")];
    let (r, _) = call_with(&app, "POST", "/v1/sweeps", &h, Some(SWEEP)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["id"].as_u64().unwrap();
    // DELETE and a body-less POST need no content type.
    let (r, _) = call_with(&app, "DELETE", &format!("/v1/sweeps/{id}"), &[], None).await;
    assert!(
        r.status == StatusCode::ACCEPTED || r.status == StatusCode::CONFLICT,
        "{}",
        r.text
    );
    let h = [("content-length", "0")];
    let (r, _) = call_with(&app, "POST", "/v1/monitors/none/check", &h, None).await;
    assert_eq!(r.error(404).0, "not_found");
    server.shutdown();
}

#[tokio::test]
async fn foreign_origin_is_refused() {
    let (server, _dir, app) = setup("guard-origin", |_| {});
    let json = ("content-type", "application/json");
    for origin in [
        "http://attacker.example",
        "http://attacker.example:9180",
        "https://127.0.0.1.attacker.example",
        "null",
    ] {
        let h = [json, ("origin", origin)];
        let (r, _) = call_with(&app, "POST", "/v1/sweeps", &h, Some(SWEEP)).await;
        let (code, field) = r.error(403);
        assert_eq!(code, "foreign_origin", "{origin}");
        assert_eq!(field.as_deref(), Some("Origin"));
        let (r, _) = call_with(&app, "GET", "/v1/sweeps", &[("origin", origin)], None).await;
        r.error(403);
    }
    assert_eq!(server.shared.store.sweep_summaries(10, 0).unwrap().len(), 0);
    // The server's own page (the listen address is 127.0.0.1:9180 in these tests).
    for origin in ["http://127.0.0.1:9180", "http://localhost:9180"] {
        let h = [json, ("origin", origin)];
        let (r, _) = call_with(&app, "POST", "/v1/sweeps", &h, Some(SWEEP)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{origin}: {}", r.text);
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_host_cannot_read_results() {
    let (server, _dir, app) = setup("guard-host", |c| {
        c.http.hosts = vec!["porthawk.lan".into()];
    });
    let r = call(&app, "POST", "/v1/sweeps", Some(SWEEP), None).await;
    let id = r.json()["id"].as_u64().unwrap();
    wait_ended(&app, id).await;
    let results = format!("/v1/sweeps/{id}/results?follow=false");
    for host in [
        "attacker.example",
        "attacker.example:9180",
        "127.0.0.1:1",
        "localhost",
    ] {
        for uri in [results.as_str(), "/v1/sweeps", "/"] {
            let (r, _) = call_with(&app, "GET", uri, &[("host", host)], None).await;
            let (code, field) = r.error(421);
            assert_eq!(code, "misdirected_request", "{host} {uri}");
            assert_eq!(field.as_deref(), Some("Host"));
        }
    }
    for host in [
        "127.0.0.1:9180",
        "localhost:9180",
        "[::1]:9180",
        "porthawk.lan",
        "PortHawk.LAN:8443",
    ] {
        let (r, _) = call_with(&app, "GET", &results, &[("host", host)], None).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text);
    }
    server.shutdown();
}

fn one_monitor(c: &mut ServerConfig) {
    let text = "[[monitor]]\nname = \"web\"\ntargets = [\"127.0.0.1\"]\nports = \"1\"\n";
    c.watch = Arc::new(crate::monitor::config::parse("t.toml", text).unwrap());
}

#[tokio::test]
async fn reads_need_the_token_once_one_is_set() {
    let (server, _dir, app) = setup("guard-reads", |c| {
        c.token = Some("s3cret".into());
        one_monitor(c);
    });
    let reads = [
        "/v1/sweeps",
        "/v1/sweeps/1",
        "/v1/sweeps/1/results",
        "/v1/monitors",
        "/v1/monitors/web",
        "/v1/openapi.json",
        "/",
        "/no/such/route",
    ];
    for uri in reads {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.error(401).0, "unauthorized", "{uri}");
        let r = call(&app, "GET", uri, None, Some("wrong")).await;
        r.error(401);
    }
    for (uri, want) in [
        ("/v1/sweeps", 200),
        ("/v1/monitors", 200),
        ("/v1/monitors/web", 200),
        ("/v1/sweeps/1", 404),
        ("/", 200),
    ] {
        let r = call(&app, "GET", uri, None, Some("s3cret")).await;
        assert_eq!(r.status.as_u16(), want, "{uri}: {}", r.text);
    }
    // Open by default.
    for uri in ["/healthz", "/metrics"] {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
    server.shutdown();
}

#[tokio::test]
async fn public_routes_are_configured() {
    let (server, _dir, app) = setup("guard-public", |c| {
        c.token = Some("s3cret".into());
        c.http.public = vec!["/healthz".into(), "/".into()];
    });
    let r = call(&app, "GET", "/metrics", None, None).await;
    r.error(401);
    for uri in ["/healthz", "/"] {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
    server.shutdown();
}

#[tokio::test]
async fn bearer_scheme_in_any_case_is_accepted() {
    let (server, _dir, app) = setup("guard-bearer", |c| c.token = Some("s3cret".into()));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} s3cret");
        let h = [("authorization", auth.as_str())];
        let (r, _) = call_with(&app, "GET", "/v1/sweeps", &h, None).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.text);
        let h = [h[0], ("content-type", "application/json")];
        let (r, _) = call_with(&app, "POST", "/v1/sweeps", &h, Some(SWEEP)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{scheme}: {}", r.text);
    }
    let (r, _) = call_with(
        &app,
        "GET",
        "/v1/sweeps",
        &[("authorization", "Basic s3cret")],
        None,
    )
    .await;
    r.error(401);
    server.shutdown();
}

/// The number of `porthawk_api_requests_total` series.
async fn request_series(app: &Router) -> usize {
    let r = call(app, "GET", "/metrics", None, None).await;
    r.text
        .lines()
        .filter(|l| l.starts_with("porthawk_api_requests_total{"))
        .count()
}

#[tokio::test]
async fn unknown_methods_and_paths_create_no_metric_series() {
    let (server, _dir, app) = setup("guard-series", |_| {});
    // Every (route, status) pair the loop below reaches, once, and /metrics itself.
    call_with(&app, "BREW", "/x", &[], None).await;
    call_with(&app, "BREW", "/v1/sweeps", &[], None).await;
    request_series(&app).await;
    let before = request_series(&app).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let method = format!("M{seed:X}");
        let path = if i % 2 == 0 {
            format!("/random/{seed:x}/{i}")
        } else {
            "/v1/sweeps".to_string()
        };
        let (r, _) = call_with(&app, &method, &path, &[], None).await;
        assert!(r.status.is_client_error(), "{method} {path}: {}", r.status);
    }
    let after = request_series(&app).await;
    assert_eq!(
        after,
        before,
        "{}",
        call(&app, "GET", "/metrics", None, None).await.text
    );
    let r = call(&app, "GET", "/metrics", None, None).await;
    assert!(r.text.contains("method=\"other\""), "{}", r.text);
    server.shutdown();
}

#[tokio::test]
async fn undecodable_paths_answer_in_the_json_error_shape() {
    let (server, _dir, app) = setup("guard-decode", one_monitor);
    for uri in [
        "/v1/monitors/%FF",
        "/v1/monitors/%C3%28",
        "/v1/sweeps/%FF",
        "/v1/sweeps/%FF/results",
    ] {
        let r = call(&app, "GET", uri, None, None).await;
        assert_eq!(r.content_type, "application/json", "{uri}");
        assert_eq!(r.error(400).1.as_deref(), Some("path"), "{uri}");
    }
    let r = call(&app, "GET", "/v1/monitors/w%65b", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    server.shutdown();
}

#[tokio::test]
async fn every_response_forbids_framing_sniffing_and_foreign_content() {
    let (server, _dir, app) = setup("guard-headers", one_monitor);
    for (uri, status) in [("/?state=all", 200), ("/v1/monitors", 200), ("/nope", 404)] {
        let (r, h) = call_with(&app, "GET", uri, &[], None).await;
        assert_eq!(r.status.as_u16(), status, "{uri}");
        let get = |k: &str| h.get(k).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-frame-options").as_deref(), Some("DENY"), "{uri}");
        assert_eq!(get("x-content-type-options").as_deref(), Some("nosniff"));
        let csp = get("content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "script-src 'none'",
        ] {
            assert!(csp.contains(part), "{uri}: {csp}");
        }
        if uri.starts_with("/?") {
            // The page fits the policy: no script, no external resource, styles inline.
            assert!(
                r.content_type.starts_with("text/html"),
                "{}",
                r.content_type
            );
            assert!(r.text.contains("porthawk status"), "{}", r.text);
            let lower = r.text.to_ascii_lowercase();
            for banned in ["<script", " on", "src=", "<link", "<iframe", "style=\""] {
                let hit = if banned == " on" {
                    lower.contains(" onclick=") || lower.contains(" onload=")
                } else {
                    lower.contains(banned)
                };
                assert!(!hit, "the page has {banned}: {}", r.text);
            }
            assert!(lower.contains("<style>"), "{}", r.text);
        }
    }
    server.shutdown();
}

#[tokio::test]
async fn openapi_lists_the_guard_answers() {
    let (server, _dir, app) = setup("guard-openapi", |_| {});
    let doc = call(&app, "GET", "/v1/openapi.json", None, None)
        .await
        .json();
    let post = &doc["paths"]["/v1/sweeps"]["post"]["responses"];
    for code in ["400", "401", "403", "408", "413", "415", "421"] {
        assert!(
            post[code].is_object(),
            "POST /v1/sweeps lacks {code}: {post}"
        );
    }
    let get = &doc["paths"]["/v1/monitors/{name}"]["get"]["responses"];
    for code in ["401", "403", "421"] {
        assert!(
            get[code].is_object(),
            "GET /v1/monitors/{{name}} lacks {code}: {get}"
        );
    }
    assert!(get["415"].is_null(), "{get}");
    // The allow-list's own 403 keeps its description.
    assert!(
        post["403"]["description"]
            .as_str()
            .unwrap()
            .contains("allow-list"),
        "{post}"
    );
    server.shutdown();
}

/// When history writes fail (the database file deleted under the server: the store refuses
/// writes into the orphaned file), monitors go on judging with their verdicts in memory, and
/// both the monitor's detail and `/healthz` (503) say that history is not being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_keep_verdicts_in_memory_when_history_is_not_written() {
    // A port nothing listens on: every check fails, and each failed check is history.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, _dir, app) = setup("history-off", |c| {
        let text = format!(
            "[[monitor]]\nname = \"m\"\ntargets = [\"127.0.0.1\"]\nports = \"{port}\"\n\
             interval = \"100ms\"\ntimeout = \"100ms\"\nfail_after = 1\nrecover_after = 1\n"
        );
        c.watch = Arc::new(crate::monitor::config::parse("t.toml", &text).unwrap());
    });
    let r = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["monitor_history"], "written");
    std::fs::remove_file(server.shared.store.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let detail = loop {
        let r = call(&app, "GET", "/v1/monitors/m", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let v = r.json();
        // Judged while history fails: the target goes DOWN all the same, in memory.
        let not_written = v["history"]
            .as_str()
            .is_some_and(|h| h.starts_with("not written: "));
        if not_written && v["target_list"][0]["state"] == "down" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "history still written, or no verdict: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        detail["history"].as_str().unwrap().contains("deleted"),
        "{detail}"
    );
    let r = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "unhealthy", "{v}");
    assert!(
        v["monitor_history"]
            .as_str()
            .is_some_and(|h| h.starts_with("not written: ")),
        "{v}"
    );
    assert!(
        v["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("database deleted")),
        "{v}"
    );
    server.shutdown();
}

/// A valid value for each request field the OpenAPI document lists, by field path. A field
/// added to a request type without a sample here fails the test that walks the document.
fn sample(path: &str) -> Value {
    match path {
        "targets" => json!(["127.0.0.1"]),
        "ports" => json!("1"),
        "exclude" => json!(["127.0.0.2", ":2"]),
        "rate" => json!(1000),
        "store" => json!("all"),
        "probe.send" => json!("PING\\r\\n"),
        "probe.expect" => json!("^\\+PONG"),
        "probe.preset" => json!("identify"),
        "probe.tls" => json!(true),
        "probe.timeout_ms" => json!(200),
        "probe.tries" => json!(1),
        "ip_family" => json!("ipv4"),
        "prefer_family" => json!("ipv6"),
        "probe.steps" => json!([{"expect": "^\\+OK"}, {"send": "PING\\r\\n"}]),
        "probe.quit" => json!("QUIT\\r\\n"),
        "probe.expect_all" => json!(true),
        "probe.max_reply" => json!(8192),
        "probe.jail" => json!(true),
        "probe.tls_verify" => json!(true),
        "probe.tls_ca_file" | "probe.tls_cert" => json!(pem_file("cert.pem", TEST_CERT)),
        "probe.tls_key" => json!(pem_file("key.pem", TEST_KEY)),
        "probe.sni" => json!("localhost"),
        "probe.expect_alert" => json!("certificate_required"),
        "probe.max_probes" => json!(2),
        "for" => json!("1m"),
        "monitor" => json!("web"),
        "from" => json!("lab"),
        other => panic!("no sample for request field '{other}': add one"),
    }
}

/// The fields a field needs beside it to be valid (the TLS checks need a TLS dialog, a CA
/// file needs verification, a client certificate its key).
fn companions(path: &str) -> Vec<&'static str> {
    match path {
        "probe.tls_verify" | "probe.sni" => vec!["probe.tls"],
        "probe.tls_ca_file" => vec!["probe.tls", "probe.tls_verify"],
        "probe.tls_cert" => vec!["probe.tls", "probe.tls_key"],
        "probe.tls_key" => vec!["probe.tls", "probe.tls_cert"],
        "probe.max_probes" => vec!["probe.preset"],
        _ => Vec::new(),
    }
}

/// A self-signed P-256 certificate for `localhost` and its key (those of core's dialog
/// tests), for the PEM file fields.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUN4JlOtnl2R/CDFl0S0a1Fs1gU6MwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEzMDE2NDMxNloYDzIxMjYxMTA2
MTY0MzE2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATFxMVjXMdHhrttgvjsDvPI9pBApu4wZMGzVLireoxjJwTsxBF+yArB
bdDpUt3GMEQGF/rShdWsRWGq3SKYGreOo28wbTAdBgNVHQ4EFgQUrs1p6/0FN17f
pXkiuHA3vgVnhkQwHwYDVR0jBBgwFoAUrs1p6/0FN17fpXkiuHA3vgVnhkQwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSQAwRgIhAO+AIJwcPddT8Rg2VZLwfXy+NMsDETNcTUbLutsawbzwAiEA
m1C2WyOrMQCSAb2QZa5fMF4SMikfpD+9pexqTnpUs5I=
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgekWwah0os9K7ZWhj
78jF9Cn/MTKq1rDKz3AOVcpgluqhRANCAATFxMVjXMdHhrttgvjsDvPI9pBApu4w
ZMGzVLireoxjJwTsxBF+yArBbdDpUt3GMEQGF/rShdWsRWGq3SKYGreO
-----END PRIVATE KEY-----
";

/// Where [`pem_file`] puts `name`: under the temporary directory, this test process's own.
fn pem_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("porthawk-api-fields-{}-{name}", std::process::id()))
}

/// `text` in the file [`pem_path`] names; its path. [`PemFiles`] removes them.
fn pem_file(name: &str, text: &str) -> String {
    let path = pem_path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Removes the files [`pem_file`] wrote when the test ends, passed or not.
struct PemFiles;

impl Drop for PemFiles {
    fn drop(&mut self) {
        for name in ["cert.pem", "key.pem"] {
            let _ = std::fs::remove_file(pem_path(name));
        }
    }
}

/// The schema `schema` points at, through `$ref` and the `oneOf`/`anyOf` of an optional one.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return resolve(doc, &doc["components"]["schemas"][name]);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(variants) = schema[key].as_array() {
            if let Some(v) = variants.iter().find(|v| v["$ref"].is_string()) {
                return resolve(doc, v);
            }
        }
    }
    schema
}

/// Every leaf field path of an object schema (`probe.tls`), with whether it is required at
/// each level.
fn leaf_fields(doc: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, prop) in props {
        let path = format!("{prefix}{name}");
        let inner = resolve(doc, prop);
        if inner["properties"].is_object() {
            leaf_fields(doc, inner, &format!("{path}."), out);
        } else {
            out.push(path);
        }
    }
}

/// The required top-level fields of a schema, filled with their samples.
fn required_body(doc: &Value, schema: &Value) -> serde_json::Map<String, Value> {
    let schema = resolve(doc, schema);
    let mut body = serde_json::Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        body.insert(name.to_string(), sample(name));
    }
    body
}

fn set_path(body: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((head, rest)) => {
            let inner = body.entry(head).or_insert_with(|| json!({}));
            set_path(inner.as_object_mut().unwrap(), rest, value);
        }
        None => {
            body.insert(path.to_string(), value);
        }
    }
}

fn monitor_and_action(c: &mut ServerConfig) {
    let text = "[[monitor]]\nname = \"web\"\ntargets = [\"127.0.0.1\"]\nports = \"1\"\n\
                [action.noop]\nexec = [\"true\"]\n";
    c.watch = Arc::new(crate::monitor::config::parse("t.toml", text).unwrap());
    c.token = Some("s3cret".into());
    c.limits.max_concurrent_sweeps = 64;
}

/// Every field of every request body in the OpenAPI document is accepted, one request per
/// field (issue 10: `probe.tls` was documented and refused). The fields come from the
/// generated document, so the test follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_request_field_is_accepted() {
    let (server, _dir, app) = setup("api-fields", monitor_and_action);
    let _pems = PemFiles;
    let doc: Value = serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
    let mut posted = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema")
            else {
                continue;
            };
            let uri = match path.as_str() {
                "/v1/sweeps" => "/v1/sweeps",
                "/v1/monitors/{name}/silence" => "/v1/monitors/web/silence",
                "/v1/actions/{name}" => "/v1/actions/noop",
                other => panic!("a request body on {other}: add its path parameters here"),
            };
            let mut fields = Vec::new();
            leaf_fields(&doc, schema, "", &mut fields);
            assert!(!fields.is_empty(), "{path}: no fields found in {schema}");
            for field in fields {
                let mut body = required_body(&doc, schema);
                for companion in companions(&field) {
                    set_path(&mut body, companion, sample(companion));
                }
                set_path(&mut body, &field, sample(&field));
                let body = Value::Object(body).to_string();
                let r = call(
                    &app,
                    &method.to_uppercase(),
                    uri,
                    Some(&body),
                    Some("s3cret"),
                )
                .await;
                if field == "from" {
                    // Accepted as a field; this server has no [fleet] to run it on, which
                    // the 400 says about `from` itself (tests/fleet.rs runs fleet sweeps).
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
                    assert_eq!(r.json()["error"]["field"], "from", "{}", r.text);
                    assert!(r.text.contains("no fleet"), "{}", r.text);
                    posted.push(format!("{path} {field}"));
                    continue;
                }
                assert!(
                    r.status.is_success(),
                    "{method} {uri} {body}: {} {}",
                    r.status,
                    r.text
                );
                posted.push(format!("{path} {field}"));
            }
        }
    }
    // The issue's example, and the fields that exist today, were among them.
    for must in [
        "/v1/sweeps probe.tls",
        "/v1/sweeps probe.preset",
        "/v1/sweeps store",
        "/v1/monitors/{name}/silence for",
        "/v1/actions/{name} monitor",
    ] {
        assert!(
            posted.iter().any(|p| p == must),
            "{must} not posted: {posted:?}"
        );
    }
    let r = call(
        &app,
        "POST",
        "/v1/sweeps",
        Some(r#"{"targets":["127.0.0.1"],"ports":"443","probe":{"tls":true}}"#),
        Some("s3cret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    server.shutdown();
}

/// Unknown fields at any level and wrong types are refused with the field path, in the
/// error shape; nothing is created.
#[tokio::test]
async fn unknown_fields_and_wrong_types_name_the_path() {
    let (server, _dir, app) = setup("api-paths", monitor_and_action);
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1"],"ports":"1","colour":"red"}"#,
            "colour",
            "unknown field `colour`",
        ),
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1"],"ports":"1","probe":{"tls":true,"bogus":1}}"#,
            "probe.bogus",
            "unknown field `bogus`",
        ),
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1"],"ports":"1","probe":{"timeout_ms":"x"}}"#,
            "probe.timeout_ms",
            r#"probe.timeout_ms: invalid type: string "x", expected u64"#,
        ),
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1",7],"ports":"1"}"#,
            "targets[1]",
            "invalid type: integer `7`, expected a string",
        ),
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1"],"ports":"1","store":"some"}"#,
            "store",
            "unknown variant `some`",
        ),
        (
            "/v1/sweeps",
            r#"{"targets":["127.0.0.1"]}"#,
            "ports",
            "missing field `ports`",
        ),
        (
            "/v1/monitors/web/silence",
            r#"{"for":"1m","until":"never"}"#,
            "until",
            "unknown field `until`",
        ),
        (
            "/v1/actions/noop",
            r#"{"monitor":["web"]}"#,
            "monitor",
            "invalid type: sequence",
        ),
    ];
    for (uri, body, field, message) in cases {
        let r = call(&app, "POST", uri, Some(body), Some("s3cret")).await;
        let (code, f) = r.error(400);
        assert_eq!(code, "bad_request", "{body}");
        assert_eq!(f.as_deref(), Some(*field), "{body}: {}", r.text);
        let got = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(got.contains(message), "{body}: {got}");
        assert!(got.starts_with(&format!("{field}: ")), "{body}: {got}");
    }
    assert!(server
        .shared
        .store
        .sweep_summaries(10, 0)
        .unwrap()
        .is_empty());
    server.shutdown();
}

/// Lists over core's caps are refused naming the field, before any of them is parsed
/// (issue 14 item 1).
#[tokio::test]
async fn lists_over_the_caps_name_the_field() {
    let (server, _dir, app) = setup("api-caps", |c| c.limits.max_body_bytes = 16 << 20);
    let ports = vec!["-"; porthawk_core::MAX_PORT_ELEMENTS + 1].join(",");
    let body = json!({"targets": ["127.0.0.1"], "ports": ports}).to_string();
    let r = call(&app, "POST", "/v1/sweeps", Some(&body), None).await;
    assert_eq!(r.error(400).1.as_deref(), Some("ports"), "{}", r.text);
    let many = vec!["127.0.0.1"; porthawk_core::MAX_TARGETS + 1];
    for field in ["targets", "exclude"] {
        let mut body = json!({"targets": ["127.0.0.1"], "ports": "1"});
        body[field] = json!(many);
        let r = call(&app, "POST", "/v1/sweeps", Some(&body.to_string()), None).await;
        assert_eq!(r.error(400).1.as_deref(), Some(field), "{}", r.text);
    }
    server.shutdown();
}

/// At the concurrency limit, a request is refused with 429 before it is planned: this one
/// would be refused with 403 (a target outside the allow-list) if it were planned, and it is
/// 10,000 targets with 10,000 exclusions (issue 14 item 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_concurrency_limit_a_huge_request_is_refused_before_planning() {
    let (server, _dir, app) = setup("api-429-first", |c| {
        c.limits.max_concurrent_sweeps = 1;
        c.limits.max_body_bytes = 4 << 20;
    });
    let slow = r#"{"targets":["127.0.0.1"],"ports":"61000-61999","rate":20}"#;
    let r = call(&app, "POST", "/v1/sweeps", Some(slow), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["id"].as_u64().unwrap();
    let mut targets: Vec<String> = (0..10_000u32)
        .map(|i| format!("127.{}.{}.1", i / 256, i % 256))
        .collect();
    targets[9_999] = "10.0.0.1".into();
    let exclude: Vec<String> = (0..10_000u32)
        .map(|i| format!("127.{}.{}.2", i / 256, i % 256))
        .collect();
    let huge = json!({"targets": targets, "exclude": exclude, "ports": "1-65535"}).to_string();
    let r = call(&app, "POST", "/v1/sweeps", Some(&huge), None).await;
    assert_eq!(r.error(429).0, "too_many_sweeps", "{}", r.text);
    // Once the slot is free, the same request is planned, and refused for its target.
    let r = call(&app, "DELETE", &format!("/v1/sweeps/{id}"), None, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_ended(&app, id).await;
    let r = call(&app, "POST", "/v1/sweeps", Some(&huge), None).await;
    assert_eq!(
        r.error(403).1.as_deref(),
        Some("targets[9999]"),
        "{}",
        r.text
    );
    server.shutdown();
}

/// The OpenAPI document knows the `failed` state with its reason, the store's state in
/// `/healthz` and its 503, and the 503 of a sweep the store cannot take.
#[test]
fn openapi_describes_failed_sweeps_and_store_health() {
    let doc: Value = serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let states = schemas["SweepState"]["enum"].as_array().unwrap();
    assert!(states.contains(&json!("failed")), "{states:?}");
    assert!(schemas["SweepStatus"]["properties"]["reason"].is_object());
    for field in ["status", "store", "monitor_history"] {
        assert!(
            schemas["Health"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["503"].is_object());
    assert!(doc["paths"]["/v1/sweeps"]["post"]["responses"]["503"].is_object());
}

/// The results route's documented schema is `ResultLine`'s, field for field.
#[test]
fn openapi_results_schema_is_the_result_line() {
    let doc: Value = serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
    let schema = &doc["components"]["schemas"]["ResultLine"];
    let fields: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = ResultLine::field_names();
    want.sort_unstable();
    let mut got = fields.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    let ok = &doc["paths"]["/v1/sweeps/{id}/results"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        ok["application/x-ndjson"]["schema"]["$ref"],
        "#/components/schemas/ResultLine"
    );
    assert!(ok["text/csv"].is_object(), "{ok}");
}
