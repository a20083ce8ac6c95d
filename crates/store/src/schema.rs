//! The schema: one migration per version, applied in a transaction at start, and the
//! start-up housekeeping that goes with opening the database.

use rusqlite::{params, Connection, OptionalExtension};

/// The schema, one migration per entry; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    store_all INTEGER NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    open INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0,
    filtered INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    error INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE TABLE results (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    rtt_us INTEGER NOT NULL,
    tries INTEGER NOT NULL,
    host TEXT,
    errno TEXT,
    banner BLOB,
    matched INTEGER,
    reason TEXT
);
CREATE INDEX results_by_sweep ON results(sweep_id);
CREATE INDEX results_by_sweep_state ON results(sweep_id, state);
"#,
    MONITOR_TABLES,
    // Why a sweep failed (a store write that failed).
    "ALTER TABLE sweeps ADD COLUMN reason TEXT;",
    RESULT_LINE_COLUMNS,
    // Scheduled sweeps' runs and the changes they found.
    SCHEDULE_TABLES,
    MONITOR_SAMPLES,
    // Which certificate of the chain expires first (`cert_not_after` is its end from then on).
    "ALTER TABLE results ADD COLUMN cert_expires_first TEXT;",
    // Fleet mode: sweeps' mode, one result row per (sweep, ip, port), the fleet tables.
    FLEET_TABLES,
    // The dialog's capture groups (a JSON array of strings), in results and fleet staging.
    "ALTER TABLE results ADD COLUMN captures TEXT; ALTER TABLE fleet_staging ADD COLUMN captures TEXT;",
];

pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints, which survives a
    // crash of the process (what `kill -9` does) though not a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        [],
    )?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    let version = match version {
        Some(v) => v as usize,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", [])?;
            0
        }
    };
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {version}, newer than this build's {}",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.execute(
        "UPDATE schema_version SET version = ?1",
        params![MIGRATIONS.len() as i64],
    )?;
    tx.commit()
}

/// Settings of a read-only connection: it waits for the writer's locks like the writer does.
pub(crate) fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))
}

/// The schema migration that adds the monitor tables.
const MONITOR_TABLES: &str = r#"
CREATE TABLE monitor_targets (
    monitor TEXT NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    host TEXT,
    hard TEXT NOT NULL,
    fail_run INTEGER NOT NULL,
    ok_run INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    flapping INTEGER NOT NULL,
    last_ms INTEGER,
    last_ok INTEGER,
    last_state TEXT,
    last_rtt_us INTEGER,
    last_reason TEXT,
    PRIMARY KEY (monitor, ip, port)
);
CREATE TABLE monitor_checks (
    monitor TEXT NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    state TEXT NOT NULL,
    rtt_us INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX monitor_checks_by_time ON monitor_checks(monitor, at_ms);
CREATE TABLE monitor_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor TEXT NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX monitor_events_by_time ON monitor_events(monitor, at_ms);
CREATE TABLE monitor_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor TEXT,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    argv TEXT NOT NULL,
    trigger TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    exit_code INTEGER,
    stdout TEXT,
    stderr TEXT,
    at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX monitor_actions_by_time ON monitor_actions(at_ms);
CREATE TABLE monitor_notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor TEXT NOT NULL,
    notify TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    targets TEXT NOT NULL,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX monitor_notifications_by_time ON monitor_notifications(monitor, at_ms);
CREATE TABLE monitor_silences (
    monitor TEXT PRIMARY KEY,
    until_ms INTEGER NOT NULL
);
"#;

/// The schema migration that makes a stored result hold everything a `ResultLine` prints:
/// the banner's identification and the TLS handshake. `banner` holds the printable text from
/// then on (rows written before hold the raw bytes, as a BLOB); `cert_not_after` is seconds
/// since the epoch, so that days left are counted when the line is read, as the CLI counts
/// them when it prints.
const RESULT_LINE_COLUMNS: &str = r#"
ALTER TABLE results ADD COLUMN service TEXT;
ALTER TABLE results ADD COLUMN product TEXT;
ALTER TABLE results ADD COLUMN version TEXT;
ALTER TABLE results ADD COLUMN tls_version TEXT;
ALTER TABLE results ADD COLUMN cert_subject TEXT;
ALTER TABLE results ADD COLUMN cert_issuer TEXT;
ALTER TABLE results ADD COLUMN cert_not_after INTEGER;
"#;

/// The schema migration that adds the monitors' samples: each batch of checks summed (how
/// many, how many failed, the passing checks' round trips, the first failure, the earliest
/// certificate end), which the status page draws its heartbeat bars and response-time charts
/// from. One row per batch keeps a monitor of 10,000 target-ports at a few rows per interval.
const MONITOR_SAMPLES: &str = r#"
CREATE TABLE monitor_samples (
    monitor TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    checks INTEGER NOT NULL,
    fails INTEGER NOT NULL,
    rtt_sum_us INTEGER NOT NULL,
    rtt_max_us INTEGER NOT NULL,
    reason TEXT,
    cert_not_after INTEGER
);
CREATE INDEX monitor_samples_by_time ON monitor_samples(monitor, at_ms);
"#;

/// The schema migration of fleet mode: a sweep's `mode`, one row per (sweep, ip, port) in
/// `results` (positions are unique in a target space, so local sweeps never had two; a fleet
/// slice run twice must not store two either), and the fleet tables: the sweep's spec and
/// slice size, the slice table, the per-frame ledger and the rows of attempts not yet
/// complete (see `fleet.rs`).
const FLEET_TABLES: &str = r#"
ALTER TABLE sweeps ADD COLUMN mode TEXT NOT NULL DEFAULT 'local';
DELETE FROM results WHERE rowid NOT IN (
    SELECT MIN(rowid) FROM results GROUP BY sweep_id, ip, port);
CREATE UNIQUE INDEX results_unique ON results(sweep_id, ip, port);
CREATE TABLE fleet_sweeps (
    sweep_id INTEGER PRIMARY KEY REFERENCES sweeps(id) ON DELETE CASCADE,
    pool TEXT NOT NULL,
    spec BLOB NOT NULL,
    slice_len INTEGER NOT NULL,
    slices INTEGER NOT NULL,
    next_slice INTEGER NOT NULL
);
CREATE TABLE fleet_slices (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    slice INTEGER NOT NULL,
    state TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    work_seq INTEGER,
    published_ms INTEGER NOT NULL,
    last_seen_ms INTEGER,
    winner_seq INTEGER,
    winner_delivered INTEGER,
    agent TEXT,
    open INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0,
    filtered INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    error INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sweep_id, slice)
);
CREATE INDEX fleet_slices_by_work_seq ON fleet_slices(work_seq);
CREATE TABLE fleet_frames (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    slice INTEGER NOT NULL,
    work_seq INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    n INTEGER NOT NULL,
    agent TEXT NOT NULL,
    records INTEGER NOT NULL,
    last_frames INTEGER,
    last_records INTEGER,
    outside INTEGER NOT NULL,
    c_open INTEGER NOT NULL,
    c_closed INTEGER NOT NULL,
    c_filtered INTEGER NOT NULL,
    c_unreachable INTEGER NOT NULL,
    c_error INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, slice, work_seq, delivered, n)
) WITHOUT ROWID;
CREATE TABLE fleet_staging (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    slice INTEGER NOT NULL,
    work_seq INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    rtt_us INTEGER NOT NULL,
    tries INTEGER NOT NULL,
    host TEXT,
    errno TEXT,
    matched INTEGER,
    service TEXT,
    product TEXT,
    version TEXT,
    banner BLOB,
    reason TEXT,
    tls_version TEXT,
    cert_subject TEXT,
    cert_issuer TEXT,
    cert_not_after INTEGER,
    cert_expires_first TEXT
);
CREATE INDEX fleet_staging_by_attempt ON fleet_staging(sweep_id, slice, work_seq, delivered);
"#;

/// Marks every local sweep left queued or running as interrupted; how many there were.
/// Fleet sweeps go on running on their agents: the coordinator resumes them.
pub(crate) fn mark_interrupted(conn: &Connection, now_ms: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE sweeps SET state = 'interrupted', finished_ms = ?1
         WHERE state IN ('queued', 'running') AND mode = 'local'",
        params![now_ms as i64],
    )
}

/// The tables of scheduled sweeps (migration 5).
const SCHEDULE_TABLES: &str = r#"
CREATE TABLE schedule_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id INTEGER,
    schedule TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome TEXT,
    against INTEGER,
    opened INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    notices TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX schedule_runs_by_name ON schedule_runs(schedule, started_ms);
CREATE INDEX schedule_runs_by_sweep ON schedule_runs(sweep_id);
CREATE TABLE schedule_changes (
    run_id INTEGER NOT NULL,
    change TEXT NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX schedule_changes_by_run ON schedule_changes(run_id);
"#;
