//! The status page's "Fleet agents" section: the hook for fleet mode. The coordinator
//! hands the page its live agents as [`AgentRow`]s; without fleet mode there are none and
//! the section is left out.

use std::fmt::Write as _;

use super::html::{ago, esc};

/// A live fleet agent as the status page shows it.
#[derive(Debug, Clone, Default)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// The pools it takes work from.
    pub pools: Vec<String>,
    /// porthawk's version on it.
    pub version: String,
    /// Its engine backend (`uring` or `epoll`).
    pub backend: String,
    /// Shard threads.
    pub shards: u32,
    /// Probes in flight at most.
    pub inflight: u32,
    /// Probes per second lately.
    pub probes_per_s: f64,
    /// Work slices it runs now.
    pub running_slices: u32,
    /// Its last heartbeat, in ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
}

/// The "Fleet agents" section: nothing when `agents` is `None` (fleet mode off), a table of
/// agents otherwise.
pub fn render(h: &mut String, agents: Option<&[AgentRow]>, now: u64) {
    let Some(agents) = agents else {
        return;
    };
    h.push_str(
        "<h2>Fleet agents</h2><table id=\"fleet-agents\"><thead><tr><th>agent</th>\
         <th>pools</th><th>version</th><th>backend</th><th class=\"num\">shards</th>\
         <th class=\"num\">in flight</th><th class=\"num\">probes/s</th>\
         <th class=\"num\">slices</th><th>last heartbeat</th></tr></thead><tbody>",
    );
    if agents.is_empty() {
        h.push_str("<tr><td colspan=\"9\" class=\"muted\">No agent is connected.</td></tr>");
    }
    for a in agents {
        let _ = write!(
            h,
            "<tr class=\"agent\" data-agent=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&a.name),
            esc(&a.name),
            esc(&a.pools.join(", ")),
            esc(&a.version),
            esc(&a.backend),
            a.shards,
            a.inflight,
            a.probes_per_s,
            a.running_slices,
            ago(now, a.last_heartbeat_ms),
        );
    }
    h.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_section_without_fleet_mode_and_names_escaped_with_it() {
        let mut h = String::new();
        render(&mut h, None, 0);
        assert!(h.is_empty());
        let a = AgentRow {
            name: "<b>eu-1</b>".into(),
            pools: vec!["eu".into()],
            ..AgentRow::default()
        };
        render(&mut h, Some(&[a]), 5_000);
        assert!(h.contains("id=\"fleet-agents\""));
        assert!(h.contains("&lt;b&gt;eu-1&lt;/b&gt;"));
        assert!(!h.contains("<b>"));
    }
}
