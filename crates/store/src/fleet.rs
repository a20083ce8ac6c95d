//! Fleet sweeps: the slice table, the per-frame ledger and the staging rows behind the
//! coordinator's exactly-once accounting (`docs/fleet.md`, "Guarantees").
//!
//! A fleet sweep's target space is cut into slices `[i·L, min((i+1)·L, total))`. Agents run
//! slices and send result frames; a slice may be run more than once (an agent killed, stalled,
//! a slice published again), so frames of several *attempts* (`(work_seq, delivered)` of the
//! work message) can arrive, each possibly more than once and in any order. The rules:
//!
//! - a frame is applied once: the ledger `fleet_frames` has it under
//!   `(sweep, slice, attempt, n)`, and a frame already there is a duplicate;
//! - an attempt is complete when its frames `0..frames` are all in the ledger, its records
//!   add up to the slice's size, and no record of it lies outside the sweep's hosts × ports;
//!   an attempt whose frames are all there but that fails either check is rejected;
//! - the **first complete attempt wins**: in the transaction that finds it complete, its
//!   staged rows are upserted into `results`, every attempt's staging rows of the slice are
//!   deleted, the slice becomes `done` with its counts, and the counts and size are added to
//!   the sweep; frames that arrive later for a `done` slice are superseded.
//!
//! So stored counts still match stored rows: only completed slices reach `sweeps` and
//! `results`. Every method here runs one transaction on the writer thread.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

pub use porthawk_core::Attempt;

use crate::db::{Reply, Store, StoreError};
use crate::sweeps::{Counts, NewResult, SweepState};

/// A fleet sweep to store beside its `sweeps` row.
#[derive(Debug, Clone)]
pub struct NewFleetSweep {
    /// The pool whose agents run it.
    pub pool: String,
    /// The encoded sweep spec (the resolved targets, ports and probe), as agents get it.
    pub spec: Vec<u8>,
    /// Positions per slice (the last slice may be shorter).
    pub slice_len: u64,
}

/// A stored fleet sweep, as the coordinator resumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSweep {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
    /// The pool whose agents run it.
    pub pool: String,
    /// The encoded sweep spec.
    pub spec: Vec<u8>,
    /// Probes in the sweep.
    pub total: u64,
    /// Positions per slice.
    pub slice_len: u64,
    /// Slices in the sweep.
    pub slices: u32,
    /// The next slice never published yet.
    pub next_slice: u32,
    /// Whether every result is stored (else only open ones).
    pub store_all: bool,
}

impl FleetSweep {
    /// The positions of slice `slice`.
    pub fn range(&self, slice: u32) -> std::ops::Range<u64> {
        slice_range(self.total, self.slice_len, slice)
    }
}

/// The positions `[i·L, min((i+1)·L, total))` of slice `i`.
pub(crate) fn slice_range(total: u64, slice_len: u64, slice: u32) -> std::ops::Range<u64> {
    let start = (slice as u64).saturating_mul(slice_len).min(total);
    start..start.saturating_add(slice_len).min(total)
}

/// How many slices of `slice_len` tile `[0, total)`.
pub(crate) fn slice_count(total: u64, slice_len: u64) -> u32 {
    total
        .div_ceil(slice_len.max(1))
        .min(u32::MAX as u64)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// A slice published and not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSlice {
    /// The slice.
    pub slice: u32,
    /// How many times it was published (1 at first).
    pub epoch: u32,
    /// The work message's sequence, once its publish was acknowledged.
    pub work_seq: Option<u64>,
    /// When it was (last) published, in ms since the epoch.
    pub published_ms: u64,
    /// When a frame of it last arrived, in ms since the epoch.
    pub last_seen_ms: Option<u64>,
    /// The highest delivery count among the attempts of its current work message that sent
    /// a frame (`None` before any did): the janitor's sign that the last delivery ran.
    pub max_delivered: Option<u64>,
}

/// A slice's progress, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SliceProgress {
    /// Slices done.
    pub done: u32,
    /// Slices in the sweep.
    pub total: u32,
    /// Slices that failed (their work exhausted its deliveries too often).
    pub failed: u32,
    /// Slices published and not finished.
    pub running: u32,
    /// Slices of a cancelled sweep whose newest attempt was kept as a partial result.
    pub partial: u32,
    /// Which slices failed, lowest first (at most 100).
    pub failed_slices: Vec<u32>,
    /// Slices won by an attempt that was not the first delivery.
    pub redelivered_wins: u32,
}

/// One result frame of an agent, decoded and checked by the coordinator.
#[derive(Debug, Clone)]
pub struct FleetFrame {
    /// The sweep.
    pub sweep_id: u64,
    /// The slice.
    pub slice: u32,
    /// The attempt that sent it.
    pub attempt: Attempt,
    /// The frame's number in its attempt, from 0.
    pub n: u32,
    /// On the attempt's last frame: how many frames and records the attempt sent.
    pub last: Option<(u32, u64)>,
    /// The agent that sent it (the subject's token).
    pub agent: String,
    /// Records in the frame.
    pub records: u64,
    /// Records per verdict.
    pub counts: Counts,
    /// Records whose address or port is outside the sweep's hosts × ports.
    pub outside: u64,
    /// The rows the sweep's `store` mode keeps.
    pub rows: Vec<NewResult>,
}

/// What one ingested batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Frames applied (new in the ledger).
    pub applied: u64,
    /// Frames already in the ledger.
    pub duplicates: u64,
    /// Frames for a slice already done or failed, or a sweep no longer running.
    pub superseded: u64,
    /// Frames for a sweep or slice the store does not know.
    pub unknown: u64,
    /// Attempts rejected: complete in frames, but short, long or outside the sweep.
    pub rejected: Vec<Rejected>,
    /// Slices completed by this batch.
    pub completed: Vec<Completed>,
    /// Sweeps that ended with this batch, and how.
    pub ended: Vec<(u64, SweepState)>,
}

/// An attempt rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The sweep.
    pub sweep_id: u64,
    /// The slice.
    pub slice: u32,
    /// The attempt.
    pub attempt: Attempt,
    /// Why.
    pub reason: String,
}

/// A slice completed by its first complete attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The sweep.
    pub sweep_id: u64,
    /// The slice.
    pub slice: u32,
    /// The winning attempt.
    pub attempt: Attempt,
    /// The agent that ran it.
    pub agent: String,
    /// Its records per verdict.
    pub counts: Counts,
    /// Its size.
    pub records: u64,
}

impl Store {
    /// Records a fleet sweep in state `running`, with its spec; its id.
    pub fn insert_fleet_sweep(
        &self,
        request: &impl Serialize,
        store_all: bool,
        total: u64,
        created_ms: u64,
        fleet: NewFleetSweep,
    ) -> Reply<u64> {
        let json = serde_json::to_string(request).map_err(|e| StoreError::Value {
            column: "sweeps.request",
            message: e.to_string(),
        });
        self.write(move |conn| {
            let json = json?;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO sweeps (state, request, store_all, total, created_ms, mode)
                 VALUES ('running', ?1, ?2, ?3, ?4, 'fleet')",
                params![json, store_all, total as i64, created_ms as i64],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO fleet_sweeps (sweep_id, pool, spec, slice_len, slices, next_slice)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![
                    id,
                    fleet.pool,
                    fleet.spec,
                    fleet.slice_len as i64,
                    slice_count(total, fleet.slice_len) as i64
                ],
            )?;
            tx.commit()?;
            Ok(id as u64)
        })
    }

    /// A fleet sweep, whatever its state; `None` for a local sweep or none at all.
    pub fn fleet_sweep(&self, id: u64) -> Result<Option<FleetSweep>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("{FLEET_SELECT} WHERE f.sweep_id = ?1"),
                params![id as i64],
                fleet_sweep_row,
            )
            .optional()?)
        })
    }

    /// The fleet sweeps still running, to resume them after a restart.
    pub fn running_fleet_sweeps(&self) -> Result<Vec<FleetSweep>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "{FLEET_SELECT} WHERE s.state = 'running' ORDER BY f.sweep_id"
            ))?;
            let rows = stmt.query_map([], fleet_sweep_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Takes up to `max` slices never published of a running sweep: their rows are written
    /// (`published`, epoch 1) before the caller publishes them, so a crash in between is
    /// repaired by publishing them again. The slices, in order.
    pub fn claim_slices(&self, sweep_id: u64, max: u32, now_ms: u64) -> Reply<Vec<u32>> {
        self.write_retrying(move |conn| {
            let tx = conn.transaction()?;
            let row: Option<(i64, i64, String)> = tx
                .query_row(
                    "SELECT f.next_slice, f.slices, s.state FROM fleet_sweeps f
                     JOIN sweeps s ON s.id = f.sweep_id WHERE f.sweep_id = ?1",
                    params![sweep_id as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((next, slices, state)) = row else {
                return Ok(Vec::new());
            };
            if state != "running" {
                return Ok(Vec::new());
            }
            let end = (next + max as i64).min(slices);
            let mut claimed = Vec::new();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO fleet_slices (sweep_id, slice, state, epoch, published_ms)
                     VALUES (?1, ?2, 'published', 1, ?3)",
                )?;
                for slice in next..end {
                    insert.execute(params![sweep_id as i64, slice, now_ms as i64])?;
                    claimed.push(slice as u32);
                }
            }
            tx.execute(
                "UPDATE fleet_sweeps SET next_slice = ?2 WHERE sweep_id = ?1",
                params![sweep_id as i64, end],
            )?;
            tx.commit()?;
            Ok(claimed)
        })
    }

    /// Records the work message's sequence of a slice's epoch, once its publish is acknowledged.
    pub fn set_work_seq(&self, sweep_id: u64, slice: u32, epoch: u32, seq: u64) -> Reply<()> {
        self.write_retrying(move |conn| {
            conn.execute(
                "UPDATE fleet_slices SET work_seq = ?4
                 WHERE sweep_id = ?1 AND slice = ?2 AND epoch = ?3",
                params![sweep_id as i64, slice, epoch, seq as i64],
            )?;
            Ok(())
        })
    }

    /// The slices of a sweep that are published and not finished.
    pub fn open_slices(&self, sweep_id: u64) -> Result<Vec<OpenSlice>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT l.slice, l.epoch, l.work_seq, l.published_ms, l.last_seen_ms,
                     (SELECT MAX(f.delivered) FROM fleet_frames f WHERE f.sweep_id = l.sweep_id
                          AND f.slice = l.slice AND f.work_seq = l.work_seq)
                 FROM fleet_slices l
                 WHERE l.sweep_id = ?1 AND l.state = 'published' ORDER BY l.slice",
            )?;
            let rows = stmt.query_map(params![sweep_id as i64], |r| {
                Ok(OpenSlice {
                    slice: r.get(0)?,
                    epoch: r.get(1)?,
                    work_seq: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    published_ms: r.get::<_, i64>(3)? as u64,
                    last_seen_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    max_delivered: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The slice whose work message has sequence `work_seq`, if it is still open.
    pub fn slice_by_work_seq(&self, work_seq: u64) -> Result<Option<(u64, u32, u32)>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT sweep_id, slice, epoch FROM fleet_slices
                 WHERE work_seq = ?1 AND state = 'published'",
                params![work_seq as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
        })
    }

    /// Publishes an open slice again: its epoch goes up by one unless it is at `max_epochs`,
    /// in which case the slice fails (and the sweep ends `interrupted` if that was its last
    /// open slice). `seen` is the epoch the caller found lost (an advisory's, the janitor's):
    /// when the slice has moved on since (the advisory and the janitor both saw the same
    /// lost work), nothing happens, so one loss counts once against `max_epochs`.
    pub fn republish_slice(
        &self,
        sweep_id: u64,
        slice: u32,
        seen: u32,
        max_epochs: u32,
        now_ms: u64,
    ) -> Reply<Republish> {
        self.write_retrying(move |conn| {
            let tx = conn.transaction()?;
            let epoch: Option<u32> = tx
                .query_row(
                    "SELECT epoch FROM fleet_slices
                     WHERE sweep_id = ?1 AND slice = ?2 AND state = 'published'",
                    params![sweep_id as i64, slice],
                    |r| r.get(0),
                )
                .optional()?;
            let outcome = match epoch {
                None => Republish::NotOpen,
                Some(e) if e != seen => Republish::NotOpen,
                Some(e) if e >= max_epochs => {
                    tx.execute(
                        "UPDATE fleet_slices SET state = 'failed' WHERE sweep_id = ?1 AND slice = ?2",
                        params![sweep_id as i64, slice],
                    )?;
                    tx.execute(
                        "DELETE FROM fleet_staging WHERE sweep_id = ?1 AND slice = ?2",
                        params![sweep_id as i64, slice],
                    )?;
                    Republish::Failed(finish_if_complete(&tx, sweep_id)?)
                }
                Some(e) => {
                    tx.execute(
                        "UPDATE fleet_slices SET epoch = ?3, work_seq = NULL, published_ms = ?4,
                             last_seen_ms = NULL
                         WHERE sweep_id = ?1 AND slice = ?2",
                        params![sweep_id as i64, slice, e + 1, now_ms as i64],
                    )?;
                    Republish::Epoch(e + 1)
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Applies a batch of frames in one transaction (see the module's rules).
    pub fn ingest_frames(&self, frames: Vec<FleetFrame>, now_ms: u64) -> Reply<IngestReport> {
        self.write_retrying(move |conn| {
            let tx = conn.transaction()?;
            let mut report = IngestReport::default();
            for f in &frames {
                ingest_frame(&tx, f, now_ms, &mut report)?;
            }
            tx.commit()?;
            Ok(report)
        })
    }

    /// A fleet sweep's slices by state.
    pub fn slice_progress(&self, sweep_id: u64) -> Result<SliceProgress, StoreError> {
        self.read(|c| {
            let total: Option<u32> = c
                .query_row(
                    "SELECT slices FROM fleet_sweeps WHERE sweep_id = ?1",
                    params![sweep_id as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(total) = total else {
                return Ok(SliceProgress::default());
            };
            let mut p = SliceProgress {
                total,
                ..SliceProgress::default()
            };
            let mut stmt = c.prepare_cached(
                "SELECT state, COUNT(*), SUM(winner_delivered > 1) FROM fleet_slices
                 WHERE sweep_id = ?1 GROUP BY state",
            )?;
            let rows = stmt.query_map(params![sweep_id as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<u32>>(2)?,
                ))
            })?;
            for row in rows {
                let (state, n, redelivered) = row?;
                match state.as_str() {
                    "done" => {
                        p.done = n;
                        p.redelivered_wins = redelivered.unwrap_or(0);
                    }
                    "failed" => p.failed = n,
                    "partial" => p.partial = n,
                    _ => p.running = n,
                }
            }
            let mut stmt = c.prepare_cached(
                "SELECT slice FROM fleet_slices WHERE sweep_id = ?1 AND state = 'failed'
                 ORDER BY slice LIMIT 100",
            )?;
            p.failed_slices = stmt
                .query_map(params![sweep_id as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(p)
        })
    }

    /// Slice counts by state over every running fleet sweep (for metrics).
    pub fn slices_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT l.state, COUNT(*) FROM fleet_slices l JOIN sweeps s ON s.id = l.sweep_id
                 WHERE s.state = 'running' GROUP BY l.state",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Ends a running fleet sweep as `state` (cancelled, interrupted); false if it was not
    /// running. Done slices stay counted. A cancelled sweep also keeps what its running
    /// slices found, as a local sweep does: in the same transaction, each open slice's newest
    /// attempt (the highest `(work_seq, delivered)` with nothing outside the sweep) is
    /// promoted as for a done slice — its staged rows upserted into `results`, its ledger
    /// counts and records added to the sweep — and the slice becomes `partial`. Other staged
    /// rows are dropped. So stored counts still equal stored rows, with one row per
    /// (ip, port).
    pub fn end_fleet_sweep(
        &self,
        sweep_id: u64,
        state: SweepState,
        reason: Option<String>,
        now_ms: u64,
    ) -> Reply<bool> {
        self.write_retrying(move |conn| {
            let tx = conn.transaction()?;
            let running: bool = tx
                .query_row(
                    "SELECT state = 'running' FROM sweeps WHERE id = ?1",
                    params![sweep_id as i64],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            if running && state == SweepState::Cancelled {
                keep_partial(&tx, sweep_id)?;
            }
            let n = tx.execute(
                "UPDATE sweeps SET state = ?2, finished_ms = ?3, reason = COALESCE(?4, reason)
                 WHERE id = ?1 AND state = 'running'",
                params![sweep_id as i64, state.as_str(), now_ms as i64, reason],
            )?;
            tx.execute(
                "DELETE FROM fleet_staging WHERE sweep_id = ?1",
                params![sweep_id as i64],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }
}

/// Promotes the newest usable attempt of each open slice of `sweep_id` as a partial result
/// (see [`Store::end_fleet_sweep`]).
fn keep_partial(tx: &Transaction<'_>, sweep_id: u64) -> rusqlite::Result<()> {
    let sweep = sweep_id as i64;
    let (total, slice_len): (i64, i64) = tx.query_row(
        "SELECT s.total, f.slice_len FROM sweeps s JOIN fleet_sweeps f ON f.sweep_id = s.id
         WHERE s.id = ?1",
        params![sweep],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let open: Vec<u32> = {
        let mut stmt = tx.prepare_cached(
            "SELECT slice FROM fleet_slices WHERE sweep_id = ?1 AND state = 'published'",
        )?;
        let rows = stmt.query_map(params![sweep], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for slice in open {
        let range = slice_range(total as u64, slice_len as u64, slice);
        let size = (range.end - range.start) as i64;
        // Newest first. Not kept: an attempt whose frames are all in (on an open slice it
        // was rejected, and its staged rows are gone), one with a record outside the sweep
        // or more records than the slice has positions (it would be rejected).
        let newest: Option<(i64, i64, String)> = tx
            .query_row(
                "SELECT work_seq, delivered, MAX(agent) FROM fleet_frames
                 WHERE sweep_id = ?1 AND slice = ?2
                 GROUP BY work_seq, delivered
                 HAVING SUM(outside) = 0 AND SUM(records) <= ?3
                     AND (MAX(last_frames) IS NULL OR COUNT(*) < MAX(last_frames))
                 ORDER BY work_seq DESC, delivered DESC LIMIT 1",
                params![sweep, slice, size],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((work_seq, delivered, agent)) = newest else {
            continue;
        };
        let attempt = Attempt {
            work_seq: work_seq as u64,
            delivered: delivered as u64,
        };
        promote_attempt(tx, sweep_id, slice, attempt, &agent, "partial")?;
    }
    Ok(())
}

/// What [`Store::republish_slice`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Republish {
    /// Publish it again with this epoch.
    Epoch(u32),
    /// It failed; `Some(state)` if its sweep ended with it.
    Failed(Option<SweepState>),
    /// It is done, failed, unknown or already past the epoch seen: nothing to publish.
    NotOpen,
}

const FLEET_SELECT: &str = "SELECT f.sweep_id, s.state, f.pool, f.spec, s.total, f.slice_len,
        f.slices, f.next_slice, s.store_all
    FROM fleet_sweeps f JOIN sweeps s ON s.id = f.sweep_id";

fn fleet_sweep_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FleetSweep> {
    let state: String = r.get(1)?;
    Ok(FleetSweep {
        id: r.get::<_, i64>(0)? as u64,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
        pool: r.get(2)?,
        spec: r.get(3)?,
        total: r.get::<_, i64>(4)? as u64,
        slice_len: r.get::<_, i64>(5)? as u64,
        slices: r.get(6)?,
        next_slice: r.get(7)?,
        store_all: r.get(8)?,
    })
}

/// Applies one frame inside the batch's transaction.
fn ingest_frame(
    tx: &Transaction<'_>,
    f: &FleetFrame,
    now_ms: u64,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    let sweep = f.sweep_id as i64;
    let slice: Option<(String, String, i64, i64)> = tx
        .query_row(
            "SELECT l.state, s.state, s.total, fs.slice_len FROM fleet_slices l
             JOIN sweeps s ON s.id = l.sweep_id
             JOIN fleet_sweeps fs ON fs.sweep_id = l.sweep_id
             WHERE l.sweep_id = ?1 AND l.slice = ?2",
            params![sweep, f.slice],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((slice_state, sweep_state, total, slice_len)) = slice else {
        report.unknown += 1;
        return Ok(());
    };
    if slice_state != "published" || sweep_state != "running" {
        report.superseded += 1;
        return Ok(());
    }
    let c = &f.counts;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO fleet_frames (sweep_id, slice, work_seq, delivered, n, agent,
             records, last_frames, last_records, outside, c_open, c_closed, c_filtered,
             c_unreachable, c_error, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            sweep,
            f.slice,
            f.attempt.work_seq as i64,
            f.attempt.delivered as i64,
            f.n,
            f.agent,
            f.records as i64,
            f.last.map(|l| l.0),
            f.last.map(|l| l.1 as i64),
            f.outside as i64,
            c.open as i64,
            c.closed as i64,
            c.filtered as i64,
            c.unreachable as i64,
            c.error as i64,
            now_ms as i64,
        ],
    )?;
    if inserted == 0 {
        report.duplicates += 1;
        return Ok(());
    }
    report.applied += 1;
    tx.execute(
        "UPDATE fleet_slices SET last_seen_ms = ?3 WHERE sweep_id = ?1 AND slice = ?2",
        params![sweep, f.slice, now_ms as i64],
    )?;
    stage(tx, f)?;

    // Is the attempt complete now?
    let (frames, max_n, last_frames, records, outside): (i64, i64, Option<i64>, i64, i64) = tx
        .query_row(
            "SELECT COUNT(*), MAX(n), MAX(last_frames), SUM(records), SUM(outside)
             FROM fleet_frames WHERE sweep_id = ?1 AND slice = ?2 AND work_seq = ?3
                 AND delivered = ?4",
            params![
                sweep,
                f.slice,
                f.attempt.work_seq as i64,
                f.attempt.delivered as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
    let Some(last_frames) = last_frames else {
        return Ok(());
    };
    if frames < last_frames {
        return Ok(());
    }
    let range = slice_range(total as u64, slice_len as u64, f.slice);
    let size = (range.end - range.start) as i64;
    let reject = if frames != last_frames || max_n != last_frames - 1 {
        Some(format!(
            "frames numbered up to {max_n} for an attempt of {last_frames} frames"
        ))
    } else if records != size {
        Some(format!("{records} records for a slice of {size} positions"))
    } else if outside > 0 {
        Some(format!(
            "{outside} records for addresses or ports outside the sweep"
        ))
    } else {
        None
    };
    let attempt_params = params![
        sweep,
        f.slice,
        f.attempt.work_seq as i64,
        f.attempt.delivered as i64
    ];
    if let Some(reason) = reject {
        tx.execute(
            "DELETE FROM fleet_staging WHERE sweep_id = ?1 AND slice = ?2 AND work_seq = ?3
                 AND delivered = ?4",
            attempt_params,
        )?;
        report.rejected.push(Rejected {
            sweep_id: f.sweep_id,
            slice: f.slice,
            attempt: f.attempt,
            reason,
        });
        return Ok(());
    }
    promote(tx, f, report)?;
    if let Some(state) = finish_if_complete(tx, f.sweep_id)? {
        report.ended.push((f.sweep_id, state));
    }
    Ok(())
}

/// The columns of a stored result, in `results` and `fleet_staging` alike.
const ROW_COLUMNS: &str = "ip, port, state, rtt_us, tries, host, errno, matched, service, \
                           product, version, banner, reason, tls_version, cert_subject, \
                           cert_issuer, cert_not_after, cert_expires_first, captures";

fn stage(tx: &Transaction<'_>, f: &FleetFrame) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO fleet_staging (sweep_id, slice, work_seq, delivered, {ROW_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19, ?20, ?21, ?22, ?23)"
    ))?;
    for r in &f.rows {
        use rusqlite::types::Value;
        let attempt = [
            Value::Integer(f.sweep_id as i64),
            Value::Integer(f.slice.into()),
            Value::Integer(f.attempt.work_seq as i64),
            Value::Integer(f.attempt.delivered as i64),
        ];
        insert.execute(rusqlite::params_from_iter(
            attempt.into_iter().chain(crate::sweeps::row_values(r)),
        ))?;
    }
    Ok(())
}

/// Makes `f`'s attempt the slice's winner: its rows into `results`, every attempt's staging
/// rows gone, the slice `done` with its counts, which are added to the sweep.
fn promote(
    tx: &Transaction<'_>,
    f: &FleetFrame,
    report: &mut IngestReport,
) -> rusqlite::Result<()> {
    let completed = promote_attempt(tx, f.sweep_id, f.slice, f.attempt, &f.agent, "done")?;
    report.completed.push(completed);
    Ok(())
}

/// Promotes an attempt of a slice: its staged rows upserted into `results`, every
/// attempt's staging rows of the slice deleted, the slice marked `state` (`done`, or
/// `partial` at a cancel) with the attempt as winner and its ledger counts, which are added
/// (with its records) to the sweep.
fn promote_attempt(
    tx: &Transaction<'_>,
    sweep_id: u64,
    slice: u32,
    attempt: Attempt,
    agent: &str,
    state: &str,
) -> rusqlite::Result<Completed> {
    let sweep = sweep_id as i64;
    let attempt_params = params![
        sweep,
        slice,
        attempt.work_seq as i64,
        attempt.delivered as i64
    ];
    // The upsert keeps one row per (sweep, ip, port) whatever happened before.
    tx.execute(
        &format!(
            "INSERT INTO results (sweep_id, {ROW_COLUMNS})
             SELECT sweep_id, {ROW_COLUMNS} FROM fleet_staging
             WHERE sweep_id = ?1 AND slice = ?2 AND work_seq = ?3 AND delivered = ?4
             ORDER BY rowid
             ON CONFLICT (sweep_id, ip, port) DO UPDATE SET state = excluded.state,
                 rtt_us = excluded.rtt_us, tries = excluded.tries, host = excluded.host,
                 errno = excluded.errno, matched = excluded.matched,
                 service = excluded.service, product = excluded.product,
                 version = excluded.version, banner = excluded.banner,
                 reason = excluded.reason, tls_version = excluded.tls_version,
                 cert_subject = excluded.cert_subject, cert_issuer = excluded.cert_issuer,
                 cert_not_after = excluded.cert_not_after,
                 cert_expires_first = excluded.cert_expires_first,
                 captures = excluded.captures"
        ),
        attempt_params,
    )?;
    tx.execute(
        "DELETE FROM fleet_staging WHERE sweep_id = ?1 AND slice = ?2",
        params![sweep, slice],
    )?;
    let (records, c): (i64, [i64; 5]) = tx.query_row(
        "SELECT SUM(records), SUM(c_open), SUM(c_closed), SUM(c_filtered),
             SUM(c_unreachable), SUM(c_error)
         FROM fleet_frames WHERE sweep_id = ?1 AND slice = ?2 AND work_seq = ?3
             AND delivered = ?4",
        attempt_params,
        |r| {
            Ok((
                r.get(0)?,
                [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
            ))
        },
    )?;
    tx.execute(
        "UPDATE fleet_slices SET state = ?11, winner_seq = ?3, winner_delivered = ?4,
             agent = ?5, open = ?6, closed = ?7, filtered = ?8, unreachable = ?9, error = ?10
         WHERE sweep_id = ?1 AND slice = ?2",
        params![
            sweep,
            slice,
            attempt.work_seq as i64,
            attempt.delivered as i64,
            agent,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            state
        ],
    )?;
    tx.execute(
        "UPDATE sweeps SET done = done + ?2, open = open + ?3, closed = closed + ?4,
             filtered = filtered + ?5, unreachable = unreachable + ?6, error = error + ?7
         WHERE id = ?1",
        params![sweep, records, c[0], c[1], c[2], c[3], c[4]],
    )?;
    let u = |v: i64| v as u64;
    Ok(Completed {
        sweep_id,
        slice,
        attempt,
        agent: agent.to_string(),
        counts: Counts {
            open: u(c[0]),
            closed: u(c[1]),
            filtered: u(c[2]),
            unreachable: u(c[3]),
            error: u(c[4]),
        },
        records: u(records),
    })
}

/// Ends the sweep when every slice is done (`done`) or finished with some failed
/// (`interrupted`, with the failed slices in its reason); the state it ended in.
fn finish_if_complete(tx: &Connection, sweep_id: u64) -> rusqlite::Result<Option<SweepState>> {
    let (slices, done, failed): (i64, i64, i64) = tx.query_row(
        "SELECT f.slices,
             (SELECT COUNT(*) FROM fleet_slices WHERE sweep_id = ?1 AND state = 'done'),
             (SELECT COUNT(*) FROM fleet_slices WHERE sweep_id = ?1 AND state = 'failed')
         FROM fleet_sweeps f WHERE f.sweep_id = ?1",
        params![sweep_id as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if done + failed < slices {
        return Ok(None);
    }
    let (state, reason) = if failed == 0 {
        (SweepState::Done, None)
    } else {
        (
            SweepState::Interrupted,
            Some(format!(
                "{failed} of {slices} slices failed: their work crashed or stalled every agent that took it"
            )),
        )
    };
    tx.execute(
        "UPDATE sweeps SET state = ?2, finished_ms = ?3, reason = COALESCE(?4, reason)
         WHERE id = ?1 AND state = 'running'",
        params![
            sweep_id as i64,
            state.as_str(),
            crate::db::now_ms() as i64,
            reason
        ],
    )?;
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use porthawk_core::{PortState, ProbeRecord};

    /// A fleet sweep of `total` positions in slices of `len`, every result stored.
    fn sweep(store: &Store, total: u64, len: u64) -> u64 {
        let fleet = NewFleetSweep {
            pool: "lab".into(),
            spec: vec![1, 2, 3],
            slice_len: len,
        };
        let request = serde_json::json!({"targets": ["127.0.0.1"], "ports": "1-100"});
        store
            .insert_fleet_sweep(&request, true, total, 1, fleet)
            .wait()
            .unwrap()
    }

    /// The record of position `p` (port `p + 1` on 127.0.0.1): open when `p` is even.
    fn record(p: u64) -> ProbeRecord {
        let state = if p.is_multiple_of(2) {
            PortState::Open
        } else {
            PortState::Closed
        };
        ProbeRecord::new("127.0.0.1".parse().unwrap(), (p + 1) as u16, state, 10, 1)
    }

    /// Frame `n` of `frames` of an attempt at `slice`, holding the records of `positions`.
    fn frame(
        sweep_id: u64,
        slice: u32,
        attempt: (u64, u64),
        n: u32,
        frames: u32,
        positions: std::ops::Range<u64>,
        total_records: u64,
    ) -> FleetFrame {
        let records: Vec<ProbeRecord> = positions.map(record).collect();
        let mut counts = Counts::default();
        for r in &records {
            match r.state {
                PortState::Open => counts.open += 1,
                _ => counts.closed += 1,
            }
        }
        FleetFrame {
            sweep_id,
            slice,
            attempt: Attempt {
                work_seq: attempt.0,
                delivered: attempt.1,
            },
            n,
            last: (n + 1 == frames).then_some((frames, total_records)),
            agent: "a1".into(),
            records: records.len() as u64,
            counts,
            outside: 0,
            rows: records
                .iter()
                .map(|r| NewResult::new(sweep_id, r, None))
                .collect(),
        }
    }

    fn rows(store: &Store, id: u64) -> (i64, i64) {
        store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*), COUNT(DISTINCT ip || ':' || port) FROM results
                     WHERE sweep_id = ?1",
                    params![id as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap()
    }

    fn staging(store: &Store) -> i64 {
        store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM fleet_staging", [], |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn slices_tile_the_space() {
        assert_eq!(slice_count(10, 4), 3);
        assert_eq!(slice_range(10, 4, 0), 0..4);
        assert_eq!(slice_range(10, 4, 2), 8..10);
        assert_eq!(slice_count(8, 4), 2);
        assert_eq!(slice_count(0, 4), 0);
    }

    /// A frame sent twice (a publish retried after its ack was lost, a redelivery to the
    /// coordinator) is applied once: the second is a duplicate and adds no row or count.
    #[test]
    fn a_duplicate_frame_is_applied_once() {
        let dir = TempDir::new("fleet-dup");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 8, 4);
        assert_eq!(store.claim_slices(id, 10, 5).wait().unwrap(), vec![0, 1]);
        let f0 = frame(id, 0, (7, 1), 0, 2, 0..2, 4);
        let r = store
            .ingest_frames(vec![f0.clone(), f0.clone()], 10)
            .wait()
            .unwrap();
        assert_eq!((r.applied, r.duplicates), (1, 1));
        assert_eq!(staging(&store), 2);
        let f1 = frame(id, 0, (7, 1), 1, 2, 2..4, 4);
        let r = store
            .ingest_frames(vec![f0.clone(), f1], 11)
            .wait()
            .unwrap();
        assert_eq!((r.applied, r.duplicates), (1, 1));
        assert_eq!(r.completed.len(), 1);
        // Once the slice is done, the same frame again is superseded.
        let r = store.ingest_frames(vec![f0], 12).wait().unwrap();
        assert_eq!((r.applied, r.superseded), (0, 1));
        assert_eq!(rows(&store, id), (4, 4));
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!((s.done, s.counts.open, s.counts.closed), (4, 2, 2));
        assert_eq!(s.state, SweepState::Running);
        assert_eq!(staging(&store), 0);
    }

    /// Frames arrive in any order (a publish retried later than its successors): the last
    /// frame first still completes the attempt once the others are in.
    #[test]
    fn reordered_frames_complete_the_attempt() {
        let dir = TempDir::new("fleet-order");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 6, 6);
        store.claim_slices(id, 10, 5).wait().unwrap();
        let frames = [
            frame(id, 0, (3, 1), 2, 3, 4..6, 6),
            frame(id, 0, (3, 1), 0, 3, 0..2, 6),
        ];
        let r = store.ingest_frames(frames.to_vec(), 10).wait().unwrap();
        assert!(r.completed.is_empty());
        let r = store
            .ingest_frames(vec![frame(id, 0, (3, 1), 1, 3, 2..4, 6)], 11)
            .wait()
            .unwrap();
        assert_eq!(r.completed.len(), 1);
        assert_eq!(r.ended, vec![(id, SweepState::Done)]);
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!((s.state, s.done, s.total), (SweepState::Done, 6, 6));
        assert_eq!(rows(&store, id), (6, 6));
    }

    /// Two attempts at one slice, their frames interleaved (a stalled agent woke up while
    /// the redelivered slice ran): the first to complete wins, the other's staged rows go,
    /// its later frames are superseded, and the slice is counted once.
    #[test]
    fn two_interleaved_attempts_count_once() {
        let dir = TempDir::new("fleet-two");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 4, 4);
        store.claim_slices(id, 10, 5).wait().unwrap();
        // Attempt 1 (delivered 1) sends its records in one order, attempt 2 in another.
        let a1 = [
            frame(id, 0, (9, 1), 0, 2, 0..2, 4),
            frame(id, 0, (9, 1), 1, 2, 2..4, 4),
        ];
        let a2 = [
            frame(id, 0, (9, 2), 0, 2, 2..4, 4),
            frame(id, 0, (9, 2), 1, 2, 0..2, 4),
        ];
        let r = store
            .ingest_frames(vec![a1[0].clone(), a2[0].clone()], 10)
            .wait()
            .unwrap();
        assert!(r.completed.is_empty());
        assert_eq!(staging(&store), 4);
        let r = store
            .ingest_frames(vec![a2[1].clone(), a1[1].clone()], 11)
            .wait()
            .unwrap();
        assert_eq!(r.completed.len(), 1);
        assert_eq!(
            r.completed[0].attempt.delivered, 2,
            "attempt 2 completed first"
        );
        assert_eq!(r.superseded, 1);
        assert_eq!(staging(&store), 0);
        assert_eq!(rows(&store, id), (4, 4));
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!((s.state, s.done, s.counts.open), (SweepState::Done, 4, 2));
        assert_eq!(store.slice_progress(id).unwrap().redelivered_wins, 1);
    }

    /// A frame of a slice already done (a zombie agent's, long after) is superseded: no row,
    /// no count, nothing staged.
    #[test]
    fn a_late_frame_for_a_done_slice_is_superseded() {
        let dir = TempDir::new("fleet-late");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 4, 2);
        store.claim_slices(id, 10, 5).wait().unwrap();
        store
            .ingest_frames(vec![frame(id, 0, (1, 1), 0, 1, 0..2, 2)], 10)
            .wait()
            .unwrap();
        let r = store
            .ingest_frames(vec![frame(id, 0, (1, 2), 0, 1, 0..2, 2)], 11)
            .wait()
            .unwrap();
        assert_eq!((r.applied, r.superseded), (0, 1));
        assert_eq!(staging(&store), 0);
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!((s.state, s.done), (SweepState::Running, 2));
        assert_eq!(rows(&store, id), (2, 2));
    }

    /// An attempt with a record outside the sweep's hosts × ports, or whose records do not
    /// add up to the slice's size, is rejected and says why; a later good attempt wins.
    #[test]
    fn an_attempt_outside_the_sweep_or_short_is_rejected() {
        let dir = TempDir::new("fleet-reject");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 4, 2);
        store.claim_slices(id, 10, 5).wait().unwrap();
        let mut bad = frame(id, 0, (1, 1), 0, 1, 0..2, 2);
        bad.outside = 1;
        let r = store.ingest_frames(vec![bad], 10).wait().unwrap();
        assert_eq!(r.rejected.len(), 1);
        assert!(r.rejected[0].reason.contains("outside"), "{:?}", r.rejected);
        let short = frame(id, 1, (2, 1), 0, 1, 2..3, 1);
        let r = store.ingest_frames(vec![short], 10).wait().unwrap();
        assert!(
            r.rejected[0].reason.contains("1 records for a slice of 2"),
            "{:?}",
            r.rejected
        );
        assert_eq!(staging(&store), 0);
        assert_eq!(rows(&store, id), (0, 0));
        let good = frame(id, 0, (1, 2), 0, 1, 0..2, 2);
        let r = store.ingest_frames(vec![good], 11).wait().unwrap();
        assert_eq!(r.completed.len(), 1);
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(s.done, 2);
    }

    /// A running fleet sweep survives a restart of the store (the agents keep running it),
    /// while a local one is interrupted.
    #[test]
    fn reopening_keeps_fleet_sweeps_running() {
        let dir = TempDir::new("fleet-reopen");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 4, 2);
        let local = store
            .insert_sweep(&serde_json::json!({}), true, 4, 1)
            .wait()
            .unwrap();
        store.claim_slices(id, 1, 5).wait().unwrap();
        drop(store);
        let (store, interrupted) = Store::open(dir.path()).unwrap();
        assert_eq!(interrupted, 1);
        let l = store.sweep::<serde_json::Value>(local).unwrap().unwrap();
        assert_eq!(l.state, SweepState::Interrupted);
        let running = store.running_fleet_sweeps().unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].id, running[0].next_slice, running[0].slices),
            (id, 1, 2)
        );
        assert_eq!(running[0].spec, vec![1, 2, 3]);
        assert_eq!(store.open_slices(id).unwrap().len(), 1);
    }

    /// A slice published again gets epoch + 1 up to the limit; then it fails, and the sweep
    /// ends `interrupted` with the failed slice in its status, never `done`.
    #[test]
    fn a_slice_past_its_epochs_fails_and_interrupts_the_sweep() {
        let dir = TempDir::new("fleet-poison");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 4, 2);
        store.claim_slices(id, 10, 5).wait().unwrap();
        store.set_work_seq(id, 0, 1, 40).wait().unwrap();
        assert_eq!(store.slice_by_work_seq(40).unwrap(), Some((id, 0, 1)));
        assert_eq!(
            store.republish_slice(id, 0, 1, 2, 6).wait().unwrap(),
            Republish::Epoch(2)
        );
        // The same loss seen again (the advisory, then the janitor) counts once.
        assert_eq!(
            store.republish_slice(id, 0, 1, 2, 6).wait().unwrap(),
            Republish::NotOpen
        );
        assert_eq!(store.open_slices(id).unwrap()[0].epoch, 2);
        assert_eq!(store.slice_by_work_seq(40).unwrap(), None);
        store
            .ingest_frames(vec![frame(id, 1, (2, 1), 0, 1, 2..4, 2)], 10)
            .wait()
            .unwrap();
        assert_eq!(
            store.republish_slice(id, 0, 2, 2, 7).wait().unwrap(),
            Republish::Failed(Some(SweepState::Interrupted))
        );
        let p = store.slice_progress(id).unwrap();
        assert_eq!((p.done, p.failed, p.total), (1, 1, 2));
        assert_eq!(p.failed_slices, vec![0]);
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(s.state, SweepState::Interrupted);
        assert!(s.reason.unwrap().contains("1 of 2 slices failed"));
        assert_eq!(
            store.republish_slice(id, 0, 2, 2, 8).wait().unwrap(),
            Republish::NotOpen
        );
    }

    /// A cancelled sweep keeps what its running slices found, as a local sweep does: each
    /// open slice's newest attempt (skipping one with records outside the sweep) is promoted
    /// in the cancelling transaction, counts equal rows, one row per (ip, port), nothing
    /// stays staged, and a late frame is superseded.
    #[test]
    fn cancelling_keeps_the_newest_attempt_of_each_open_slice() {
        let dir = TempDir::new("fleet-cancel-partial");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 12, 4);
        assert_eq!(store.claim_slices(id, 10, 5).wait().unwrap(), vec![0, 1, 2]);
        let mut outside = frame(id, 2, (3, 2), 0, 2, 8..9, 4);
        outside.outside = 1;
        let frames = vec![
            // Slice 0 done.
            frame(id, 0, (1, 1), 0, 1, 0..4, 4),
            // Slice 1: an older attempt with two records, a newer with one, and the newest
            // ended early (cancelled by its agent: all its frames in, short, rejected).
            frame(id, 1, (2, 1), 0, 2, 4..6, 4),
            frame(id, 1, (2, 2), 0, 2, 5..6, 4),
            frame(id, 1, (2, 3), 0, 1, 4..5, 1),
            // Slice 2: the newest attempt sent a record outside the sweep: the older is kept.
            frame(id, 2, (3, 1), 0, 2, 8..10, 4),
            outside,
        ];
        let r = store.ingest_frames(frames, 10).wait().unwrap();
        assert_eq!(r.completed.len(), 1);
        assert_eq!(r.rejected.len(), 1);
        assert!(store
            .end_fleet_sweep(id, SweepState::Cancelled, None, 11)
            .wait()
            .unwrap());
        let s = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(s.state, SweepState::Cancelled);
        assert_eq!(s.done, 4 + 1 + 2, "{s:?}");
        assert_eq!(rows(&store, id), (7, 7));
        assert_eq!(s.counts.open + s.counts.closed, 7);
        assert_eq!(staging(&store), 0);
        let p = store.slice_progress(id).unwrap();
        assert_eq!((p.done, p.partial, p.running), (1, 2, 0));
        // Kept: position 5 of slice 1 (the newest attempt), 8 and 9 of slice 2.
        let ports: Vec<i64> = store
            .read(|c| {
                let mut stmt =
                    c.prepare("SELECT port FROM results WHERE sweep_id = ?1 ORDER BY port")?;
                let rows = stmt.query_map(params![id as i64], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .unwrap();
        assert_eq!(ports, vec![1, 2, 3, 4, 6, 9, 10]);
        // A frame after the cancellation is superseded; ending again changes nothing.
        let r = store
            .ingest_frames(vec![frame(id, 1, (2, 2), 1, 2, 4..5, 4)], 12)
            .wait()
            .unwrap();
        assert_eq!(r.superseded, 1);
        assert!(!store
            .end_fleet_sweep(id, SweepState::Cancelled, None, 13)
            .wait()
            .unwrap());
        let again = store.sweep::<serde_json::Value>(id).unwrap().unwrap();
        assert_eq!(again.done, 7);
        assert_eq!(rows(&store, id), (7, 7));
    }

    /// The janitor's view of an open slice: the highest delivery that sent a frame for its
    /// current work message (an older epoch's attempts do not count).
    #[test]
    fn open_slices_report_the_highest_delivery_of_the_current_work() {
        let dir = TempDir::new("fleet-max-delivered");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = sweep(&store, 8, 4);
        store.claim_slices(id, 10, 5).wait().unwrap();
        store.set_work_seq(id, 0, 1, 7).wait().unwrap();
        assert_eq!(store.open_slices(id).unwrap()[0].max_delivered, None);
        store
            .ingest_frames(
                vec![
                    frame(id, 0, (7, 1), 0, 2, 0..1, 4),
                    frame(id, 0, (7, 3), 0, 2, 0..1, 4),
                ],
                10,
            )
            .wait()
            .unwrap();
        assert_eq!(store.open_slices(id).unwrap()[0].max_delivered, Some(3));
        store.republish_slice(id, 0, 1, 3, 11).wait().unwrap();
        store.set_work_seq(id, 0, 2, 9).wait().unwrap();
        let open = store.open_slices(id).unwrap();
        assert_eq!((open[0].epoch, open[0].max_delivered), (2, None));
    }
}
