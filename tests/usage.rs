//! Bad input: exit code 2 and one line on stderr that names the bad argument.

use std::process::Command;

use crate::util::{run, run_command, stderr, stdout, test_hosts, TempDir, BIN, RUN_TIMEOUT};

/// Runs `porthawk args` and checks the usage-error contract: exit 2, exactly one stderr line,
/// containing every one of `needles` (case-insensitive). Returns that line.
fn assert_usage_error(args: &[&str], needles: &[&str]) -> String {
    let out = run(args);
    let err = stderr(&out);
    let shown = format!("porthawk {}", args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{shown}: exit code; stderr:\n{err}"
    );
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{shown}: want one stderr line, got:\n{err}");
    for needle in needles {
        assert!(
            lines[0].to_lowercase().contains(&needle.to_lowercase()),
            "{shown}: stderr does not name {needle:?}: {err}"
        );
    }
    lines[0].to_string()
}

/// Whether `text` contains `word` with no digit right before or after it.
fn contains_number(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn cidr_prefix_over_32_is_a_usage_error() {
    assert_usage_error(&["scan", "127.0.0.0/33", "-p", "80"], &["127.0.0.0/33"]);
}

#[test]
fn reversed_address_range_is_a_usage_error() {
    assert_usage_error(
        &["scan", "127.0.0.20-127.0.0.1", "-p", "80"],
        &["127.0.0.20-127.0.0.1"],
    );
}

#[test]
fn port_zero_is_a_usage_error() {
    let line = assert_usage_error(&["scan", "127.0.0.1", "-p", "80,0"], &["port"]);
    assert!(
        contains_number(&line, "0"),
        "message does not name port 0: {line}"
    );
}

#[test]
fn port_65536_is_a_usage_error() {
    let line = assert_usage_error(&["scan", "127.0.0.1", "-p", "65536"], &[]);
    assert!(
        contains_number(&line, "65536"),
        "message does not name 65536: {line}"
    );
}

#[test]
fn reversed_port_range_is_a_usage_error() {
    assert_usage_error(&["scan", "127.0.0.1", "-p", "90-80"], &["90-80"]);
}

#[test]
fn empty_port_list_is_a_usage_error() {
    assert_usage_error(&["scan", "127.0.0.1", "-p", ","], &["port"]);
}

#[test]
fn unknown_format_is_a_usage_error() {
    assert_usage_error(
        &["scan", "127.0.0.1", "-p", "80", "--format", "yaml"],
        &["yaml"],
    );
}

#[test]
fn unresolvable_host_is_a_usage_error() {
    assert_usage_error(
        &["scan", "no-such-host.invalid", "-p", "80"],
        &["no-such-host.invalid"],
    );
}

#[test]
fn bad_duration_is_a_usage_error() {
    assert_usage_error(
        &["scan", "127.0.0.1", "-p", "80", "--timeout", "soon"],
        &["soon"],
    );
}

#[test]
fn missing_target_file_is_a_usage_error() {
    let dir = TempDir::new("missing_target_file");
    let path = dir.path().join("no-such-targets.txt");
    let arg = format!("@{}", path.display());
    assert_usage_error(&["scan", &arg, "-p", "80"], &[&path.to_string_lossy()]);
}

#[test]
fn bad_line_in_target_file_is_a_usage_error_naming_file_and_line() {
    let dir = TempDir::new("bad_target_file");
    let path = dir.write(
        "targets.txt",
        "127.0.0.1\n# a comment\n127.0.0.0/33\n127.0.0.2\n",
    );
    let arg = format!("@{}", path.display());
    assert_usage_error(
        &["scan", &arg, "-p", "80"],
        &[&path.to_string_lossy(), "line 3"],
    );
}

#[test]
fn help_exits_zero() {
    for args in [&["--help"][..], &["scan", "--help"][..]] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "porthawk {}: stderr:\n{}",
            args.join(" "),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(text.contains("scan"), "help does not mention scan:\n{text}");
    }
    let text = stdout(&run(&["scan", "--help"]));
    for flag in ["--ports", "--exclude", "--timeout", "--format", "--backend"] {
        assert!(
            text.contains(flag),
            "scan --help does not list {flag}:\n{text}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    assert_usage_error(
        &["--log-format", "yaml", "scan", "127.0.0.1", "-p", "80"],
        &["--log-format", "yaml"],
    );
}

#[test]
fn log_format_json_writes_json_events_filtered_by_rust_log() {
    let ip = test_hosts("log_format_json", 1)[0].to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["scan", &ip, "-p", "9", "--log-format", "json"])
        .env("RUST_LOG", "porthawk=debug");
    let out = run_command(cmd, None, RUN_TIMEOUT);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let event = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "porthawk starting")
        .unwrap_or_else(|| panic!("no JSON start event on stderr:\n{err}"));
    assert_eq!(event["level"], "DEBUG", "{event}");
    assert_eq!(
        event["fields"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{event}"
    );
    // The user-facing summary stays a plain line.
    assert!(err.lines().any(|l| l.starts_with("porthawk: ")), "{err}");
    // Without RUST_LOG, debug events are filtered out.
    let mut cmd = Command::new(BIN);
    cmd.args(["scan", &ip, "-p", "9", "--log-format", "json"])
        .env_remove("RUST_LOG");
    let plain = run_command(cmd, None, RUN_TIMEOUT);
    assert!(
        !stderr(&plain).contains("porthawk starting"),
        "{}",
        stderr(&plain)
    );
}
