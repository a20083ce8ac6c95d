//! `porthawk bench`: a short run must produce a complete, sane report (not a fast one).

use std::time::Duration;

use serde_json::Value;

use crate::util::run_for;

#[test]
fn bench_smoke_run_reports_sane_numbers() {
    let out = run_for(
        &[
            "bench",
            "--scenario",
            "closed",
            "--duration",
            "2s",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "bench failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8 report");
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let num = |v: &Value, what: &str| {
        v.as_f64()
            .unwrap_or_else(|| panic!("{what} is not a number in {text}"))
    };
    assert!(num(&json["floor"]["probes_per_s"], "floor probes_per_s") > 0.0);
    let closed = json["scenarios"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["name"] == "closed"))
        .unwrap_or_else(|| panic!("no closed scenario in {text}"));
    let rate = num(&closed["probes_per_s"], "probes_per_s");
    let ratio = num(&closed["floor_ratio"], "floor_ratio");
    let cpu = num(&closed["cpu_us_per_probe"], "cpu_us_per_probe");
    let p99 = num(&closed["latency_us"]["p99"], "p99");
    let rss = num(&closed["peak_rss_kib"], "peak_rss_kib");
    assert!(rate > 0.0, "probes/s {rate}");
    assert!(ratio > 0.0 && ratio < 2.0, "floor ratio {ratio}");
    assert!(cpu > 0.0, "cpu per probe {cpu}");
    assert!(p99 > 0.0, "p99 {p99}");
    assert!(rss > 0.0, "peak rss {rss}");
    assert_eq!(closed["accuracy"]["wrong"], 0, "wrong verdicts: {text}");
    assert_eq!(closed["accuracy"]["missing"], 0, "missing results: {text}");
    assert!(json["capacity"].is_object(), "no capacity line: {text}");
}

#[test]
fn bench_rejects_an_unknown_scenario() {
    let out = run_for(&["bench", "--scenario", "warp"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("warp"), "{err}");
}
