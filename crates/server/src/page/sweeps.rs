//! The sweep pages: `GET /sweeps` (newest first, paged, with live progress) and
//! `GET /sweeps/{id}` (its progress while it runs, refreshing itself, and its results
//! filtered by state, port, service and text, a page at a time, with a link to the diff
//! against the previous run of the same targets and ports). Both need the token when one is
//! set, like `GET /v1/sweeps`: they show results.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Html;
use porthawk_core::{rfc3339, PortState, ResultLine};
use porthawk_store::{ResultFilter, MAX_RESULTS_PAGE};
use serde::Deserialize;

use super::html::{esc, head, href};
use crate::error::ApiError;
use crate::shared::{AppState, Shared};
use crate::store::SweepRow;
use crate::sweep::{Counts, SweepRequest, SweepState, SweepStatus};

/// Sweeps per page of the list.
const SWEEPS_PER_PAGE: u64 = 50;
/// Results per page unless `limit` says otherwise.
const RESULTS_PER_PAGE: u32 = 100;
/// Seconds between refreshes of a running sweep's page.
const LIVE_REFRESH_S: u32 = 2;
/// How many earlier sweeps are looked at for the previous run of the same request.
const PREVIOUS_LOOKBACK: u64 = 50;
/// Services offered in the filter.
const SERVICES_SHOWN: u32 = 50;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
}

/// Paging of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Sweeps to skip.
    offset: Option<u64>,
}

/// The filter and page of a sweep's results.
#[derive(Debug, Default, Deserialize)]
pub struct ResultsQuery {
    /// `open`, `closed`, `filtered`, `unreachable` or `error` (those stored).
    state: Option<String>,
    /// A port number.
    port: Option<String>,
    /// A service name.
    service: Option<String>,
    /// Text in the address, host, banner, service, product, version or certificate.
    q: Option<String>,
    /// Results to skip.
    offset: Option<u64>,
    /// Results per page (at most 1,000).
    limit: Option<u32>,
}

/// The status of a sweep: live while this process runs it, the store's otherwise.
fn status(shared: &Shared, id: u64) -> Result<SweepStatus, ApiError> {
    if let Some(live) = shared.in_memory(id) {
        return Ok(live.status());
    }
    let row: SweepRow = shared
        .store
        .sweep(id)
        .map_err(|e| ApiError::internal("cannot read the sweep", e))?
        .ok_or_else(|| ApiError::not_found(format!("no sweep with id {id}")))?;
    let elapsed = row
        .finished_ms
        .unwrap_or_else(crate::store::now_ms)
        .saturating_sub(row.created_ms);
    Ok(SweepStatus::new(row, Duration::from_millis(elapsed)))
}

/// The newest earlier sweep of the same targets, exclusions and ports, among the
/// [`PREVIOUS_LOOKBACK`] before `id`.
fn previous_run(shared: &Shared, id: u64, request: &SweepRequest) -> Result<Option<u64>, ApiError> {
    for other in (id.saturating_sub(PREVIOUS_LOOKBACK).max(1)..id).rev() {
        let row: Option<SweepRow> = shared
            .store
            .sweep(other)
            .map_err(|e| ApiError::internal("cannot read the sweep", e))?;
        if let Some(row) = row {
            let r = &row.request;
            if r.targets == request.targets
                && r.ports == request.ports
                && r.exclude == request.exclude
            {
                return Ok(Some(other));
            }
        }
    }
    Ok(None)
}

fn progress_bar(done: u64, total: u64) -> String {
    let share = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    format!(
        "<span class=\"bar\" title=\"{done} of {total}\"><span style=\"width:{:.1}%\"></span>\
         </span> <span class=\"progress\" data-done=\"{done}\" data-total=\"{total}\">{done} / \
         {total} ({:.1}%)</span>",
        share * 100.0,
        share * 100.0
    )
}

fn state_badge(s: SweepState) -> String {
    let cls = match s {
        SweepState::Done => "up",
        SweepState::Running | SweepState::Queued => "pending",
        SweepState::Failed | SweepState::Interrupted => "down",
        SweepState::Cancelled => "silenced",
    };
    format!(
        "<span class=\"badge {cls} sweep-state\" data-state=\"{0}\">{0}</span>",
        s.as_str()
    )
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{} open · {} closed · {} filtered · {} unreachable · {} error",
        c.open, c.closed, c.filtered, c.unreachable, c.error
    )
}

/// `text` cut to about `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn time(secs: f64) -> String {
    rfc3339(secs as i64)
}

/// `GET /sweeps`.
pub(crate) async fn list_page(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let offset = q.offset.unwrap_or(0).min(i64::MAX as u64);
    let shared = Arc::clone(&state.0);
    blocking(move || {
        let rows = shared
            .store
            .sweep_summaries(SWEEPS_PER_PAGE, offset)
            .map_err(|e| ApiError::internal("cannot list sweeps", e))?;
        let mut h = String::with_capacity(16 * 1024);
        let live = rows.iter().any(|r| !r.state.is_final());
        head(
            &mut h,
            "sweeps · porthawk",
            live.then_some(LIVE_REFRESH_S * 5),
        );
        h.push_str(
            "<h1>Sweeps</h1><table id=\"sweeps\"><thead><tr><th>sweep</th><th>state</th>\
             <th>progress</th><th>verdicts</th><th class=\"num\">probes/s</th>\
             <th>submitted</th><th>ended</th></tr></thead><tbody>",
        );
        if rows.is_empty() {
            h.push_str("<tr><td colspan=\"7\" class=\"muted\">No sweeps yet.</td></tr>");
        }
        let n = rows.len() as u64;
        for row in rows {
            let (state, done, total, counts, rate, created, finished, reason) =
                match shared.in_memory(row.id) {
                    Some(live) => {
                        let s = live.status();
                        (
                            s.state,
                            s.done,
                            s.total,
                            s.counts,
                            s.probes_per_s,
                            s.created_at,
                            s.finished_at,
                            s.reason,
                        )
                    }
                    None => {
                        let secs =
                            row.finished_ms
                                .unwrap_or_else(crate::store::now_ms)
                                .saturating_sub(row.created_ms) as f64
                                / 1000.0;
                        (
                            row.state,
                            row.done,
                            row.total,
                            row.counts,
                            if secs > 0.0 {
                                row.done as f64 / secs
                            } else {
                                0.0
                            },
                            row.created_ms as f64 / 1000.0,
                            row.finished_ms.map(|m| m as f64 / 1000.0),
                            row.reason,
                        )
                    }
                };
            let _ = write!(
                h,
                "<tr class=\"sweep\" data-sweep=\"{id}\"><td><a href=\"/sweeps/{id}\">#{id}</a>\
                 </td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{rate:.0}</td>\
                 <td>{}</td><td>{}</td></tr>",
                state_badge(state),
                reason.map_or(String::new(), |r| format!(
                    " <span class=\"muted\">{}</span>",
                    esc(&r)
                )),
                progress_bar(done, total),
                counts_text(&counts),
                time(created),
                finished.map_or("–".to_string(), time),
                id = row.id,
            );
        }
        h.push_str("</tbody></table><div class=\"pager\">");
        if offset > 0 {
            let _ = write!(
                h,
                "<a rel=\"prev\" href=\"/sweeps?offset={}\">newer</a>",
                offset.saturating_sub(SWEEPS_PER_PAGE)
            );
        }
        if n == SWEEPS_PER_PAGE {
            let _ = write!(
                h,
                "<a rel=\"next\" href=\"/sweeps?offset={}\">older</a>",
                offset + SWEEPS_PER_PAGE
            );
        }
        h.push_str("</div></body></html>");
        Ok(Html(h))
    })
    .await
}

/// `GET /sweeps/{id}`.
pub(crate) async fn sweep_page(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::not_found(format!("no such sweep: {e}")))?;
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::not_found(format!("no sweep with id '{raw}'")))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let port =
        match q.port.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                ApiError::bad_request("port", format!("'{p}' is not a port number"))
            })?),
        };
    let state_filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<PortState>()
                .map_err(|e| ApiError::bad_request("state", e))?
                .as_str()
                .to_string(),
        ),
    };
    let limit = q
        .limit
        .unwrap_or(RESULTS_PER_PAGE)
        .clamp(1, MAX_RESULTS_PAGE);
    let offset = q.offset.unwrap_or(0);
    let shared = Arc::clone(&state.0);
    blocking(move || {
        let s = status(&shared, id)?;
        let filter = ResultFilter {
            state: state_filter,
            port,
            service: q.service.clone().filter(|x| !x.is_empty()),
            text: q.q.clone().filter(|x| !x.trim().is_empty()),
        };
        let read = |e| ApiError::internal("cannot read the sweep's results", e);
        let (rows, matching) = shared
            .store
            .results_filtered(id, &filter, offset, limit)
            .map_err(read)?;
        let services = shared
            .store
            .result_services(id, SERVICES_SHOWN)
            .map_err(read)?;
        let previous = previous_run(&shared, id, &s.request)?;
        let now_s = (crate::store::now_ms() / 1000) as i64;
        let lines: Vec<ResultLine> = rows.into_iter().map(|r| r.line_at(now_s)).collect();
        let page = SweepPage {
            status: &s,
            filter: &filter,
            services: &services,
            lines: &lines,
            matching,
            offset,
            limit,
            previous,
        };
        Ok(Html(page.render()))
    })
    .await
}

/// One sweep's page.
struct SweepPage<'a> {
    status: &'a SweepStatus,
    filter: &'a ResultFilter,
    services: &'a [(String, u64)],
    lines: &'a [ResultLine],
    matching: u64,
    offset: u64,
    limit: u32,
    previous: Option<u64>,
}

impl SweepPage<'_> {
    /// A link to this page with the same filter at `offset`.
    fn at(&self, offset: u64) -> String {
        let f = self.filter;
        href(
            &format!("/sweeps/{}", self.status.id),
            &[
                ("state", f.state.clone()),
                ("port", f.port.map(|p| p.to_string())),
                ("service", f.service.clone()),
                ("q", f.text.clone()),
                ("offset", (offset > 0).then(|| offset.to_string())),
                (
                    "limit",
                    (self.limit != RESULTS_PER_PAGE).then(|| self.limit.to_string()),
                ),
            ],
        )
    }

    fn render(&self) -> String {
        let s = self.status;
        let mut h = String::with_capacity(64 * 1024 + self.lines.len() * 256);
        let live = !s.state.is_final();
        head(
            &mut h,
            &format!("sweep {} · porthawk", s.id),
            live.then_some(LIVE_REFRESH_S),
        );
        let _ = write!(
            h,
            "<h1>Sweep #{} {}</h1><p id=\"sweep-request\">targets <code>{}</code>{} · ports \
             <code>{}</code> · stores {}</p><p id=\"sweep-progress\">{}{}</p><p>{}</p>",
            s.id,
            state_badge(s.state),
            esc(&shorten(&s.request.targets.join(", "), 300)),
            if s.request.exclude.is_empty() {
                String::new()
            } else {
                format!(
                    " excluding <code>{}</code>",
                    esc(&s.request.exclude.join(", "))
                )
            },
            esc(&shorten(&s.request.ports, 200)),
            if s.request.store.is_all() {
                "every result"
            } else {
                "open results"
            },
            progress_bar(s.done, s.total),
            match (live, s.eta_s) {
                (true, Some(eta)) => format!(
                    " · {:.0} probes/s · about {eta:.0} s left · refreshes every \
                     {LIVE_REFRESH_S}s",
                    s.probes_per_s
                ),
                _ => format!(
                    " · {:.0} probes/s · submitted {}{}",
                    s.probes_per_s,
                    time(s.created_at),
                    s.finished_at
                        .map_or(String::new(), |f| format!(", ended {}", time(f)))
                ),
            },
            counts_text(&s.counts),
        );
        if let Some(r) = &s.reason {
            let _ = write!(h, "<p class=\"muted\">{}</p>", esc(r));
        }
        self.diff_links(&mut h);
        self.filter_form(&mut h);
        self.results(&mut h);
        h.push_str("</body></html>");
        h
    }

    /// The link to the diff against the previous run, and a form for any other sweep.
    fn diff_links(&self, h: &mut String) {
        let id = self.status.id;
        h.push_str("<div id=\"diff\">");
        match self.previous {
            Some(p) => {
                let _ = write!(
                    h,
                    "<a id=\"diff-previous\" href=\"/v1/sweeps/{id}/diff?against={p}\">what changed \
                     since the previous run (#{p})</a> · "
                );
            }
            None => h.push_str("<span class=\"muted\">no earlier run of these targets</span> · "),
        }
        let _ = write!(
            h,
            "<form class=\"inline\" method=\"get\" action=\"/v1/sweeps/{id}/diff\">\
             diff against sweep <input name=\"against\" size=\"6\" inputmode=\"numeric\"> \
             <button type=\"submit\">diff</button></form></div>"
        );
    }

    fn filter_form(&self, h: &mut String) {
        let f = self.filter;
        let _ = write!(
            h,
            "<form id=\"results-filter\" method=\"get\" action=\"/sweeps/{}\">\
             <input type=\"search\" name=\"q\" placeholder=\"address, banner, product\" \
             value=\"{}\"> <input name=\"port\" placeholder=\"port\" size=\"6\" \
             inputmode=\"numeric\" value=\"{}\"> <select name=\"service\">\
             <option value=\"\">any service</option>",
            self.status.id,
            esc(f.text.as_deref().unwrap_or("")),
            f.port.map_or(String::new(), |p| p.to_string()),
        );
        for (name, n) in self.services {
            let sel = if f.service.as_deref() == Some(name) {
                " selected"
            } else {
                ""
            };
            let _ = write!(
                h,
                "<option value=\"{0}\"{sel}>{0} ({n})</option>",
                esc(name)
            );
        }
        h.push_str("</select>");
        if self.status.request.store.is_all() {
            h.push_str(" <select name=\"state\"><option value=\"\">any state</option>");
            for st in PortState::ALL {
                let st = st.as_str();
                let sel = if f.state.as_deref() == Some(st) {
                    " selected"
                } else {
                    ""
                };
                let _ = write!(h, "<option value=\"{st}\"{sel}>{st}</option>");
            }
            h.push_str("</select>");
        }
        let _ = write!(
            h,
            " <button type=\"submit\">Filter</button> <a href=\"/sweeps/{}\">reset</a></form>",
            self.status.id
        );
    }

    fn results(&self, h: &mut String) {
        let end = self.offset + self.lines.len() as u64;
        let _ = write!(
            h,
            "<h2>Results</h2><table id=\"results\" data-matching=\"{}\"><thead><tr>\
             <th>address</th><th class=\"num\">port</th><th>state</th><th>service</th>\
             <th>product</th><th>banner</th><th class=\"num\">rtt</th><th>certificate</th>\
             </tr></thead><tbody>",
            self.matching
        );
        if self.lines.is_empty() {
            h.push_str("<tr><td colspan=\"8\" class=\"muted\">No result matches.</td></tr>");
        }
        for l in self.lines {
            let product = [l.product.as_deref(), l.version.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let cert = match (&l.cert_subject, l.cert_days_left) {
                (Some(subject), Some(days)) => format!("{} ({days} d)", esc(subject)),
                (Some(subject), None) => esc(subject),
                _ => String::new(),
            };
            let host = l.host.as_deref().map_or(String::new(), |h| {
                format!(" <span class=\"muted\">{}</span>", esc(h))
            });
            let _ = write!(
                h,
                "<tr class=\"result\" data-ip=\"{ip}\" data-port=\"{port}\"><td>{ip}{host}</td>\
                 <td class=\"num\">{port}</td><td><span class=\"badge {state}\">{state}</span>\
                 </td><td>{}</td><td>{}</td><td><pre class=\"banner\">{}</pre></td>\
                 <td class=\"num\">{:.2} ms</td><td>{cert}</td></tr>",
                esc(l.service.as_deref().unwrap_or("")),
                esc(&product),
                esc(l.banner.as_deref().unwrap_or("")),
                f64::from(l.rtt_us) / 1000.0,
                ip = l.ip,
                port = l.port,
                state = l.state.as_str(),
            );
        }
        let _ = write!(
            h,
            "</tbody></table><div class=\"pager\" id=\"results-pager\"><span class=\"muted\">\
             {}–{end} of {}</span>",
            if self.lines.is_empty() {
                0
            } else {
                self.offset + 1
            },
            self.matching
        );
        if self.offset > 0 {
            let _ = write!(
                h,
                "<a rel=\"prev\" href=\"{}\">previous</a>",
                esc(&self.at(self.offset.saturating_sub(u64::from(self.limit))))
            );
        }
        if end < self.matching {
            let _ = write!(
                h,
                "<a rel=\"next\" href=\"{}\">next</a>",
                esc(&self.at(end))
            );
        }
        h.push_str("</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_requests_are_cut_on_a_character_boundary() {
        assert_eq!(shorten("22,80", 10), "22,80");
        assert_eq!(shorten("é€é€é€", 3), "é€é…");
        assert!(progress_bar(5, 10).contains("width:50.0%"));
        assert!(progress_bar(0, 0).contains("width:100.0%"));
    }
}
