//! `porthawk serve` when its store fails under it: a full disk (a tmpfs of a few MB), a
//! second server on the same data directory, the database file deleted while it runs. In
//! each case nothing is reported that was not kept, and the answer is clear.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_util::is_root;
use crate::util::{require, run_command, stderr, test_net, which, Serve, TempDir};

/// How long the server may take to say where it listens, and a sweep to end.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls sweep `id` until it leaves `queued` and `running` (bounded); its last status.
fn wait_ended(serve: &Serve, id: u64) -> Value {
    let deadline = Instant::now() + SWEEP_TIMEOUT;
    loop {
        let (code, s) = serve.http_json("GET", &format!("/v1/sweeps/{id}"), None);
        assert_eq!(code, 200, "GET /v1/sweeps/{id}: {s}");
        if s["state"] != "running" && s["state"] != "queued" {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "sweep {id} still {} after {SWEEP_TIMEOUT:?}: {s}",
            s["state"]
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `sqlite3 -readonly DB SQL`, one line per row, columns separated by `|`.
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sqlite_u64(db: &Path, sql: &str) -> u64 {
    let text = sqlite(db, sql);
    text.parse()
        .unwrap_or_else(|_| panic!("{sql}: not a number: {text:?}"))
}

/// A tmpfs mounted for the test; unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes a filler file into `dir` until the file system is full, then gives back `room`
/// bytes.
fn fill(dir: &Path, room: u64) {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let block = vec![0x5au8; 16 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of a few MB is full long before this.
    for _ in 0..100_000 {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) || e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.flush();
    f.set_len(written.saturating_sub(room))
        .expect("shrink filler");
}

/// A store=all sweep over a /24 × 400 ports of this test's own loopback block: far more
/// rows than the few MB the disk has.
fn big_sweep(name: &str) -> String {
    let [a, b] = test_net(name);
    serde_json::json!({
        "targets": [format!("127.{a}.{b}.0/24")],
        "ports": "1-400",
        "store": "all",
        "probe": {"timeout_ms": 200, "tries": 1},
    })
    .to_string()
}

/// With the data directory on a full disk, a sweep's store writes fail: the sweep ends
/// `failed` with the store named as the reason (not `done`, not `running` forever), the
/// counts it reports are exactly what its stored rows say, and `/healthz` answers 503.
#[test]
fn a_full_disk_fails_the_sweep_and_counts_only_stored_rows() {
    let mut missing = (!is_root()).then(|| "mounting a tmpfs needs root".to_string());
    if missing.is_none() && which("sqlite3").is_none() {
        missing = Some("the sqlite3 command is not installed".into());
    }
    if require("full-disk test", missing).is_err() {
        return;
    }
    let tmp = TempDir::new("store-full");
    let data = tmp.path().join("data");
    let mount = match Tmpfs::mount(&data, "16m") {
        Ok(m) => m,
        Err(e) => {
            let _ = require("full-disk test", Some(e));
            return;
        }
    };
    let serve = Serve::start(&mount.0);
    let (code, health) = serve.http_json("GET", "/healthz", None);
    assert_eq!(code, 200, "{health}");
    // Room for a few of the sweep's writes (one write can carry 8,000 rows, about 1 MB with
    // the WAL, when the machine is busy), so that some rows are stored before one fails; the
    // sweep's 102,400 rows need far more.
    fill(&mount.0, 4 << 20);

    let (code, created) = serve.http_json("POST", "/v1/sweeps", Some(&big_sweep("store-full")));
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_u64().expect("id");
    let status = wait_ended(&serve, id);
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("store write failed"), "{status}");
    let done = status["done"].as_u64().expect("done");
    let total = status["total"].as_u64().expect("total");
    assert!(done < total, "a failed sweep counted every probe: {status}");
    assert!(
        done > 0,
        "no write of the sweep was stored; leave more room: {status}"
    );

    // What the API reports is what the store holds: with store=all, one row per probe
    // counted, per state.
    let db = mount.0.join("porthawk.db");
    let rows = sqlite_u64(
        &db,
        &format!("SELECT COUNT(*) FROM results WHERE sweep_id = {id}"),
    );
    assert_eq!(rows, done, "rows stored vs done reported: {status}");
    for state in ["open", "closed", "filtered", "unreachable", "error"] {
        let n = sqlite_u64(
            &db,
            &format!("SELECT COUNT(*) FROM results WHERE sweep_id = {id} AND state = '{state}'"),
        );
        assert_eq!(
            Some(n),
            status["counts"][state].as_u64(),
            "{state}: {status}"
        );
    }
    // The stored row never runs ahead of its rows either (it may still say `running` if
    // even marking it failed could not be written; then the API said `failed` above).
    let stored = sqlite(
        &db,
        &format!("SELECT state, done FROM sweeps WHERE id = {id}"),
    );
    let (stored_state, stored_done) = stored.split_once('|').expect("state|done");
    assert!(
        matches!(stored_state, "failed" | "running"),
        "stored state {stored_state}"
    );
    assert!(
        stored_done.parse::<u64>().expect("done") <= rows,
        "{stored}"
    );
    if stored_state == "failed" {
        assert_eq!(stored_done.parse::<u64>().ok(), Some(rows));
    }

    let (code, health) = serve.http_json("GET", "/healthz", None);
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["status"], "unhealthy", "{health}");
    let store = health["store"].as_str().unwrap_or_default();
    assert!(store.starts_with("write failed: "), "{health}");
    serve.stop();
    drop(mount);
}

/// A second `porthawk serve` on the same data directory refuses to start, naming the
/// first one's pid, and leaves the store alone: the first one's running sweep stays
/// `running` in the database (it is not marked `interrupted`).
#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    if require(
        "second-server test",
        which("sqlite3")
            .is_none()
            .then(|| "sqlite3 is not installed".into()),
    )
    .is_err()
    {
        return;
    }
    let tmp = TempDir::new("store-lock");
    let first = Serve::start(tmp.path());
    // Slow enough to be running for the whole test: 2,000 probes at 20 per second.
    let [a, b] = test_net("store-lock");
    let (code, created) = first.http_json(
        "POST",
        "/v1/sweeps",
        Some(
            &serde_json::json!({
                "targets": [format!("127.{a}.{b}.1-127.{a}.{b}.20")],
                "ports": "1-100",
                "rate": 20,
            })
            .to_string(),
        ),
    );
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_u64().expect("id");

    let second = run_command(Serve::command(tmp.path()), None, START_TIMEOUT);
    let lines: Vec<String> = stderr(&second).lines().map(str::to_string).collect();
    assert_eq!(second.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let pid = first.child.id();
    assert!(
        lines[0].contains(&format!("pid {pid}")) && lines[0].contains("in use"),
        "{lines:?}"
    );
    let db = tmp.path().join("porthawk.db");
    let stored = sqlite(&db, &format!("SELECT state FROM sweeps WHERE id = {id}"));
    assert_eq!(stored, "running");
    let (_, s) = first.http_json("GET", &format!("/v1/sweeps/{id}"), None);
    assert_eq!(s["state"], "running", "{s}");
    first.terminate();
}

/// The database file deleted under a running server is noticed: `/healthz` turns 503 and
/// names it, the server logs it, and a new sweep is refused with 503 instead of being
/// accepted into a file that no longer exists.
#[test]
fn a_deleted_database_makes_the_server_unhealthy() {
    let tmp = TempDir::new("store-deleted");
    let mut serve = Serve::start(tmp.path());
    let (code, health) = serve.http_json("GET", "/healthz", None);
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    std::fs::remove_file(tmp.path().join("porthawk.db")).expect("delete the database");

    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let (code, health) = serve.http_json("GET", "/healthz", None);
        if code == 503 {
            break health;
        }
        assert!(Instant::now() < deadline, "/healthz still {code}: {health}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health["status"], "unhealthy", "{health}");
    let store = health["store"].as_str().unwrap_or_default();
    assert!(store.starts_with("database deleted"), "{health}");
    assert!(
        serve.logs("database deleted", Duration::from_secs(10)),
        "no log line about the deleted database"
    );
    let [a, b] = test_net("store-deleted");
    let (code, refused) = serve.http_json(
        "POST",
        "/v1/sweeps",
        Some(
            &serde_json::json!({"targets": [format!("127.{a}.{b}.1")], "ports": "1-10"})
                .to_string(),
        ),
    );
    assert_eq!(code, 503, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("database deleted"), "{refused}");
    serve.terminate();
}
