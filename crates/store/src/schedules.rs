//! Scheduled sweeps' history: one row per run (the sweep it ran as, when, what it was
//! compared with, its outcome and the notifications sent), and the changes each run found.
//!
//! A run's row is written when its sweep is created and completed once the sweep has ended
//! and been diffed. The rows are not tied to the `sweeps` table: the change history outlives
//! the sweeps that retention deletes.

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::db::{Reply, Store, StoreError};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// The first finished run of its schedule (or the first after its previous results
    /// were deleted): nothing to compare with, nothing notified.
    Baseline,
    /// Compared with the previous finished run: no change.
    Unchanged,
    /// Compared with the previous finished run: something changed (and was notified).
    Changed,
    /// The sweep did not finish (failed, cancelled, interrupted, or could not start): its
    /// results are not compared, and the next run is compared with the last finished one.
    Failed,
}

impl RunOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Baseline => "baseline",
            RunOutcome::Unchanged => "unchanged",
            RunOutcome::Changed => "changed",
            RunOutcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<RunOutcome> {
        [
            RunOutcome::Baseline,
            RunOutcome::Unchanged,
            RunOutcome::Changed,
            RunOutcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A notification of a run, as delivered (or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunNotice {
    /// The `[notify.NAME]`.
    pub notify: String,
    /// `sent` or `failed`.
    pub outcome: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run of a scheduled sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    /// The run's id.
    pub id: u64,
    /// The schedule's name.
    pub schedule: String,
    /// The sweep it ran as (`/v1/sweeps/{id}`); absent for a run whose sweep could not be
    /// created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<u64>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it was judged, once it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// How it ended; absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The sweep it was compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<u64>,
    /// Ports that opened.
    pub opened: u64,
    /// Ports that closed.
    pub closed: u64,
    /// Ports whose service, version, certificate or state otherwise changed.
    pub changed: u64,
    /// Why it failed, or why it is a baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The notifications sent about it.
    pub notices: Vec<RunNotice>,
}

/// One change a run found, as `porthawk diff` prints it: `fields` is its JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// `opened`, `closed` or `changed`.
    pub change: String,
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The fields that differ, as the JSON object of `porthawk_core::LineChange::fields`.
    pub fields: String,
}

/// How a run ended, to store in one transaction with its changes.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// The run.
    pub run_id: u64,
    /// When it was judged.
    pub finished_ms: u64,
    /// Its outcome.
    pub outcome: RunOutcome,
    /// The sweep it was compared with.
    pub against: Option<u64>,
    /// Why it failed, or why it is a baseline.
    pub detail: Option<String>,
    /// What changed.
    pub changes: Vec<ChangeRow>,
    /// The notifications sent.
    pub notices: Vec<RunNotice>,
}

const RUN_COLUMNS: &str = "id, schedule, sweep_id, started_ms, finished_ms, outcome, against, \
                           opened, closed, changed, detail, notices";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRun> {
    let outcome: Option<String> = r.get(5)?;
    let notices: String = r.get(11)?;
    Ok(ScheduleRun {
        id: r.get::<_, i64>(0)? as u64,
        schedule: r.get(1)?,
        sweep_id: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
        started_ms: r.get::<_, i64>(3)? as u64,
        finished_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        outcome: outcome.as_deref().and_then(RunOutcome::parse),
        against: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        opened: r.get::<_, i64>(7)? as u64,
        closed: r.get::<_, i64>(8)? as u64,
        changed: r.get::<_, i64>(9)? as u64,
        detail: r.get(10)?,
        notices: serde_json::from_str(&notices).unwrap_or_default(),
    })
}

impl Store {
    /// Records that schedule `schedule` started a run as sweep `sweep_id` (`None`: its sweep
    /// could not be created, and the run is to be finished as failed); the run's id.
    pub fn start_schedule_run(
        &self,
        schedule: &str,
        sweep_id: Option<u64>,
        started_ms: u64,
    ) -> Reply<u64> {
        let schedule = schedule.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO schedule_runs (schedule, sweep_id, started_ms) VALUES (?1, ?2, ?3)",
                params![schedule, sweep_id.map(|s| s as i64), started_ms as i64],
            )?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    /// Stores how a run ended, with its changes, in one transaction.
    pub fn finish_schedule_run(&self, end: RunEnd) -> Reply<()> {
        self.write_retrying(move |c| {
            let tx = c.transaction()?;
            {
                let count = |kind: &str| end.changes.iter().filter(|x| x.change == kind).count();
                tx.execute(
                    "UPDATE schedule_runs SET finished_ms = ?2, outcome = ?3, against = ?4,
                         opened = ?5, closed = ?6, changed = ?7, detail = ?8, notices = ?9
                     WHERE id = ?1",
                    params![
                        end.run_id as i64,
                        end.finished_ms as i64,
                        end.outcome.as_str(),
                        end.against.map(|a| a as i64),
                        count("opened") as i64,
                        count("closed") as i64,
                        count("changed") as i64,
                        end.detail,
                        serde_json::to_string(&end.notices).unwrap_or_else(|_| "[]".into()),
                    ],
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO schedule_changes (run_id, change, ip, port, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for ch in &end.changes {
                    insert.execute(params![
                        end.run_id as i64,
                        ch.change,
                        ch.ip.to_string(),
                        ch.port,
                        ch.fields
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The runs of one schedule, newest first, at most `limit`.
    pub fn schedule_runs(
        &self,
        schedule: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs WHERE schedule = ?1
                 ORDER BY started_ms DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![schedule, limit], run_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The newest run of each schedule.
    pub fn latest_schedule_runs(&self) -> Result<Vec<ScheduleRun>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs r
                 WHERE id = (SELECT id FROM schedule_runs s
                             WHERE s.schedule = r.schedule
                             ORDER BY started_ms DESC, id DESC LIMIT 1)
                 ORDER BY schedule"
            ))?;
            let rows = stmt.query_map([], run_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The newest run of `schedule` that finished with results to compare with (a baseline,
    /// unchanged or changed run), other than run `except`.
    pub fn last_compared_run(
        &self,
        schedule: &str,
        except: u64,
    ) -> Result<Option<ScheduleRun>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs
                 WHERE schedule = ?1 AND id != ?2
                   AND outcome IN ('baseline', 'unchanged', 'changed')
                 ORDER BY started_ms DESC, id DESC LIMIT 1"
            ))?;
            Ok(stmt
                .query_row(params![schedule, except as i64], run_row)
                .optional()?)
        })
    }

    /// Runs that were started and never judged (the server stopped while they ran).
    pub fn unfinished_schedule_runs(&self) -> Result<Vec<ScheduleRun>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs WHERE outcome IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], run_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The changes run `run_id` found, in the order they were found (address and port), at
    /// most `limit`.
    pub fn schedule_changes(&self, run_id: u64, limit: u32) -> Result<Vec<ChangeRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT change, ip, port, fields FROM schedule_changes WHERE run_id = ?1
                 ORDER BY rowid LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![run_id as i64, limit], |r| {
                let ip: String = r.get(1)?;
                Ok(ChangeRow {
                    change: r.get(0)?,
                    ip: ip.parse().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    port: r.get(2)?,
                    fields: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The schedule names of those of `sweep_ids` that were scheduled runs.
    pub fn schedule_names(&self, sweep_ids: &[u64]) -> Result<HashMap<u64, String>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT schedule FROM schedule_runs WHERE sweep_id = ?1")?;
            let mut names = HashMap::new();
            for &id in sweep_ids {
                if let Some(name) = stmt
                    .query_row(params![id as i64], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    names.insert(id, name);
                }
            }
            Ok(names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn change(kind: &str, port: u16) -> ChangeRow {
        ChangeRow {
            change: kind.into(),
            ip: "127.0.0.1".parse().unwrap(),
            port,
            fields: r#"{"state":{"before":null,"after":"open"}}"#.into(),
        }
    }

    #[test]
    fn runs_and_their_changes_survive_a_reopen() {
        let dir = TempDir::new("schedules");
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            let r1 = store
                .start_schedule_run("edge", Some(11), 1000)
                .wait()
                .unwrap();
            store
                .finish_schedule_run(RunEnd {
                    run_id: r1,
                    finished_ms: 1500,
                    outcome: RunOutcome::Baseline,
                    against: None,
                    detail: Some("first run".into()),
                    changes: vec![],
                    notices: vec![],
                })
                .wait()
                .unwrap();
            let r2 = store
                .start_schedule_run("edge", Some(12), 2000)
                .wait()
                .unwrap();
            store
                .start_schedule_run("other", Some(13), 2100)
                .wait()
                .unwrap();
            let end = RunEnd {
                run_id: r2,
                finished_ms: 2500,
                outcome: RunOutcome::Changed,
                against: Some(1),
                detail: None,
                changes: vec![
                    change("opened", 80),
                    change("closed", 22),
                    change("opened", 81),
                ],
                notices: vec![RunNotice {
                    notify: "ops".into(),
                    outcome: "sent".into(),
                    attempts: 1,
                    error: None,
                }],
            };
            store.finish_schedule_run(end).wait().unwrap();
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let runs = store.schedule_runs("edge", 10).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.sweep_id).collect::<Vec<_>>(),
            [Some(12), Some(11)]
        );
        let (r2, r1) = (runs[0].id, runs[1].id);
        assert_eq!((runs[0].opened, runs[0].closed, runs[0].changed), (2, 1, 0));
        assert_eq!(runs[0].outcome, Some(RunOutcome::Changed));
        assert_eq!(runs[0].notices[0].notify, "ops");
        assert_eq!(runs[1].detail.as_deref(), Some("first run"));
        let changes = store.schedule_changes(r2, 100).unwrap();
        assert_eq!(store.schedule_changes(r2, 2).unwrap().len(), 2);
        assert_eq!(
            changes.iter().map(|c| c.port).collect::<Vec<_>>(),
            [80, 22, 81]
        );
        assert_eq!(
            store.last_compared_run("edge", 99).unwrap().map(|r| r.id),
            Some(r2)
        );
        assert_eq!(
            store.last_compared_run("edge", r2).unwrap().map(|r| r.id),
            Some(r1)
        );
        assert_eq!(store.last_compared_run("other", 0).unwrap(), None);
        let unfinished = store.unfinished_schedule_runs().unwrap();
        assert_eq!(
            unfinished.iter().map(|r| r.sweep_id).collect::<Vec<_>>(),
            [Some(13)]
        );
        let latest = store.latest_schedule_runs().unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|r| (r.schedule.as_str(), r.sweep_id))
                .collect::<Vec<_>>(),
            [("edge", Some(12)), ("other", Some(13))]
        );
        let names = store.schedule_names(&[11, 13, 7]).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(names[&13], "other");
    }

    #[test]
    fn a_failed_run_is_never_compared_with() {
        let dir = TempDir::new("schedules-failed");
        let (store, _) = Store::open(dir.path()).unwrap();
        let run = store.start_schedule_run("s", None, 10).wait().unwrap();
        store
            .finish_schedule_run(RunEnd {
                run_id: run,
                finished_ms: 20,
                outcome: RunOutcome::Failed,
                against: None,
                detail: Some("sweep interrupted".into()),
                changes: vec![],
                notices: vec![],
            })
            .wait()
            .unwrap();
        assert_eq!(store.last_compared_run("s", 0).unwrap(), None);
        assert!(store.unfinished_schedule_runs().unwrap().is_empty());
    }
}
