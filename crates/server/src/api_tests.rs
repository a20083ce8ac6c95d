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
    assert_eq!(
        lines.next(),
        Some("ip,port,state,rtt_us,tries,host,errno,matched,banner,reason")
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
    assert_eq!(
        server
            .shared
            .store
            .sweeps::<SweepRequest>(10, 0)
            .unwrap()
            .len(),
        0
    );

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
        ("format=xml", "format"),
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
    assert_eq!(
        server
            .shared
            .store
            .sweeps::<SweepRequest>(10, 0)
            .unwrap()
            .len(),
        0
    );
    // Reading needs no token.
    let r = call(&app, "GET", "/v1/sweeps", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
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
    let big = format!(
        r#"{{"targets":["127.0.0.1"],"ports":"1","exclude":["{}"]}}"#,
        "x".repeat(300)
    );
    let r = call(&app, "POST", "/v1/sweeps", Some(&big), None).await;
    assert_eq!(r.error(413).0, "too_large");
    assert_eq!(
        server
            .shared
            .store
            .sweeps::<SweepRequest>(10, 0)
            .unwrap()
            .len(),
        1
    );

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
        let request =
            sweep::parse_request(br#"{"targets":["127.0.0.1"],"ports":"61000-61999","rate":10}"#)
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
