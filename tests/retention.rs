//! `porthawk serve` keeps only the sweeps its retention allows, lists them without their
//! requests, and logs through `tracing` (`--log-format json` makes every log line a JSON
//! object).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{test_hosts, Serve, TempDir, LISTENING};

/// How long the server may take to say where it listens, to log a line, or a sweep to end.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `porthawk [GLOBAL...] serve --config CONFIG` on `data`.
fn serve_with(data: &Path, config: &Path, global: &[&str]) -> Serve {
    let mut cmd = Serve::command(data);
    cmd.args(global).arg("--config").arg(config);
    Serve::spawn(cmd)
}

/// Submits a sweep and waits until it is `done`; its id.
fn sweep_done(serve: &Serve, body: &str) -> u64 {
    let (status, reply) = serve.http_json("POST", "/v1/sweeps", Some(body));
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_u64().expect("id");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, s) = serve.http_json("GET", &format!("/v1/sweeps/{id}"), None);
        assert_eq!(status, 200, "{s}");
        if s["state"] == "done" {
            return id;
        }
        assert!(Instant::now() < deadline, "sweep {id} did not end: {s}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The next stderr line for which `f` holds, within [`TIMEOUT`].
fn wait_for_line(serve: &mut Serve, f: impl Fn(&str) -> bool) -> String {
    serve.wait_for_line(TIMEOUT, f).unwrap_or_else(|| {
        panic!(
            "porthawk serve did not log the line awaited: {:?}",
            serve.seen()
        )
    })
}

/// Issue 14 item 8: with `[api] keep_sweeps = 2`, the older sweeps are pruned (with their
/// results) as newer ones end; a restarted server keeps the two newest, and lists them
/// without requests; the request is still served for one sweep.
#[test]
fn serve_keeps_only_the_newest_sweeps_and_lists_no_requests() {
    let dir = TempDir::new("retention-count");
    let config = dir.write("porthawk.toml", "[api]\nkeep_sweeps = 2\n");
    let data = dir.path().join("data");
    let ip = test_hosts("retention-count", 1)[0];
    // Port 9 on a loopback address nothing listens on: closed, quickly.
    let body =
        serde_json::json!({"targets": [ip.to_string()], "ports": "9", "store": "all"}).to_string();
    let serve = serve_with(&data, &config, &[]);
    let ids: Vec<u64> = (0..4).map(|_| sweep_done(&serve, &body)).collect();
    // A sweep's end wakes the retention: the two oldest go while the server runs.
    let deadline = Instant::now() + TIMEOUT;
    for old in &ids[..2] {
        while serve.http_json("GET", &format!("/v1/sweeps/{old}"), None).0 != 404 {
            assert!(Instant::now() < deadline, "sweep {old} was not pruned");
            thread::sleep(Duration::from_millis(50));
        }
    }
    let lines = serve.stop();
    assert!(
        lines.iter().any(|l| l.contains("pruned old sweeps")),
        "{lines:?}"
    );

    let serve = serve_with(&data, &config, &[]);
    let (status, list) = serve.http_json("GET", "/v1/sweeps?limit=1000", None);
    assert_eq!(status, 200, "{list}");
    let listed: Vec<u64> = list["sweeps"]
        .as_array()
        .expect("sweeps")
        .iter()
        .map(|s| s["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(listed, vec![ids[3], ids[2]], "{list}");
    for s in list["sweeps"].as_array().unwrap() {
        assert!(
            s.get("request").is_none(),
            "a listed sweep carries its request: {s}"
        );
        assert_eq!(s["state"], "done", "{s}");
    }
    let (status, newest) = serve.http_json("GET", &format!("/v1/sweeps/{}", ids[3]), None);
    assert_eq!(status, 200);
    assert_eq!(newest["request"]["ports"], "9", "{newest}");
    for pruned in &ids[..2] {
        let (status, e) = serve.http_json("GET", &format!("/v1/sweeps/{pruned}"), None);
        assert_eq!(status, 404, "sweep {pruned} was kept: {e}");
    }
    let (status, e) = serve.http_json("GET", "/v1/sweeps?limit=1001", None);
    assert_eq!(status, 400, "the page size is capped: {e}");
    serve.stop();
}

/// Issue 10 item 7: with `--log-format json`, every line the server writes to stderr other
/// than the listening line is a JSON object with a level and fields, including the error of
/// a rejected config reload and the warning of a monitor target going down.
#[test]
fn serve_logs_json_objects_with_log_format_json() {
    let dir = TempDir::new("retention-json");
    let ip = test_hosts("retention-json", 1)[0];
    let good = format!(
        "[[monitor]]\nname = \"closed\"\ntargets = [\"{ip}\"]\nports = \"9\"\n\
         interval = \"200ms\"\nfail_after = 1\n"
    );
    let config = dir.write("porthawk.toml", &good);
    let data = dir.path().join("data");
    let mut serve = serve_with(&data, &config, &["--log-format", "json"]);
    // Nothing listens there: the monitor's target goes DOWN, which is logged.
    wait_for_line(&mut serve, |l| l.contains("changed state"));
    // A broken file (another size, so the change is seen whatever the clock) is rejected on
    // reload: an error in the log.
    std::fs::write(
        &config,
        good.replace(
            "interval = \"200ms\"",
            "interval = \"200 parsecs, give or take\"",
        ),
    )
    .unwrap();
    wait_for_line(&mut serve, |l| l.contains("rejected"));
    let lines = serve.stop();

    let mut levels = Vec::new();
    let mut rejected = None;
    for line in lines.iter().filter(|l| !l.starts_with(LISTENING)) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        assert!(v["fields"].is_object(), "no fields: {line}");
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        levels.push(level.to_string());
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rejected"))
        {
            rejected = Some(v);
        }
    }
    let rejected = rejected.expect("the rejected reload is logged");
    assert_eq!(rejected["level"], "ERROR", "{rejected}");
    let error = rejected["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("interval"), "{rejected}");
    for want in ["ERROR", "WARN", "INFO"] {
        assert!(
            levels.iter().any(|l| l == want),
            "no {want} line in {levels:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with(LISTENING)),
        "the listening line stays plain text"
    );
}
