//! The status page at `GET /`: server-rendered HTML. Monitors by group with state colours,
//! a heartbeat bar (the last batches of checks as coloured ticks), certificate days left and
//! uptime; targets worst first with a filter and paging, so that it stays usable with
//! thousands of them; a timeline of state changes, actions and notifications; it refreshes
//! itself. With `?monitor=NAME` it is that monitor's page: a longer heartbeat bar and the
//! response-time chart over 24 hours or 7 days (`&range=7d`), with down periods shaded.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use porthawk_store::{Beat, RttBucket, StoreError};
use serde::Deserialize;

use super::history::EventRow;
use super::notify::rfc3339;
use super::state::Health;
use super::view::{MonitorSummary, TargetQuery, TargetView, Uptime};
use super::watch::TargetHost;
use crate::page::fleet::{self, AgentRow};
use crate::page::html::{ago, esc, head, ms, pct, url};
use crate::page::svg::{self, Chart};
use crate::store::Store;

/// Seconds between automatic refreshes.
pub const REFRESH_S: u32 = 10;
/// Ticks of a heartbeat bar in the list of monitors.
pub const BEATS_IN_LIST: u32 = 30;
/// Ticks of a heartbeat bar on a monitor's page.
pub const BEATS_ON_PAGE: u32 = 90;

/// A target-port's hard state and since when it holds: what uptime and down periods are
/// computed from.
pub type TargetState = (TargetHost, u16, Health, u64);

/// The page's own query parameters, besides the filter of targets.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The chart's range on a monitor's page: `24h` (the default) or `7d`.
    pub range: Option<String>,
}

/// The range of a monitor's response-time chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The last 24 hours, in 5-minute buckets.
    Day,
    /// The last 7 days, in 30-minute buckets.
    Week,
}

impl Range {
    /// The range a query asks for (24 hours unless it says `7d`).
    pub fn parse(s: Option<&str>) -> Range {
        match s {
            Some("7d") => Range::Week,
            _ => Range::Day,
        }
    }

    /// `24h` or `7d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }

    fn span_ms(self) -> u64 {
        match self {
            Range::Day => 86_400_000,
            Range::Week => 7 * 86_400_000,
        }
    }

    /// The width of the chart's buckets: 288 of them over a day, 336 over a week.
    pub fn width_ms(self) -> u64 {
        match self {
            Range::Day => 5 * 60_000,
            Range::Week => 30 * 60_000,
        }
    }

    /// The window at `now`: `[from, now)` with `from` on a bucket boundary.
    pub fn window(self, now: u64) -> (u64, u64) {
        let w = self.width_ms();
        (now.saturating_sub(self.span_ms()) / w * w, now)
    }
}

/// A monitor as the page shows it.
pub struct PageMonitor {
    /// The monitor.
    pub summary: MonitorSummary,
    /// Whether it is silenced.
    pub silenced: bool,
    /// One page of its targets that match the filter.
    pub targets: Vec<TargetView>,
    /// How many match.
    pub matching: usize,
    /// Its last batches of checks, oldest first.
    pub beats: Vec<Beat>,
    /// Whole days until the earliest certificate its checks saw lately ends.
    pub cert_days: Option<i64>,
}

/// A monitor's response times and down periods, for its own page.
pub struct Detail {
    /// The chart's range.
    pub range: Range,
    /// The window: from.
    pub from_ms: u64,
    /// The window: to.
    pub to_ms: u64,
    /// Buckets with checks.
    pub buckets: Vec<RttBucket>,
    /// When some target was DOWN.
    pub down: Vec<(u64, u64)>,
}

/// What the page shows of a monitor besides the watch's snapshot: its last `beats` batches
/// of checks and the days left of the earliest certificate seen in its last two rounds.
pub fn load_monitor(
    store: &Store,
    name: &str,
    interval_s: f64,
    beats: u32,
    now: u64,
) -> Result<(Vec<Beat>, Option<i64>), StoreError> {
    let beats = store.heartbeat(name, beats)?;
    let recent = (interval_s * 2_000.0) as u64 + 60_000;
    let cert = store.cert_not_after(name, now.saturating_sub(recent))?;
    let days = cert.map(|not_after| (not_after - (now / 1000) as i64).div_euclid(86_400));
    Ok((beats, days))
}

/// A monitor's chart over `range`: bucket sums from the store, and its down periods from
/// its state changes and the hard states of all its `targets`.
pub fn load_detail(
    store: &Store,
    name: &str,
    targets: &[TargetState],
    range: Range,
    now: u64,
) -> Result<Detail, StoreError> {
    let (from_ms, to_ms) = range.window(now);
    let buckets = store.rtt_buckets(name, from_ms, to_ms, range.width_ms())?;
    let changes = store.transitions(name, from_ms)?;
    Ok(Detail {
        range,
        from_ms,
        to_ms,
        buckets,
        down: down_spans(&changes, targets, from_ms, to_ms),
    })
}

/// The periods in `[from, to)` when at least one target was DOWN, from the state changes
/// since `from` (oldest first) and each target's hard state now: a target's state at `from`
/// is the state its first change in the window left, or its state now if it has none.
pub fn down_spans(
    changes: &[(TargetHost, u16, (u64, Health, Health))],
    targets: &[TargetState],
    from: u64,
    to: u64,
) -> Vec<(u64, u64)> {
    let mut first: HashMap<(TargetHost, u16), Health> = HashMap::new();
    for (host, port, (_, before, _)) in changes {
        first.entry((host.clone(), *port)).or_insert(*before);
    }
    let mut down = targets
        .iter()
        .filter(|(host, port, hard, _)| {
            first.get(&(host.clone(), *port)).copied().unwrap_or(*hard) == Health::Down
        })
        .count();
    let mut spans = Vec::new();
    let mut start = (down > 0).then_some(from);
    for (_, _, (at, before, after)) in changes {
        let at = (*at).clamp(from, to);
        match (*before == Health::Down, *after == Health::Down) {
            (false, true) => {
                down += 1;
                start.get_or_insert(at);
            }
            (true, false) => {
                down = down.saturating_sub(1);
                if down == 0 {
                    if let Some(s) = start.take() {
                        spans.push((s, at));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, to));
    }
    spans
}

fn uptime_cells(u: &Uptime) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        pct(u.h24),
        pct(u.d7),
        pct(u.d30)
    )
}

/// `data-uptime-*` attributes with the exact shares, for scripts and tests.
fn uptime_data(u: &Uptime) -> String {
    let mut out = String::new();
    for (k, v) in [("h24", u.h24), ("d7", u.d7), ("d30", u.d30)] {
        if let Some(v) = v {
            let _ = write!(out, " data-uptime-{k}=\"{v:.6}\"");
        }
    }
    out
}

fn link(q: &TargetQuery, monitor: Option<&str>, state: Option<&str>, offset: usize) -> String {
    let mut parts = Vec::new();
    if let Some(m) = monitor {
        parts.push(format!("monitor={}", url(m)));
    }
    if let Some(s) = state {
        parts.push(format!("state={}", url(s)));
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        parts.push(format!("q={}", url(text)));
    }
    if offset > 0 {
        parts.push(format!("offset={offset}"));
    }
    if let Some(l) = q.limit {
        parts.push(format!("limit={l}"));
    }
    format!("/?{}", parts.join("&"))
}

/// Everything the page shows.
pub struct Page<'a> {
    /// The monitors, each with one page of targets.
    pub monitors: &'a [PageMonitor],
    /// On a monitor's page: its chart.
    pub detail: Option<&'a Detail>,
    /// Recent state changes, actions and notifications, newest first.
    pub events: &'a [EventRow],
    /// The filter of targets.
    pub q: &'a TargetQuery,
    /// Fleet agents, in fleet mode.
    pub agents: Option<&'a [AgentRow]>,
    /// Now, in ms since the epoch.
    pub now: u64,
}

/// Renders the page.
pub fn render(p: &Page<'_>) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let title = match &p.q.monitor {
        Some(m) => format!("{m} · porthawk status"),
        None => "porthawk status".to_string(),
    };
    head(&mut h, &title, Some(REFRESH_S));
    let q = p.q;
    let state = q.state.as_deref().unwrap_or("problems");
    summary(&mut h, p.monitors, p.now);
    if let (Some(m), Some(d)) = (p.monitors.first(), p.detail) {
        monitor_panel(&mut h, m, d, p.now);
    }
    filter_form(&mut h, q, state);
    monitor_groups(&mut h, p.monitors, q);
    target_tables(&mut h, p.monitors, q, state, p.now);
    timeline(&mut h, p.events, p.q.monitor.is_some());
    fleet::render(&mut h, p.agents, p.now);
    h.push_str("</body></html>");
    h
}

/// The heading with the overall state, and the counts of monitors and targets.
fn summary(h: &mut String, monitors: &[PageMonitor], now: u64) {
    let (mut up, mut down, mut pending) = (0u64, 0u64, 0u64);
    for m in monitors {
        up += m.summary.counts.up;
        down += m.summary.counts.down;
        pending += m.summary.counts.pending;
    }
    let overall = if down > 0 {
        "down"
    } else if pending > 0 {
        "pending"
    } else {
        "up"
    };
    let _ = write!(
        h,
        "<h1>porthawk status <span id=\"overall\" class=\"badge {overall}\">{}</span></h1>\
         <div class=\"summary\"><span id=\"count-monitors\">{} monitors</span>\
         <span id=\"count-up\">{up} up</span><span id=\"count-down\">{down} down</span>\
         <span id=\"count-pending\">{pending} pending</span>\
         <span class=\"muted\">as of {} · refreshes every {REFRESH_S}s</span></div>",
        overall.to_uppercase(),
        monitors.len(),
        rfc3339(now),
    );
}

/// A heartbeat bar: one tick per batch of checks, green when all passed, red when all
/// failed, orange when some did; its tooltip has the time, state, round trip and reason.
fn heartbeat(h: &mut String, name: &str, beats: &[Beat], big: bool) {
    let downs = beats.iter().filter(|b| b.fails == b.checks).count();
    let _ = write!(
        h,
        "<span class=\"beats{}\" data-monitor=\"{}\" data-beats=\"{}\" data-down=\"{downs}\">",
        if big { " big" } else { "" },
        esc(name),
        beats.len(),
    );
    if beats.is_empty() {
        h.push_str("<span class=\"muted\">no checks yet</span>");
    }
    for b in beats {
        let (cls, state) = match b.fails {
            0 => ("up", "up".to_string()),
            f if f == b.checks => ("down", "down".to_string()),
            f => ("mixed", format!("{f} of {} failed", b.checks)),
        };
        let mut tip = format!("{} · {state}", rfc3339(b.at_ms));
        if b.checks > 1 {
            let _ = write!(tip, " · {} checks", b.checks);
        }
        if let Some(rtt) = b.rtt_avg_us {
            let _ = write!(tip, " · rtt {}", ms(f64::from(rtt)));
        }
        if let Some(r) = &b.reason {
            let _ = write!(tip, " · {r}");
        }
        let _ = write!(
            h,
            "<span class=\"beat {cls}\" data-at=\"{}\" title=\"{}\"></span>",
            b.at_ms,
            esc(&tip)
        );
    }
    h.push_str("</span>");
}

fn cert_cell(days: Option<i64>) -> String {
    match days {
        None => "<span class=\"muted\">–</span>".into(),
        Some(d) => {
            let cls = if d < 0 {
                "down"
            } else if d < 14 {
                "pending"
            } else {
                "up"
            };
            let text = if d < 0 {
                format!("expired {} d ago", -d)
            } else {
                format!("{d} d")
            };
            format!("<span class=\"badge {cls} cert\" data-days=\"{d}\">{text}</span>")
        }
    }
}

/// A monitor's own page: the long heartbeat bar, certificate, uptime, and the chart.
fn monitor_panel(h: &mut String, m: &PageMonitor, d: &Detail, now: u64) {
    let s = &m.summary;
    let _ = write!(
        h,
        "<section id=\"monitor-panel\" data-monitor=\"{name}\"><h2>{name} \
         <span class=\"badge {state}\">{state}</span></h2><p>",
        name = esc(&s.name),
        state = esc(&s.state),
    );
    heartbeat(h, &s.name, &m.beats, true);
    let _ = write!(
        h,
        "</p><p>certificate: {} · uptime 24 h {} · 7 d {} · 30 d {} · {} every {}s</p>\
         <p class=\"ranges\">response time: ",
        cert_cell(m.cert_days),
        pct(s.uptime.h24),
        pct(s.uptime.d7),
        pct(s.uptime.d30),
        esc(&s.probe),
        s.interval_s,
    );
    for r in [Range::Day, Range::Week] {
        if r == d.range {
            let _ = write!(h, "<strong>{}</strong> ", r.as_str());
        } else {
            let _ = write!(
                h,
                "<a href=\"/?monitor={}&amp;state=all&amp;range={}\">{}</a> ",
                esc(&url(&s.name)),
                r.as_str(),
                r.as_str()
            );
        }
    }
    let _ = write!(
        h,
        "<span class=\"muted\">mean per {} min, down periods shaded, failed checks marked red \
         (as of {})</span></p>",
        d.range.width_ms() / 60_000,
        ago(now, d.to_ms)
    );
    svg::render(
        h,
        &Chart {
            range: d.range.as_str(),
            from_ms: d.from_ms,
            to_ms: d.to_ms,
            width_ms: d.range.width_ms(),
            buckets: &d.buckets,
            down: &d.down,
        },
    );
    h.push_str("</section>");
}

/// The filter of targets: text, state, and the monitor it is narrowed to.
fn filter_form(h: &mut String, q: &TargetQuery, state: &str) {
    let _ = write!(
        h,
        "<form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" \
         placeholder=\"address, port or host\" value=\"{}\"> <select name=\"state\">",
        esc(q.q.as_deref().unwrap_or(""))
    );
    for s in [
        "problems", "all", "down", "partial", "flapping", "pending", "up",
    ] {
        let sel = if s == state { " selected" } else { "" };
        let _ = write!(h, "<option value=\"{s}\"{sel}>{s}</option>");
    }
    h.push_str("</select>");
    if let Some(m) = &q.monitor {
        let _ = write!(
            h,
            "<input type=\"hidden\" name=\"monitor\" value=\"{}\">",
            esc(m)
        );
    }
    h.push_str(" <button type=\"submit\">Filter</button> <a href=\"/\">reset</a></form>");
}

/// One table of monitors per group.
fn monitor_groups(h: &mut String, monitors: &[PageMonitor], q: &TargetQuery) {
    let mut groups: BTreeMap<&str, Vec<&PageMonitor>> = BTreeMap::new();
    for m in monitors {
        groups.entry(m.summary.group.as_str()).or_default().push(m);
    }
    if monitors.is_empty() {
        h.push_str("<p class=\"muted\">No monitors are configured.</p>");
    }
    for (group, ms) in &groups {
        let _ = write!(
            h,
            "<h2 class=\"group\">{}</h2><table class=\"monitors\"><thead><tr><th>monitor</th>\
             <th>state</th><th>heartbeat</th><th class=\"num\">up</th><th class=\"num\">down</th>\
             <th class=\"num\">pending</th><th>probe</th><th>last check</th><th>certificate</th>\
             <th class=\"num\">24 h</th><th class=\"num\">7 d</th><th class=\"num\">30 d</th>\
             </tr></thead><tbody>",
            esc(group)
        );
        for m in ms {
            monitor_row(h, m, q);
        }
        h.push_str("</tbody></table>");
    }
}

/// A monitor's row: state, heartbeat, counts, probe, last check, certificate, uptime; its
/// name links to its own page.
fn monitor_row(h: &mut String, m: &PageMonitor, q: &TargetQuery) {
    let s = &m.summary;
    let silenced = if m.silenced {
        " <span class=\"badge silenced\">silenced</span>"
    } else {
        ""
    };
    let last = s.last_check.as_deref().map_or("never".to_string(), esc);
    let _ = write!(
        h,
        "<tr class=\"monitor\" data-monitor=\"{name}\" data-state=\"{state}\"{data}>\
         <td><a href=\"{href}\">{name}</a></td>\
         <td><span class=\"badge {state}\">{state}</span>{silenced}</td><td>",
        data = uptime_data(&s.uptime),
        name = esc(&s.name),
        state = esc(&s.state),
        href = esc(&link(q, Some(&s.name), Some("all"), 0)),
    );
    let tail = m.beats.len().saturating_sub(BEATS_IN_LIST as usize);
    heartbeat(h, &s.name, &m.beats[tail..], false);
    let _ = write!(
        h,
        "</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td>{} every {}s</td><td>{last}</td><td>{}</td>{}</tr>",
        s.counts.up,
        s.counts.down,
        s.counts.pending,
        esc(&s.probe),
        s.interval_s,
        cert_cell(m.cert_days),
        uptime_cells(&s.uptime),
    );
}

/// The targets that match the filter, worst first, a page per monitor.
fn target_tables(h: &mut String, monitors: &[PageMonitor], q: &TargetQuery, state: &str, now: u64) {
    let shown: Vec<&PageMonitor> = monitors.iter().filter(|m| m.matching > 0).collect();
    let _ = write!(
        h,
        "<h2>Targets ({})</h2>",
        if state == "problems" {
            "not up".to_string()
        } else {
            esc(state)
        }
    );
    if shown.is_empty() {
        h.push_str("<p id=\"no-targets\" class=\"muted\">No target matches.</p>");
    }
    for m in shown {
        let _ = write!(
            h,
            "<table class=\"targets\" data-monitor=\"{0}\"><thead><tr><th>{0}: target</th>\
             <th>host</th><th>state</th><th>since</th><th>last check</th><th>detail</th>\
             <th class=\"num\">24 h</th><th class=\"num\">7 d</th><th class=\"num\">30 d</th>\
             </tr></thead><tbody>",
            esc(&m.summary.name)
        );
        for t in &m.targets {
            target_row(h, t, now);
        }
        h.push_str("</tbody></table>");
        pager(h, m, q);
    }
}

/// A target's row: address, host, state, since when, last check and its detail, uptime.
fn target_row(h: &mut String, t: &TargetView, now: u64) {
    let addr = t.target.with_port(t.port);
    let cls = if t.partial && t.state != Health::Down {
        // Seen DOWN from some vantage points, fewer than the quorum.
        "partial"
    } else if t.flapping && t.state != Health::Down {
        "flapping"
    } else {
        t.state.as_str()
    };
    let since = if t.since_ms > 0 {
        ago(now, t.since_ms)
    } else {
        "–".into()
    };
    let (last, detail) = match &t.last {
        Some(l) => (
            ago(now, l.at_ms),
            l.reason
                .clone()
                .unwrap_or_else(|| format!("{} in {} µs", l.state, l.rtt_us)),
        ),
        None => ("never".into(), String::new()),
    };
    let detail = match &t.skipped {
        Some(s) => format!("{detail} ({s})"),
        None => detail,
    };
    let _ = write!(
        h,
        "<tr class=\"target\" data-target=\"{addr}\" data-state=\"{cls}\"><td>{addr}</td>\
         <td>{}</td><td><span class=\"badge {cls}\">{cls}</span></td><td>{since}</td>\
         <td>{last}</td><td>{}</td>{}</tr>",
        esc(t.host.as_deref().unwrap_or("")),
        esc(&detail),
        uptime_cells(&t.uptime),
    );
}

/// Where a monitor's page of targets is, with links to the previous and next pages.
fn pager(h: &mut String, m: &PageMonitor, q: &TargetQuery) {
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    let end = offset + m.targets.len();
    let _ = write!(
        h,
        "<div class=\"pager\" data-monitor=\"{}\"><span class=\"muted\">{}–{end} of {}</span>",
        esc(&m.summary.name),
        if m.targets.is_empty() { 0 } else { offset + 1 },
        m.matching
    );
    let st = q.state.as_deref();
    let mon = q.monitor.as_deref();
    if offset > 0 {
        let _ = write!(
            h,
            "<a rel=\"prev\" href=\"{}\">previous</a>",
            esc(&link(q, mon, st, offset.saturating_sub(limit)))
        );
    }
    if end < m.matching {
        let _ = write!(
            h,
            "<a rel=\"next\" href=\"{}\">next</a>",
            esc(&link(q, mon, st, end))
        );
    }
    h.push_str("</div>");
}

/// The timeline of state changes, actions (with their exit codes) and notifications,
/// newest first.
fn timeline(h: &mut String, events: &[EventRow], one_monitor: bool) {
    let _ = write!(
        h,
        "<h2>{}</h2><ol id=\"events\" class=\"timeline\">",
        if one_monitor {
            "Incident timeline"
        } else {
            "Recent events"
        }
    );
    if events.is_empty() {
        h.push_str("<li class=\"muted\">Nothing yet.</li>");
    }
    for e in events {
        let what = match e.what.as_str() {
            "state" => format!("went {}", e.kind),
            "action" => format!("action {}", e.kind),
            "notification" => format!("notified {}", e.kind),
            other => format!("{other} {}", e.kind),
        };
        let cls = match e.state.as_str() {
            "up" | "sent" | "ok" => "up",
            "down" | "failed" | "timeout" | "error" | "refused" => "down",
            "flapping" => "flapping",
            _ => "pending",
        };
        let _ = write!(
            h,
            "<li class=\"event {what_cls}\" data-what=\"{what_cls}\" data-state=\"{state}\">\
             <time datetime=\"{at}\">{at}</time><span class=\"badge {cls}\">{state}</span> \
             <strong>{monitor}</strong> {what} <span class=\"target\">{target}</span>\
             <span class=\"muted\">{detail}</span></li>",
            what_cls = esc(&e.what),
            at = rfc3339(e.at_ms),
            state = esc(&e.state),
            monitor = esc(&e.monitor),
            what = esc(&what),
            target = esc(&e.target),
            detail = e
                .detail
                .as_deref()
                .map_or(String::new(), |d| format!(" · {}", esc(d))),
        );
    }
    h.push_str("</ol>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn ip(d: u8) -> TargetHost {
        TargetHost::Addr(std::net::IpAddr::from([127, 0, 0, d]))
    }

    #[test]
    fn down_periods_from_state_changes_and_states_now() {
        // .1 went down at 100 and came back at 200; .2 is down since before the window and
        // has no change in it; .3 is up throughout.
        let changes = [(ip(1), 80, (100, Up, Down)), (ip(1), 80, (200, Down, Up))];
        let targets = [(ip(1), 80, Up, 200), (ip(2), 80, Up, 0), (ip(3), 80, Up, 0)];
        assert_eq!(down_spans(&changes, &targets, 0, 1000), [(100, 200)]);
        let targets = [(ip(1), 80, Up, 200), (ip(2), 80, Down, 0)];
        assert_eq!(down_spans(&changes, &targets, 0, 1000), [(0, 1000)]);
        // Overlapping outages of two targets make one period.
        let changes = [
            (ip(1), 80, (100, Up, Down)),
            (ip(2), 80, (150, Pending, Down)),
            (ip(1), 80, (200, Down, Up)),
            (ip(2), 80, (300, Down, Up)),
            (ip(1), 80, (900, Up, Down)),
        ];
        let targets = [(ip(1), 80, Down, 900), (ip(2), 80, Up, 300)];
        assert_eq!(
            down_spans(&changes, &targets, 0, 1000),
            [(100, 300), (900, 1000)]
        );
    }

    #[test]
    fn the_week_window_starts_on_a_bucket() {
        let (from, to) = Range::Week.window(10 * 86_400_000 + 123);
        assert_eq!(from % Range::Week.width_ms(), 0);
        assert_eq!(to, 10 * 86_400_000 + 123);
        assert_eq!(Range::parse(Some("7d")), Range::Week);
        assert_eq!(Range::parse(Some("1y")), Range::Day);
    }

    #[test]
    fn beats_are_coloured_and_peer_text_is_escaped() {
        let beat = |fails, reason: Option<&str>| Beat {
            at_ms: 1_000,
            checks: 2,
            fails,
            rtt_avg_us: Some(410),
            reason: reason.map(str::to_string),
        };
        let mut h = String::new();
        heartbeat(
            &mut h,
            "web",
            &[
                beat(0, None),
                beat(1, Some("127.0.0.1:80: open, but <script>x</script>")),
                beat(2, Some("127.0.0.1:80: closed")),
            ],
            false,
        );
        assert!(h.contains("data-beats=\"3\" data-down=\"1\""), "{h}");
        assert_eq!(h.matches("class=\"beat up\"").count(), 1);
        assert_eq!(h.matches("class=\"beat mixed\"").count(), 1);
        assert_eq!(h.matches("class=\"beat down\"").count(), 1);
        assert!(h.contains("rtt 0.41 ms"), "{h}");
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
    }
}
