//! Runs one command for porthawk's actions, on the server and on fleet agents alike: an argv
//! without a shell, with a timeout after which the process and everything it started are
//! killed, its output kept (capped), its exit code and duration reported.
//!
//! Without cgroups (and without `unsafe` for a `setsid` before exec), "everything it started"
//! is found in /proc: the processes whose parent, process group or session is one of the
//! command's processes, and those whose environment carries the run's
//! `PORTHAWK_ACTION_RUN` marker (a double-forked daemon that left for a session of its own
//! keeps its environment). The tree is walked every [`SCAN_EVERY`] while the command runs, so
//! a process whose parent has exited is still known; at the timeout every member is stopped,
//! the tree walked again until nothing new appears, and then all are killed.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// Bytes of standard output and of standard error kept per run.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// How long output is still read after the command's own process ended: a child it left
/// running in the background may hold the pipes open for ever.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How often the process tree of a running command is walked.
const SCAN_EVERY: Duration = Duration::from_millis(100);

/// The environment variable that marks every process of one run.
pub const RUN_MARKER: &str = "PORTHAWK_ACTION_RUN";

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// How long it may run before it and all it started are killed.
    pub timeout: Duration,
    /// Variables added to its environment.
    pub env: Vec<(String, String)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Exit code 0.
    Ok,
    /// Another exit code, or ended by a signal.
    Failed,
    /// Killed (with all it started) at the timeout.
    Timeout,
    /// It could not be started or waited for.
    Error,
}

impl ExecOutcome {
    /// `ok`, `failed`, `timeout` or `error`, as history records it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecOutcome::Ok => "ok",
            ExecOutcome::Failed => "failed",
            ExecOutcome::Timeout => "timeout",
            ExecOutcome::Error => "error",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReport {
    /// How it ended.
    pub outcome: ExecOutcome,
    /// Why, for outcomes other than a plain exit.
    pub detail: Option<String>,
    /// The exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Standard output, the first [`OUTPUT_LIMIT`] bytes (lossy UTF-8).
    pub stdout: String,
    /// Standard error, the first [`OUTPUT_LIMIT`] bytes (lossy UTF-8).
    pub stderr: String,
    /// From the start to the end of the run (output read).
    pub duration_ms: u64,
}

/// Reads from `r` until its end or until `stop` turns true, keeping the first
/// [`OUTPUT_LIMIT`] bytes: the process must not block on a full pipe, however much it writes.
async fn drain(r: Option<impl AsyncRead + Unpin>, mut stop: watch::Receiver<bool>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = r.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            },
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    kept
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `spec`: its own process group, standard input from /dev/null, `PORTHAWK_ACTION_RUN`
/// (the marker by which its processes are found at the timeout) and `spec.env` in its
/// environment; killed with everything it started at the timeout.
pub async fn run(spec: &ExecSpec) -> ExecReport {
    let started = Instant::now();
    let elapsed = || started.elapsed().as_millis() as u64;
    let report = |outcome, detail: String, duration_ms| ExecReport {
        outcome,
        detail: Some(detail),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms,
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return report(ExecOutcome::Error, "empty argv".into(), 0);
    };
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let marker = format!(
        "{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(RUN_MARKER, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that what it starts is found (and killed) even when
        // its parent is gone.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return report(
                ExecOutcome::Error,
                format!("cannot start '{program}': {e}"),
                elapsed(),
            )
        }
    };
    let pid = child.id();
    let tree = pid.and_then(|pid| ProcessTree::new(pid, marker.into_bytes()));
    let (stop_reading, stop) = watch::channel(false);
    let out = tokio::spawn(drain(child.stdout.take(), stop.clone()));
    let err = tokio::spawn(drain(child.stderr.take(), stop));
    let timeout = spec.timeout;
    let (outcome, detail, exit_code) = match wait_or_kill(&mut child, pid, tree, timeout).await {
        Some(Ok(s)) => match s.code() {
            Some(0) => (ExecOutcome::Ok, None, Some(0)),
            Some(c) => (ExecOutcome::Failed, None, Some(c)),
            None => (ExecOutcome::Failed, Some(format!("ended by {s}")), None),
        },
        Some(Err(e)) => (
            ExecOutcome::Error,
            Some(format!("cannot wait for it: {e}")),
            None,
        ),
        None => (
            ExecOutcome::Timeout,
            Some(format!("killed after the timeout of {timeout:?}")),
            None,
        ),
    };
    let (stdout, stderr) = collect_output(out, err, stop_reading).await;
    ExecReport {
        outcome,
        detail,
        exit_code,
        stdout: text(&stdout),
        stderr: text(&stderr),
        duration_ms: elapsed(),
    }
}

/// Waits for the action's process, walking its process tree every [`SCAN_EVERY`]; at the
/// timeout kills the tree (or, when /proc could not be read, the process group) and the
/// process, and returns `None`.
async fn wait_or_kill(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    mut tree: Option<ProcessTree>,
    timeout: Duration,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            status = child.wait() => return Some(status),
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(SCAN_EVERY), if tree.is_some() => {
                tree = scan_off_thread(tree, ProcessTree::scan).await;
            }
        }
    }
    if scan_off_thread(tree, ProcessTree::kill).await.is_none() {
        if let Some(group) = pid.and_then(|p| Pid::from_raw(i32::try_from(p).ok()?)) {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
    let _ = child.kill().await;
    None
}

/// The output the readers kept. The pipes close when the process ends, unless a child it
/// left running holds them: then the readers get [`OUTPUT_GRACE`] and stop with what they
/// have.
async fn collect_output(
    mut out: tokio::task::JoinHandle<Vec<u8>>,
    mut err: tokio::task::JoinHandle<Vec<u8>>,
    stop_reading: watch::Sender<bool>,
) -> (Vec<u8>, Vec<u8>) {
    let readers = async { (&mut out).await.ok().zip((&mut err).await.ok()) };
    let read = match tokio::time::timeout(OUTPUT_GRACE, readers).await {
        Ok(read) => read,
        Err(_) => {
            let _ = stop_reading.send(true);
            out.await.ok().zip(err.await.ok())
        }
    };
    read.unwrap_or_default()
}

/// Runs `step` on the tree on the blocking pool (it reads /proc) and hands the tree back.
async fn scan_off_thread(
    tree: Option<ProcessTree>,
    step: fn(&mut ProcessTree),
) -> Option<ProcessTree> {
    let mut tree = tree?;
    tokio::task::spawn_blocking(move || {
        step(&mut tree);
        tree
    })
    .await
    .ok()
}

/// What /proc/PID/stat says about a process.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: i32,
    parent: i32,
    group: i32,
    session: i32,
    /// Clock ticks after boot: with the pid, names a process even after its pid is reused.
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp session ...`: comm may hold spaces and parentheses.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some(ProcStat {
        pid,
        parent: fields.get(1)?.parse().ok()?,
        group: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Whether the environment of `pid` holds `RUN_MARKER=marker` (false when unreadable).
fn carries_marker(pid: i32, marker: &[u8]) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    environ.split(|b| *b == 0).any(|entry| {
        entry
            .strip_prefix(RUN_MARKER.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
            == Some(marker)
    })
}

/// The processes of one action run: its own process and all it started, each by pid and
/// start time.
#[derive(Debug)]
struct ProcessTree {
    root: ProcStat,
    marker: Vec<u8>,
    members: HashMap<i32, u64>,
}

impl ProcessTree {
    fn new(pid: u32, marker: Vec<u8>) -> Option<ProcessTree> {
        let root = proc_stat(i32::try_from(pid).ok()?)?;
        Some(ProcessTree {
            root,
            marker,
            members: HashMap::from([(root.pid, root.start)]),
        })
    }

    fn is_member(&self, p: &ProcStat) -> bool {
        self.members.get(&p.pid) == Some(&p.start)
    }

    /// Adds every process that now belongs to the run.
    fn scan(&mut self) {
        self.grow();
    }

    /// Adds every process that now belongs to the run; returns the ones added.
    fn grow(&mut self) -> Vec<ProcStat> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        // Only processes started with or after the action can be its descendants.
        let candidates: Vec<ProcStat> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(proc_stat)
            .filter(|p| p.start >= self.root.start)
            .collect();
        let mut added = Vec::new();
        // Until nothing changes: a parent may be listed after its child.
        loop {
            let before = added.len();
            for p in &candidates {
                if self.is_member(p) {
                    continue;
                }
                let linked = [p.parent, p.group, p.session]
                    .iter()
                    .any(|pid| self.members.contains_key(pid));
                if linked || carries_marker(p.pid, &self.marker) {
                    self.members.insert(p.pid, p.start);
                    added.push(*p);
                }
            }
            if added.len() == before {
                return added;
            }
        }
    }

    /// Stops every member (a stopped process cannot fork), walks the tree again until it
    /// stops growing (bounded), then kills them all.
    fn kill(&mut self) {
        let signal = |pid: i32, start: u64, sig: Signal| {
            // A member that has ended (its pid possibly reused) is left alone.
            if proc_stat(pid).is_some_and(|p| p.start == start) {
                if let Some(pid) = Pid::from_raw(pid) {
                    let _ = kill_process(pid, sig);
                }
            }
        };
        for (&pid, &start) in &self.members {
            signal(pid, start, Signal::STOP);
        }
        for _ in 0..16 {
            let added = self.grow();
            if added.is_empty() {
                break;
            }
            for p in added {
                signal(p.pid, p.start, Signal::STOP);
            }
        }
        for (&pid, &start) in &self.members {
            signal(pid, start, Signal::KILL);
        }
        // And whatever joined the action's group between the last walk and now.
        if let Some(group) = Pid::from_raw(self.root.pid) {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str], timeout_ms: u64) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
            env: vec![
                ("PORTHAWK_MONITOR".into(), "m".into()),
                ("PORTHAWK_TARGETS".into(), "127.0.0.1:80".into()),
            ],
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
        assert_eq!(r.outcome, ExecOutcome::Failed);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stdout, "out m 127.0.0.1:80\n");
        assert_eq!(r.stderr, "err\n");
        let r = run(&req(&["true"], 5000)).await;
        assert_eq!((r.outcome, r.exit_code), (ExecOutcome::Ok, Some(0)));
    }

    #[tokio::test]
    async fn an_overrunning_action_is_killed() {
        // The action would sleep 30 s; it comes back as a timeout, so it was killed.
        let r = run(&req(&["sleep", "30"], 200)).await;
        assert_eq!(r.outcome, ExecOutcome::Timeout);
    }

    /// A scratch directory for pid files, removed at drop.
    struct Scratch(tempfile::TempDir);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            Scratch(
                tempfile::Builder::new()
                    .prefix(&format!("porthawk-action-{name}-"))
                    .tempdir()
                    .unwrap(),
            )
        }

        fn path(&self) -> &std::path::Path {
            self.0.path()
        }

        fn pids(&self) -> Vec<i32> {
            std::fs::read_to_string(self.path().join("pids"))
                .unwrap_or_default()
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect()
        }
    }

    /// Whether `pid` still runs (a zombie waiting for its reaper does not count), looking a
    /// bounded number of times: killed processes take a moment to go.
    async fn still_runs(pid: i32) -> bool {
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    #[tokio::test]
    async fn an_overrunning_action_is_killed_with_what_it_started() {
        let scratch = Scratch::new("group");
        let pids = scratch.path().join("pids");
        let script = format!("sleep 30 & echo $! > {}; wait", pids.display());
        let r = run(&req(&["sh", "-c", &script], 300)).await;
        assert_eq!(r.outcome, ExecOutcome::Timeout);
        let pids = scratch.pids();
        assert_eq!(pids.len(), 1, "{pids:?}");
        assert!(
            !still_runs(pids[0]).await,
            "the action's child {} survived its timeout",
            pids[0]
        );
    }

    #[tokio::test]
    async fn children_that_left_for_their_own_session_are_killed_at_the_timeout() {
        let scratch = Scratch::new("setsid");
        let pids = scratch.path().join("pids");
        let pids = pids.display();
        // A child that calls setsid itself, one whose parent exits at once (a double fork into
        // a new session: no parent, group or session links back), and a plain child; each
        // writes the pid of the sleep it starts.
        let script = format!(
            "setsid sh -c 'sleep 60 & echo $! >> {pids}; wait' &
             (setsid sh -c 'sleep 60 & echo $! >> {pids}; wait' &)
             sleep 60 & echo $! >> {pids}
             wait"
        );
        // Time enough for three processes to start on a loaded machine.
        let r = run(&req(&["sh", "-c", &script], 5000)).await;
        assert_eq!(r.outcome, ExecOutcome::Timeout);
        let pids = scratch.pids();
        assert_eq!(pids.len(), 3, "not every sleep started in time: {pids:?}");
        for pid in pids {
            assert!(!still_runs(pid).await, "sleep {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn output_before_and_after_a_background_child_is_kept() {
        let scratch = Scratch::new("background");
        let pids = scratch.path().join("pids");
        let script = format!(
            "echo before; (sleep 30 & echo $! > {}); echo after; echo err >&2",
            pids.display()
        );
        let r = run(&req(&["sh", "-c", &script], 20_000)).await;
        // The background sleep holds both pipes; the action itself has ended.
        let pids = scratch.pids();
        for &pid in &pids {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        assert_eq!((r.outcome, r.exit_code), (ExecOutcome::Ok, Some(0)));
        assert_eq!(r.stdout, "before\nafter\n");
        assert_eq!(r.stderr, "err\n");
        assert_eq!(pids.len(), 1, "{pids:?}");
    }

    #[tokio::test]
    async fn output_is_capped_and_a_missing_program_is_an_error() {
        let r = run(&req(&["sh", "-c", "head -c 100000 /dev/zero"], 5000)).await;
        assert_eq!(r.outcome, ExecOutcome::Ok);
        assert_eq!(r.stdout.len(), OUTPUT_LIMIT);
        let r = run(&req(&["/nonexistent/porthawk-test"], 5000)).await;
        assert_eq!(r.outcome, ExecOutcome::Error);
        assert!(r.detail.unwrap().contains("cannot start"));
    }
}
