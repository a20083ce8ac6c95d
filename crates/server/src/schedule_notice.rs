//! The texts of scheduled sweeps' notices: one message per run that changed (counts, then
//! at most [`MAX_LISTED`] changes, then how many more), one per run that failed; and a
//! change as the store keeps it.

use std::fmt::Write as _;
use std::net::IpAddr;

use porthawk_core::{ChangeKind, LineChange};
use porthawk_store::ChangeRow;

use crate::monitor::notify::{rfc3339, Outgoing};

/// The most changes one notification lists; the rest are counted.
pub const MAX_LISTED: usize = 100;

fn kind_str(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Opened => "opened",
        ChangeKind::Closed => "closed",
        ChangeKind::Changed => "changed",
    }
}

pub(crate) fn change_row(c: &LineChange) -> ChangeRow {
    ChangeRow {
        change: kind_str(c.change).to_string(),
        ip: c.ip,
        port: c.port,
        fields: serde_json::to_string(&c.fields).unwrap_or_else(|_| "{}".into()),
    }
}

/// `ip:port`, with brackets for IPv6.
fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// One change as a line of text: `opened 10.0.0.5:443 (state: closed -> open)`.
fn change_line(c: &LineChange) -> String {
    let mut line = format!("{} {}", kind_str(c.change), endpoint(c.ip, c.port));
    let fields: Vec<String> = c
        .fields
        .iter()
        .map(|(name, f)| {
            format!(
                "{name}: {} -> {}",
                f.before.as_deref().unwrap_or("-"),
                f.after.as_deref().unwrap_or("-")
            )
        })
        .collect();
    if !fields.is_empty() {
        let _ = write!(line, " ({})", fields.join(", "));
    }
    line
}

/// The one message about a run's changes: counts, then at most [`MAX_LISTED`] changes,
/// then how many more there are.
pub(crate) fn change_message(
    schedule: &str,
    sweep_id: u64,
    against: Option<u64>,
    changes: &[LineChange],
    at_ms: u64,
) -> Outgoing {
    let count = |k: ChangeKind| changes.iter().filter(|c| c.change == k).count();
    let (opened, closed, changed) = (
        count(ChangeKind::Opened),
        count(ChangeKind::Closed),
        count(ChangeKind::Changed),
    );
    let subject =
        format!("[porthawk] sweep {schedule}: {opened} opened, {closed} closed, {changed} changed");
    let mut text = format!(
        "Scheduled sweep {schedule} (sweep {sweep_id}{}) at {}: {opened} port(s) opened, \
         {closed} closed, {changed} changed.\n",
        against.map_or(String::new(), |a| format!(", compared with sweep {a}")),
        rfc3339(at_ms)
    );
    for c in changes.iter().take(MAX_LISTED) {
        let _ = writeln!(text, "  {}", change_line(c));
    }
    let more = changes.len().saturating_sub(MAX_LISTED);
    if more > 0 {
        let _ = writeln!(
            text,
            "  ... and {more} more (GET /v1/schedules/{schedule}/changes)"
        );
    }
    let json = serde_json::json!({
        "schedule": schedule,
        "kind": "sweep_changed",
        "sweep": sweep_id,
        "against": against,
        "opened": opened,
        "closed": closed,
        "changed": changed,
        "time": rfc3339(at_ms),
        "time_ms": at_ms,
        "changes": changes.iter().take(MAX_LISTED).collect::<Vec<_>>(),
        "more": more,
    });
    Outgoing {
        subject,
        text,
        json,
    }
}

/// The message about a run that failed.
pub(crate) fn failure_message(
    schedule: &str,
    sweep_id: Option<u64>,
    detail: &str,
    at_ms: u64,
) -> Outgoing {
    Outgoing {
        subject: format!("[porthawk] sweep {schedule}: run FAILED"),
        text: format!(
            "Scheduled sweep {schedule} failed at {}: {detail}. Its results are not compared; \
             the next run is compared with the last finished one.\n",
            rfc3339(at_ms)
        ),
        json: serde_json::json!({
            "schedule": schedule,
            "kind": "sweep_failed",
            "sweep": sweep_id,
            "reason": detail,
            "time": rfc3339(at_ms),
            "time_ms": at_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use porthawk_core::FieldChange;

    use super::*;

    fn opened(i: u32) -> LineChange {
        LineChange {
            change: ChangeKind::Opened,
            ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            port: 443,
            fields: BTreeMap::from([(
                "state",
                FieldChange {
                    before: None,
                    after: Some("open".into()),
                },
            )]),
        }
    }

    #[test]
    fn five_hundred_changes_make_one_message_listing_a_bounded_number() {
        let changes: Vec<_> = (0..500).map(opened).collect();
        let m = change_message("edge", 7, Some(6), &changes, 0);
        assert_eq!(
            m.subject,
            "[porthawk] sweep edge: 500 opened, 0 closed, 0 changed"
        );
        assert_eq!(
            m.text
                .lines()
                .filter(|l| l.starts_with("  opened "))
                .count(),
            MAX_LISTED
        );
        assert!(m.text.contains("... and 400 more"), "{}", m.text);
        assert!(
            m.text.contains("opened 10.0.0.0:443 (state: - -> open)"),
            "{}",
            m.text
        );
        assert_eq!(m.json["changes"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(m.json["more"], 400);
        assert_eq!(m.json["opened"], 500);
        assert_eq!(m.json["against"], 6);
        assert_eq!(m.json["changes"][0]["change"], "opened");
    }

    #[test]
    fn a_failure_says_it_is_one() {
        let m = failure_message("edge", Some(3), "sweep 3 ended interrupted", 0);
        assert!(m.subject.contains("FAILED"));
        assert_eq!(m.json["kind"], "sweep_failed");
        assert!(m.text.contains("not compared"));
    }
}
