//! Sweeps, their results and progress.
//!
//! Architecture invariant: a sweep is registered ([`Store::insert_sweep`]) before it is
//! submitted, and each batch's rows and progress are written in one transaction
//! ([`Store::write_batch`]), so stored counts match stored rows whenever the write succeeds;
//! a failed write stores neither.

use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use porthawk_core::{banner_text, identify, rfc3339, PortState, ProbeRecord, ResultLine};
use rusqlite::types::ValueRef;

use crate::db::{now_ms, Reply, Store, StoreError};

/// The state of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SweepState {
    /// Accepted, not started.
    Queued,
    /// Probing.
    Running,
    /// Every probe reported.
    Done,
    /// Cancelled by `DELETE`.
    Cancelled,
    /// The server stopped while it ran; what it found is kept.
    Interrupted,
}

impl SweepState {
    /// Every state.
    pub const ALL: [SweepState; 5] = [
        SweepState::Queued,
        SweepState::Running,
        SweepState::Done,
        SweepState::Cancelled,
        SweepState::Interrupted,
    ];

    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Queued => "queued",
            SweepState::Running => "running",
            SweepState::Done => "done",
            SweepState::Cancelled => "cancelled",
            SweepState::Interrupted => "interrupted",
        }
    }

    /// Whether the sweep has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, SweepState::Queued | SweepState::Running)
    }
}

impl FromStr for SweepState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SweepState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown sweep state '{s}'"))
    }
}

/// Probes per verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Handshake completed.
    pub open: u64,
    /// Refused.
    pub closed: u64,
    /// No answer.
    pub filtered: u64,
    /// ICMP unreachable.
    pub unreachable: u64,
    /// Anything else.
    pub error: u64,
}

/// A stored sweep, with its request decoded as `R` (the server's request type).
#[derive(Debug, Clone)]
pub struct SweepRow<R> {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
    /// The request as accepted.
    pub request: R,
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

/// One stored result: the [`ResultLine`] the CLI would print for it, less the certificate's
/// days left, which [`ResultRow::line_at`] counts when the line is read (as the CLI counts
/// them when it prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    /// The row's position, for paging.
    pub rowid: i64,
    /// The line, with `cert_days_left` absent.
    pub line: ResultLine,
    /// The end of the certificate's validity, in seconds since the Unix epoch.
    pub cert_not_after: Option<i64>,
}

impl ResultRow {
    /// The line as printed at `now_unix` (seconds since the epoch): with the certificate's
    /// whole days left from then, as `porthawk scan` counts them.
    pub fn line_at(self, now_unix: i64) -> ResultLine {
        let mut line = self.line;
        line.cert_days_left = self
            .cert_not_after
            .map(|not_after| (not_after - now_unix).div_euclid(86_400));
        line
    }
}

/// A result waiting to be written by the aggregator: the line the CLI prints for the same
/// record, so that the API's results are the CLI's.
#[derive(Debug, Clone)]
pub struct NewResult {
    /// The sweep it belongs to.
    pub sweep_id: u64,
    /// The line, identified and with the TLS fields; `cert_days_left` is not stored.
    pub line: ResultLine,
    /// The end of the certificate's validity, in seconds since the Unix epoch.
    pub cert_not_after: Option<i64>,
}

impl NewResult {
    /// The stored form of `record`, probed at `host` (the name it was given by, if any).
    pub fn new(sweep_id: u64, record: &ProbeRecord, host: Option<&str>) -> Self {
        let mut line = ResultLine::new(record, host, 0);
        line.cert_days_left = None;
        NewResult {
            sweep_id,
            line,
            cert_not_after: record
                .tls
                .as_ref()
                .and_then(|t| t.cert.as_ref())
                .map(|c| c.not_after),
        }
    }
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

impl Store {
    /// Records a new sweep in state `running`; its id. `request` is stored as JSON;
    /// `store_all` says whether every result is kept or only the open ones.
    pub fn insert_sweep(
        &self,
        request: &impl Serialize,
        store_all: bool,
        total: u64,
        created_ms: u64,
    ) -> Reply<u64> {
        let json = serde_json::to_string(request).map_err(|e| StoreError::Value {
            column: "sweeps.request",
            message: e.to_string(),
        });
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO sweeps (state, request, store_all, total, created_ms)
                 VALUES ('running', ?1, ?2, ?3, ?4)",
                params![json?, store_all, total as i64, created_ms as i64],
            )?;
            Ok(conn.last_insert_rowid() as u64)
        })
    }

    /// Writes results and progress in one transaction: a sweep's counts always match its
    /// stored rows, and a sweep marked finished has every row it reported.
    pub fn write_batch(&self, results: Vec<NewResult>, progress: Vec<Progress>) -> Reply<()> {
        self.write(move |conn| Ok(write_batch(conn, &results, &progress)?))
    }

    /// One sweep.
    pub fn sweep<R: DeserializeOwned>(&self, id: u64) -> Result<Option<SweepRow<R>>, StoreError> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {SWEEP_COLUMNS} FROM sweeps WHERE id = ?1"),
                params![id as i64],
                sweep_row,
            )
            .optional()
            .map_err(StoreError::from)
        })
    }

    /// Sweeps, newest first.
    pub fn sweeps<R: DeserializeOwned>(
        &self,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<SweepRow<R>>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SWEEP_COLUMNS} FROM sweeps ORDER BY id DESC LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = stmt.query_map(params![limit as i64, offset as i64], sweep_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// How many sweeps there are in each state.
    pub fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT state, COUNT(*) FROM sweeps GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
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
    ) -> Result<Vec<ResultRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RESULT_COLUMNS} FROM results
                 WHERE sweep_id = ?1 AND rowid > ?2 AND (?3 IS NULL OR state = ?3)
                 ORDER BY rowid LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![sweep_id as i64, after, state, limit], result_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

/// The columns [`result_row`] reads, in its order.
const RESULT_COLUMNS: &str = "rowid, ip, port, state, rtt_us, tries, host, errno, matched, \
                              service, product, version, banner, reason, tls_version, \
                              cert_subject, cert_issuer, cert_not_after";

fn conversion(i: usize, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
}

fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    let ip: String = r.get(1)?;
    let state: String = r.get(3)?;
    let cert_not_after: Option<i64> = r.get(17)?;
    let mut line = ResultLine {
        ip: ip.parse().map_err(|e| conversion(1, e))?,
        port: r.get(2)?,
        state: state.parse::<PortState>().map_err(|e| conversion(3, e))?,
        rtt_us: r.get(4)?,
        tries: r.get(5)?,
        host: r.get(6)?,
        errno: r.get(7)?,
        matched: r.get(8)?,
        service: r.get(9)?,
        product: r.get(10)?,
        version: r.get(11)?,
        banner: None,
        reason: r.get(13)?,
        tls_version: r.get(14)?,
        cert_subject: r.get(15)?,
        cert_issuer: r.get(16)?,
        cert_not_after: cert_not_after.map(rfc3339),
        cert_days_left: None,
    };
    match r.get_ref(12)? {
        ValueRef::Text(t) => line.banner = Some(String::from_utf8_lossy(t).into_owned()),
        // A row from before the banner was stored as text: the raw reply, identified now as
        // it would have been when it was written.
        ValueRef::Blob(b) => {
            line.banner = Some(banner_text(b));
            if let Some(id) = identify(b) {
                line.service = Some(id.service.to_string());
                line.product = id.product;
                line.version = id.version;
            }
        }
        _ => {}
    }
    Ok(ResultRow {
        rowid: r.get(0)?,
        line,
        cert_not_after,
    })
}

fn write_batch(
    conn: &mut Connection,
    results: &[NewResult],
    progress: &[Progress],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO results (sweep_id, ip, port, state, rtt_us, tries, host, errno,
                 matched, service, product, version, banner, reason, tls_version,
                 cert_subject, cert_issuer, cert_not_after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18)",
        )?;
        for r in results {
            let l = &r.line;
            insert.execute(params![
                r.sweep_id as i64,
                l.ip.to_string(),
                l.port,
                l.state.as_str(),
                l.rtt_us,
                l.tries,
                l.host,
                l.errno,
                l.matched,
                l.service,
                l.product,
                l.version,
                l.banner,
                l.reason,
                l.tls_version,
                l.cert_subject,
                l.cert_issuer,
                r.cert_not_after,
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

const SWEEP_COLUMNS: &str = "id, state, request, total, done, open, closed, filtered, \
                             unreachable, error, created_ms, finished_ms";

fn sweep_row<R: DeserializeOwned>(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow<R>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn request() -> serde_json::Value {
        serde_json::json!({"targets": ["127.0.0.1"], "ports": "22"})
    }

    fn open_row(sweep_id: u64) -> NewResult {
        let mut record = porthawk_core::ProbeRecord::new(
            "127.0.0.1".parse().unwrap(),
            22,
            PortState::Open,
            5,
            1,
        );
        record.banner = Some(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
        record.matched = Some(true);
        NewResult::new(sweep_id, &record, Some("localhost"))
    }

    #[test]
    fn running_sweeps_become_interrupted_on_reopen_with_rows_intact() {
        let dir = TempDir::new("store-reopen");
        let id = {
            let (store, n) = Store::open(dir.path()).unwrap();
            assert_eq!(n, 0);
            let id = store
                .insert_sweep(&request(), false, 10, now_ms())
                .wait()
                .unwrap();
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
            store
                .write_batch(vec![open_row(id)], vec![progress])
                .wait()
                .unwrap();
            id
        };
        let (store, n) = Store::open(dir.path()).unwrap();
        assert_eq!(n, 1);
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(s.state, SweepState::Interrupted);
        assert_eq!(s.request, request());
        assert_eq!(s.done, 3);
        assert_eq!(s.counts.open, 1);
        let rows = store.results_page(id, 0, None, 100).unwrap();
        assert_eq!(rows.len(), 1);
        // The stored line is the one the CLI prints for the same record.
        let record = open_row(id);
        assert_eq!(rows[0].clone().line_at(0), record.line);
        assert_eq!(rows[0].line.banner.as_deref(), Some("SSH-2.0-OpenSSH_9.6"));
        assert_eq!(rows[0].line.service.as_deref(), Some("ssh"));
        assert_eq!(rows[0].line.version.as_deref(), Some("9.6"));
        assert!(store
            .results_page(id, 0, Some("closed"), 100)
            .unwrap()
            .is_empty());
    }

    /// Every field of the line is stored, the certificate's days left are counted when the
    /// row is read (as the CLI counts them when it prints), and rows written before the
    /// columns existed (raw banner bytes) still read as the CLI's line.
    #[test]
    fn stored_rows_read_back_as_the_cli_line() {
        let dir = TempDir::new("store-lines");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = store.insert_sweep(&request(), true, 3, 1).wait().unwrap();
        let mut tls =
            porthawk_core::ProbeRecord::new("::1".parse().unwrap(), 443, PortState::Open, 7, 1);
        tls.tls = Some(porthawk_core::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            cert: Some(porthawk_core::CertInfo {
                subject: "CN=a, O=b".into(),
                issuer: "CN=ca".into(),
                not_before: 0,
                not_after: 1_800_000_000,
            }),
        });
        let mut refused = porthawk_core::ProbeRecord::new(
            "127.0.0.1".parse().unwrap(),
            1,
            PortState::Error,
            0,
            2,
        );
        refused.errno = Some(113);
        refused.reason = Some("connect: no route".into());
        let rows = vec![
            NewResult::new(id, &tls, None),
            NewResult::new(id, &refused, Some("h")),
        ];
        store.write_batch(rows, Vec::new()).wait().unwrap();
        store
            .write(move |c| {
                c.execute(
                    "INSERT INTO results (sweep_id, ip, port, state, rtt_us, tries, banner)
                     VALUES (?1, '127.0.0.1', 25, 'open', 3, 1, ?2)",
                    params![id as i64, &b"220 mx ESMTP Postfix\r\n"[..]],
                )?;
                Ok(())
            })
            .wait()
            .unwrap();
        let read = store.results_page(id, 0, None, 10).unwrap();
        let now = 1_700_000_000;
        let lines: Vec<ResultLine> = read.into_iter().map(|r| r.line_at(now)).collect();
        assert_eq!(lines[0], ResultLine::new(&tls, None, now));
        assert_eq!(lines[0].cert_days_left, Some(1157));
        assert_eq!(lines[1], ResultLine::new(&refused, Some("h"), now));
        let mut old = porthawk_core::ProbeRecord::new(
            "127.0.0.1".parse().unwrap(),
            25,
            PortState::Open,
            3,
            1,
        );
        old.banner = Some(b"220 mx ESMTP Postfix\r\n".to_vec());
        assert_eq!(lines[2], ResultLine::new(&old, None, now));
        assert_eq!(lines[2].service.as_deref(), Some("smtp"));
    }

    /// Writes queued one after another are applied in order by the one writer, and a reply
    /// can be awaited as well as waited for.
    #[test]
    fn queued_writes_apply_in_order_and_replies_can_be_awaited() {
        let dir = TempDir::new("store-order");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = store.insert_sweep(&request(), true, 100, 1).wait().unwrap();
        let mut replies = Vec::new();
        for done in 1..=50u64 {
            let progress = Progress {
                sweep_id: id,
                done,
                counts: Counts {
                    closed: done,
                    ..Counts::default()
                },
                finished: (done == 50).then_some(SweepState::Done),
            };
            replies.push(store.write_batch(Vec::new(), vec![progress]));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for r in replies {
                r.await.unwrap();
            }
        });
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(
            (s.done, s.counts.closed, s.state),
            (50, 50, SweepState::Done)
        );
        assert!(s.finished_ms.is_some());
    }

    /// Readers are read-only: a write through one is refused, so writes cannot bypass the
    /// writer thread.
    #[test]
    fn readers_cannot_write() {
        let dir = TempDir::new("store-readonly");
        let (store, _) = Store::open(dir.path()).unwrap();
        let err = store
            .read(|c| Ok(c.execute("DELETE FROM sweeps", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn migrations_are_applied_once() {
        let dir = TempDir::new("store-migrate");
        drop(Store::open(dir.path()).unwrap());
        let (store, _) = Store::open(dir.path()).unwrap();
        let v: i64 = store
            .read(|c| Ok(c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(v as usize, crate::schema::MIGRATIONS.len());
    }
}
