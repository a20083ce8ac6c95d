//! The agent's side of remote remediation (`--actions FILE`): it subscribes to its own action
//! subject, checks each request (known action, reboot allowed, not expired, not seen before),
//! runs the action from its own file through `porthawk-exec`, and answers on its own result
//! subject. The request carries a name, never a command; the agent's file is the only source
//! of what runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::Client;
use futures_util::StreamExt;
use porthawk_core::{
    action_result_subject, action_subject, cap_text, FleetName, RanStatus, RemedyOutcome,
    RemedyRequest, RemedyResult, WireMessage, MAX_REMEDY_ITEMS, MAX_REMEDY_OUTPUT, MAX_REMEDY_TEXT,
};
use porthawk_exec::{ExecOutcome, ExecSpec};
use porthawk_watch::config::{ActionKind, AgentActions};

/// The furthest ahead a request's expiry may be: ids are remembered until their expiry, so
/// this bounds how long (and, with [`MAX_REMEMBERED`], how many).
pub const MAX_EXPIRY_AHEAD: Duration = Duration::from_secs(3600);
/// The most request ids remembered at once; beyond it new requests are refused (never
/// forgotten early, which would let a replay through).
pub const MAX_REMEMBERED: usize = 16_384;

/// What the agent may run, and whether it only says what it would run.
#[derive(Debug, Clone, Default)]
pub struct RemedyConfig {
    /// The file, for messages.
    pub file: String,
    /// Its actions.
    pub actions: AgentActions,
    /// `--dry-run`: answer with the argv instead of running it.
    pub dry_run: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The ids seen, with their expiry.
#[derive(Debug, Default)]
pub struct Seen(HashMap<u128, u64>);

impl Seen {
    /// Admits request `id` expiring at `expires_ms` at `now_ms`, or says why not. An admitted
    /// id is remembered until it expires.
    pub fn admit(&mut self, id: u128, expires_ms: u64, now_ms: u64) -> Result<(), String> {
        self.0.retain(|_, &mut until| until >= now_ms);
        if expires_ms < now_ms {
            return Err(format!(
                "expired: the request's expiry passed {} ms ago (clocks of the coordinator \
                 and this agent differ, or it was delayed)",
                now_ms - expires_ms
            ));
        }
        if expires_ms - now_ms > MAX_EXPIRY_AHEAD.as_millis() as u64 {
            return Err(format!(
                "expiry too far ahead: more than {} s",
                MAX_EXPIRY_AHEAD.as_secs()
            ));
        }
        if self.0.contains_key(&id) {
            return Err(format!("replayed: request {id:032x} was already received"));
        }
        if self.0.len() >= MAX_REMEMBERED {
            return Err("too many requests in the last hour".into());
        }
        self.0.insert(id, expires_ms);
        Ok(())
    }
}

/// The decision on a request before anything runs: the action to run, or the outcome to
/// answer with at once.
pub fn judge(
    config: &RemedyConfig,
    seen: &mut Seen,
    req: &RemedyRequest,
    now_ms: u64,
) -> Result<ExecSpec, RemedyOutcome> {
    let refuse = |reason: String| RemedyOutcome::Refused {
        reason: cap_text(&reason, MAX_REMEDY_TEXT),
    };
    seen.admit(req.id, req.expires_ms, now_ms).map_err(refuse)?;
    let Some(action) = config.actions.actions.get(&req.action) else {
        let known: Vec<&str> = config.actions.actions.keys().map(String::as_str).collect();
        return Err(refuse(format!(
            "unknown action '{}': {} defines {}",
            req.action,
            config.file,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    if matches!(action.kind, ActionKind::Reboot) && !config.actions.allow_reboot {
        return Err(refuse(format!(
            "reboot not allowed: '{}' is a reboot and {} does not say allow_reboot = true",
            req.action, config.file
        )));
    }
    let argv = action.kind.argv();
    if config.dry_run || req.dry_run {
        return Err(RemedyOutcome::DryRun {
            argv: capped_argv(&argv),
        });
    }
    let c = &req.context;
    Ok(ExecSpec {
        argv,
        timeout: action.timeout,
        env: vec![
            ("PORTHAWK_ACTION".into(), req.action.clone()),
            (
                "PORTHAWK_MONITOR".into(),
                c.monitor.clone().unwrap_or_default(),
            ),
            ("PORTHAWK_TRIGGER".into(), c.state.clone()),
            ("PORTHAWK_TARGETS".into(), c.targets.join(" ")),
            (
                "PORTHAWK_REASON".into(),
                c.reason.clone().unwrap_or_default(),
            ),
        ],
    })
}

fn capped_argv(argv: &[String]) -> Vec<String> {
    argv.iter()
        .take(MAX_REMEDY_ITEMS)
        .map(|a| cap_text(a, MAX_REMEDY_TEXT))
        .collect()
}

/// Runs `spec` and turns the report into the answer.
pub async fn run(spec: &ExecSpec) -> RemedyOutcome {
    let r = porthawk_exec::run(spec).await;
    RemedyOutcome::Ran {
        status: match r.outcome {
            ExecOutcome::Ok => RanStatus::Ok,
            ExecOutcome::Failed => RanStatus::Failed,
            ExecOutcome::Timeout => RanStatus::Timeout,
            ExecOutcome::Error => RanStatus::Error,
        },
        exit_code: r.exit_code,
        detail: r
            .detail
            .map(|d| cap_text(&d.replace(char::is_control, " "), MAX_REMEDY_TEXT)),
        duration_ms: r.duration_ms,
        argv: capped_argv(&spec.argv),
        stdout: cap_text(&r.stdout, MAX_REMEDY_OUTPUT),
        stderr: cap_text(&r.stderr, MAX_REMEDY_OUTPUT),
    }
}

/// Subscribes to this agent's action subject; the returned task answers requests until the
/// connection ends. An error when the subscription cannot be made.
pub(crate) async fn serve(
    client: Client,
    agent: FleetName,
    config: Arc<RemedyConfig>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let subject = action_subject(&agent);
    let mut requests = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
    let reply_to = action_result_subject(&agent);
    let seen = Arc::new(Mutex::new(Seen::default()));
    tracing::info!(
        %subject,
        actions = ?config.actions.actions.keys().collect::<Vec<_>>(),
        dry_run = config.dry_run,
        "taking action requests"
    );
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let req = match RemedyRequest::decode(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable action request ignored");
                    continue;
                }
            };
            let judged = {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                judge(&config, &mut seen, &req, now_ms())
            };
            let (client, reply_to) = (client.clone(), reply_to.clone());
            tokio::spawn(async move {
                let outcome = match judged {
                    Err(outcome) => outcome,
                    Ok(spec) => {
                        tracing::info!(action = %req.action, argv = ?spec.argv,
                            monitor = req.context.monitor.as_deref(), "running action");
                        run(&spec).await
                    }
                };
                match &outcome {
                    RemedyOutcome::Refused { reason } => {
                        tracing::warn!(action = %req.action, %reason, "action request refused")
                    }
                    RemedyOutcome::DryRun { argv } => {
                        tracing::info!(action = %req.action, ?argv, "dry run: would run")
                    }
                    RemedyOutcome::Ran {
                        status, exit_code, ..
                    } => tracing::info!(action = %req.action, status = status.as_str(),
                        exit_code, "action ended"),
                }
                let answer = RemedyResult {
                    id: req.id,
                    outcome,
                }
                .encode();
                if let Err(e) = client.publish(reply_to, answer.into()).await {
                    tracing::warn!(error = %e, "cannot send the action's result");
                }
                let _ = client.flush().await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthawk_core::IncidentContext;
    use porthawk_watch::config::parse_agent_actions;

    fn config(text: &str, dry_run: bool) -> RemedyConfig {
        RemedyConfig {
            file: "a.toml".into(),
            actions: parse_agent_actions("a.toml", text).unwrap(),
            dry_run,
        }
    }

    fn request(id: u128, action: &str, expires_ms: u64) -> RemedyRequest {
        RemedyRequest {
            id,
            action: action.into(),
            expires_ms,
            dry_run: false,
            context: IncidentContext {
                monitor: Some("web".into()),
                targets: vec!["127.0.0.1:80".into()],
                state: "down".into(),
                reason: None,
            },
        }
    }

    fn refused(r: Result<ExecSpec, RemedyOutcome>) -> String {
        match r {
            Err(RemedyOutcome::Refused { reason }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn requests_are_judged_by_the_agents_own_file() {
        let c = config(
            "[action.fix]\nexec = [\"/bin/true\", \"x\"]\ntimeout = \"2s\"\n[action.reboot]\nreboot = true\n",
            false,
        );
        let mut seen = Seen::default();
        let now = 1_000_000;
        let spec = judge(&c, &mut seen, &request(1, "fix", now + 5000), now).unwrap();
        assert_eq!(spec.argv, ["/bin/true", "x"]);
        assert_eq!(spec.timeout, Duration::from_secs(2));
        assert!(spec
            .env
            .contains(&("PORTHAWK_MONITOR".into(), "web".into())));
        let r = refused(judge(&c, &mut seen, &request(1, "fix", now + 5000), now));
        assert!(r.starts_with("replayed"), "{r}");
        let r = refused(judge(&c, &mut seen, &request(2, "nope", now + 5000), now));
        assert!(
            r.starts_with("unknown action 'nope'") && r.contains("fix, reboot"),
            "{r}"
        );
        let r = refused(judge(&c, &mut seen, &request(3, "reboot", now + 5000), now));
        assert!(r.starts_with("reboot not allowed"), "{r}");
        let r = refused(judge(&c, &mut seen, &request(4, "fix", now - 1), now));
        assert!(r.starts_with("expired"), "{r}");
        let r = refused(judge(
            &c,
            &mut seen,
            &request(5, "fix", now + 7_200_000),
            now,
        ));
        assert!(r.starts_with("expiry too far ahead"), "{r}");
        // An id is forgotten only after its expiry, when it would be refused as expired.
        let later = now + 6000;
        let r = refused(judge(&c, &mut seen, &request(1, "fix", now + 5000), later));
        assert!(r.starts_with("expired"), "{r}");
        let mut dry = request(6, "fix", now + 5000);
        dry.dry_run = true;
        assert_eq!(
            judge(&c, &mut seen, &dry, now).unwrap_err(),
            RemedyOutcome::DryRun {
                argv: vec!["/bin/true".into(), "x".into()]
            }
        );
        let c = config(
            "allow_reboot = true\n[action.reboot]\nreboot = true\n",
            true,
        );
        assert_eq!(
            judge(&c, &mut seen, &request(7, "reboot", now + 5000), now).unwrap_err(),
            RemedyOutcome::DryRun {
                argv: vec!["systemctl".into(), "reboot".into()]
            }
        );
    }

    #[tokio::test]
    async fn a_run_reports_exit_code_and_output() {
        let spec = ExecSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo hi $PORTHAWK_MONITOR; exit 4".into(),
            ],
            timeout: Duration::from_secs(5),
            env: vec![("PORTHAWK_MONITOR".into(), "web".into())],
        };
        match run(&spec).await {
            RemedyOutcome::Ran {
                status,
                exit_code,
                stdout,
                ..
            } => {
                assert_eq!((status, exit_code), (RanStatus::Failed, Some(4)));
                assert_eq!(stdout, "hi web\n");
            }
            other => panic!("{other:?}"),
        }
    }
}
