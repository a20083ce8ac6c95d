//! What every page shares: escaping, query strings, the style sheet, the head and the
//! navigation, and small formats (percentages, ages, durations).

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values. Every byte a peer sent (banners,
/// reasons, host names) goes through here, so that a banner with `<script>` stays text.
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
pub fn url(s: &str) -> String {
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

/// `path?k=v&...` with the pairs whose value is set, values escaped for a URL (the result
/// still needs [`esc`] inside an attribute).
pub fn href(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url(v))))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// A share as a percentage, `–` when unknown.
pub fn pct(u: Option<f64>) -> String {
    match u {
        Some(v) if v >= 0.999_95 => "100%".into(),
        Some(v) => format!("{:.2}%", v * 100.0),
        None => "–".into(),
    }
}

/// How long ago `at` was at `now` (both in ms since the epoch), in its largest unit.
pub fn ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// The style sheet of every page.
pub const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
nav{margin:0 0 .8em}nav a{margin-right:1em}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:.6em}
th,td{padding:.3em .6em;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05em .55em;border-radius:.8em;color:#fff;font-weight:600;font-size:.9em}
.up,.open{background:#2e7d32}.down,.closed{background:#c62828}.pending,.filtered{background:#ef6c00}
.flapping,.mixed,.partial{background:#6a1b9a}.silenced,.unreachable,.error{background:#607d8b}
.summary span{margin-right:1.2em}form{margin:.8em 0}input,select,button{font:inherit;padding:.2em .4em}
.muted{color:#777}.pager a,.pager span{margin-right:1em}
code{word-break:break-all}form.inline{display:inline;margin:0}
.beats{display:inline-flex;gap:2px;align-items:flex-end;vertical-align:middle}
.beat{display:inline-block;width:6px;height:20px;border-radius:2px}
.beats.big .beat{width:8px;height:30px}
.beat.mixed{background:#ef6c00}
.chart{background:#fff;border:1px solid #e4e4e4;max-width:100%;height:auto}
.chart .grid{stroke:#e8e8e8}.chart .axis{stroke:#999}.chart text{font-size:11px;fill:#555}
.chart .rtt{fill:none;stroke:#1565c0;stroke-width:1.5}.chart .pt{fill:#1565c0}
.chart .down-span{fill:#c62828;fill-opacity:.15}.chart .fail{fill:#c62828}
.timeline{list-style:none;padding:0;margin:0;background:#fff;border:1px solid #e4e4e4}
.timeline li{padding:.3em .6em;border-bottom:1px solid #eee}
.timeline time{color:#555;margin-right:.6em;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:12em;height:.8em;background:#e4e4e4;border-radius:.4em;vertical-align:middle}
.bar span{display:block;height:100%;background:#1565c0;border-radius:.4em}
pre.banner{margin:0;white-space:pre-wrap;word-break:break-all;max-width:40em;font-size:.9em}
";

/// The start of a page up to `<body>` and the navigation; with `refresh_s` it reloads itself.
pub fn head(h: &mut String, title: &str, refresh_s: Option<u32>) {
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">monitors</a><a href=\"/sweeps\">sweeps</a></nav>",
        refresh_s.map_or(String::new(), |s| format!(
            "<meta http-equiv=\"refresh\" content=\"{s}\">"
        )),
        esc(title),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_bytes_stay_text() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            href("/x", &[("a", Some("1 2".into())), ("b", None)]),
            "/x?a=1%202"
        );
    }
}
