//! The agent's own action file (`porthawk agent --actions FILE`): what a fleet agent may run
//! when the coordinator asks for an action by name. The same `[action.NAME]` kinds as the
//! server's (`exec = [argv]`, `restart = "unit"`, `reboot = true`) with their `timeout`, and
//! `allow_reboot` at the top, checked by the same code; errors are `file:line: field: message`
//! and unknown fields are refused. Policy (cooldown, rate, escalation) is the coordinator's:
//! those keys do not belong here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{field_path, ActionSpec, ConfigError, Cx, Lines, RawAction};

/// The checked file.
#[derive(Debug, Clone, Default)]
pub struct AgentActions {
    /// The actions by name.
    pub actions: BTreeMap<String, Arc<ActionSpec>>,
    /// Whether `reboot = true` actions may run (`allow_reboot = true` in the same file).
    pub allow_reboot: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentFile {
    #[serde(default)]
    allow_reboot: Option<bool>,
    #[serde(default)]
    action: BTreeMap<String, Spanned<RawAgentAction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentAction {
    #[serde(default)]
    exec: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    restart: Option<Spanned<String>>,
    #[serde(default)]
    reboot: Option<Spanned<bool>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

/// Reads and checks an agent's action file; `file` names it in errors.
pub fn parse_agent_actions(file: &str, text: &str) -> Result<AgentActions, ConfigError> {
    let lines = Lines { file, text };
    let de = toml::Deserializer::parse(text).map_err(|e| lines.toml_error(&e, None))?;
    let raw: RawAgentFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = field_path(e.path());
        lines.toml_error(e.inner(), Some(path))
    })?;
    let cx = Cx {
        lines,
        fleet: false,
        pools: Default::default(),
    };
    let mut out = AgentActions {
        allow_reboot: raw.allow_reboot.unwrap_or(false),
        ..AgentActions::default()
    };
    for (name, action) in raw.action {
        let span = action.span();
        let a = action.into_inner();
        let as_server = RawAction {
            exec: a.exec,
            restart: a.restart,
            reboot: a.reboot,
            agent: None,
            run: None,
            timeout: a.timeout,
            cooldown: None,
            max_per_hour: None,
            escalate_after: None,
        };
        let spec = cx.action(&name, &Spanned::new(span, as_server))?;
        out.actions.insert(name, Arc::new(spec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActionKind;

    #[test]
    fn the_issues_example_parses() {
        let text = "[action.restart-nginx]\nexec = [\"systemctl\", \"restart\", \"nginx\"]\ntimeout = \"30s\"\n\n[action.reboot]\nreboot = true\n\n[action.web]\nrestart = \"nginx.service\"\n";
        let a = parse_agent_actions("a.toml", text).unwrap();
        assert!(!a.allow_reboot);
        assert_eq!(
            a.actions["restart-nginx"].kind,
            ActionKind::Exec(vec!["systemctl".into(), "restart".into(), "nginx".into()])
        );
        assert_eq!(a.actions["restart-nginx"].timeout.as_secs(), 30);
        assert_eq!(a.actions["reboot"].kind, ActionKind::Reboot);
        assert_eq!(
            a.actions["web"].kind.argv(),
            ["systemctl", "restart", "nginx.service"]
        );
        let a = parse_agent_actions("a.toml", "allow_reboot = true\n").unwrap();
        assert!(a.allow_reboot && a.actions.is_empty());
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        for (text, want) in [
            (
                "[action.x]\nexec = [\"true\"]\ncooldown = \"1m\"\n",
                "a.toml:3: action.x.cooldown: unknown field `cooldown`",
            ),
            (
                "[action.x]\nexec = [\"true\"]\nagent = \"web-1\"\n",
                "a.toml:3: action.x.agent: unknown field `agent`",
            ),
            (
                "allow_reboots = true\n",
                "a.toml:1: allow_reboots: unknown field",
            ),
            (
                "[action.x]\nexec = []\n",
                "a.toml:2: action.x.exec: needs a program",
            ),
            (
                "[action.x]\ntimeout = \"1s\"\n",
                "a.toml:1: action.x: needs exactly one",
            ),
            (
                "[action.x]\nexec = [\"true\"]\ntimeout = \"soon\"\n",
                "a.toml:3: action.x.timeout:",
            ),
        ] {
            let e = parse_agent_actions("a.toml", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (wanted {want})");
        }
    }

    /// The coordinator's side (`porthawk.toml`): `agent` and `run` together, only with
    /// `[fleet]`, checked like the rest of `[action.NAME]`.
    #[test]
    fn remote_actions_in_porthawk_toml_are_checked() {
        use crate::config::{parse, RemoteAgent};
        let fleet = "[fleet]\nnats = \"nats://127.0.0.1:4222\"\n";
        let c = parse(
            "p.toml",
            &format!("{fleet}[action.fix]\nagent = \"web-1\"\nrun = \"restart-nginx\"\ntimeout = \"5s\"\n[action.any]\nagent = \"{{target}}\"\nrun = \"r\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.actions["fix"].kind,
            ActionKind::Remote {
                agent: RemoteAgent::Named("web-1".into()),
                run: "restart-nginx".into()
            }
        );
        assert_eq!(c.actions["fix"].kind.as_str(), "remote");
        assert!(matches!(
            c.actions["any"].kind,
            ActionKind::Remote {
                agent: RemoteAgent::Target,
                ..
            }
        ));
        for (text, want) in [
            (
                "[action.fix]\nagent = \"web-1\"\nrun = \"r\"\n".to_string(),
                "p.toml:2: action.fix.agent: a remote action needs fleet mode",
            ),
            (
                format!("{fleet}[action.fix]\nagent = \"web-1\"\n"),
                "p.toml:3: action.fix.run: missing",
            ),
            (
                format!("{fleet}[action.fix]\nrun = \"r\"\n"),
                "p.toml:3: action.fix.agent: missing",
            ),
            (
                format!("{fleet}[action.fix]\nagent = \"web-1\"\nrun = \"r\"\nexec = [\"x\"]\n"),
                "p.toml:3: action.fix: needs exactly one",
            ),
            (
                format!("{fleet}[action.fix]\nagent = \"web.1\"\nrun = \"r\"\n"),
                "p.toml:4: action.fix.agent: 'web.1' is neither",
            ),
            (
                format!("{fleet}[action.fix]\nagent = \"web-1\"\nrun = \"a b\"\n"),
                "p.toml:5: action.fix.run: 'a b' is not an action name",
            ),
        ] {
            let e = parse("p.toml", &text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (wanted {want})");
        }
    }
}
