//! The HTTP API: routes, handlers, request metrics and the OpenAPI document generated from
//! the handlers (the bearer-token check is `auth`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use porthawk_core::{nmap_xml, PortSet, PortState, ResultLine, XmlRun};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::auth::Authorized;
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::extract::JsonBody;
use crate::guard::GuardResponses;
use crate::metrics::RequestLabels;
use crate::shared::{AppState, Shared};
use crate::store::{ResultRow, SweepRow};
use crate::sweep::{self, Counts, ProbeRequest, StoreMode, SweepRequest, SweepState, SweepStatus};

/// Rows read from the store per chunk of a results stream.
const RESULTS_PAGE: u32 = 2048;
/// The longest a results stream waits for news before looking again.
const STREAM_POLL: Duration = Duration::from_secs(1);
/// Sweeps per page of `GET /v1/sweeps` unless `limit` says otherwise.
const DEFAULT_PAGE: u64 = 50;
/// The largest page of `GET /v1/sweeps`.
const MAX_PAGE: u64 = 1000;

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "porthawk",
        description = "Sweeps of TCP ports over HTTP, with results streamed as they arrive."
    ),
    paths(
        create_sweep,
        list_sweeps,
        get_sweep,
        cancel_sweep,
        sweep_results,
        sweep_diff,
        crate::schedule_api::list,
        crate::schedule_api::changes,
        crate::probe_route::probe,
        fleet_agents,
        healthz,
        metrics,
        crate::monitor::api::list,
        crate::monitor::api::detail,
        crate::monitor::api::check_now,
        crate::monitor::api::silence,
        crate::monitor::api::unsilence,
        crate::monitor::api::run_action,
        crate::monitor::api::reload,
    ),
    components(schemas(
        SweepRequest,
        ProbeRequest,
        ResultLine,
        sweep::ChangeRecord,
        sweep::FieldChangeRecord,
        crate::schedule_api::ScheduleList,
        crate::schedule_api::ScheduleView,
        crate::schedule_api::ScheduleHistory,
        crate::schedule_api::RunView,
        porthawk_store::ScheduleRun,
        porthawk_store::RunOutcome,
        porthawk_store::RunNotice,
        StoreMode,
        SweepState,
        SweepStatus,
        crate::sweep::SweepMode,
        crate::sweep::SliceCounts,
        crate::sweep::AgentRate,
        crate::fleet::AgentList,
        crate::fleet::AgentView,
        crate::fleet::RunningView,
        Counts,
        SweepCreated,
        SweepList,
        SweepSummary,
        Health,
        ErrorBody,
        ErrorDetail,
        crate::monitor::api::MonitorList,
        crate::monitor::api::MonitorSummary,
        crate::monitor::api::MonitorDetail,
        crate::monitor::api::TargetView,
        crate::monitor::api::CheckView,
        crate::monitor::api::Uptime,
        crate::monitor::api::SilenceRequest,
        crate::monitor::api::ActionRunRequest,
        crate::monitor::history::ActionRecord,
        crate::monitor::history::NoticeRecord,
        crate::monitor::history::EventRow,
        crate::monitor::state::Health,
        crate::monitor::watch::MonitorCounts,
    )),
    modifiers(&BearerAuth, &GuardResponses)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API's router over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/sweeps", get(list_sweeps).post(create_sweep))
        .route("/v1/sweeps/{id}", get(get_sweep).delete(cancel_sweep))
        .route("/v1/sweeps/{id}/results", get(sweep_results))
        .route("/v1/sweeps/{id}/diff", get(sweep_diff))
        .route("/v1/fleet/agents", get(fleet_agents))
        .merge(crate::monitor::api::routes())
        .merge(crate::schedule_api::routes())
        .merge(crate::probe_route::routes())
        .merge(crate::page::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::guard::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by method, route and status.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = crate::metrics::method_label(req.method());
    let response = next.run(req).await;
    state
        .0
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The answer to `POST /v1/sweeps`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SweepCreated {
    /// The new sweep's id.
    pub id: u64,
}

/// A page of sweeps, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SweepList {
    /// The sweeps, without their requests (`GET /v1/sweeps/{id}` has the request).
    pub sweeps: Vec<SweepSummary>,
    /// The `offset` of the next page, if there may be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// A sweep in a listing: its state and progress, without the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct SweepSummary {
    /// The sweep id.
    pub id: u64,
    /// Its state.
    pub state: SweepState,
    /// Probes reported.
    pub done: u64,
    /// Probes in the sweep.
    pub total: u64,
    /// Probes per verdict.
    pub counts: Counts,
    /// Probes per second, averaged over the sweep so far.
    pub probes_per_s: f64,
    /// Seconds left at that rate; absent once the sweep has ended or before it has a rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// When it was submitted, in seconds since the Unix epoch.
    pub created_at: f64,
    /// When it ended, in seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// Why it failed, for a `failed` sweep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `[[sweep]]` schedule it is a run of, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

impl From<SweepStatus> for SweepSummary {
    fn from(s: SweepStatus) -> Self {
        SweepSummary {
            id: s.id,
            state: s.state,
            done: s.done,
            total: s.total,
            counts: s.counts,
            probes_per_s: s.probes_per_s,
            eta_s: s.eta_s,
            created_at: s.created_at,
            finished_at: s.finished_at,
            reason: s.reason,
            schedule: None,
        }
    }
}

impl From<porthawk_store::SweepSummary> for SweepSummary {
    fn from(row: porthawk_store::SweepSummary) -> Self {
        let elapsed = row
            .finished_ms
            .unwrap_or_else(crate::store::now_ms)
            .saturating_sub(row.created_ms);
        let secs = elapsed as f64 / 1000.0;
        let rate = if secs > 0.0 {
            row.done as f64 / secs
        } else {
            0.0
        };
        SweepSummary {
            id: row.id,
            state: row.state,
            done: row.done,
            total: row.total,
            counts: row.counts,
            probes_per_s: rate,
            eta_s: (!row.state.is_final() && rate > 0.0)
                .then(|| row.total.saturating_sub(row.done) as f64 / rate),
            created_at: row.created_ms as f64 / 1000.0,
            finished_at: row.finished_ms.map(|ms| ms as f64 / 1000.0),
            reason: row.reason,
            schedule: None,
        }
    }
}

/// Paging of `GET /v1/sweeps`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Sweeps per page (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Sweeps to skip.
    offset: Option<u64>,
}

/// Filters and format of `GET /v1/sweeps/{id}/results`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Only results of this state: open, closed, filtered, unreachable or error.
    #[param(pattern = "^(open|closed|filtered|unreachable|error)$")]
    state: Option<String>,
    /// `jsonl` (NDJSON, the default), `csv`, or `xml` (one nmap XML document, written once
    /// the sweep has ended).
    #[param(pattern = "^(jsonl|ndjson|csv|xml)$")]
    format: Option<String>,
    /// Whether to follow a running sweep until it ends (default true); `false` returns the
    /// results stored so far.
    follow: Option<bool>,
}

/// The answer to `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unhealthy` when the store is (the answer is then 503).
    pub status: String,
    /// The store: `ok`, `write failed: ...` (a write failed after its retries; it stays so
    /// until a restart, since what it carried is lost) or `database deleted: ...`.
    pub store: String,
    /// Monitor history: `written`, or `not written: ...` while its writes fail (monitors
    /// go on judging, with their verdicts in memory).
    pub monitor_history: String,
    /// The engine's backend.
    pub backend: String,
    /// The engine's shard threads.
    pub shards: u64,
    /// Sweeps running now.
    pub running_sweeps: u64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
}

fn sweep_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::not_found(format!("no such sweep: {e}")))?;
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no sweep with id '{raw}'")))
}

fn status_of_row(row: SweepRow) -> SweepStatus {
    let elapsed = row
        .finished_ms
        .unwrap_or_else(crate::store::now_ms)
        .saturating_sub(row.created_ms);
    SweepStatus::new(row, Duration::from_millis(elapsed))
}

/// The status of sweep `id`: live counters while it runs (or when it failed and the store
/// could not take its end), the store's once it has ended.
fn status(shared: &Shared, id: u64) -> Result<SweepStatus, ApiError> {
    if let Some(live) = shared.in_memory(id) {
        return Ok(live.status());
    }
    let row = shared
        .store
        .sweep(id)
        .map_err(|e| ApiError::internal("cannot read the sweep", e))?
        .ok_or_else(|| ApiError::not_found(format!("no sweep with id {id}")))?;
    let mut status = status_of_row(row);
    crate::fleet::decorate(shared, &mut status);
    Ok(status)
}

/// Submit a sweep.
#[utoipa::path(
    post,
    path = "/v1/sweeps",
    request_body = SweepRequest,
    responses(
        (status = 202, description = "Accepted; follow it at /v1/sweeps/{id}", body = SweepCreated),
        (status = 400, description = "Bad JSON or a bad field (named); `from` on a server without [fleet], or naming a pool it does not have", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "A target outside the allow-list (named)", body = ErrorBody),
        (status = 413, description = "Body or sweep over its limit", body = ErrorBody),
        (status = 429, description = "Too many sweeps at once", body = ErrorBody),
        (status = 503, description = "The store is unhealthy: the sweep could not be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_sweep(
    State(state): State<AppState>,
    _auth: Authorized,
    JsonBody(request): JsonBody<SweepRequest>,
) -> Result<Response, ApiError> {
    // Everything cheap first, so that a request's cost is bounded before any planning: the
    // field checks and caps, then the concurrency limit (checked again, under the lock, when
    // the sweep is created).
    sweep::validate(&request)?;
    if request.from.is_some() {
        let Some(fleet) = state.0.fleet.get().cloned() else {
            return Err(ApiError::bad_request(
                "from",
                "this server runs no fleet: add a [fleet] section to its config to run sweeps from a pool",
            ));
        };
        let shared = Arc::clone(&state.0);
        let id =
            blocking(move || crate::fleet::create(&shared, &fleet, request, random_seed())).await?;
        let mut response = (StatusCode::ACCEPTED, Json(SweepCreated { id })).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/sweeps/{id}")) {
            response.headers_mut().insert(LOCATION, v);
        }
        return Ok(response);
    }
    let max = state.0.config.limits.max_concurrent_sweeps;
    let running = state.0.live_count();
    if running >= max {
        return Err(ApiError::too_many(format!(
            "{running} sweeps are running, the most this server runs at once is {max}"
        )));
    }
    let shared = Arc::clone(&state.0);
    let id = blocking(move || {
        let plan = sweep::plan(
            request,
            &shared.config.allow,
            &shared.config.limits,
            random_seed(),
        )?;
        shared.create(plan)
    })
    .await?;
    let mut response = (StatusCode::ACCEPTED, Json(SweepCreated { id })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/sweeps/{id}")) {
        response.headers_mut().insert(LOCATION, v);
    }
    Ok(response)
}

/// List sweeps, newest first.
#[utoipa::path(
    get,
    path = "/v1/sweeps",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of sweeps", body = SweepList),
        (status = 400, description = "Bad paging parameter", body = ErrorBody),
    )
)]
async fn list_sweeps(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SweepList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be from 1 to {MAX_PAGE}"),
        ));
    }
    let offset = q.offset.unwrap_or(0).min(i64::MAX as u64);
    let shared = Arc::clone(&state.0);
    blocking(move || {
        let rows = shared
            .store
            .sweep_summaries(limit, offset)
            .map_err(|e| ApiError::internal("cannot list sweeps", e))?;
        let full = rows.len() as u64 == limit;
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        let mut names = shared
            .store
            .schedule_names(&ids)
            .map_err(|e| ApiError::internal("cannot list sweeps", e))?;
        let sweeps = rows
            .into_iter()
            .map(|row| {
                let schedule = names.remove(&row.id);
                let mut summary: SweepSummary = match shared.in_memory(row.id) {
                    Some(live) => live.status().into(),
                    None => row.into(),
                };
                summary.schedule = schedule;
                summary
            })
            .collect();
        Ok(Json(SweepList {
            sweeps,
            next_offset: full.then(|| offset.saturating_add(limit)),
        }))
    })
    .await
}

/// A sweep's state and progress.
#[utoipa::path(
    get,
    path = "/v1/sweeps/{id}",
    params(("id" = u64, Path, description = "The sweep id")),
    responses(
        (status = 200, description = "The sweep", body = SweepStatus),
        (status = 404, description = "No such sweep", body = ErrorBody),
    )
)]
async fn get_sweep(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SweepStatus>, ApiError> {
    let id = sweep_id(path)?;
    let shared = Arc::clone(&state.0);
    blocking(move || {
        let mut s = status(&shared, id)?;
        s.schedule = shared
            .store
            .schedule_names(&[id])
            .map_err(|e| ApiError::internal("cannot read the sweep", e))?
            .remove(&id);
        Ok(Json(s))
    })
    .await
}

/// Cancel a running sweep. Probes in flight finish; the sweep then ends as `cancelled`.
#[utoipa::path(
    delete,
    path = "/v1/sweeps/{id}",
    params(("id" = u64, Path, description = "The sweep id")),
    responses(
        (status = 202, description = "Cancellation requested", body = SweepStatus),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such sweep", body = ErrorBody),
        (status = 409, description = "The sweep has already ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_sweep(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = sweep_id(path)?;
    if let Some(live) = state.0.cancel(id) {
        return Ok((StatusCode::ACCEPTED, Json(live.status())).into_response());
    }
    if crate::fleet::cancel(&state.0, id).await?.is_some() {
        let shared = Arc::clone(&state.0);
        let s = blocking(move || status(&shared, id)).await?;
        return Ok((StatusCode::ACCEPTED, Json(s)).into_response());
    }
    let shared = Arc::clone(&state.0);
    let s = blocking(move || status(&shared, id)).await?;
    Err(ApiError::conflict(format!(
        "sweep {id} has already ended ({})",
        s.state.as_str()
    )))
}

/// The results of a sweep, streamed while it runs: NDJSON objects in the shape of
/// `porthawk scan --format jsonl`, or CSV; or, with `format=xml`, one nmap XML document once
/// the sweep has ended.
#[utoipa::path(
    get,
    path = "/v1/sweeps/{id}/results",
    params(("id" = u64, Path, description = "The sweep id"), ResultsQuery),
    responses(
        (status = 200, description = "One ResultLine per line, as `porthawk scan --format jsonl` writes it (application/x-ndjson), or with `format=csv` the CSV of `porthawk scan --format csv` (text/csv: a header of the ResultLine field names, then one row per line); the stream ends when the sweep ends. With `format=xml` the nmap XML of `porthawk scan --format xml` (application/xml), valid against nmap.dtd, sent once the sweep has ended",
            content((ResultLine = "application/x-ndjson"), (String = "text/csv"), (String = "application/xml"))),
        (status = 400, description = "Bad state or format", body = ErrorBody),
        (status = 404, description = "No such sweep", body = ErrorBody),
    )
)]
async fn sweep_results(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = sweep_id(path)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let state_filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<PortState>()
                .map_err(|e| ApiError::bad_request("state", e))?
                .as_str(),
        ),
    };
    let xml = q.format.as_deref() == Some("xml");
    let csv = match q.format.as_deref() {
        None | Some("") | Some("jsonl") | Some("ndjson") | Some("xml") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "format",
                format!("unknown format '{other}': expected jsonl, csv or xml"),
            ))
        }
    };
    let shared = Arc::clone(&state.0);
    let s = blocking(move || status(&shared, id)).await?;
    if !s.request.store.is_all() && state_filter.is_some_and(|st| st != "open") {
        return Err(ApiError::bad_request(
            "state",
            format!("sweep {id} stores open results only (submit it with \"store\": \"all\")"),
        ));
    }
    if xml {
        return xml_results(
            Arc::clone(&state.0),
            id,
            state_filter,
            q.follow.unwrap_or(true),
        )
        .await;
    }
    let cursor = Cursor {
        shared: Arc::clone(&state.0),
        id,
        after: 0,
        state: state_filter,
        csv,
        header: csv,
        follow: q.follow.unwrap_or(true),
    };
    let stream = futures_util::stream::unfold(cursor, next_chunk);
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(([(CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response())
}

/// Where a results stream is.
struct Cursor {
    shared: Arc<Shared>,
    id: u64,
    after: i64,
    state: Option<&'static str>,
    csv: bool,
    header: bool,
    follow: bool,
}

/// The next chunk of a results stream: stored rows after the cursor, or, while the sweep
/// runs and there are none yet, the rows of its next store write. `None` ends the stream.
async fn next_chunk(mut c: Cursor) -> Option<(Result<Bytes, std::io::Error>, Cursor)> {
    if c.header {
        c.header = false;
        return Some((Ok(Bytes::from(ResultLine::csv_header())), c));
    }
    loop {
        // Subscribe before reading, so that a write between the read and the wait is seen.
        let mut news = c
            .shared
            .live_by_id(c.id)
            .filter(|_| c.follow)
            .map(|l| l.stored.subscribe());
        let shared = Arc::clone(&c.shared);
        let (id, after, state) = (c.id, c.after, c.state);
        let page = tokio::task::spawn_blocking(move || {
            shared.store.results_page(id, after, state, RESULTS_PAGE)
        })
        .await;
        let rows = match page {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::error!(sweep = c.id, error = %e, "cannot read results");
                return None;
            }
            Err(e) => {
                tracing::error!(sweep = c.id, error = %e, "results reader failed");
                return None;
            }
        };
        if let Some(last) = rows.last() {
            c.after = last.rowid;
            let chunk = encode_rows(rows, c.csv);
            return Some((Ok(Bytes::from(chunk)), c));
        }
        match news.as_mut() {
            // A fleet sweep that runs: its rows arrive with its slices; look again soon.
            None if c.follow && fleet_running(&c.shared, c.id).await => {
                tokio::time::sleep(STREAM_POLL).await;
            }
            // The sweep has ended (or the client did not ask to follow it) and every row
            // was read.
            None => return None,
            Some(rx) => {
                let _ = tokio::time::timeout(STREAM_POLL, rx.changed()).await;
            }
        }
    }
}

/// Whether `id` is a fleet sweep still running.
async fn fleet_running(shared: &Arc<Shared>, id: u64) -> bool {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || shared.store.fleet_sweep(id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .is_some_and(|s| s.state == SweepState::Running)
}

/// The live agents of the fleet: name, pools, version, backend, shards, in flight, probes
/// per second, running slices and last heartbeat.
#[utoipa::path(
    get,
    path = "/v1/fleet/agents",
    responses(
        (status = 200, description = "The live agents (those whose registry key is present)", body = crate::fleet::AgentList),
        (status = 404, description = "This server runs no fleet (no [fleet] section)", body = ErrorBody),
    )
)]
async fn fleet_agents(
    State(state): State<AppState>,
) -> Result<Json<crate::fleet::AgentList>, ApiError> {
    let fleet = state
        .0
        .fleet
        .get()
        .ok_or_else(|| ApiError::not_found("this server runs no fleet: no [fleet] section"))?;
    Ok(Json(fleet.agent_list()))
}

/// Encodes stored rows as `porthawk scan` prints the same results: NDJSON lines of
/// `ResultLine`, or its CSV rows. The certificate's days left are counted now, as the CLI
/// counts them when it prints.
fn encode_rows(rows: Vec<ResultRow>, csv: bool) -> Vec<u8> {
    let now = unix_now();
    let mut out = String::with_capacity(rows.len() * 96);
    for row in rows {
        let line = row.line_at(now);
        if csv {
            line.write_csv_row(&mut out);
        } else {
            // A ResultLine is strings, numbers and booleans: serialising it cannot fail.
            if let Ok(json) = serde_json::to_string(&line) {
                out.push_str(&json);
            }
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// The results of sweep `id` as one nmap XML document (what `porthawk scan --format xml`
/// writes): sent once the sweep has ended, or at once with the results stored so far when
/// `follow` is false. The document is built in memory, as the CLI builds it.
async fn xml_results(
    shared: Arc<Shared>,
    id: u64,
    state: Option<&'static str>,
    follow: bool,
) -> Result<Response, ApiError> {
    while let Some(live) = shared.live_by_id(id).filter(|_| follow) {
        let mut news = live.stored.subscribe();
        drop(live);
        // A closed channel answers at once: wait the poll interval instead of spinning.
        if let Ok(Err(_)) = tokio::time::timeout(STREAM_POLL, news.changed()).await {
            tokio::time::sleep(STREAM_POLL).await;
        }
    }
    let xml = blocking(move || {
        let s = status(&shared, id)?;
        let now = unix_now();
        let mut lines = Vec::new();
        let mut after = 0;
        loop {
            let rows = shared
                .store
                .results_page(id, after, state, RESULTS_PAGE)
                .map_err(|e| ApiError::internal("cannot read results", e))?;
            let Some(last) = rows.last() else { break };
            after = last.rowid;
            lines.extend(rows.into_iter().map(|r| r.line_at(now)));
        }
        Ok(nmap_xml(&xml_run(&s), &lines))
    })
    .await?;
    Ok(([(CONTENT_TYPE, "application/xml")], xml).into_response())
}

/// What the XML document says about sweep `s`: its request as `args`, its times, its ports
/// (the request's, less `:PORTS` exclusions, as planning made them) and its host count.
fn xml_run(s: &SweepStatus) -> XmlRun {
    let mut ports = PortSet::parse(&s.request.ports).unwrap_or_default();
    for e in &s.request.exclude {
        if let Some(Ok(set)) = e.trim().strip_prefix(':').map(PortSet::parse) {
            ports.remove(&set);
        }
    }
    let end = s.finished_at.unwrap_or(unix_now() as f64);
    XmlRun {
        args: format!(
            "porthawk serve: sweep {} of {} ports {}",
            s.id,
            s.request.targets.join(" "),
            s.request.ports
        ),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_unix: s.created_at as i64,
        end_unix: end as i64,
        elapsed_secs: (end - s.created_at).max(0.0),
        hosts_total: s.total / (ports.len().max(1) as u64),
        ports: ports.as_slice().to_vec(),
        answered: Default::default(),
        error: (s.state != SweepState::Done).then(|| format!("sweep {}", s.state.as_str())),
    }
}

/// The sweep `GET /v1/sweeps/{id}/diff` compares against.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The id of the older sweep: changes are from it to `{id}`.
    against: Option<String>,
}

/// Sweep `id`'s stored result lines, for a diff: 404 for an unknown sweep, 409 for one
/// that has not ended `done` (a running, failed, cancelled or interrupted sweep has not
/// probed every port, and a diff would call the ports it missed closed). Blocking.
fn diff_side(shared: &Shared, id: u64) -> Result<Vec<ResultLine>, ApiError> {
    let s = status(shared, id)?;
    match s.state {
        SweepState::Done => {}
        SweepState::Running | SweepState::Queued => {
            return Err(ApiError::conflict(format!(
                "sweep {id} is still {}: diff it once it has ended",
                s.state.as_str()
            )))
        }
        other => {
            return Err(ApiError::conflict(format!(
                "sweep {id} ended {}: its results are incomplete, so a diff would report \
                 the ports it did not probe as closed",
                other.as_str()
            )))
        }
    }
    sweep::stored_lines(&shared.store, id, unix_now())
        .map_err(|e| ApiError::internal("cannot read results", e))
}

/// What changed from sweep `against` to sweep `id`: NDJSON, one object per changed port in
/// address and port order, exactly as `porthawk diff OLD NEW` prints it for the two sweeps'
/// jsonl results.
#[utoipa::path(
    get,
    path = "/v1/sweeps/{id}/diff",
    params(("id" = u64, Path, description = "The newer sweep"), DiffQuery),
    responses(
        (status = 200, description = "One ChangeRecord per line (application/x-ndjson); empty when nothing changed",
            content((sweep::ChangeRecord = "application/x-ndjson"))),
        (status = 400, description = "`against` is missing", body = ErrorBody),
        (status = 404, description = "No such sweep (the message names which id)", body = ErrorBody),
        (status = 409, description = "One of the sweeps is still running, or ended without probing every port", body = ErrorBody),
    )
)]
async fn sweep_diff(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = sweep_id(path)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let raw = q.against.filter(|a| !a.is_empty()).ok_or_else(|| {
        ApiError::bad_request("against", "against must name the sweep to compare with")
    })?;
    let against: u64 = raw
        .parse()
        .map_err(|_| ApiError::not_found(format!("no sweep with id '{raw}' (against)")))?;
    let shared = Arc::clone(&state.0);
    let body = blocking(move || {
        let old = diff_side(&shared, against)?;
        let new = diff_side(&shared, id)?;
        let mut out = String::new();
        for change in porthawk_core::diff_results(&old, &new) {
            // A change is strings and numbers: serialising it cannot fail.
            if let Ok(json) = serde_json::to_string(&change) {
                out.push_str(&json);
                out.push('\n');
            }
        }
        Ok(out)
    })
    .await?;
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    (crate::store::now_ms() / 1000) as i64
}

/// Liveness, the store's state, and what the engine runs on.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, description = "The server is up and its store works", body = Health),
        (status = 503, description = "The store is unhealthy (a write failed, or the database file was deleted)", body = Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    let s = Arc::clone(&state.0);
    // Two `stat`s of the database file: cheap, but file system calls all the same.
    let store = tokio::task::spawn_blocking(move || s.store.health())
        .await
        .unwrap_or_else(|e| crate::store::StoreHealth::WriteFailed(e.to_string()));
    let s = &state.0;
    let health = Health {
        status: if store.is_ok() { "ok" } else { "unhealthy" }.into(),
        store: store.to_string(),
        monitor_history: s.history.describe(),
        backend: s.engine.backend().to_string(),
        shards: s.engine.shards() as u64,
        running_sweeps: s.live_count() as u64,
    };
    let code = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

/// Prometheus metrics (OpenMetrics text format).
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    state
        .0
        .metrics
        .set_shard_inflight(&state.0.engine.inflight_per_shard());
    state.0.metrics.update_rate();
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.0.metrics.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    ([(CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// A seed that differs from sweep to sweep: the standard library's hasher keys are random.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::store::now_ms());
    h.finish()
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
