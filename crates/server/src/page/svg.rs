//! The response-time chart: server-rendered SVG with axes, gridlines, the mean round trip
//! per bucket as a line broken where there is no data, down periods shaded and buckets with
//! failed checks marked. No script: the range is switched with links.

use std::fmt::Write as _;

use porthawk_store::RttBucket;

use super::html::{esc, ms};

/// What the chart shows.
pub struct Chart<'a> {
    /// `24h` or `7d`, for the `data-range` attribute.
    pub range: &'a str,
    /// The window, in ms since the epoch: `[from_ms, to_ms)`.
    pub from_ms: u64,
    /// The window's end.
    pub to_ms: u64,
    /// The buckets' width in ms.
    pub width_ms: u64,
    /// Buckets with checks, oldest first.
    pub buckets: &'a [RttBucket],
    /// Periods when a target was DOWN, `(from, to)`, clipped to the window.
    pub down: &'a [(u64, u64)],
}

const W: f64 = 900.0;
const H: f64 = 230.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// A time as the axis labels it: `HH:MM` for a day, `MM-DD` for a week (UTC).
fn label(ms: u64, week: bool) -> String {
    let text = porthawk_core::rfc3339((ms / 1000) as i64);
    // 2026-11-30T18:00:00Z
    if week {
        text.get(5..10).unwrap_or("").to_string()
    } else {
        text.get(11..16).unwrap_or("").to_string()
    }
}

/// Renders the chart as an `<svg>` element.
pub fn render(h: &mut String, c: &Chart<'_>) {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let span = c.to_ms.saturating_sub(c.from_ms).max(1) as f64;
    let x = |t: u64| LEFT + (t.saturating_sub(c.from_ms) as f64 / span).min(1.0) * pw;
    let max_us = c
        .buckets
        .iter()
        .filter_map(|b| b.rtt_avg_us)
        .fold(0.0f64, f64::max);
    let ymax_ms = nice_ceil(max_us / 1000.0);
    let y = |us: f64| TOP + ph - (us / 1000.0 / ymax_ms).min(1.0) * ph;
    let points: Vec<&RttBucket> = c
        .buckets
        .iter()
        .filter(|b| b.rtt_avg_us.is_some())
        .collect();
    let _ = write!(
        h,
        "<svg id=\"rtt-chart\" class=\"chart\" data-range=\"{}\" data-points=\"{}\" \
         data-down-spans=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"mean response time per {} minutes\">",
        esc(c.range),
        points.len(),
        c.down.len(),
        c.width_ms / 60_000,
    );
    // Down periods under everything else.
    for &(a, b) in c.down {
        let (xa, xb) = (x(a), x(b));
        let _ = write!(
            h,
            "<rect class=\"down-span\" x=\"{xa:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{ph}\">\
             <title>down {} – {}</title></rect>",
            (xb - xa).max(1.0),
            porthawk_core::rfc3339((a / 1000) as i64),
            porthawk_core::rfc3339((b / 1000) as i64),
        );
    }
    // Horizontal gridlines with round-trip labels.
    for i in 0..=4 {
        let v = ymax_ms * f64::from(i) / 4.0;
        let yy = TOP + ph - ph * f64::from(i) / 4.0;
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            trim_float(v),
        );
    }
    // Vertical gridlines: every 3 hours over a day, every day over a week.
    let week = c.to_ms - c.from_ms > 2 * 86_400_000;
    let step = if week { 86_400_000 } else { 3 * 3_600_000 };
    let mut t = c.from_ms.div_ceil(step) * step;
    while t < c.to_ms {
        let xx = x(t);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            H - 10.0,
            label(t, week),
        );
        t += step;
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        TOP + ph,
    );
    // Buckets with failed checks: a red mark along the bottom.
    let bw = (c.width_ms as f64 / span * pw).max(1.5);
    for b in c.buckets.iter().filter(|b| b.fails > 0) {
        let _ = write!(
            h,
            "<rect class=\"fail\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"4\">\
             <title>{}: {} of {} checks failed</title></rect>",
            x(b.start_ms),
            TOP + ph - 4.0,
            porthawk_core::rfc3339((b.start_ms / 1000) as i64),
            b.fails,
            b.checks,
        );
    }
    // The line, broken wherever a bucket has no passing check.
    let mut d = String::new();
    let mut prev: Option<u64> = None;
    for b in &points {
        let cmd = if prev == Some(b.start_ms.saturating_sub(c.width_ms)) {
            'L'
        } else {
            'M'
        };
        let _ = write!(
            d,
            "{cmd}{:.1} {:.1} ",
            x(b.start_ms + c.width_ms / 2),
            y(b.rtt_avg_us.unwrap_or(0.0))
        );
        prev = Some(b.start_ms);
    }
    if !d.is_empty() {
        let _ = write!(h, "<path class=\"rtt\" d=\"{}\"/>", d.trim_end());
    }
    for b in &points {
        let avg = b.rtt_avg_us.unwrap_or(0.0);
        let _ = write!(
            h,
            "<circle class=\"pt\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"><title>{}: mean {}, \
             longest {}, {} checks, {} failed</title></circle>",
            x(b.start_ms + c.width_ms / 2),
            y(avg),
            porthawk_core::rfc3339((b.start_ms / 1000) as i64),
            ms(avg),
            ms(f64::from(b.rtt_max_us)),
            b.checks,
            b.fails,
        );
    }
    if c.buckets.is_empty() {
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no checks in this range</text>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    h.push_str("</svg>");
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start_ms: u64, avg: Option<f64>, fails: u64) -> RttBucket {
        RttBucket {
            start_ms,
            checks: 2,
            fails,
            rtt_avg_us: avg,
            rtt_max_us: 900,
        }
    }

    #[test]
    fn the_line_breaks_at_gaps_and_failures_are_marked() {
        let min = 60_000;
        let buckets = [
            bucket(0, Some(400.0), 0),
            bucket(min, Some(800.0), 0),
            // A gap at 2 min, then a bucket whose checks all failed, then one more point.
            bucket(3 * min, None, 2),
            bucket(4 * min, Some(1_600.0), 1),
        ];
        let mut h = String::new();
        render(
            &mut h,
            &Chart {
                range: "24h",
                from_ms: 0,
                to_ms: 10 * min,
                width_ms: min,
                buckets: &buckets,
                down: &[(3 * min, 4 * min)],
            },
        );
        assert!(h.contains("data-points=\"3\""), "{h}");
        assert_eq!(h.matches("<circle class=\"pt\"").count(), 3);
        assert_eq!(h.matches("<rect class=\"fail\"").count(), 2);
        assert_eq!(h.matches("<rect class=\"down-span\"").count(), 1);
        // Two runs: M L, then M.
        let d = h.split("class=\"rtt\" d=\"").nth(1).unwrap();
        let d = &d[..d.find('"').unwrap()];
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        // 1.6 ms rounds the axis up to 2 ms.
        assert!(h.contains(">2 ms</text>"), "{h}");
        assert_eq!(nice_ceil(0.35), 0.5);
        assert_eq!(nice_ceil(120.0), 200.0);
    }
}
