//! Running actions: an argv without a shell, with a timeout after which the process is
//! killed, its output kept (capped), its exit code recorded.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::history::ActionRecord;
use super::watch::{ActionRequest, Verdict};

/// Bytes of standard output and of standard error kept per run.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// Reads everything from `r`, keeping the first [`OUTPUT_LIMIT`] bytes: the process must not
/// block on a full pipe, however much it writes.
async fn drain(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
    Some(record(
        req,
        outcome,
        Some(detail),
        None,
        Vec::new(),
        Vec::new(),
        0,
    ))
}

fn record(
    req: &ActionRequest,
    outcome: &str,
    detail: Option<String>,
    exit_code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    duration_ms: u64,
) -> ActionRecord {
    ActionRecord {
        monitor: req.monitor.clone(),
        action: req.action.name.clone(),
        kind: req.action.kind.as_str().to_string(),
        argv: req.action.kind.argv(),
        trigger: req.trigger.as_str().to_string(),
        outcome: outcome.to_string(),
        detail,
        exit_code,
        stdout: text(&stdout),
        stderr: text(&stderr),
        at_ms: req.at_ms,
        duration_ms,
    }
}

/// Runs the action of `req` (whose verdict is `Run`) and records how it went. The process
/// gets `PORTHAWK_ACTION`, `PORTHAWK_MONITOR`, `PORTHAWK_TRIGGER` and `PORTHAWK_TARGETS`
/// (space-separated `ip:port` of the DOWN targets) in its environment.
pub async fn run(req: &ActionRequest) -> ActionRecord {
    let argv = req.action.kind.argv();
    let started = Instant::now();
    let elapsed = || started.elapsed().as_millis() as u64;
    let Some((program, args)) = argv.split_first() else {
        return record(
            req,
            "error",
            Some("empty argv".into()),
            None,
            vec![],
            vec![],
            0,
        );
    };
    let targets = req
        .targets
        .iter()
        .map(|(ip, port)| match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("PORTHAWK_ACTION", &req.action.name)
        .env("PORTHAWK_MONITOR", req.monitor.as_deref().unwrap_or(""))
        .env("PORTHAWK_TRIGGER", req.trigger.as_str())
        .env("PORTHAWK_TARGETS", targets)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return record(
                req,
                "error",
                Some(format!("cannot start '{program}': {e}")),
                None,
                vec![],
                vec![],
                elapsed(),
            )
        }
    };
    let out = child.stdout.take();
    let err = child.stderr.take();
    let out = tokio::spawn(async move {
        match out {
            Some(o) => drain(o).await,
            None => Vec::new(),
        }
    });
    let err = tokio::spawn(async move {
        match err {
            Some(e) => drain(e).await,
            None => Vec::new(),
        }
    });
    let timeout = req.action.timeout;
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let (outcome, detail, code) = match status {
        Ok(Ok(s)) => match s.code() {
            Some(0) => ("ok", None, Some(0)),
            Some(c) => ("failed", None, Some(c)),
            None => ("failed", Some(format!("ended by {s}")), None),
        },
        Ok(Err(e)) => ("error", Some(format!("cannot wait for it: {e}")), None),
        Err(_) => {
            if let Some(pid) = child.id() {
                kill_group(pid).await;
            }
            let _ = child.kill().await;
            (
                "timeout",
                Some(format!("killed after the timeout of {timeout:?}")),
                None,
            )
        }
    };
    // The pipes close when the process ends; a grandchild that inherited them could keep
    // them open, so the readers get a moment, not forever.
    let grace = Duration::from_secs(1);
    let stdout = tokio::time::timeout(grace, out)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, err)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    record(req, outcome, detail, code, stdout, stderr, elapsed())
}

/// Sends SIGKILL to the process group `pgid` (an action and everything it started). Through
/// kill(1), which keeps the server free of unsafe code; a failure leaves the direct kill to do.
async fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
    async fn output_exit_code_and_environment_are_kept() {
        let r = run(&req(
            &[
                "sh",
                "-c",
                "echo out $PORTHAWK_MONITOR $PORTHAWK_TARGETS; echo err >&2; exit 3",
            ],
            5000,
        ))
        .await;
        assert_eq!(r.outcome, "failed");
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stdout, "out m 127.0.0.1:80\n");
        assert_eq!(r.stderr, "err\n");
        let r = run(&req(&["true"], 5000)).await;
        assert_eq!((r.outcome.as_str(), r.exit_code), ("ok", Some(0)));
    }

    #[tokio::test]
    async fn an_overrunning_action_is_killed() {
        let started = Instant::now();
        let r = run(&req(&["sleep", "30"], 200)).await;
        assert_eq!(r.outcome, "timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_overrunning_action_is_killed_with_what_it_started() {
        let dir = std::env::temp_dir().join(format!("porthawk-action-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let r = run(&req(&["sh", "-c", &script], 300)).await;
        assert_eq!(r.outcome, "timeout");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let proc_dir = std::path::Path::new("/proc").join(pid.trim());
        // The grandchild is gone (or at most a zombie about to be reaped by init).
        let mut alive = true;
        for _ in 0..50 {
            let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !alive,
            "the action's child {} survived its timeout",
            pid.trim()
        );
    }

    #[tokio::test]
    async fn output_is_capped_and_a_missing_program_is_an_error() {
        let r = run(&req(&["sh", "-c", "head -c 100000 /dev/zero"], 5000)).await;
        assert_eq!(r.outcome, "ok");
        assert_eq!(r.stdout.len(), OUTPUT_LIMIT);
        let r = run(&req(&["/nonexistent/porthawk-test"], 5000)).await;
        assert_eq!(r.outcome, "error");
        assert!(r.detail.unwrap().contains("cannot start"));
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
