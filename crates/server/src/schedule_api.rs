//! The routes of scheduled sweeps: `GET /v1/schedules` (each schedule with its last run and
//! when the next is due) and `GET /v1/schedules/{name}/changes` (its runs, newest first,
//! each with the changes it found).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use porthawk_store::ScheduleRun;
use porthawk_watch::config::WatchConfig;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::shared::{AppState, Shared};

/// Runs per answer of `/changes` unless `limit` says otherwise.
const DEFAULT_RUNS: u32 = 20;
/// The most runs per answer.
const MAX_RUNS: u32 = 500;
/// Changes listed per run unless `changes` says otherwise.
const DEFAULT_CHANGES: u32 = 1000;
/// The most changes listed per run.
const MAX_CHANGES: u32 = 100_000;

/// The schedule routes, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list))
        .route("/v1/schedules/{name}/changes", get(changes))
}

/// The scheduled sweeps.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// The schedules of the config in force, in file order.
    pub schedules: Vec<ScheduleView>,
}

/// One `[[sweep]]` and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// The targets, as written.
    pub targets: Vec<String>,
    /// The ports.
    pub ports: String,
    /// Seconds between runs.
    pub every_s: f64,
    /// The `[notify.NAME]` channels its changes go to.
    pub on_change: Vec<String>,
    /// Whether a run is in progress.
    pub running: bool,
    /// When the next run is due, in seconds since the Unix epoch (now or in the past: at
    /// the scheduler's next look, within a second).
    pub next_run_at: f64,
    /// The newest run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ScheduleRun>,
}

/// Paging of `GET /v1/schedules/{name}/changes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Runs to return, newest first (1 to 500, default 20).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Changes listed per run (1 to 100000, default 1000); a run's counts are always whole.
    #[param(minimum = 1, maximum = 100000)]
    changes: Option<u32>,
}

/// A schedule's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleHistory {
    /// The schedule.
    pub schedule: String,
    /// Its runs, newest first.
    pub runs: Vec<RunView>,
}

/// One run and the changes it found.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run.
    #[serde(flatten)]
    pub run: ScheduleRun,
    /// The changes, as `porthawk diff` prints them (`change`, `ip`, `port`, `fields`).
    #[schema(value_type = Vec<crate::sweep::ChangeRecord>)]
    pub changes: Vec<serde_json::Value>,
}

async fn config(shared: &Shared) -> Arc<WatchConfig> {
    shared
        .watch
        .view(|w, _| Arc::clone(w.config()))
        .await
        .unwrap_or_else(|| Arc::clone(&shared.config.watch))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
}

/// The scheduled sweeps, each with its last run and when the next one is due.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    responses((status = 200, description = "The schedules", body = ScheduleList))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let config = config(&state.0).await;
    let shared = Arc::clone(&state.0);
    let latest = blocking(move || {
        shared
            .store
            .latest_schedule_runs()
            .map_err(|e| ApiError::internal("cannot read the schedules' runs", e))
    })
    .await?;
    let now = crate::store::now_ms();
    let schedules = config
        .sweeps
        .iter()
        .map(|s| {
            let last = latest.iter().find(|r| r.schedule == s.name).cloned();
            let next = last.as_ref().map_or(now, |r| {
                r.started_ms.saturating_add(s.every.as_millis() as u64)
            });
            ScheduleView {
                name: s.name.clone(),
                targets: s.targets.clone(),
                ports: s.ports.clone(),
                every_s: s.every.as_secs_f64(),
                on_change: s.on_change.clone(),
                running: last.as_ref().is_some_and(|r| r.outcome.is_none()),
                next_run_at: next as f64 / 1000.0,
                last_run: last,
            }
        })
        .collect();
    Ok(Json(ScheduleList { schedules }))
}

/// A schedule's runs, newest first, each with its outcome (`baseline`, `unchanged`,
/// `changed`, `failed`) and the changes it found.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/changes",
    params(("name" = String, Path, description = "The schedule"), ChangesQuery),
    responses(
        (status = 200, description = "The schedule's history", body = ScheduleHistory),
        (status = 400, description = "Bad paging parameter", body = crate::error::ErrorBody),
        (status = 404, description = "No such schedule, configured or in the history", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn changes(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ScheduleHistory>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_RUNS);
    if !(1..=MAX_RUNS).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be from 1 to {MAX_RUNS}"),
        ));
    }
    let per_run = q.changes.unwrap_or(DEFAULT_CHANGES);
    if !(1..=MAX_CHANGES).contains(&per_run) {
        return Err(ApiError::bad_request(
            "changes",
            format!("changes must be from 1 to {MAX_CHANGES}"),
        ));
    }
    let configured = config(&state.0).await.sweeps.iter().any(|s| s.name == name);
    let shared = Arc::clone(&state.0);
    blocking(move || {
        let read = |e| ApiError::internal("cannot read the schedule's runs", e);
        let runs = shared.store.schedule_runs(&name, limit).map_err(read)?;
        if runs.is_empty() && !configured {
            return Err(ApiError::not_found(format!(
                "no scheduled sweep named '{name}'"
            )));
        }
        let mut views = Vec::with_capacity(runs.len());
        for run in runs {
            let rows = shared
                .store
                .schedule_changes(run.id, per_run)
                .map_err(read)?;
            let changes = rows
                .into_iter()
                .map(|c| {
                    let fields: serde_json::Value =
                        serde_json::from_str(&c.fields).unwrap_or_default();
                    serde_json::json!({
                        "change": c.change,
                        "ip": c.ip,
                        "port": c.port,
                        "fields": fields,
                    })
                })
                .collect();
            views.push(RunView { run, changes });
        }
        Ok(Json(ScheduleHistory {
            schedule: name,
            runs: views,
        }))
    })
    .await
}
