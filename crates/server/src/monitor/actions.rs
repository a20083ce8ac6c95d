//! Running actions: the policy's requests to records. The command itself runs through
//! `porthawk-exec` (argv without a shell, timeout, whole process tree killed, output capped),
//! the same runner the fleet agents use; a remote action (`agent = ...`, `run = ...`) goes
//! to an agent through `remote`.

use porthawk_exec::{ExecReport, ExecSpec};

use super::history::ActionRecord;
use super::watch::{ActionRequest, Verdict};

/// The record of an action the policy did not let run, or of a dry run.
pub fn not_run(req: &ActionRequest) -> Option<ActionRecord> {
    let (outcome, detail) = match &req.verdict {
        Verdict::Run => return None,
        Verdict::DryRun => (
            "dry_run",
            format!("--dry-run: would run {:?}", req.action.kind.argv()),
        ),
        Verdict::Skip(outcome, why) => (*outcome, why.clone()),
    };
    Some(record(req, outcome, Some(detail)))
}

/// A record of `req` with no output, exit code or duration (yet).
pub fn record(req: &ActionRequest, outcome: &str, detail: Option<String>) -> ActionRecord {
    ActionRecord {
        monitor: req.monitor.clone(),
        action: req.action.name.clone(),
        kind: req.action.kind.as_str().to_string(),
        argv: req.action.kind.argv(),
        trigger: req.trigger.as_str().to_string(),
        outcome: outcome.to_string(),
        detail,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        at_ms: req.at_ms,
        duration_ms: 0,
    }
}

/// The record of a run that went through `porthawk-exec`, here or on an agent.
pub fn ran(req: &ActionRequest, report: ExecReport) -> ActionRecord {
    ActionRecord {
        outcome: report.outcome.as_str().to_string(),
        detail: report.detail,
        exit_code: report.exit_code,
        stdout: report.stdout,
        stderr: report.stderr,
        duration_ms: report.duration_ms,
        ..record(req, "", None)
    }
}

/// The environment an action's process gets: `PORTHAWK_ACTION`, `PORTHAWK_MONITOR`,
/// `PORTHAWK_TRIGGER` and `PORTHAWK_TARGETS` (space-separated `ip:port` of the DOWN targets).
fn environment(req: &ActionRequest) -> Vec<(String, String)> {
    let targets = req
        .targets
        .iter()
        .map(|(host, port)| host.with_port(*port))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("PORTHAWK_ACTION".into(), req.action.name.clone()),
        (
            "PORTHAWK_MONITOR".into(),
            req.monitor.clone().unwrap_or_default(),
        ),
        ("PORTHAWK_TRIGGER".into(), req.trigger.as_str().into()),
        ("PORTHAWK_TARGETS".into(), targets),
    ]
}

/// Runs the local action of `req` (whose verdict is `Run`) and records how it went.
pub async fn run(req: &ActionRequest) -> ActionRecord {
    let spec = ExecSpec {
        argv: req.action.kind.argv(),
        timeout: req.action.timeout,
        env: environment(req),
    };
    let report = porthawk_exec::run(&spec).await;
    ran(req, report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::monitor::config::{ActionKind, ActionSpec};
    use crate::monitor::watch::Trigger;

    fn req(argv: &[&str], timeout_ms: u64) -> ActionRequest {
        ActionRequest {
            action: Arc::new(ActionSpec {
                name: "a".into(),
                kind: ActionKind::Exec(argv.iter().map(|s| s.to_string()).collect()),
                timeout: Duration::from_millis(timeout_ms),
                cooldown: Duration::ZERO,
                max_per_hour: 10,
                escalate_after: 1,
            }),
            monitor: Some("m".into()),
            targets: vec![("127.0.0.1".parse().unwrap(), 80)],
            trigger: Trigger::Down,
            verdict: Verdict::Run,
            at_ms: 1,
        }
    }

    #[tokio::test]
    async fn output_exit_code_and_environment_are_recorded() {
        let r = run(&req(
            &[
                "sh",
                "-c",
                "echo out $PORTHAWK_ACTION $PORTHAWK_MONITOR $PORTHAWK_TRIGGER $PORTHAWK_TARGETS; echo err >&2; exit 3",
            ],
            5000,
        ))
        .await;
        assert_eq!(r.outcome, "failed");
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stdout, "out a m down 127.0.0.1:80\n");
        assert_eq!(r.stderr, "err\n");
        assert_eq!(r.kind, "exec");
        let r = run(&req(&["sleep", "30"], 200)).await;
        assert_eq!(r.outcome, "timeout");
    }

    #[test]
    fn skipped_and_dry_runs_are_recorded_without_running() {
        let mut r = req(&["false"], 100);
        assert!(not_run(&r).is_none());
        r.verdict = Verdict::DryRun;
        let rec = not_run(&r).unwrap();
        assert_eq!(rec.outcome, "dry_run");
        assert!(rec.detail.unwrap().contains("false"));
        r.verdict = Verdict::Skip("refused", "no".into());
        assert_eq!(not_run(&r).unwrap().outcome, "refused");
    }
}
