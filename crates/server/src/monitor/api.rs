//! The monitor routes: `GET /v1/monitors`, `GET /v1/monitors/{name}`, `POST
//! /v1/monitors/{name}/check`, `POST|DELETE /v1/monitors/{name}/silence`, `POST
//! /v1/actions/{name}`, `POST /v1/config/reload`, and the status page at `GET /`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use porthawk_core::parse_duration;
use serde::Deserialize;
use utoipa::ToSchema;

use super::history::{self, ActionRecord};
use super::notify::rfc3339;
use super::page;
use super::state::Health;
pub use super::view::{
    CheckView, MonitorDetail, MonitorList, MonitorSummary, TargetQuery, TargetVantageView,
    TargetView, Uptime, VantageView,
};
use super::watch::{Refusal, TargetHost, Watch};
use crate::auth::Authorized;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::shared::AppState;
use crate::store::Store;
use porthawk_store::StoreError;

const DAY_MS: u64 = 86_400_000;
/// Targets per page unless `limit` says otherwise.
const DEFAULT_TARGETS: usize = 100;
/// The largest page of targets.
const MAX_TARGETS: usize = 5000;

/// The monitor routes, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(status_page))
        .route("/v1/monitors", get(list))
        .route("/v1/monitors/{name}", get(detail))
        .route("/v1/monitors/{name}/check", post(check_now))
        .route(
            "/v1/monitors/{name}/silence",
            post(silence).delete(unsilence),
        )
        .route("/v1/actions/{name}", post(run_action))
        .route("/v1/config/reload", post(reload))
}

struct MonitorSnap {
    summary: MonitorSummary,
    silenced_until_ms: Option<u64>,
    targets: Vec<TargetView>,
    matching: usize,
    /// Every target's hard state and since when: the monitor's uptime and down periods are
    /// computed from all of them, whatever page of targets is shown.
    all: Vec<page::TargetState>,
}

fn matches(t: &TargetView, q: &TargetQuery) -> bool {
    let state_ok = match q.state.as_deref() {
        None | Some("") | Some("all") => true,
        Some("problems") => t.state != Health::Up || t.flapping || t.partial,
        Some("flapping") => t.flapping,
        Some("partial") => t.partial,
        Some(s) => t.state.as_str() == s,
    };
    let text_ok = match q.q.as_deref().map(str::trim) {
        None | Some("") => true,
        Some(text) => {
            let text = text.to_lowercase();
            format!("{}:{}", t.target, t.port).contains(&text)
                || t.host
                    .as_deref()
                    .is_some_and(|h| h.to_lowercase().contains(&text))
        }
    };
    state_ok && text_ok
}

/// Snapshots monitors on the watch thread: every target if `all_targets`, else one page of
/// those matching `q`, worst first.
fn snapshot(
    w: &Watch,
    now: u64,
    only: Option<&str>,
    q: &TargetQuery,
    all_targets: bool,
) -> Vec<MonitorSnap> {
    let limit = q.limit.unwrap_or(DEFAULT_TARGETS).clamp(1, MAX_TARGETS);
    let offset = q.offset.unwrap_or(0);
    w.monitors()
        .iter()
        .filter(|m| only.is_none_or(|n| n == m.spec.name))
        .map(|m| {
            let counts = m.counts();
            let multi = m.spec.multi_vantage();
            let all = m
                .targets
                .iter()
                .map(|((host, port), t)| (host.clone(), *port, t.tracker.hard, t.tracker.since_ms))
                .collect();
            let views = m.targets.iter().map(|((host, port), t)| TargetView {
                target: host.clone(),
                port: *port,
                host: t.host.as_deref().map(str::to_string),
                state: t.tracker.health(),
                flapping: t.tracker.flapping,
                partial: t.partial,
                since_ms: t.tracker.since_ms,
                last: t.last.as_ref().map(CheckView::from),
                uptime: Uptime::default(),
                skipped: t.skipped.as_ref().map(|s| s.message()),
                vantages: if multi {
                    target_vantages(m, t)
                } else {
                    Vec::new()
                },
                hard: t.tracker.hard,
            });
            let (targets, matching) = if all_targets {
                let v: Vec<TargetView> = views.collect();
                let n = v.len();
                (v, n)
            } else {
                let mut v: Vec<TargetView> = views.filter(|t| matches(t, q)).collect();
                // Worst first: down, partial, flapping, pending, up; then by address.
                v.sort_by_key(|t| {
                    let rank = match (t.state, t.partial, t.flapping) {
                        (Health::Down, _, _) => 0,
                        (_, true, _) => 1,
                        (_, _, true) => 2,
                        (Health::Pending, _, _) => 3,
                        (Health::Up, _, _) => 4,
                    };
                    (rank, t.target.clone(), t.port)
                });
                let n = v.len();
                (v.into_iter().skip(offset).take(limit).collect(), n)
            };
            MonitorSnap {
                summary: MonitorSummary {
                    name: m.spec.name.clone(),
                    group: m.spec.group.clone(),
                    state: m.overall().to_string(),
                    targets: m.targets.len() as u64,
                    counts,
                    interval_s: m.spec.interval.as_secs_f64(),
                    probe: m.spec.probe.clone(),
                    quorum: m.spec.quorum.to_string(),
                    vantages: m
                        .vantage_summaries()
                        .into_iter()
                        .map(VantageView::from)
                        .collect(),
                    last_check: m.last_check_ms.map(rfc3339),
                    silenced_until: m.silenced_until.filter(|&u| u > now).map(rfc3339),
                    uptime: Uptime::default(),
                    skipped_checks: m.local_skips.total,
                    skipped: m
                        .local_skips
                        .last
                        .as_ref()
                        .filter(|_| m.local_skips.run > 0)
                        .map(|s| s.message()),
                },
                silenced_until_ms: m.silenced_until.filter(|&u| u > now),
                targets,
                matching,
                all,
            }
        })
        .collect()
}

/// How each vantage of a monitor with several sees target `t`.
fn target_vantages(m: &super::watch::Monitor, t: &super::watch::Target) -> Vec<TargetVantageView> {
    m.spec
        .from
        .iter()
        .zip(&t.vantages)
        .enumerate()
        .map(|(v, (name, vt))| TargetVantageView {
            name: name.to_string(),
            state: if m.blind(v) {
                "no-agents".to_string()
            } else {
                vt.tracker.health().as_str().to_string()
            },
            last: vt.last.as_ref().map(CheckView::from),
            skipped: vt.skipped.as_ref().map(|s| s.message()),
        })
        .collect()
}

/// Fills in uptimes from the stored state changes: the monitor's (the average over all its
/// targets, the same for the list, a monitor's detail and the status page) and, with
/// `per_target`, those of the page of targets shown.
fn add_uptimes(
    store: &Store,
    snap: &mut MonitorSnap,
    now: u64,
    per_target: bool,
) -> Result<(), StoreError> {
    let windows = [DAY_MS, 7 * DAY_MS, 30 * DAY_MS];
    let since = now.saturating_sub(30 * DAY_MS);
    let changes = store.transitions(&snap.summary.name, since)?;
    let mut by_target: HashMap<(TargetHost, u16), Vec<history::Change>> = HashMap::new();
    for (ip, port, change) in changes {
        by_target.entry((ip, port)).or_default().push(change);
    }
    let uptimes = |host: &TargetHost, port: u16, hard: Health, since_ms: u64| {
        let ch = by_target
            .get(&(host.clone(), port))
            .map_or(&[][..], Vec::as_slice);
        let mut u = [None; 3];
        for (k, w) in windows.iter().enumerate() {
            let from = now.saturating_sub(*w);
            let first = ch.partition_point(|c| c.0 < from);
            u[k] = history::uptime(&ch[first..], hard, since_ms, from, now);
        }
        u
    };
    let mut sums = [(0.0f64, 0u32); 3];
    for (host, port, hard, since_ms) in &snap.all {
        for (k, v) in uptimes(host, *port, *hard, *since_ms)
            .into_iter()
            .enumerate()
        {
            if let Some(v) = v {
                sums[k].0 += v;
                sums[k].1 += 1;
            }
        }
    }
    if per_target {
        for t in &mut snap.targets {
            let u = uptimes(&t.target, t.port, t.hard, t.since_ms);
            t.uptime = Uptime {
                h24: u[0],
                d7: u[1],
                d30: u[2],
            };
        }
    }
    let avg = |(s, n): (f64, u32)| (n > 0).then(|| s / f64::from(n));
    snap.summary.uptime = Uptime {
        h24: avg(sums[0]),
        d7: avg(sums[1]),
        d30: avg(sums[2]),
    };
    Ok(())
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::NoMonitor(n) => ApiError::not_found(format!("no monitor named '{n}'")),
        Refusal::NoAction(n) => ApiError::not_found(format!(
            "no action named '{n}': only actions defined in the config can run"
        )),
    }
}

fn gone() -> ApiError {
    ApiError::internal("the monitors are not running", "watch thread stopped")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
}

/// The monitors, with their state and uptime.
#[utoipa::path(
    get,
    path = "/v1/monitors",
    responses((status = 200, description = "The monitors", body = MonitorList))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<MonitorList>, ApiError> {
    let q = TargetQuery::default();
    let snaps = state
        .0
        .watch
        .view(move |w, now| (snapshot(w, now, None, &q, true), now))
        .await
        .ok_or_else(gone)?;
    let shared = state.0.clone();
    let monitors = blocking(move || {
        let (mut snaps, now) = snaps;
        for s in &mut snaps {
            add_uptimes(&shared.store, s, now, false)
                .map_err(|e| ApiError::internal("cannot read monitor history", e))?;
        }
        Ok(snaps.into_iter().map(|s| s.summary).collect())
    })
    .await?;
    Ok(Json(MonitorList { monitors }))
}

/// One monitor: its targets (filtered, paged), uptime and recent history.
#[utoipa::path(
    get,
    path = "/v1/monitors/{name}",
    params(("name" = String, Path, description = "The monitor's name"), TargetQuery),
    responses(
        (status = 200, description = "The monitor", body = MonitorDetail),
        (status = 400, description = "A bad filter", body = crate::error::ErrorBody),
        (status = 404, description = "No such monitor", body = crate::error::ErrorBody)
    )
)]
pub(crate) async fn detail(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<TargetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MonitorDetail>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    if let Some(s) = q.state.as_deref() {
        if !matches!(
            s,
            "" | "all" | "up" | "down" | "pending" | "flapping" | "partial" | "problems"
        ) {
            return Err(ApiError::bad_request(
                "state",
                format!(
                    "unknown state '{s}': expected up, down, pending, flapping, partial or \
                     problems"
                ),
            ));
        }
    }
    let n = name.clone();
    let q2 = q.clone();
    let (mut snaps, now) = state
        .0
        .watch
        .view(move |w, now| (snapshot(w, now, Some(&n), &q2, false), now))
        .await
        .ok_or_else(gone)?;
    let mut snap = snaps
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no monitor named '{name}'")))?;
    let shared = state.0.clone();
    let offset = q.offset.unwrap_or(0);
    let detail = blocking(move || {
        let store = &shared.store;
        (|| {
            add_uptimes(store, &mut snap, now, true)?;
            let events = store.events(Some(&name), 100)?;
            let actions = store.actions(Some(&name), 20)?;
            let notifications = store.notices(&name, 20)?;
            Ok::<_, StoreError>(MonitorDetail {
                summary: snap.summary,
                target_list: snap.targets,
                matching: snap.matching,
                offset,
                events,
                actions,
                notifications,
                history: shared.history.describe(),
            })
        })()
        .map_err(|e| ApiError::internal("cannot read monitor history", e))
    })
    .await?;
    Ok(Json(detail))
}

/// Checks a monitor now, outside its schedule.
#[utoipa::path(
    post,
    path = "/v1/monitors/{name}/check",
    params(("name" = String, Path, description = "The monitor's name")),
    responses(
        (status = 202, description = "Checks submitted", body = serde_json::Value),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody),
        (status = 404, description = "No such monitor", body = crate::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn check_now(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = state
        .0
        .watch
        .check_now(name.clone())
        .await
        .ok_or_else(gone)?
        .map_err(refusal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "monitor": name, "jobs": jobs })),
    )
        .into_response())
}

/// The body of `POST /v1/monitors/{name}/silence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// How long, like `30m` or `2h`; `0s` lifts the silence.
    #[serde(rename = "for")]
    pub duration: String,
}

/// Silences a monitor's notifications and actions for a while.
#[utoipa::path(
    post,
    path = "/v1/monitors/{name}/silence",
    params(("name" = String, Path, description = "The monitor's name")),
    request_body = SilenceRequest,
    responses(
        (status = 200, description = "Silenced", body = serde_json::Value),
        (status = 400, description = "A bad duration", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody),
        (status = 404, description = "No such monitor", body = crate::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn silence(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SilenceRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = parse_duration(&req.duration).map_err(|m| ApiError::bad_request("for", m))?;
    if d > std::time::Duration::from_secs(366 * 86_400) {
        return Err(ApiError::bad_request(
            "for",
            "a silence lasts at most a year",
        ));
    }
    let until = (!d.is_zero()).then(|| crate::store::now_ms() + d.as_millis() as u64);
    state
        .0
        .watch
        .silence(name.clone(), until)
        .await
        .ok_or_else(gone)?
        .map_err(refusal)?;
    Ok(Json(serde_json::json!({
        "monitor": name,
        "silenced_until": until.map(rfc3339),
        "silenced_until_ms": until,
    })))
}

/// Lifts a monitor's silence.
#[utoipa::path(
    delete,
    path = "/v1/monitors/{name}/silence",
    params(("name" = String, Path, description = "The monitor's name")),
    responses(
        (status = 200, description = "Silence lifted", body = serde_json::Value),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody),
        (status = 404, description = "No such monitor", body = crate::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn unsilence(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .0
        .watch
        .silence(name.clone(), None)
        .await
        .ok_or_else(gone)?
        .map_err(refusal)?;
    Ok(Json(
        serde_json::json!({ "monitor": name, "silenced_until": null }),
    ))
}

/// The body of `POST /v1/actions/{name}`: only which monitor's DOWN targets to pass on;
/// the command itself always comes from the config.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRunRequest {
    /// The monitor whose DOWN targets the action gets in `PORTHAWK_TARGETS`.
    pub monitor: Option<String>,
}

/// Runs an action defined in the config (never a command from the request).
#[utoipa::path(
    post,
    path = "/v1/actions/{name}",
    params(("name" = String, Path, description = "The action's name in the config")),
    request_body(content = ActionRunRequest, description = "Optional: the monitor whose DOWN targets the action gets"),
    responses(
        (status = 200, description = "What ran, with exit code and output", body = ActionRecord),
        (status = 400, description = "A bad body", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody),
        (status = 403, description = "No API token configured", body = crate::error::ErrorBody),
        (status = 404, description = "No such action", body = crate::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn run_action(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ActionRecord>, ApiError> {
    if state.0.config.token.is_none() {
        return Err(ApiError::forbidden(
            "token",
            "running actions over the API needs an API token: set [api] token in the config",
        ));
    }
    let req: ActionRunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ActionRunRequest::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let rec = state
        .0
        .watch
        .run_action(name, req.monitor)
        .await
        .ok_or_else(gone)?
        .map_err(refusal)?;
    Ok(Json(rec))
}

/// Reloads the config file; a bad file is rejected and the running config stays.
#[utoipa::path(
    post,
    path = "/v1/config/reload",
    responses(
        (status = 200, description = "Reloaded", body = serde_json::Value),
        (status = 400, description = "The file is invalid (file, line, field)", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reload(
    _auth: Authorized,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = state
        .0
        .watch
        .reload()
        .await
        .ok_or_else(gone)?
        .map_err(|m| ApiError::bad_request("config", m))?;
    Ok(Json(serde_json::json!({ "monitors": n })))
}

async fn status_page(
    State(state): State<AppState>,
    query: Result<Query<TargetQuery>, axum::extract::rejection::QueryRejection>,
    page_query: Result<Query<page::PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let Query(mut q) = query.unwrap_or_default();
    let range = page::Range::parse(page_query.ok().and_then(|Query(p)| p.range).as_deref());
    q.limit = Some(q.limit.unwrap_or(50).clamp(1, 500));
    if q.state.is_none() && q.monitor.is_none() {
        q.state = Some("problems".into());
    }
    let q2 = q.clone();
    let (snaps, now) = state
        .0
        .watch
        .view(move |w, now| (snapshot(w, now, q2.monitor.as_deref(), &q2, false), now))
        .await
        .ok_or_else(gone)?;
    let shared = state.0.clone();
    let agents = state.0.fleet.get().map(|f| f.agent_list().page_rows());
    let html = blocking(move || {
        let mut snaps = snaps;
        let store = &shared.store;
        let one = q.monitor.is_some();
        let beats = if one {
            page::BEATS_ON_PAGE
        } else {
            page::BEATS_IN_LIST
        };
        let (monitors, detail, events) = (|| {
            let mut monitors = Vec::with_capacity(snaps.len());
            let mut detail = None;
            for mut s in snaps.drain(..) {
                add_uptimes(store, &mut s, now, true)?;
                let name = &s.summary.name;
                let (beats, cert_days) =
                    page::load_monitor(store, name, s.summary.interval_s, beats, now)?;
                if one {
                    detail = Some(page::load_detail(store, name, &s.all, range, now)?);
                }
                monitors.push(page::PageMonitor {
                    summary: s.summary,
                    silenced: s.silenced_until_ms.is_some(),
                    targets: s.targets,
                    matching: s.matching,
                    beats,
                    cert_days,
                });
            }
            let events = store.events(q.monitor.as_deref(), if one { 100 } else { 30 })?;
            Ok::<_, StoreError>((monitors, detail, events))
        })()
        .map_err(|e| ApiError::internal("cannot read monitor history", e))?;
        Ok(page::render(&page::Page {
            monitors: &monitors,
            detail: detail.as_ref(),
            events: &events,
            q: &q,
            // Fleet mode's live agents (`None` without `[fleet]`).
            agents: agents.as_deref(),
            now,
        }))
    })
    .await?;
    Ok(Html(html))
}
