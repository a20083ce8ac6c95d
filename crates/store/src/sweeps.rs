//! Sweeps, their results and progress.
//!
//! Architecture invariant: a sweep is registered ([`Store::insert_sweep`]) before it is
//! submitted, and each batch's rows and progress are written in one transaction
//! ([`Store::write_batch`]), so stored counts match stored rows whenever the write succeeds;
//! a failed write stores neither (its caller must then not count what it wrote: the server
//! ends such a sweep as [`SweepState::Failed`]).

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
    /// A store write failed: the sweep was stopped, and its counts are those of the batches
    /// that were stored; `reason` says why.
    Failed,
}

impl SweepState {
    /// Every state.
    pub const ALL: [SweepState; 6] = [
        SweepState::Queued,
        SweepState::Running,
        SweepState::Done,
        SweepState::Cancelled,
        SweepState::Interrupted,
        SweepState::Failed,
    ];

    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Queued => "queued",
            SweepState::Running => "running",
            SweepState::Done => "done",
            SweepState::Cancelled => "cancelled",
            SweepState::Interrupted => "interrupted",
            SweepState::Failed => "failed",
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
    /// Why it failed (state `failed`).
    pub reason: Option<String>,
}

/// A stored sweep as a listing shows it: everything but the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
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
    /// Why it failed, for a `failed` sweep.
    pub reason: Option<String>,
}

/// Which ended sweeps the store keeps: the newest `count`, and only those that ended less
/// than `max_age` ago. Queued and running sweeps are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRetention {
    /// The most ended sweeps kept.
    pub count: u64,
    /// How long an ended sweep is kept after it ended.
    pub max_age: std::time::Duration,
}

impl Default for SweepRetention {
    /// 1,000 sweeps, 30 days.
    fn default() -> Self {
        SweepRetention {
            count: 1000,
            max_age: std::time::Duration::from_secs(30 * 86_400),
        }
    }
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
                .and_then(|t| t.expiring())
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
    /// Why it failed, with the final state `failed`.
    pub reason: Option<String>,
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
    /// stored rows, and a sweep marked finished has every row it reported. A transaction
    /// that fails is rolled back and tried again a few times (a short backoff between
    /// tries); the error answered is the last try's, and then nothing of it was stored.
    pub fn write_batch(&self, results: Vec<NewResult>, progress: Vec<Progress>) -> Reply<()> {
        self.write_retrying(move |conn| Ok(write_batch(conn, &results, &progress)?))
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

    /// A page of sweeps, newest first, without their requests: a listing reads only the
    /// columns it shows, whatever size the requests are ([`Store::sweep`] has the request).
    pub fn sweep_summaries(
        &self,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<SweepSummary>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM sweeps ORDER BY id DESC LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = stmt.query_map(
                params![
                    limit.min(i64::MAX as u64) as i64,
                    offset.min(i64::MAX as u64) as i64
                ],
                sweep_summary,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Deletes, with their results, up to `max` ended sweeps that `keep` no longer keeps at
    /// time `now_ms`, oldest first; the states of those it deleted. A sweep that is queued or running is
    /// never deleted and does not count toward `keep.count`. Runs on the writer thread; call
    /// it again while it returns `max` so that other writes run between batches.
    pub fn prune_sweeps(
        &self,
        keep: SweepRetention,
        now_ms: u64,
        max: usize,
    ) -> Reply<Vec<SweepState>> {
        self.write(move |conn| Ok(prune_sweeps(conn, keep, now_ms, max)?))
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
pub(crate) const RESULT_COLUMNS: &str =
    "rowid, ip, port, state, rtt_us, tries, host, errno, matched, \
                              service, product, version, banner, reason, tls_version, \
                              cert_subject, cert_issuer, cert_not_after, cert_expires_first, \
                              captures";

fn conversion(i: usize, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
}

/// The values of a result's stored columns, `ip` to `captures`, in the order `results` and
/// `fleet_staging` both list them.
pub(crate) fn row_values(r: &NewResult) -> [rusqlite::types::Value; 19] {
    use rusqlite::types::Value;
    let l = &r.line;
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    [
        Value::Text(l.ip.to_string()),
        Value::Integer(l.port.into()),
        Value::Text(l.state.as_str().into()),
        Value::Integer(l.rtt_us.into()),
        Value::Integer(l.tries.into()),
        text(&l.host),
        text(&l.errno),
        l.matched.map_or(Value::Null, |m| Value::Integer(m.into())),
        text(&l.service),
        text(&l.product),
        text(&l.version),
        text(&l.banner),
        text(&l.reason),
        text(&l.tls_version),
        text(&l.cert_subject),
        text(&l.cert_issuer),
        r.cert_not_after.map_or(Value::Null, Value::Integer),
        text(&l.cert_expires_first),
        captures_text(l).map_or(Value::Null, Value::Text),
    ]
}

/// A line's captures as stored: the JSON array its JSON output has.
pub(crate) fn captures_text(l: &ResultLine) -> Option<String> {
    l.captures
        .as_ref()
        .and_then(|c| serde_json::to_string(c).ok())
}

/// Stored captures read back (a cell that is not an array of strings reads as none).
fn captures_of(text: Option<String>) -> Option<Vec<String>> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

pub(crate) fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
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
        captures: captures_of(r.get(19)?),
        cert_expires_first: r.get(18)?,
        // Nor are the identification's extra fields: they come from the banner below.
        protocol_version: None,
        info: None,
        cpe: None,
    };
    match r.get_ref(12)? {
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t).into_owned();
            // The identification's extra fields are not stored: they come back from the
            // banner, whose escaped text gives back its bytes.
            let identity = porthawk_core::parse_escapes(&text)
                .ok()
                .and_then(|b| identify(&b));
            if let Some(id) = identity {
                line.protocol_version = id.protocol_version;
                line.info = id.info;
                line.cpe = id.cpe;
            }
            line.banner = Some(text);
        }
        // A row from before the banner was stored as text: the raw reply, identified now as
        // it would have been when it was written.
        ValueRef::Blob(b) => {
            line.banner = Some(banner_text(b));
            if let Some(id) = identify(b) {
                line.service = Some(id.service.to_string());
                line.product = id.product;
                line.version = id.version;
                line.protocol_version = id.protocol_version;
                line.info = id.info;
                line.cpe = id.cpe;
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
                 cert_subject, cert_issuer, cert_not_after, cert_expires_first, captures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20)",
        )?;
        for r in results {
            let sweep = rusqlite::types::Value::Integer(r.sweep_id as i64);
            insert.execute(rusqlite::params_from_iter(
                std::iter::once(sweep).chain(row_values(r)),
            ))?;
        }
        let mut update = tx.prepare_cached(
            "UPDATE sweeps SET done = ?2, open = ?3, closed = ?4, filtered = ?5,
                 unreachable = ?6, error = ?7,
                 state = COALESCE(?8, state),
                 finished_ms = CASE WHEN ?8 IS NULL THEN finished_ms ELSE ?9 END,
                 reason = COALESCE(?10, reason)
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
                p.reason.as_deref(),
            ])?;
        }
    }
    tx.commit()
}

/// [`SUMMARY_COLUMNS`], then the request.
const SWEEP_COLUMNS: &str = "id, state, total, done, open, closed, filtered, unreachable, \
                             error, created_ms, finished_ms, reason, request";

fn sweep_row<R: DeserializeOwned>(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow<R>> {
    let s = sweep_summary(r)?;
    let request: String = r.get(12)?;
    Ok(SweepRow {
        id: s.id,
        state: s.state,
        request: serde_json::from_str(&request).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e))
        })?,
        total: s.total,
        done: s.done,
        counts: s.counts,
        created_ms: s.created_ms,
        finished_ms: s.finished_ms,
        reason: s.reason,
    })
}

const SUMMARY_COLUMNS: &str = "id, state, total, done, open, closed, filtered, unreachable, \
                               error, created_ms, finished_ms, reason";

fn sweep_summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepSummary> {
    let state: String = r.get(1)?;
    let count = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
    Ok(SweepSummary {
        id: count(0)?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
        total: count(2)?,
        done: count(3)?,
        counts: Counts {
            open: count(4)?,
            closed: count(5)?,
            filtered: count(6)?,
            unreachable: count(7)?,
            error: count(8)?,
        },
        created_ms: count(9)?,
        finished_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        reason: r.get(11)?,
    })
}

/// The ended sweeps `keep` no longer keeps (the oldest `max` of them), deleted with their
/// results in one transaction.
fn prune_sweeps(
    conn: &mut Connection,
    keep: SweepRetention,
    now_ms: u64,
    max: usize,
) -> rusqlite::Result<Vec<SweepState>> {
    let before = now_ms.saturating_sub(keep.max_age.as_millis().min(u64::MAX as u128) as u64);
    let tx = conn.transaction()?;
    let pruned: Vec<(i64, SweepState)> = {
        // Ended sweeps, newest first: past the first `count`, or ended before the cut-off.
        let mut stmt = tx.prepare_cached(
            "SELECT id, state FROM (
                 SELECT id, state, COALESCE(finished_ms, created_ms) AS ended,
                        ROW_NUMBER() OVER (ORDER BY id DESC) AS rank
                 FROM sweeps WHERE state NOT IN ('queued', 'running'))
             WHERE rank > ?1 OR ended < ?2
             ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                keep.count.min(i64::MAX as u64) as i64,
                before.min(i64::MAX as u64) as i64,
                max.min(i64::MAX as usize) as i64
            ],
            |r| {
                let state: String = r.get(1)?;
                // A state this build does not know is an ended one (it is not queued or
                // running); count it as interrupted.
                Ok((r.get(0)?, state.parse().unwrap_or(SweepState::Interrupted)))
            },
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    {
        let mut results = tx.prepare_cached("DELETE FROM results WHERE sweep_id = ?1")?;
        let mut sweeps = tx.prepare_cached(
            "DELETE FROM sweeps WHERE id = ?1 AND state NOT IN ('queued', 'running')",
        )?;
        for (id, _) in &pruned {
            results.execute(params![id])?;
            sweeps.execute(params![id])?;
        }
    }
    tx.commit()?;
    Ok(pruned.into_iter().map(|(_, state)| state).collect())
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
                reason: None,
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
            expires_first: None,
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
                reason: None,
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

    /// With the database at its size limit (SQLite's `max_page_count`: the same SQLITE_FULL
    /// a full disk gives), a batch is tried again and then refused whole: no row and no
    /// count of it is stored, the sweep's stored counts still match its stored rows, and the
    /// store says it is unhealthy. The failed end can still be recorded once there is room.
    #[test]
    fn a_write_that_fails_for_good_stores_nothing_of_its_batch() {
        let dir = TempDir::new("store-full");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = store
            .insert_sweep(&request(), true, 5000, 1)
            .wait()
            .unwrap();
        let first = Progress {
            sweep_id: id,
            done: 1,
            counts: Counts {
                open: 1,
                ..Counts::default()
            },
            finished: None,
            reason: None,
        };
        store
            .write_batch(vec![open_row(id)], vec![first])
            .wait()
            .unwrap();
        assert!(store.health().is_ok());
        let pages: i64 = store
            .write(|c| Ok(c.query_row("PRAGMA page_count", [], |r| r.get(0))?))
            .wait()
            .unwrap();
        store
            .write(move |c| {
                Ok(
                    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            })
            .wait()
            .unwrap();
        let mut rows = Vec::new();
        for i in 0..4000 {
            let mut r = open_row(id);
            // One row per (ip, port), as `results` requires.
            r.line.port = 1000 + i;
            r.line.banner = Some("x".repeat(200));
            rows.push(r);
        }
        let big = Progress {
            sweep_id: id,
            done: 4001,
            counts: Counts {
                open: 4001,
                ..Counts::default()
            },
            finished: Some(SweepState::Done),
            reason: None,
        };
        let err = store.write_batch(rows, vec![big]).wait().unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        let health = store.health().to_string();
        assert!(health.starts_with("write failed: "), "{health}");
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(
            (s.state, s.done, s.counts.open),
            (SweepState::Running, 1, 1)
        );
        assert_eq!(store.results_page(id, 0, None, 10_000).unwrap().len(), 1);
        store
            .write(|c| {
                Ok(c.query_row("PRAGMA max_page_count = 1000000", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .wait()
            .unwrap();
        let end = Progress {
            sweep_id: id,
            done: 1,
            counts: Counts {
                open: 1,
                ..Counts::default()
            },
            finished: Some(SweepState::Failed),
            reason: Some("store write failed: database or disk is full".into()),
        };
        store.write_batch(Vec::new(), vec![end]).wait().unwrap();
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(s.state, SweepState::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("store write failed: database or disk is full")
        );
        // The failure stays reported: rows were lost.
        assert!(!store.health().is_ok());
    }

    /// A database file deleted while the store has it open is noticed, and writes into the
    /// orphaned file are refused rather than lost at exit.
    #[test]
    fn a_deleted_database_is_noticed_and_not_written() {
        let dir = TempDir::new("store-deleted");
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.health(), crate::StoreHealth::Ok);
        std::fs::remove_file(store.path()).unwrap();
        let health = store.health();
        assert!(matches!(health, crate::StoreHealth::Deleted(_)), "{health}");
        assert!(
            health.to_string().starts_with("database deleted"),
            "{health}"
        );
        let err = store
            .insert_sweep(&request(), true, 1, 1)
            .wait()
            .unwrap_err();
        assert!(matches!(err, StoreError::Deleted { .. }), "{err}");
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

    /// Resident memory of this process, in bytes (Linux).
    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Issue 14 item 8: listing 1,000 sweeps whose requests are 100 KB each reads no request:
    /// the rows have no request field, and the process grows by far less than the requests'
    /// 100 MB while it lists them (the old listing decoded every request).
    #[test]
    fn listing_reads_no_request_bodies() {
        let dir = TempDir::new("store-list-big");
        let (store, _) = Store::open(dir.path()).unwrap();
        let body = "x".repeat(100 * 1024);
        let request = serde_json::json!({"targets": ["127.0.0.1"], "ports": "22", "pad": body});
        let mut last = 0;
        for i in 0..1000u64 {
            last = store.insert_sweep(&request, false, 1, i).wait().unwrap();
        }
        let before = rss_bytes();
        let mut grown = 0;
        let mut listed = 0;
        let mut offset = 0;
        loop {
            let page = store.sweep_summaries(1000, offset).unwrap();
            // Measured while the page is held, as a handler holds it to answer.
            grown = grown.max(rss_bytes().saturating_sub(before));
            if page.is_empty() {
                break;
            }
            if offset == 0 {
                assert_eq!(page[0].id, last, "newest first");
            }
            listed += page.len();
            offset += page.len() as u64;
        }
        assert_eq!(listed, 1000);
        eprintln!("listing 1,000 sweeps grew the process by {grown} bytes");
        let bodies = 1000 * body.len() as u64;
        assert!(
            grown < bodies / 10,
            "listing grew the process by {grown} bytes; the requests total {bodies}"
        );
        // The request is still there for the one-sweep read.
        let one = store.sweep::<serde_json::Value>(last).unwrap().unwrap();
        assert_eq!(one.request["pad"].as_str().map(str::len), Some(body.len()));
    }

    /// Stores a sweep created at `created` that ended (`Done`) at `finished`, or is still
    /// running when `finished` is `None`, with one result row; its id.
    fn stored_sweep(store: &Store, created: u64, finished: Option<u64>) -> u64 {
        let id = store
            .insert_sweep(&request(), true, 1, created)
            .wait()
            .unwrap();
        store
            .write_batch(vec![open_row(id)], Vec::new())
            .wait()
            .unwrap();
        if let Some(at) = finished {
            store
                .write(move |c| {
                    Ok(c.execute(
                        "UPDATE sweeps SET state = 'done', finished_ms = ?2 WHERE id = ?1",
                        params![id as i64, at as i64],
                    )?)
                })
                .wait()
                .unwrap();
        }
        id
    }

    fn ids(store: &Store) -> Vec<u64> {
        let mut ids: Vec<u64> = store
            .sweep_summaries(1000, 0)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn result_rows(store: &Store) -> i64 {
        store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))?))
            .unwrap()
    }

    /// Retention by count keeps the newest `count` ended sweeps; the older ones go with
    /// their results; a running sweep, however old, stays and does not count.
    #[test]
    fn retention_by_count_removes_the_oldest_ended_sweeps_and_keeps_running_ones() {
        let dir = TempDir::new("store-keep-count");
        let (store, _) = Store::open(dir.path()).unwrap();
        let running = stored_sweep(&store, 1, None);
        let ended: Vec<u64> = (0..5)
            .map(|i| stored_sweep(&store, 10 + i, Some(20 + i)))
            .collect();
        let keep = SweepRetention {
            count: 2,
            max_age: std::time::Duration::from_secs(3600),
        };
        // Two at a time: the first call deletes the two oldest, the next the third.
        assert_eq!(store.prune_sweeps(keep, 100, 2).wait().unwrap().len(), 2);
        assert_eq!(store.prune_sweeps(keep, 100, 2).wait().unwrap().len(), 1);
        assert_eq!(store.prune_sweeps(keep, 100, 2).wait().unwrap().len(), 0);
        assert_eq!(ids(&store), vec![running, ended[3], ended[4]]);
        assert_eq!(result_rows(&store), 3, "results of pruned sweeps are gone");
        assert!(store
            .results_page(ended[0], 0, None, 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.results_page(running, 0, None, 10).unwrap().len(), 1);
    }

    /// Retention by age (with an injected `now`) removes sweeps that ended before the
    /// cut-off, whatever their number, and keeps running ones.
    #[test]
    fn retention_by_age_removes_sweeps_that_ended_long_ago() {
        let dir = TempDir::new("store-keep-age");
        let (store, _) = Store::open(dir.path()).unwrap();
        let day = 86_400_000;
        let running = stored_sweep(&store, 0, None);
        let old = stored_sweep(&store, 0, Some(day));
        let recent = stored_sweep(&store, 0, Some(9 * day));
        let keep = SweepRetention {
            count: 1000,
            max_age: std::time::Duration::from_secs(2 * 86_400),
        };
        // At day 2.5 nothing is two days old yet.
        assert_eq!(
            store
                .prune_sweeps(keep, 5 * day / 2, 100)
                .wait()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            store
                .prune_sweeps(keep, 10 * day, 100)
                .wait()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(ids(&store), vec![running, recent]);
        assert!(!ids(&store).contains(&old));
        assert_eq!(result_rows(&store), 2);
        // Long after, only the running sweep is left.
        assert_eq!(
            store
                .prune_sweeps(keep, 100 * day, 100)
                .wait()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(ids(&store), vec![running]);
        assert_eq!(result_rows(&store), 1);
    }
}
