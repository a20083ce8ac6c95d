//! `porthawk bench`: a short run must produce a complete, sane report (not a fast one).

use std::time::Duration;

use crate::util::run_for;

/// The number after `"key":` in `json`, searching from `from`.
fn number_after(json: &str, from: usize, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    let at = json[from..]
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + from
        + needle.len();
    let end = json[at..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .map_or(json.len(), |e| at + e);
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

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
    let json = String::from_utf8(out.stdout).expect("utf-8 report");
    let json = json.trim();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    let floor = json.find("\"floor\"").expect("floor section");
    assert!(number_after(json, floor, "probes_per_s") > 0.0);
    let closed = json.find("\"name\":\"closed\"").expect("closed scenario");
    let rate = number_after(json, closed, "probes_per_s");
    let ratio = number_after(json, closed, "floor_ratio");
    let cpu = number_after(json, closed, "cpu_us_per_probe");
    let p99 = number_after(json, closed, "p99");
    let rss = number_after(json, closed, "peak_rss_kib");
    assert!(rate > 0.0, "probes/s {rate}");
    assert!(ratio > 0.0 && ratio < 2.0, "floor ratio {ratio}");
    assert!(cpu > 0.0, "cpu per probe {cpu}");
    assert!(p99 > 0.0, "p99 {p99}");
    assert!(rss > 0.0, "peak rss {rss}");
    assert_eq!(
        number_after(json, closed, "wrong"),
        0.0,
        "wrong verdicts: {json}"
    );
    assert_eq!(
        number_after(json, closed, "missing"),
        0.0,
        "missing results: {json}"
    );
    assert!(json.contains("\"capacity\""), "no capacity line: {json}");
}

#[test]
fn bench_rejects_an_unknown_scenario() {
    let out = run_for(&["bench", "--scenario", "warp"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("warp"), "{err}");
}
