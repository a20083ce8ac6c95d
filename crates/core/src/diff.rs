//! What changed between two sweeps: their [`ResultLine`]s matched by address and port.
//!
//! A port is `opened` when it is open now and was not before (closed, filtered, or not in
//! the old results), `closed` when it was open and is not now, and `changed` when it is in
//! both and some compared field differs (an open port whose product or certificate changed,
//! a closed port that became filtered). A port that is in only one sweep and not open there
//! is no change: results that list only open ports say nothing about the others.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::{PortState, ResultLine};

/// The kind of a [`LineChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Open now, not open before.
    Opened,
    /// Open before, not open now.
    Closed,
    /// In both sweeps with the same openness, some compared field differs.
    Changed,
}

/// One field's value before and after; `None` where it was absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The old value.
    pub before: Option<String>,
    /// The new value.
    pub after: Option<String>,
}

/// One port whose result changed, as `porthawk diff` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineChange {
    /// What happened.
    pub change: ChangeKind,
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The fields that differ, by name (`state`, `service`, `product`, `version`,
    /// `tls_version`, `cert_subject`, `cert_issuer`, `cert_not_after`).
    pub fields: BTreeMap<&'static str, FieldChange>,
}

/// The fields a diff compares, with their values. Round trip times, tries and banners vary
/// from run to run without anything having changed, so they are left out.
fn compared(line: Option<&ResultLine>) -> [(&'static str, Option<String>); 8] {
    let text = |f: fn(&ResultLine) -> &Option<String>| line.and_then(|l| f(l).clone());
    [
        ("state", line.map(|l| l.state.as_str().to_string())),
        ("service", text(|l| &l.service)),
        ("product", text(|l| &l.product)),
        ("version", text(|l| &l.version)),
        ("tls_version", text(|l| &l.tls_version)),
        ("cert_subject", text(|l| &l.cert_subject)),
        ("cert_issuer", text(|l| &l.cert_issuer)),
        ("cert_not_after", text(|l| &l.cert_not_after)),
    ]
}

/// The changes from `old` to `new`, in address and port order. Where a sweep has more than
/// one line for a port, the last one counts.
pub fn diff_results(old: &[ResultLine], new: &[ResultLine]) -> Vec<LineChange> {
    let key = |l: &ResultLine| (l.ip, l.port);
    let old: BTreeMap<_, _> = old.iter().map(|l| (key(l), l)).collect();
    let new: BTreeMap<_, _> = new.iter().map(|l| (key(l), l)).collect();
    let mut keys: Vec<_> = old.keys().chain(new.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut changes = Vec::new();
    for (ip, port) in keys {
        let before = old.get(&(ip, port)).copied();
        let after = new.get(&(ip, port)).copied();
        let is_open = |l: Option<&ResultLine>| l.is_some_and(|l| l.state == PortState::Open);
        let change = match (is_open(before), is_open(after)) {
            (false, true) => ChangeKind::Opened,
            (true, false) => ChangeKind::Closed,
            _ if before.is_some() && after.is_some() => ChangeKind::Changed,
            _ => continue,
        };
        let fields: BTreeMap<_, _> = compared(before)
            .into_iter()
            .zip(compared(after))
            .filter(|((_, b), (_, a))| a != b)
            .map(|((name, before), (_, after))| (name, FieldChange { before, after }))
            .collect();
        if change == ChangeKind::Changed && fields.is_empty() {
            continue;
        }
        changes.push(LineChange {
            change,
            ip,
            port,
            fields,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeRecord;

    fn line(ip: &str, port: u16, state: PortState) -> ResultLine {
        ResultLine::new(
            &ProbeRecord::new(ip.parse().unwrap(), port, state, 10, 1),
            None,
            0,
        )
    }

    fn kinds(changes: &[LineChange]) -> Vec<(ChangeKind, u16)> {
        changes.iter().map(|c| (c.change, c.port)).collect()
    }

    #[test]
    fn the_same_results_are_no_change_whatever_their_timing() {
        let old = [line("10.0.0.1", 22, PortState::Open)];
        let mut new = old.clone();
        new[0].rtt_us = 999;
        new[0].tries = 2;
        assert!(diff_results(&old, &new).is_empty());
        assert!(diff_results(&[], &[]).is_empty());
    }

    #[test]
    fn opened_closed_and_changed() {
        let mut ssh_old = line("10.0.0.1", 22, PortState::Open);
        ssh_old.product = Some("OpenSSH".into());
        ssh_old.version = Some("9.2".into());
        let mut ssh_new = ssh_old.clone();
        ssh_new.version = Some("9.6".into());
        let old = [
            ssh_old,
            line("10.0.0.1", 25, PortState::Open),
            line("10.0.0.1", 80, PortState::Closed),
            line("10.0.0.2", 81, PortState::Closed),
            line("10.0.0.2", 82, PortState::Closed),
        ];
        let new = [
            line("10.0.0.1", 80, PortState::Open),
            ssh_new,
            line("10.0.0.1", 443, PortState::Open),
            line("10.0.0.2", 81, PortState::Filtered),
        ];
        let changes = diff_results(&old, &new);
        assert_eq!(
            kinds(&changes),
            [
                (ChangeKind::Changed, 22),
                (ChangeKind::Closed, 25),
                (ChangeKind::Opened, 80),
                (ChangeKind::Opened, 443),
                (ChangeKind::Changed, 81),
            ]
        );
        assert_eq!(
            changes[0].fields,
            BTreeMap::from([(
                "version",
                FieldChange {
                    before: Some("9.2".into()),
                    after: Some("9.6".into())
                }
            )])
        );
        assert_eq!(
            changes[1].fields["state"],
            FieldChange {
                before: Some("open".into()),
                after: None
            }
        );
        assert_eq!(
            changes[2].fields["state"],
            FieldChange {
                before: Some("closed".into()),
                after: Some("open".into())
            }
        );
        assert_eq!(changes[3].fields["state"].before, None);
        assert_eq!(
            serde_json::to_string(&changes[2]).unwrap(),
            r#"{"change":"opened","ip":"10.0.0.1","port":80,"fields":{"state":{"before":"closed","after":"open"}}}"#
        );
    }

    #[test]
    fn certificate_changes_on_an_open_port_are_reported() {
        let mut old = line("::1", 443, PortState::Open);
        old.cert_not_after = Some("2026-01-01T00:00:00Z".into());
        let mut new = old.clone();
        new.cert_not_after = Some("2027-01-01T00:00:00Z".into());
        new.cert_days_left = Some(300);
        let changes = diff_results(&[old], &[new]);
        assert_eq!(kinds(&changes), [(ChangeKind::Changed, 443)]);
        assert_eq!(
            changes[0].fields.keys().copied().collect::<Vec<_>>(),
            ["cert_not_after"]
        );
    }
}
