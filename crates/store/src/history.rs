//! Monitor history in the store: target states (restored after a restart), failed checks,
//! state changes, actions with exit codes and output, notifications with delivery status,
//! and silences; pruned by the `retention` setting.

use porthawk_watch::state::{Health, Tracker};
use porthawk_watch::watch::{LastCheck, Restored, Save, SavedTarget, TargetHost, TargetPort};
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::db::{Reply, Store, StoreError};

/// An action as it ran (or why it did not).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionRecord {
    /// The monitor, if the action ran for one.
    pub monitor: Option<String>,
    /// The action's name.
    pub action: String,
    /// `exec`, `restart`, `reboot` or `remote` (run by a fleet agent).
    pub kind: String,
    /// What it runs (for a remote action: what the agent reported it ran, or empty).
    pub argv: Vec<String>,
    /// `down`, `up` or `manual`.
    pub trigger: String,
    /// `ok`, `failed`, `timeout`, `error`, `dry_run`, `cooldown`, `rate_limited`, `silenced`
    /// or `refused`; for a remote action also `sent` (the request went out; the outcome
    /// follows in a record of its own) and `no_agent` (`{target}` matched no single agent).
    pub outcome: String,
    /// Why, for outcomes other than `ok` and `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Standard output (capped).
    pub stdout: String,
    /// Standard error (capped).
    pub stderr: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long it ran.
    pub duration_ms: u64,
}

/// A notification as delivered (or not).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeRecord {
    /// The monitor.
    pub monitor: String,
    /// The `[notify.NAME]`.
    pub notify: String,
    /// `email`, `webhook` or `slack`.
    pub channel: String,
    /// `down`, `up`, `flapping` or `reminder`.
    pub kind: String,
    /// The targets, `ip:port`.
    pub targets: Vec<String>,
    /// `sent`, `failed`, `silenced` or `dry_run`.
    pub outcome: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was decided.
    pub at_ms: u64,
}

/// One line of a monitor's history, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRow {
    /// The monitor.
    pub monitor: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `state`, `action` or `notification`.
    pub what: String,
    /// For state changes: `down`, `up`, `flapping`, `stable`; for actions and notifications:
    /// their name.
    pub kind: String,
    /// The target (`ip:port`) of a state change, or the targets of a notification.
    pub target: String,
    /// For state changes the new state; for actions and notifications the outcome.
    pub state: String,
    /// Why: a check's failure, an action's exit code or a delivery error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One tick of a monitor's heartbeat bar: a batch of checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    /// When the batch came in, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Checks in it.
    pub checks: u32,
    /// Checks that failed.
    pub fails: u32,
    /// The mean round trip of its passing checks, in microseconds.
    pub rtt_avg_us: Option<u32>,
    /// The first failure: `ip:port: reason`.
    pub reason: Option<String>,
}

/// The checks of a monitor in one bucket of time, for its response-time chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RttBucket {
    /// Where the bucket starts, in milliseconds since the Unix epoch (a multiple of its
    /// width).
    pub start_ms: u64,
    /// Checks in it.
    pub checks: u64,
    /// Checks that failed.
    pub fails: u64,
    /// The mean round trip of its passing checks, in microseconds; `None` if none passed.
    pub rtt_avg_us: Option<f64>,
    /// The longest round trip of a passing check, in microseconds.
    pub rtt_max_us: u32,
}

/// The most buckets [`Store::rtt_buckets`] returns: a wider window gets wider buckets.
pub const MAX_BUCKETS: u64 = 2000;

impl Store {
    /// Writes the watch's history (target states, checks, state changes, silences) in one
    /// transaction.
    pub fn save_history(&self, saves: Vec<Save>) -> Reply<()> {
        self.write(move |c| Ok(save(c, &saves)?))
    }

    /// Records an action run (or why it did not run).
    pub fn record_action(&self, record: ActionRecord) -> Reply<()> {
        self.write(move |c| Ok(record_action(c, &record)?))
    }

    /// Records a notification and its delivery.
    pub fn record_notice(&self, record: NoticeRecord) -> Reply<()> {
        self.write(move |c| Ok(record_notice(c, &record)?))
    }

    /// Deletes history older than `before_ms` (target states and silences stay); how many
    /// rows went.
    pub fn prune_history(&self, before_ms: u64) -> Reply<usize> {
        self.write(move |c| Ok(prune(c, before_ms)?))
    }

    /// Forgets the stored state of target-ports no longer monitored.
    pub fn forget_targets(&self, gone: Vec<(String, TargetPort)>) -> Reply<()> {
        self.write(move |c| Ok(forget_targets(c, &gone)?))
    }

    /// What the store remembers for the watch: target states, silences, and the action runs
    /// of the hour before `now_ms`.
    pub fn restore_watch(&self, now_ms: u64) -> Result<Restored, StoreError> {
        self.read(|c| Ok(restore(c, now_ms)?))
    }

    /// The newest `limit` lines of history (state changes, actions, notifications) of one
    /// monitor or of all, newest first.
    pub fn events(&self, monitor: Option<&str>, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        self.read(|c| Ok(events(c, monitor, limit)?))
    }

    /// The actions recorded, of one monitor or of all, newest first.
    pub fn actions(
        &self,
        monitor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.read(|c| Ok(actions(c, monitor, limit)?))
    }

    /// The notifications recorded for a monitor, newest first.
    pub fn notices(&self, monitor: &str, limit: u32) -> Result<Vec<NoticeRecord>, StoreError> {
        self.read(|c| Ok(notices(c, monitor, limit)?))
    }

    /// The newest `limit` batches of checks of a monitor, oldest first: its heartbeat bar.
    pub fn heartbeat(&self, monitor: &str, limit: u32) -> Result<Vec<Beat>, StoreError> {
        self.read(|c| Ok(heartbeat(c, monitor, limit)?))
    }

    /// The checks of a monitor in `[from_ms, to_ms)`, summed per bucket of `width_ms`
    /// (aligned to multiples of the width, so a bucket means the same on every read), oldest
    /// first; only buckets with checks. The sums are SQL's, so a week costs as many rows as
    /// it has buckets; a width that would make more than [`MAX_BUCKETS`] is widened.
    pub fn rtt_buckets(
        &self,
        monitor: &str,
        from_ms: u64,
        to_ms: u64,
        width_ms: u64,
    ) -> Result<Vec<RttBucket>, StoreError> {
        let span = to_ms.saturating_sub(from_ms);
        let width = width_ms.max(1).max(span.div_ceil(MAX_BUCKETS));
        self.read(|c| Ok(rtt_buckets(c, monitor, from_ms, to_ms, width)?))
    }

    /// The earliest end of a certificate a monitor's checks saw since `since_ms`, in seconds
    /// since the Unix epoch.
    pub fn cert_not_after(&self, monitor: &str, since_ms: u64) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT MIN(cert_not_after) FROM monitor_samples
                 WHERE monitor = ?1 AND at_ms >= ?2 AND cert_not_after IS NOT NULL",
            )?
            .query_row(params![monitor, since_ms as i64], |r| r.get(0))?)
        })
    }

    /// State changes of a monitor since `since_ms`, oldest first: (target, port, change).
    pub fn transitions(
        &self,
        monitor: &str,
        since_ms: u64,
    ) -> Result<Vec<(TargetHost, u16, Change)>, StoreError> {
        self.read(|c| Ok(transitions(c, monitor, since_ms)?))
    }
}

/// A stored target: the `ip` column holds an address, or a host name for a name target.
fn target_host(text: &str) -> TargetHost {
    match text.parse::<TargetHost>() {
        Ok(host) => host,
        Err(never) => match never {},
    }
}

/// Writes history in one transaction.
pub(crate) fn save(conn: &mut Connection, saves: &[Save]) -> rusqlite::Result<()> {
    if saves.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT OR REPLACE INTO monitor_targets (monitor, ip, port, host, hard, fail_run,
                 ok_run, since_ms, flapping, last_ms, last_ok, last_state, last_rtt_us,
                 last_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO monitor_events (monitor, ip, port, kind, from_state, to_state, reason,
                 at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut check = tx.prepare_cached(
            "INSERT INTO monitor_checks (monitor, ip, port, at_ms, ok, state, rtt_us, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut sample = tx.prepare_cached(
            "INSERT INTO monitor_samples (monitor, at_ms, checks, fails, rtt_sum_us, rtt_max_us,
                 reason, cert_not_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for s in saves {
            match s {
                Save::Target {
                    monitor,
                    target,
                    host,
                    tracker,
                    last,
                } => {
                    upsert.execute(params![
                        monitor,
                        target.0.to_string(),
                        target.1,
                        host,
                        tracker.hard.as_str(),
                        tracker.fail_run,
                        tracker.ok_run,
                        tracker.since_ms as i64,
                        tracker.flapping,
                        last.as_ref().map(|l| l.at_ms as i64),
                        last.as_ref().map(|l| l.ok),
                        last.as_ref().map(|l| l.state.as_str()),
                        last.as_ref().map(|l| l.rtt_us),
                        last.as_ref().and_then(|l| l.reason.as_deref()),
                    ])?;
                }
                Save::Event {
                    monitor,
                    target,
                    kind,
                    from,
                    to,
                    reason,
                    at_ms,
                } => {
                    event.execute(params![
                        monitor,
                        target.0.to_string(),
                        target.1,
                        kind,
                        from.as_str(),
                        to.as_str(),
                        reason,
                        *at_ms as i64,
                    ])?;
                }
                Save::Check {
                    monitor,
                    target,
                    check: c,
                } => {
                    check.execute(params![
                        monitor,
                        target.0.to_string(),
                        target.1,
                        c.at_ms as i64,
                        c.ok,
                        c.state.as_str(),
                        c.rtt_us,
                        c.reason,
                    ])?;
                }
                Save::Sample(x) => sample
                    .execute(params![
                        x.monitor,
                        x.at_ms as i64,
                        x.checks,
                        x.fails,
                        x.rtt_sum_us.min(i64::MAX as u64) as i64,
                        x.rtt_max_us,
                        x.reason,
                        x.cert_not_after,
                    ])
                    .map(drop)?,
                Save::Silence { monitor, until_ms } => match until_ms {
                    Some(u) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO monitor_silences (monitor, until_ms)
                             VALUES (?1, ?2)",
                            params![monitor, *u as i64],
                        )?;
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM monitor_silences WHERE monitor = ?1",
                            params![monitor],
                        )?;
                    }
                },
            }
        }
    }
    tx.commit()
}

/// A state change: when, from, to.
pub type Change = (u64, Health, Health);

/// Records an action.
pub(crate) fn record_action(conn: &Connection, r: &ActionRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO monitor_actions (monitor, action, kind, argv, trigger, outcome, detail,
             exit_code, stdout, stderr, at_ms, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.monitor,
            r.action,
            r.kind,
            serde_json::to_string(&r.argv).unwrap_or_default(),
            r.trigger,
            r.outcome,
            r.detail,
            r.exit_code,
            r.stdout,
            r.stderr,
            r.at_ms as i64,
            r.duration_ms as i64,
        ],
    )?;
    Ok(())
}

/// Records a notification.
pub(crate) fn record_notice(conn: &Connection, r: &NoticeRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO monitor_notifications (monitor, notify, channel, kind, targets, outcome,
             attempts, error, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.monitor,
            r.notify,
            r.channel,
            r.kind,
            serde_json::to_string(&r.targets).unwrap_or_default(),
            r.outcome,
            r.attempts,
            r.error,
            r.at_ms as i64,
        ],
    )?;
    Ok(())
}

/// What the store remembers: target states, silences, and the action runs of the last hour.
pub(crate) fn restore(conn: &Connection, now_ms: u64) -> rusqlite::Result<Restored> {
    let mut out = Restored::default();
    let mut stmt = conn.prepare(
        "SELECT monitor, ip, port, hard, fail_run, ok_run, since_ms, flapping, last_ms,
                last_ok, last_state, last_rtt_us, last_reason
         FROM monitor_targets",
    )?;
    let rows = stmt.query_map([], |r| {
        let ip: String = r.get(1)?;
        let hard: String = r.get(3)?;
        let last_ms: Option<i64> = r.get(8)?;
        let last_state: Option<String> = r.get(10)?;
        Ok((
            r.get::<_, String>(0)?,
            ip,
            r.get::<_, u16>(2)?,
            hard,
            Tracker::restored(
                Health::Pending,
                r.get(4)?,
                r.get(5)?,
                r.get::<_, i64>(6)? as u64,
                r.get(7)?,
            ),
            last_ms.map(|at| (at as u64, r.get::<_, Option<bool>>(9), last_state)),
            r.get::<_, Option<u32>>(11)?,
            r.get::<_, Option<String>>(12)?,
        ))
    })?;
    for row in rows {
        let (monitor, ip, port, hard, mut tracker, last, rtt, reason) = row?;
        let Ok(hard) = hard.parse::<Health>() else {
            continue;
        };
        let ip = target_host(&ip);
        tracker.hard = hard;
        let last = match last {
            Some((at_ms, Ok(Some(ok)), Some(state))) => state.parse().ok().map(|state| LastCheck {
                at_ms,
                ok,
                state,
                rtt_us: rtt.unwrap_or(0),
                reason,
            }),
            _ => None,
        };
        out.targets.push(SavedTarget {
            monitor,
            target: (ip, port),
            tracker,
            last,
        });
    }
    let mut stmt = conn.prepare("SELECT monitor, until_ms FROM monitor_silences")?;
    out.silences = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare(
        "SELECT action, at_ms FROM monitor_actions
         WHERE at_ms > ?1 AND outcome IN ('ok', 'failed', 'timeout', 'error', 'dry_run')
         ORDER BY at_ms",
    )?;
    out.action_runs = stmt
        .query_map(params![now_ms.saturating_sub(3_600_000) as i64], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
}

/// The newest `limit` lines of history (state changes, actions, notifications) of one
/// monitor or of all, newest first.
pub(crate) fn events(
    conn: &Connection,
    monitor: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<EventRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT monitor, at_ms, what, kind, target, state, detail FROM (
             SELECT monitor, at_ms, 'state' AS what, kind, ip || ' ' || port AS target,
                    to_state AS state, reason AS detail, id
             FROM monitor_events WHERE (?1 IS NULL OR monitor = ?1)
             UNION ALL
             SELECT COALESCE(monitor, ''), at_ms, 'action', action, '', outcome,
                    COALESCE(detail, 'exit code ' || exit_code), id
             FROM monitor_actions WHERE (?1 IS NULL OR monitor = ?1)
             UNION ALL
             SELECT monitor, at_ms, 'notification', notify, targets, outcome, error, id
             FROM monitor_notifications WHERE (?1 IS NULL OR monitor = ?1)
         ) ORDER BY at_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![monitor, limit], |r| {
        Ok(EventRow {
            monitor: r.get(0)?,
            at_ms: r.get::<_, i64>(1)? as u64,
            what: r.get(2)?,
            kind: r.get(3)?,
            target: r.get(4)?,
            state: r.get(5)?,
            detail: r.get(6)?,
        })
    })?;
    let mut out: Vec<EventRow> = rows.collect::<rusqlite::Result<_>>()?;
    for e in &mut out {
        if e.what == "state" {
            // Stored as "ip port" to stay one column; shown as ip:port (or name:port).
            if let Some((ip, port)) = e.target.split_once(' ') {
                if let Ok(port) = port.parse::<u16>() {
                    e.target = target_host(ip).with_port(port);
                }
            }
        } else if e.what == "notification" {
            if let Ok(list) = serde_json::from_str::<Vec<String>>(&e.target) {
                e.target = list.join(", ");
            }
        }
    }
    Ok(out)
}

/// The actions recorded, newest first.
pub(crate) fn actions(
    conn: &Connection,
    monitor: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<ActionRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT monitor, action, kind, argv, trigger, outcome, detail, exit_code, stdout,
                stderr, at_ms, duration_ms
         FROM monitor_actions WHERE (?1 IS NULL OR monitor = ?1)
         ORDER BY at_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![monitor, limit], |r| {
        let argv: String = r.get(3)?;
        Ok(ActionRecord {
            monitor: r.get(0)?,
            action: r.get(1)?,
            kind: r.get(2)?,
            argv: serde_json::from_str(&argv).unwrap_or_default(),
            trigger: r.get(4)?,
            outcome: r.get(5)?,
            detail: r.get(6)?,
            exit_code: r.get(7)?,
            stdout: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            stderr: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            at_ms: r.get::<_, i64>(10)? as u64,
            duration_ms: r.get::<_, i64>(11)? as u64,
        })
    })?;
    rows.collect()
}

/// The notifications recorded for a monitor, newest first.
pub(crate) fn notices(
    conn: &Connection,
    monitor: &str,
    limit: u32,
) -> rusqlite::Result<Vec<NoticeRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT monitor, notify, channel, kind, targets, outcome, attempts, error, at_ms
         FROM monitor_notifications WHERE monitor = ?1
         ORDER BY at_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![monitor, limit], |r| {
        let targets: String = r.get(4)?;
        Ok(NoticeRecord {
            monitor: r.get(0)?,
            notify: r.get(1)?,
            channel: r.get(2)?,
            kind: r.get(3)?,
            targets: serde_json::from_str(&targets).unwrap_or_default(),
            outcome: r.get(5)?,
            attempts: r.get(6)?,
            error: r.get(7)?,
            at_ms: r.get::<_, i64>(8)? as u64,
        })
    })?;
    rows.collect()
}

/// The newest `limit` samples of a monitor, oldest first.
pub(crate) fn heartbeat(
    conn: &Connection,
    monitor: &str,
    limit: u32,
) -> rusqlite::Result<Vec<Beat>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, checks, fails, rtt_sum_us, reason FROM monitor_samples
         WHERE monitor = ?1 ORDER BY at_ms DESC, rowid DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![monitor, limit], |r| {
        let checks: u32 = r.get(1)?;
        let fails: u32 = r.get(2)?;
        let sum: i64 = r.get(3)?;
        let ok = checks.saturating_sub(fails);
        Ok(Beat {
            at_ms: r.get::<_, i64>(0)? as u64,
            checks,
            fails,
            rtt_avg_us: (ok > 0)
                .then(|| (sum.max(0) as u64 / u64::from(ok)).min(u64::from(u32::MAX)) as u32),
            reason: r.get(4)?,
        })
    })?;
    let mut out: Vec<Beat> = rows.collect::<rusqlite::Result<_>>()?;
    out.reverse();
    Ok(out)
}

/// A monitor's samples in `[from_ms, to_ms)` summed per bucket of `width` ms.
pub(crate) fn rtt_buckets(
    conn: &Connection,
    monitor: &str,
    from_ms: u64,
    to_ms: u64,
    width: u64,
) -> rusqlite::Result<Vec<RttBucket>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms / ?4 AS b, SUM(checks), SUM(fails), SUM(rtt_sum_us), MAX(rtt_max_us)
         FROM monitor_samples WHERE monitor = ?1 AND at_ms >= ?2 AND at_ms < ?3
         GROUP BY b ORDER BY b",
    )?;
    let rows = stmt.query_map(
        params![monitor, from_ms as i64, to_ms as i64, width as i64],
        |r| {
            let checks = r.get::<_, i64>(1)?.max(0) as u64;
            let fails = r.get::<_, i64>(2)?.max(0) as u64;
            let sum = r.get::<_, i64>(3)?.max(0) as f64;
            let ok = checks.saturating_sub(fails);
            Ok(RttBucket {
                start_ms: r.get::<_, i64>(0)?.max(0) as u64 * width,
                checks,
                fails,
                rtt_avg_us: (ok > 0).then(|| sum / ok as f64),
                // Failed checks add 0 to the maximum of a batch.
                rtt_max_us: r.get(4)?,
            })
        },
    )?;
    rows.collect()
}

/// State changes of a monitor since `since_ms`, oldest first: (ip, port, at, from, to).
pub(crate) fn transitions(
    conn: &Connection,
    monitor: &str,
    since_ms: u64,
) -> rusqlite::Result<Vec<(TargetHost, u16, Change)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ip, port, at_ms, from_state, to_state FROM monitor_events
         WHERE monitor = ?1 AND at_ms >= ?2 AND kind IN ('up', 'down')
         ORDER BY at_ms, id",
    )?;
    let rows = stmt.query_map(params![monitor, since_ms as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u16>(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ip, port, at, from, to) = row?;
        if let (Ok(from), Ok(to)) = (from.parse(), to.parse()) {
            out.push((target_host(&ip), port, (at, from, to)));
        }
    }
    Ok(out)
}

/// Deletes history older than `before_ms` (target states and silences stay).
pub(crate) fn prune(conn: &Connection, before_ms: u64) -> rusqlite::Result<usize> {
    let mut n = 0;
    for table in [
        "monitor_checks",
        "monitor_samples",
        "monitor_events",
        "monitor_actions",
        "monitor_notifications",
    ] {
        n += conn.execute(
            &format!("DELETE FROM {table} WHERE at_ms < ?1"),
            params![before_ms as i64],
        )?;
    }
    Ok(n)
}

/// Forgets the stored state of target-ports no longer monitored.
pub(crate) fn forget_targets(
    conn: &mut Connection,
    gone: &[(String, TargetPort)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM monitor_targets WHERE monitor = ?1 AND ip = ?2 AND port = ?3",
        )?;
        for (m, (ip, port)) in gone {
            stmt.execute(params![m, ip.to_string(), port])?;
        }
    }
    tx.commit()
}

/// The share of time in `[from_ms, to_ms)` a target was not DOWN, from its state changes in
/// the window (oldest first), its state now and since when; `None` if nothing is known.
pub fn uptime(
    changes: &[Change],
    now_state: Health,
    since_ms: u64,
    from_ms: u64,
    to_ms: u64,
) -> Option<f64> {
    let mut known = 0u64;
    let mut down = 0u64;
    let mut add = |state: Health, a: u64, b: u64| {
        let (a, b) = (a.max(from_ms), b.min(to_ms));
        if b > a && state != Health::Pending {
            known += b - a;
            if state == Health::Down {
                down += b - a;
            }
        }
    };
    let mut cursor = from_ms;
    for &(at, from, _to) in changes {
        add(from, cursor, at);
        cursor = at;
    }
    match changes.last() {
        Some(&(_, _, to)) => add(to, cursor, to_ms),
        None if since_ms <= from_ms || now_state != Health::Pending => {
            add(now_state, since_ms.max(from_ms), to_ms)
        }
        None => {}
    }
    (known > 0).then(|| 1.0 - down as f64 / known as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthawk_core::PortState;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn states_silences_and_action_runs_are_restored() {
        let mut c = db();
        let ip: TargetHost = "127.0.0.1".parse().unwrap();
        let mut tracker = Tracker::restored(Health::Down, 0, 1, 500, false);
        tracker.hard = Health::Down;
        save(
            &mut c,
            &[
                Save::Target {
                    monitor: "m".into(),
                    target: (ip, 80),
                    host: None,
                    tracker: tracker.clone(),
                    last: Some(LastCheck {
                        at_ms: 600,
                        ok: true,
                        state: PortState::Open,
                        rtt_us: 9,
                        reason: None,
                    }),
                },
                Save::Silence {
                    monitor: "m".into(),
                    until_ms: Some(99_999),
                },
            ],
        )
        .unwrap();
        let record = |at_ms, outcome: &str| ActionRecord {
            monitor: Some("m".into()),
            action: "restart".into(),
            kind: "exec".into(),
            argv: vec!["true".into()],
            trigger: "down".into(),
            outcome: outcome.into(),
            detail: None,
            exit_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            at_ms,
            duration_ms: 3,
        };
        record_action(&c, &record(4_000_000, "ok")).unwrap();
        record_action(&c, &record(4_000_001, "cooldown")).unwrap();
        record_action(&c, &record(10, "ok")).unwrap();
        let r = restore(&c, 5_000_000).unwrap();
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.targets[0].tracker, tracker);
        assert_eq!(r.targets[0].last.as_ref().unwrap().rtt_us, 9);
        assert_eq!(r.silences, [("m".to_string(), 99_999)]);
        assert_eq!(r.action_runs, [("restart".to_string(), 4_000_000)]);
        let ev = events(&c, Some("m"), 10).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].what, "action");
        assert_eq!(prune(&c, 1000).unwrap(), 1);
    }

    fn sample(at_ms: u64, checks: u32, fails: u32, rtt_sum_us: u64) -> Save {
        Save::Sample(porthawk_watch::watch::Sample {
            monitor: "m".into(),
            at_ms,
            checks,
            fails,
            rtt_sum_us,
            rtt_max_us: 700,
            reason: (fails > 0).then(|| "127.0.0.1:80: closed".to_string()),
            cert_not_after: (at_ms < 3_000).then_some(1_900_000_000),
        })
    }

    #[test]
    fn samples_make_heartbeats_and_buckets_summed_in_sql() {
        let mut c = db();
        save(
            &mut c,
            &[
                sample(1_000, 2, 0, 800),
                sample(2_000, 2, 1, 500),
                sample(61_000, 1, 1, 0),
                sample(130_000, 4, 0, 4_000),
            ],
        )
        .unwrap();
        // The newest three, oldest first; a batch that all failed has no round trip.
        let beats = heartbeat(&c, "m", 3).unwrap();
        let at: Vec<u64> = beats.iter().map(|b| b.at_ms).collect();
        assert_eq!(at, [2_000, 61_000, 130_000]);
        assert_eq!(beats[0].rtt_avg_us, Some(500));
        assert_eq!(beats[0].reason.as_deref(), Some("127.0.0.1:80: closed"));
        assert_eq!(beats[1].rtt_avg_us, None);
        assert!(heartbeat(&c, "other", 3).unwrap().is_empty());
        // Minute buckets: the first two samples share one (3 passing checks, 1,300 µs).
        let b = rtt_buckets(&c, "m", 0, 180_000, 60_000).unwrap();
        assert_eq!(b.len(), 3, "{b:?}");
        assert_eq!((b[0].start_ms, b[0].checks, b[0].fails), (0, 4, 1));
        assert!((b[0].rtt_avg_us.unwrap() - 1_300.0 / 3.0).abs() < 1e-9);
        assert_eq!((b[1].start_ms, b[1].rtt_avg_us), (60_000, None));
        assert_eq!((b[2].start_ms, b[2].rtt_avg_us), (120_000, Some(1_000.0)));
        // The window is half-open and bounds the rows read.
        assert_eq!(
            rtt_buckets(&c, "m", 2_000, 61_000, 60_000).unwrap().len(),
            1
        );
        assert_eq!(prune(&c, 61_000).unwrap(), 2);
        assert_eq!(heartbeat(&c, "m", 10).unwrap().len(), 2);
    }

    #[test]
    fn a_week_of_samples_is_read_as_at_most_max_buckets() {
        let dir = crate::test_support::TempDir::new("buckets");
        let (store, _) = Store::open(dir.path()).unwrap();
        let week = 7 * 86_400_000u64;
        let saves: Vec<Save> = (0..5_000u64)
            .map(|i| sample(i * (week / 5_000), 1, 0, 100))
            .collect();
        store.save_history(saves).wait().unwrap();
        // Asked for one-second buckets, it widens them to stay within MAX_BUCKETS.
        let b = store.rtt_buckets("m", 0, week, 1_000).unwrap();
        assert!(
            b.len() as u64 <= MAX_BUCKETS && b.len() > 1_000,
            "{}",
            b.len()
        );
        assert_eq!(b.iter().map(|b| b.checks).sum::<u64>(), 5_000);
        assert_eq!(
            store.cert_not_after("m", 0).unwrap(),
            Some(1_900_000_000),
            "the certificate's end"
        );
        assert_eq!(store.cert_not_after("m", 3_000).unwrap(), None);
    }

    #[test]
    fn uptime_counts_down_time_in_the_window() {
        use Health::*;
        // Up all along.
        assert_eq!(uptime(&[], Up, 0, 100, 200), Some(1.0));
        // Down from 150 on.
        assert_eq!(uptime(&[(150, Up, Down)], Down, 150, 100, 200), Some(0.5));
        // Down 120..140, up after.
        let u = uptime(&[(120, Up, Down), (140, Down, Up)], Up, 140, 100, 200).unwrap();
        assert!((u - 0.8).abs() < 1e-9, "{u}");
        // First verdict inside the window: the unknown part does not count.
        assert_eq!(uptime(&[(150, Pending, Up)], Up, 150, 100, 200), Some(1.0));
        assert_eq!(uptime(&[], Pending, 150, 100, 200), None);
    }
}
