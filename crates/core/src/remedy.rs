//! The wire of remote remediation (`docs/fleet.md`, "Remote remediation"): the coordinator
//! asks an agent to run one of the actions the agent's own file defines, by name, and the
//! agent answers with what happened. The network never carries a command: a request holds
//! an id, an action name, an expiry and the incident's context, nothing an agent could run.
//!
//! Subjects: the coordinator publishes on `porthawk.v1.action.<agent>` (only the coordinator's
//! user may: agents' permissions allow nothing there but subscribing to their own), and the
//! agent answers on `porthawk.v1.action-result.<agent>`, which only that agent may publish.
//! Messages are framed and bounded like the other fleet messages ([`WireMessage`]).

use serde::{Deserialize, Serialize};

use crate::fleet::{invalid, FleetName, WireError, WireMessage, WIRE_TOKEN};

/// The largest [`RemedyRequest`] payload.
pub const MAX_REMEDY_REQUEST_LEN: usize = 16 << 10;
/// The largest [`RemedyResult`] payload (two outputs of [`MAX_REMEDY_OUTPUT`] and room).
pub const MAX_REMEDY_RESULT_LEN: usize = 48 << 10;
/// The most bytes of standard output, and of standard error, a result carries.
pub const MAX_REMEDY_OUTPUT: usize = 16 << 10;
/// The longest text field besides the outputs (reason, detail, an argv element).
pub const MAX_REMEDY_TEXT: usize = 1024;
/// The most targets in a request's context, and argv elements in a result.
pub const MAX_REMEDY_ITEMS: usize = 64;

/// The subject the coordinator asks `agent` on: `porthawk.v1.action.<agent>`.
pub fn action_subject(agent: &FleetName) -> String {
    format!("porthawk.{WIRE_TOKEN}.action.{agent}")
}

/// The subject `agent` answers on: `porthawk.v1.action-result.<agent>`.
pub fn action_result_subject(agent: &FleetName) -> String {
    format!("porthawk.{WIRE_TOKEN}.action-result.{agent}")
}

/// Whether `name` is an action name: 1 to 64 of letters, digits, `-`, `_` and `.` (the
/// config's rule for `[action.NAME]`).
pub fn is_action_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cap_text(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn text_ok(text: &str, max: usize, lines: bool) -> bool {
    text.len() <= max
        && text
            .chars()
            .all(|c| !c.is_control() || (lines && matches!(c, '\n' | '\r' | '\t')))
}

/// The incident a request is for: what the agent logs and passes to the action's
/// environment (`PORTHAWK_MONITOR`, `PORTHAWK_TARGETS`, ...). Never a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentContext {
    /// The monitor, if the action runs for one.
    pub monitor: Option<String>,
    /// The DOWN targets, `host:port`.
    pub targets: Vec<String>,
    /// Why the action runs: `down`, `up` or `manual`.
    pub state: String,
    /// The failing check's reason, if known.
    pub reason: Option<String>,
}

/// The coordinator's request: run action `action` once, before `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyRequest {
    /// Unique per request: an agent runs an id once and refuses it again until it expires.
    pub id: u128,
    /// The name of an action in the agent's own file.
    pub action: String,
    /// Unix milliseconds after which the agent refuses the request.
    pub expires_ms: u64,
    /// Report what would run instead of running it (`serve --dry-run`).
    pub dry_run: bool,
    /// The incident.
    pub context: IncidentContext,
}

impl WireMessage for RemedyRequest {
    const MAGIC: [u8; 4] = *b"PHRQ";
    const MAX_LEN: usize = MAX_REMEDY_REQUEST_LEN;
    const WHAT: &'static str = "action request";

    fn check(&self) -> Result<(), WireError> {
        if !is_action_name(&self.action) {
            return Err(invalid(Self::WHAT, "bad action name"));
        }
        let c = &self.context;
        if c.targets.len() > MAX_REMEDY_ITEMS {
            return Err(invalid(Self::WHAT, "too many targets"));
        }
        let texts = c
            .monitor
            .iter()
            .chain(&c.targets)
            .chain(std::iter::once(&c.state))
            .chain(&c.reason);
        for t in texts {
            if !text_ok(t, MAX_REMEDY_TEXT, false) {
                return Err(invalid(Self::WHAT, "bad context text"));
            }
        }
        Ok(())
    }
}

/// How a run on the agent ended (`porthawk-exec`'s outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RanStatus {
    /// Exit code 0.
    Ok,
    /// Another exit code, or a signal.
    Failed,
    /// Killed with all it started at the agent's timeout for the action.
    Timeout,
    /// Could not be started.
    Error,
}

impl RanStatus {
    /// `ok`, `failed`, `timeout` or `error`, as history records it.
    pub fn as_str(self) -> &'static str {
        match self {
            RanStatus::Ok => "ok",
            RanStatus::Failed => "failed",
            RanStatus::Timeout => "timeout",
            RanStatus::Error => "error",
        }
    }
}

/// What the agent did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemedyOutcome {
    /// It ran the action.
    Ran {
        /// How it ended.
        status: RanStatus,
        /// The exit code, if it exited.
        exit_code: Option<i32>,
        /// Why, for a timeout, a signal or an error.
        detail: Option<String>,
        /// How long it ran.
        duration_ms: u64,
        /// What it ran (from the agent's file).
        argv: Vec<String>,
        /// Standard output, capped.
        stdout: String,
        /// Standard error, capped.
        stderr: String,
    },
    /// It refused: unknown action, reboot not allowed, expired, replayed.
    Refused {
        /// Why.
        reason: String,
    },
    /// `--dry-run` (the agent's or the request's): what would run.
    DryRun {
        /// The argv the action would run.
        argv: Vec<String>,
    },
}

/// The agent's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyResult {
    /// The request's id.
    pub id: u128,
    /// What happened.
    pub outcome: RemedyOutcome,
}

impl WireMessage for RemedyResult {
    const MAGIC: [u8; 4] = *b"PHRR";
    const MAX_LEN: usize = MAX_REMEDY_RESULT_LEN;
    const WHAT: &'static str = "action result";

    fn check(&self) -> Result<(), WireError> {
        let bad = |what: &str| Err(invalid(Self::WHAT, format!("bad {what}")));
        match &self.outcome {
            RemedyOutcome::Ran {
                detail,
                argv,
                stdout,
                stderr,
                ..
            } => {
                if argv.len() > MAX_REMEDY_ITEMS
                    || argv.iter().any(|a| !text_ok(a, MAX_REMEDY_TEXT, true))
                {
                    return bad("argv");
                }
                if detail
                    .as_ref()
                    .is_some_and(|d| !text_ok(d, MAX_REMEDY_TEXT, false))
                {
                    return bad("detail");
                }
                if stdout.len() > MAX_REMEDY_OUTPUT || stderr.len() > MAX_REMEDY_OUTPUT {
                    return bad("output length");
                }
            }
            RemedyOutcome::Refused { reason } => {
                if !text_ok(reason, MAX_REMEDY_TEXT, false) {
                    return bad("reason");
                }
            }
            RemedyOutcome::DryRun { argv } => {
                if argv.len() > MAX_REMEDY_ITEMS
                    || argv.iter().any(|a| !text_ok(a, MAX_REMEDY_TEXT, true))
                {
                    return bad("argv");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RemedyRequest {
        RemedyRequest {
            id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            action: "restart-nginx".into(),
            expires_ms: 1_790_000_000_000,
            dry_run: false,
            context: IncidentContext {
                monitor: Some("web".into()),
                targets: vec!["192.0.2.10:80".into()],
                state: "down".into(),
                reason: Some("connection refused".into()),
            },
        }
    }

    #[test]
    fn messages_round_trip() {
        let r = request();
        assert_eq!(RemedyRequest::decode(&r.encode()), Ok(r.clone()));
        for outcome in [
            RemedyOutcome::Ran {
                status: RanStatus::Ok,
                exit_code: Some(0),
                detail: None,
                duration_ms: 1200,
                argv: vec!["systemctl".into(), "restart".into(), "nginx".into()],
                stdout: "done\n".into(),
                stderr: String::new(),
            },
            RemedyOutcome::Refused {
                reason: "unknown action 'x'".into(),
            },
            RemedyOutcome::DryRun {
                argv: vec!["true".into()],
            },
        ] {
            let res = RemedyResult { id: r.id, outcome };
            assert_eq!(RemedyResult::decode(&res.encode()), Ok(res));
        }
    }

    #[test]
    fn decoding_is_bounded_and_checked() {
        let good = request().encode();
        assert!(
            RemedyResult::decode(&good).is_err(),
            "a request is not a result"
        );
        let mut huge = good.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RemedyRequest::decode(&huge),
            Err(WireError::TooLarge { .. })
        ));
        assert!(RemedyRequest::decode(&good[..good.len() - 1]).is_err());
        for bad_name in ["", "a b", "x;rm -rf /", &"x".repeat(65)] {
            let mut r = request();
            r.action = bad_name.to_string();
            assert!(RemedyRequest::decode(&r.encode()).is_err(), "{bad_name}");
        }
        let mut r = request();
        r.context.reason = Some("a\nb".into());
        assert!(RemedyRequest::decode(&r.encode()).is_err());
        let mut r = request();
        r.context.targets = vec!["x:1".into(); MAX_REMEDY_ITEMS + 1];
        assert!(RemedyRequest::decode(&r.encode()).is_err());
        let long = RemedyResult {
            id: 1,
            outcome: RemedyOutcome::Ran {
                status: RanStatus::Failed,
                exit_code: Some(1),
                detail: None,
                duration_ms: 1,
                argv: vec![],
                stdout: "x".repeat(MAX_REMEDY_OUTPUT + 1),
                stderr: String::new(),
            },
        };
        assert!(RemedyResult::decode(&long.encode()).is_err());
    }

    #[test]
    fn subjects_and_caps() {
        let agent = FleetName::new("agent", "web-1").unwrap();
        assert_eq!(action_subject(&agent), "porthawk.v1.action.web-1");
        assert_eq!(
            action_result_subject(&agent),
            "porthawk.v1.action-result.web-1"
        );
        assert_eq!(cap_text("héllo", 2), "h");
        assert_eq!(cap_text("abc", 10), "abc");
        assert!(is_action_name("restart-nginx.v2"));
        assert!(!is_action_name("a/b"));
    }
}
