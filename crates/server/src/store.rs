//! The embedded store: SQLite in the data directory, in WAL mode, with migrations at start.
//!
//! One writer connection (behind a mutex) serves the aggregator's batched transactions and
//! the API's few writes; reads take a connection from a small pool, which WAL lets run next
//! to the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::sweep::{Counts, SweepRequest, SweepState};
use crate::ServerError;

/// The schema, one migration per entry; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
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
    crate::monitor::history::SCHEMA,
];

/// Readers kept open for reuse.
const READER_POOL: usize = 8;

/// A stored sweep.
#[derive(Debug, Clone)]
pub struct SweepRow {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
    /// The request as accepted.
    pub request: SweepRequest,
    /// Probes in the sweep.
    pub total: u64,
    /// Probes reported (and stored, where stored).
    pub done: u64,
    /// Probes per verdict.
    pub counts: Counts,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub finished_ms: Option<u64>,
}

/// One stored result, as the results route writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    /// The row's position, for paging.
    pub rowid: i64,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Verdict.
    pub state: String,
    /// Connect round-trip time.
    pub rtt_us: u32,
    /// Connect attempts.
    pub tries: u8,
    /// The name the address was given by.
    pub host: Option<String>,
    /// The errno name of an `unreachable` or `error` verdict.
    pub errno: Option<String>,
    /// The first reply of the dialog.
    pub banner: Option<Vec<u8>>,
    /// Whether the replies matched what the dialog expected.
    pub matched: Option<bool>,
    /// Why the dialog failed.
    pub reason: Option<String>,
}

/// A result waiting to be written by the aggregator.
#[derive(Debug, Clone)]
pub struct NewResult {
    /// The sweep it belongs to.
    pub sweep_id: u64,
    /// Address.
    pub ip: std::net::IpAddr,
    /// Port.
    pub port: u16,
    /// Verdict.
    pub state: &'static str,
    /// Connect round-trip time.
    pub rtt_us: u32,
    /// Connect attempts.
    pub tries: u8,
    /// The name the address was given by.
    pub host: Option<std::sync::Arc<str>>,
    /// The errno name.
    pub errno: Option<&'static str>,
    /// The first reply of the dialog.
    pub banner: Option<Vec<u8>>,
    /// Whether the replies matched what the dialog expected.
    pub matched: Option<bool>,
    /// Why the dialog failed.
    pub reason: Option<String>,
}

/// Progress of a sweep, written with its results.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The sweep id.
    pub sweep_id: u64,
    /// Probes reported.
    pub done: u64,
    /// Probes per verdict.
    pub counts: Counts,
    /// The final state, when the sweep has ended.
    pub finished: Option<SweepState>,
}

/// The SQLite store.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a connection that is still usable (SQLite rolls
    // back an unfinished transaction when the next one begins).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) `porthawk.db` in `dir`, migrates it, and marks every sweep a
    /// previous process left queued or running as interrupted. Returns the store and how many
    /// sweeps were marked.
    pub fn open(dir: &Path) -> Result<(Store, usize), ServerError> {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::Io {
            context: format!("cannot create data directory '{}'", dir.display()),
            source,
        })?;
        let path = dir.join("porthawk.db");
        let err = |source| ServerError::Store {
            path: path.clone(),
            source,
        };
        let mut writer = Connection::open(&path).map_err(err)?;
        configure(&writer).map_err(err)?;
        migrate(&mut writer).map_err(err)?;
        let interrupted = writer
            .execute(
                "UPDATE sweeps SET state = 'interrupted', finished_ms = ?1
                 WHERE state IN ('queued', 'running')",
                params![now_ms() as i64],
            )
            .map_err(err)?;
        Ok((
            Store {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            },
            interrupted,
        ))
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path)?;
                configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        out
    }

    /// Runs `f` on the writer connection (for the monitors' history).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        f(&mut lock(&self.writer))
    }

    /// Runs `f` on a reader connection (for the monitors' history).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.with_reader(f)
    }

    /// Records a new sweep in state `running`; returns its id.
    pub fn insert_sweep(
        &self,
        request: &SweepRequest,
        total: u64,
        created_ms: u64,
    ) -> rusqlite::Result<u64> {
        let json = serde_json::to_string(request)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let conn = lock(&self.writer);
        conn.execute(
            "INSERT INTO sweeps (state, request, store_all, total, created_ms)
             VALUES ('running', ?1, ?2, ?3, ?4)",
            params![
                json,
                request.store.is_all(),
                total as i64,
                created_ms as i64
            ],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// Writes results and progress in one transaction: a sweep's counts always match its
    /// stored rows, and a sweep marked finished has every row it reported.
    pub fn write_batch(
        &self,
        results: &[NewResult],
        progress: &[Progress],
    ) -> rusqlite::Result<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO results (sweep_id, ip, port, state, rtt_us, tries, host, errno,
                     banner, matched, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for r in results {
                insert.execute(params![
                    r.sweep_id as i64,
                    r.ip.to_string(),
                    r.port,
                    r.state,
                    r.rtt_us,
                    r.tries,
                    r.host.as_deref(),
                    r.errno,
                    r.banner.as_deref(),
                    r.matched,
                    r.reason.as_deref(),
                ])?;
            }
            let mut update = tx.prepare_cached(
                "UPDATE sweeps SET done = ?2, open = ?3, closed = ?4, filtered = ?5,
                     unreachable = ?6, error = ?7,
                     state = COALESCE(?8, state),
                     finished_ms = CASE WHEN ?8 IS NULL THEN finished_ms ELSE ?9 END
                 WHERE id = ?1",
            )?;
            for p in progress {
                let c = &p.counts;
                update.execute(params![
                    p.sweep_id as i64,
                    p.done as i64,
                    c.open as i64,
                    c.closed as i64,
                    c.filtered as i64,
                    c.unreachable as i64,
                    c.error as i64,
                    p.finished.map(SweepState::as_str),
                    now_ms() as i64,
                ])?;
            }
        }
        tx.commit()
    }

    /// One sweep.
    pub fn sweep(&self, id: u64) -> rusqlite::Result<Option<SweepRow>> {
        self.with_reader(|c| {
            c.query_row(
                &format!("SELECT {SWEEP_COLUMNS} FROM sweeps WHERE id = ?1"),
                params![id as i64],
                sweep_row,
            )
            .optional()
        })
    }

    /// Sweeps, newest first.
    pub fn sweeps(&self, limit: u64, offset: u64) -> rusqlite::Result<Vec<SweepRow>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SWEEP_COLUMNS} FROM sweeps ORDER BY id DESC LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = stmt.query_map(params![limit as i64, offset as i64], sweep_row)?;
            rows.collect()
        })
    }

    /// How many sweeps there are in each state.
    pub fn count_by_state(&self) -> rusqlite::Result<Vec<(String, u64)>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached("SELECT state, COUNT(*) FROM sweeps GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }

    /// Up to `limit` results of a sweep after row `after`, optionally of one state, in the
    /// order they were stored.
    pub fn results_page(
        &self,
        sweep_id: u64,
        after: i64,
        state: Option<&str>,
        limit: u32,
    ) -> rusqlite::Result<Vec<ResultRow>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT rowid, ip, port, state, rtt_us, tries, host, errno, banner, matched, reason
                 FROM results
                 WHERE sweep_id = ?1 AND rowid > ?2 AND (?3 IS NULL OR state = ?3)
                 ORDER BY rowid LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![sweep_id as i64, after, state, limit], |r| {
                Ok(ResultRow {
                    rowid: r.get(0)?,
                    ip: r.get(1)?,
                    port: r.get(2)?,
                    state: r.get(3)?,
                    rtt_us: r.get(4)?,
                    tries: r.get(5)?,
                    host: r.get(6)?,
                    errno: r.get(7)?,
                    banner: r.get(8)?,
                    matched: r.get(9)?,
                    reason: r.get(10)?,
                })
            })?;
            rows.collect()
        })
    }
}

const SWEEP_COLUMNS: &str = "id, state, request, total, done, open, closed, filtered, \
                             unreachable, error, created_ms, finished_ms";

fn sweep_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow> {
    let state: String = r.get(1)?;
    let request: String = r.get(2)?;
    let count = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
    Ok(SweepRow {
        id: count(0)?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
        request: serde_json::from_str(&request).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        total: count(3)?,
        done: count(4)?,
        counts: Counts {
            open: count(5)?,
            closed: count(6)?,
            filtered: count(7)?,
            unreachable: count(8)?,
            error: count(9)?,
        },
        created_ms: count(10)?,
        finished_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
    })
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints, which survives a
    // crash of the process (what `kill -9` does) though not a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::StoreMode;
    use crate::test_support::TempDir;

    fn request() -> SweepRequest {
        SweepRequest {
            targets: vec!["127.0.0.1".into()],
            ports: "22".into(),
            exclude: vec![],
            probe: None,
            rate: None,
            store: StoreMode::Open,
        }
    }

    #[test]
    fn running_sweeps_become_interrupted_on_reopen_with_rows_intact() {
        let dir = TempDir::new("store-reopen");
        let id = {
            let (store, n) = Store::open(dir.path()).unwrap();
            assert_eq!(n, 0);
            let id = store.insert_sweep(&request(), 10, now_ms()).unwrap();
            let row = NewResult {
                sweep_id: id,
                ip: "127.0.0.1".parse().unwrap(),
                port: 22,
                state: "open",
                rtt_us: 5,
                tries: 1,
                host: None,
                errno: None,
                banner: Some(b"SSH-2.0-x\r\n".to_vec()),
                matched: Some(true),
                reason: None,
            };
            let progress = Progress {
                sweep_id: id,
                done: 3,
                counts: Counts {
                    open: 1,
                    closed: 2,
                    ..Counts::default()
                },
                finished: None,
            };
            store.write_batch(&[row], &[progress]).unwrap();
            id
        };
        let (store, n) = Store::open(dir.path()).unwrap();
        assert_eq!(n, 1);
        let s = store.sweep(id).unwrap().unwrap();
        assert_eq!(s.state, SweepState::Interrupted);
        assert_eq!(s.done, 3);
        assert_eq!(s.counts.open, 1);
        let rows = store.results_page(id, 0, None, 100).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].port, 22);
        assert_eq!(rows[0].banner.as_deref(), Some(&b"SSH-2.0-x\r\n"[..]));
        assert_eq!(rows[0].matched, Some(true));
        assert!(store
            .results_page(id, 0, Some("closed"), 100)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn migrations_are_applied_once() {
        let dir = TempDir::new("store-migrate");
        drop(Store::open(dir.path()).unwrap());
        let (store, _) = Store::open(dir.path()).unwrap();
        let v: i64 = lock(&store.writer)
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }
}
