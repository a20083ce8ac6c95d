//! The status page at `GET /`: server-rendered HTML, monitors by group with state colours,
//! last check and uptime; targets worst first with a filter and paging, so that it stays
//! usable with thousands of them; recent events; it refreshes itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::history::EventRow;
use super::notify::rfc3339;
use super::state::Health;
use super::view::{MonitorSummary, TargetQuery, TargetView, Uptime};

/// Seconds between automatic refreshes.
pub const REFRESH_S: u32 = 10;

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
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a URL query value.
fn url(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn pct(u: Option<f64>) -> String {
    match u {
        Some(v) if v >= 0.999_95 => "100%".into(),
        Some(v) => format!("{:.2}%", v * 100.0),
        None => "–".into(),
    }
}

fn ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn uptime_cells(u: &Uptime) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        pct(u.h24),
        pct(u.d7),
        pct(u.d30)
    )
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

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:.6em}
th,td{padding:.3em .6em;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05em .55em;border-radius:.8em;color:#fff;font-weight:600;font-size:.9em}
.up{background:#2e7d32}.down{background:#c62828}.pending{background:#ef6c00}.flapping{background:#6a1b9a}
.silenced{background:#607d8b}.partial{background:#f9a825}
.summary span{margin-right:1.2em}form{margin:.8em 0}input,select,button{font:inherit;padding:.2em .4em}
.muted{color:#777}.pager a{margin-right:1em}
";

/// Renders the page.
pub fn render(monitors: &[PageMonitor], events: &[EventRow], q: &TargetQuery, now: u64) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>porthawk status</title><style>{STYLE}</style></head><body>"
    );
    let state = q.state.as_deref().unwrap_or("problems");
    summary(&mut h, monitors, now);
    filter_form(&mut h, q, state);
    monitor_groups(&mut h, monitors, q);
    target_tables(&mut h, monitors, q, state, now);
    events_table(&mut h, events);
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
             <th>state</th><th class=\"num\">up</th><th class=\"num\">down</th>\
             <th class=\"num\">pending</th><th>probe</th><th>last check</th>\
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

/// A monitor's row: state, counts, probe, last check, uptime; its name links to its targets.
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
        "<tr class=\"monitor\" data-monitor=\"{name}\" data-state=\"{state}\">\
         <td><a href=\"{href}\">{name}</a></td>\
         <td><span class=\"badge {state}\">{state}</span>{silenced}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td>{} every {}s</td><td>{last}</td>{}</tr>",
        s.counts.up,
        s.counts.down,
        s.counts.pending,
        esc(&s.probe),
        s.interval_s,
        uptime_cells(&s.uptime),
        name = esc(&s.name),
        state = esc(&s.state),
        href = esc(&link(q, Some(&s.name), Some("all"), 0)),
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
    let addr = match t.target {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", t.port),
        std::net::IpAddr::V4(v4) => format!("{v4}:{}", t.port),
    };
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
        "<div class=\"pager\"><span class=\"muted\">{}–{end} of {}</span>",
        if m.targets.is_empty() { 0 } else { offset + 1 },
        m.matching
    );
    let st = q.state.as_deref();
    let mon = q.monitor.as_deref();
    if offset > 0 {
        let _ = write!(
            h,
            "<a href=\"{}\">previous</a>",
            esc(&link(q, mon, st, offset.saturating_sub(limit)))
        );
    }
    if end < m.matching {
        let _ = write!(h, "<a href=\"{}\">next</a>", esc(&link(q, mon, st, end)));
    }
    h.push_str("</div>");
}

/// The recent events: state changes, actions and notifications, newest first.
fn events_table(h: &mut String, events: &[EventRow]) {
    h.push_str(
        "<h2>Recent events</h2><table id=\"events\"><thead><tr><th>time</th><th>monitor</th>\
         <th>what</th><th>target</th><th>state</th><th>detail</th></tr></thead><tbody>",
    );
    if events.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"muted\">Nothing yet.</td></tr>");
    }
    for e in events {
        let what = if e.what == "state" {
            "state".to_string()
        } else {
            format!("{} {}", e.what, e.kind)
        };
        let state = &e.state;
        let cls = match state.as_str() {
            "up" | "sent" | "ok" => "up",
            "down" | "failed" | "timeout" | "error" | "refused" => "down",
            "flapping" => "flapping",
            _ => "pending",
        };
        let _ = write!(
            h,
            "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge {cls}\">{}</span></td><td>{}</td></tr>",
            rfc3339(e.at_ms),
            esc(&e.monitor),
            esc(&what),
            esc(&e.target),
            esc(state),
            esc(e.detail.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</tbody></table>");
}
