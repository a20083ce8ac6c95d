//! Remote actions (`[action.NAME] agent = ..., run = ...`): the coordinator asks a fleet agent
//! to run one of the actions of the agent's own file, by name, with the incident's context,
//! and records what came back: `sent`, then `refused` (with the agent's reason), `timeout`
//! (no answer within the action's `timeout`), `dry_run`, or how the run ended (`ok`,
//! `failed`, ... with exit code, duration and output). `agent = "{target}"` finds the agent
//! whose declared addresses or names match each DOWN target; a target no agent (or more than
//! one) declared is a failure with that reason, never a guess.
//!
//! Requests go on `porthawk.v1.action.<agent>` (only the coordinator's user may publish
//! there) and answers come on `porthawk.v1.action-result.<agent>` (only that agent may
//! publish there), matched by the request's id.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use porthawk_core::{
    action_result_subject, action_subject, AgentStatus, FleetName, IncidentContext, RemedyOutcome,
    RemedyRequest, RemedyResult, WireMessage,
};

use super::actions::record;
use super::config::RemoteAgent;
use super::history::ActionRecord;
use super::watch::{ActionRequest, TargetHost, TargetPort};
use crate::fleet::FleetState;
use crate::store::now_ms;

/// Which agent declared each target: agents by name with the DOWN targets each is asked
/// about, or why a target has no single agent.
pub fn resolve_targets(
    targets: &[TargetPort],
    agents: &[(String, AgentStatus)],
) -> Result<BTreeMap<String, Vec<TargetPort>>, String> {
    if targets.is_empty() {
        return Err("agent = \"{target}\" needs a DOWN target to find its agent; none is".into());
    }
    let mut out: BTreeMap<String, Vec<TargetPort>> = BTreeMap::new();
    for t in targets {
        let matching: Vec<&str> = agents
            .iter()
            .filter(|(_, status)| declares(status, &t.0))
            .map(|(name, _)| name.as_str())
            .collect();
        match matching.as_slice() {
            [one] => out.entry(one.to_string()).or_default().push(t.clone()),
            [] => {
                return Err(format!(
                    "no live agent declares {} (agents declare their host's addresses and \
                     names; see --host-address and --host-name)",
                    t.0
                ))
            }
            several => {
                return Err(format!(
                    "several agents declare {}: {}; name the agent in the action instead",
                    t.0,
                    several.join(", ")
                ))
            }
        }
    }
    Ok(out)
}

/// Whether `status` declares `host`: an address among its addresses, or a name among its
/// names (case-insensitive, a trailing dot ignored).
fn declares(status: &AgentStatus, host: &TargetHost) -> bool {
    match host {
        TargetHost::Addr(ip) => status.addresses.contains(ip),
        TargetHost::Name(name) => {
            let name = name.trim_end_matches('.');
            status
                .names
                .iter()
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
                || name
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| status.addresses.contains(&ip))
        }
    }
}

/// A request id no other request of this or an earlier run has: the time, a per-process
/// counter and randomness from the standard library's hasher keys.
fn request_id() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    (u128::from(now_ms()) << 64) | u128::from(h.finish())
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Runs remote action `req` (`agent`, `run`): resolves the agent(s), asks each, records
/// every outcome through `finish`; returns the last record (for `POST /v1/actions/{name}`).
pub(crate) async fn run(
    fleet: Option<std::sync::Arc<FleetState>>,
    req: &ActionRequest,
    agent: &RemoteAgent,
    run: &str,
    reason: Option<String>,
    dry_run: bool,
    finish: impl Fn(&ActionRecord),
) -> ActionRecord {
    let fail = |outcome: &str, detail: String| {
        let rec = record(req, outcome, Some(detail));
        finish(&rec);
        rec
    };
    let Some(coord) = fleet.as_ref().and_then(|f| f.coord()) else {
        return fail(
            "error",
            format!("cannot ask for {run}: the coordinator is not connected to NATS"),
        );
    };
    let asks: BTreeMap<String, Vec<TargetPort>> = match agent {
        RemoteAgent::Named(name) => BTreeMap::from([(name.clone(), req.targets.clone())]),
        RemoteAgent::Target => {
            let known = fleet
                .as_ref()
                .map(|f| f.config.agents.clone())
                .unwrap_or_default();
            let agents = match coord.agents().await {
                Ok(list) => list
                    .into_iter()
                    // Only agents of `[fleet] agents`, when it lists any: the others' results
                    // are refused, and their declarations are not trusted either.
                    .filter(|e| known.is_empty() || known.contains(&e.name))
                    .filter_map(|e| Some((e.name, e.status.ok()?)))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    return fail(
                        "error",
                        format!("cannot read the agent registry to find the agent: {e}"),
                    )
                }
            };
            match resolve_targets(&req.targets, &agents) {
                Ok(asks) => asks,
                Err(why) => return fail("no_agent", format!("{run} not sent: {why}")),
            }
        }
    };
    let mut last = None;
    for (name, targets) in asks {
        let rec = ask(
            coord.client(),
            req,
            (&name, run),
            &targets,
            reason.clone(),
            dry_run,
            &finish,
        )
        .await;
        finish(&rec);
        last = Some(rec);
    }
    last.unwrap_or_else(|| fail("error", "no agent to ask".into()))
}

/// Asks one agent and waits for its answer: a `sent` record goes through `finish` as soon
/// as the request is out; the outcome is returned.
async fn ask(
    client: &async_nats::Client,
    req: &ActionRequest,
    (agent, run): (&str, &str),
    targets: &[TargetPort],
    reason: Option<String>,
    dry_run: bool,
    finish: &impl Fn(&ActionRecord),
) -> ActionRecord {
    let with = |outcome: &str, detail: String| record(req, outcome, Some(detail));
    let name = match FleetName::new("agent", agent) {
        Ok(n) => n,
        Err(e) => return with("error", e.to_string()),
    };
    let timeout = req.action.timeout;
    let request = RemedyRequest {
        id: request_id(),
        action: run.to_string(),
        expires_ms: now_ms() + timeout.as_millis() as u64,
        dry_run,
        context: IncidentContext {
            monitor: req.monitor.clone(),
            targets: targets
                .iter()
                .take(porthawk_core::MAX_REMEDY_ITEMS)
                .map(|(h, p)| porthawk_core::cap_text(&h.with_port(*p), 256))
                .collect(),
            state: req.trigger.as_str().to_string(),
            reason: reason.map(|r| porthawk_core::cap_text(&r.replace(char::is_control, " "), 512)),
        },
    };
    // Subscribed before the request goes out (one connection: the server sees them in
    // order), so the answer cannot come before anyone listens.
    let mut answers = match client.subscribe(action_result_subject(&name)).await {
        Ok(s) => s,
        Err(e) => return with("error", format!("cannot listen for {agent}'s answer: {e}")),
    };
    if let Err(e) = client
        .publish(action_subject(&name), request.encode().into())
        .await
    {
        return with("error", format!("cannot send the request to {agent}: {e}"));
    }
    let _ = client.flush().await;
    finish(&with(
        "sent",
        format!(
            "{run} sent to {agent}{}",
            if dry_run { " (dry run)" } else { "" }
        ),
    ));
    tracing::info!(action = %req.action.name, %agent, run, id = %format!("{:032x}", request.id),
        "remote action sent");
    let started = now_ms();
    let deadline = tokio::time::Instant::now() + timeout;
    let answer = loop {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Err(_) | Ok(None) => break None,
            Ok(Some(msg)) => match RemedyResult::decode(&msg.payload) {
                Ok(r) if r.id == request.id => break Some(r.outcome),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(%agent, error = %e, "unreadable action result ignored");
                }
            },
        }
    };
    let _ = answers.unsubscribe().await;
    let Some(outcome) = answer else {
        let mut rec = with(
            "timeout",
            format!(
                "{run} on {agent}: no answer within {} (the agent is down, not started with \
                 --actions, or not allowed its action subjects)",
                seconds(timeout.as_millis() as u64)
            ),
        );
        rec.duration_ms = now_ms().saturating_sub(started);
        return rec;
    };
    match outcome {
        RemedyOutcome::Refused { reason } => {
            with("refused", format!("{agent} refused {run}: {reason}"))
        }
        RemedyOutcome::DryRun { argv } => {
            let mut rec = with(
                "dry_run",
                format!("--dry-run: {run} on {agent} would run {argv:?}"),
            );
            rec.argv = argv;
            rec
        }
        RemedyOutcome::Ran {
            status,
            exit_code,
            detail,
            duration_ms,
            argv,
            stdout,
            stderr,
        } => {
            let how = match (exit_code, &detail) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(d)) => d.clone(),
                (None, None) => status.as_str().to_string(),
            };
            ActionRecord {
                outcome: status.as_str().to_string(),
                detail: Some(format!(
                    "{run} on {agent}: {how} in {}",
                    seconds(duration_ms)
                )),
                exit_code,
                stdout,
                stderr,
                duration_ms,
                argv,
                ..record(req, "", None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(addresses: &[&str], names: &[&str]) -> AgentStatus {
        AgentStatus {
            version: "0.1.0".into(),
            pools: vec![],
            backend: "epoll".into(),
            shards: 1,
            inflight: 1,
            probes_per_s: 0,
            running: vec![],
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn t(host: &str, port: u16) -> TargetPort {
        (host.parse().unwrap(), port)
    }

    #[test]
    fn targets_resolve_to_the_one_agent_that_declared_them() {
        let agents = vec![
            (
                "web-1".to_string(),
                status(&["192.0.2.10", "2001:db8::10"], &["web1.example"]),
            ),
            (
                "web-2".to_string(),
                status(&["192.0.2.11"], &["web2.example"]),
            ),
            ("twin".to_string(), status(&["192.0.2.99"], &[])),
            ("twin-b".to_string(), status(&["192.0.2.99"], &[])),
        ];
        let r = resolve_targets(&[t("192.0.2.10", 80), t("WEB1.example.", 443)], &agents).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r["web-1"].len(), 2);
        let r = resolve_targets(&[t("2001:db8::10", 80), t("192.0.2.11", 80)], &agents).unwrap();
        assert_eq!(r.keys().collect::<Vec<_>>(), ["web-1", "web-2"]);
        let e = resolve_targets(&[t("192.0.2.50", 80)], &agents).unwrap_err();
        assert!(e.starts_with("no live agent declares 192.0.2.50"), "{e}");
        let e = resolve_targets(&[t("192.0.2.99", 80)], &agents).unwrap_err();
        assert!(
            e.contains("several agents declare 192.0.2.99: twin, twin-b"),
            "{e}"
        );
        let e = resolve_targets(&[t("web3.example", 80)], &agents).unwrap_err();
        assert!(e.contains("no live agent declares web3.example"), "{e}");
        assert!(resolve_targets(&[], &agents).is_err());
        // One target without an agent fails the whole action: never a partial guess.
        assert!(resolve_targets(&[t("192.0.2.10", 80), t("192.0.2.50", 80)], &agents).is_err());
    }

    #[test]
    fn request_ids_differ() {
        let ids: std::collections::BTreeSet<u128> = (0..1000).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}

/// The notification of a remote action's outcome, sent through the monitor's notifiers
/// for the trigger (`on_down` ones for a DOWN action): the subject says what happened,
/// e.g. `[porthawk] web: restarted: restart-nginx on web-1: exit 0 in 1.2 s`.
pub(crate) fn action_message(rec: &ActionRecord) -> super::notify::Outgoing {
    let monitor = rec.monitor.as_deref().unwrap_or("");
    let what = match rec.outcome.as_str() {
        "ok" => "restarted",
        "failed" | "error" => "restart FAILED",
        "timeout" => "restart timed out",
        "refused" => "restart refused",
        "no_agent" => "restart not sent",
        "dry_run" => "restart (dry run)",
        _ => "restart",
    };
    let detail = rec.detail.clone().unwrap_or_default();
    let subject = format!("[porthawk] {monitor}: {what}: {detail}");
    let mut text = format!(
        "Monitor {monitor}: action {} ({}) at {}: {}\n",
        rec.action,
        rec.outcome,
        super::notify::rfc3339(rec.at_ms),
        detail
    );
    for (name, out) in [("output", &rec.stdout), ("errors", &rec.stderr)] {
        if !out.is_empty() {
            text.push_str(&format!(
                "{name}:\n{}\n",
                porthawk_core::cap_text(out, 2048)
            ));
        }
    }
    let json = serde_json::json!({
        "monitor": monitor,
        "kind": "action",
        "action": rec.action,
        "outcome": rec.outcome,
        "detail": rec.detail,
        "exit_code": rec.exit_code,
        "duration_ms": rec.duration_ms,
        "time": super::notify::rfc3339(rec.at_ms),
        "time_ms": rec.at_ms,
    });
    super::notify::Outgoing {
        subject,
        text,
        json,
    }
}

/// Sends [`action_message`] of `rec` through each of `notifiers`; the notification records.
pub(crate) async fn notify_outcome(
    rec: &ActionRecord,
    notifiers: &[std::sync::Arc<super::config::NotifySpec>],
) -> Vec<super::history::NoticeRecord> {
    let message = action_message(rec);
    let monitor = rec.monitor.clone().unwrap_or_default();
    let mut out = Vec::new();
    for spec in notifiers {
        let (outcome, attempts, error) =
            super::notify::deliver_message(spec, &message, &monitor).await;
        out.push(super::history::NoticeRecord {
            monitor: monitor.clone(),
            notify: spec.name.clone(),
            channel: spec.channel.as_str().to_string(),
            kind: "action".into(),
            targets: Vec::new(),
            outcome: outcome.to_string(),
            attempts,
            error,
            at_ms: now_ms(),
        });
    }
    out
}

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn the_notification_says_what_ran_where_and_how_it_ended() {
        let rec = ActionRecord {
            monitor: Some("web".into()),
            action: "restart-web".into(),
            kind: "remote".into(),
            argv: vec!["systemctl".into()],
            trigger: "down".into(),
            outcome: "ok".into(),
            detail: Some("restart-nginx on web-1: exit 0 in 1.2 s".into()),
            exit_code: Some(0),
            stdout: "done".into(),
            stderr: String::new(),
            at_ms: 1_700_000_000_000,
            duration_ms: 1200,
        };
        let m = action_message(&rec);
        assert_eq!(
            m.subject,
            "[porthawk] web: restarted: restart-nginx on web-1: exit 0 in 1.2 s"
        );
        assert!(m.text.contains("output:\ndone"), "{}", m.text);
        assert_eq!(m.json["exit_code"], 0);
        let refused = ActionRecord {
            outcome: "refused".into(),
            detail: Some("web-1 refused x: unknown action 'x'".into()),
            ..rec
        };
        assert!(action_message(&refused)
            .subject
            .starts_with("[porthawk] web: restart refused: web-1 refused x"));
    }
}
