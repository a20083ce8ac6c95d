//! `porthawk fleet add-agent`: an nkey user for an agent and the `users` entry, with its
//! permissions, to paste into `nats-server.conf` (fleet.md §1, §3.8).

use porthawk_core::{
    action_result_subject, action_subject, pool_consumer, results_agent_filter, FleetName,
    AGENTS_BUCKET, SPECS_BUCKET, WORK_STREAM,
};

/// A fresh nkey user.
#[derive(Debug, Clone)]
pub struct UserKey {
    /// The public key (`U...`), for the server's config.
    pub public: String,
    /// The seed (`SU...`), for the agent's `--nkey` file only.
    pub seed: String,
}

/// Generates an nkey user pair.
pub fn generate_user() -> Result<UserKey, String> {
    let pair = nkeys::KeyPair::new_user();
    let seed = pair
        .seed()
        .map_err(|e| format!("cannot encode the nkey seed: {e}"))?;
    Ok(UserKey {
        public: pair.public_key(),
        seed,
    })
}

/// What an agent may publish and subscribe to: its pools' consumers (info, pull, ack), its
/// own results subject and registry key, reading the spec bucket (and watching it for
/// cancellations), its own inbox, and for remote remediation its own action subject
/// (subscribe) and action result subject (publish). Nothing else: no work publishing, no
/// other agent's name, no stream or consumer management, no action requests (only the
/// coordinator asks), and no `_INBOX.>` (an agent allowed that could answer any request).
pub fn agent_permissions(agent: &FleetName, pools: &[FleetName]) -> (Vec<String>, Vec<String>) {
    let mut publish = Vec::new();
    for pool in pools {
        let consumer = pool_consumer(pool);
        publish.push(format!("$JS.API.CONSUMER.INFO.{WORK_STREAM}.{consumer}"));
        publish.push(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.{consumer}"
        ));
        publish.push(format!("$JS.ACK.{WORK_STREAM}.{consumer}.>"));
    }
    publish.push(results_agent_filter(agent));
    publish.push(format!("$KV.{AGENTS_BUCKET}.{agent}"));
    publish.push(format!("$JS.API.STREAM.INFO.KV_{AGENTS_BUCKET}"));
    publish.push(format!("$JS.API.STREAM.INFO.KV_{SPECS_BUCKET}"));
    publish.push(format!("$JS.API.DIRECT.GET.KV_{SPECS_BUCKET}.>"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{SPECS_BUCKET}"));
    publish.push(format!("$JS.FC.KV_{SPECS_BUCKET}.>"));
    publish.push(action_result_subject(agent));
    let subscribe = vec![
        format!("{}.>", porthawk_core::inbox_prefix(agent)),
        action_subject(agent),
    ];
    (publish, subscribe)
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `users` entry of an agent for `nats-server.conf` (an element of
/// `authorization { users = [ ... ] }`).
pub fn agent_users_entry(public: &str, agent: &FleetName, pools: &[FleetName]) -> String {
    let (publish, subscribe) = agent_permissions(agent, pools);
    format!(
        "# porthawk agent {agent} (pools: {})\n{{ nkey: {public}, permissions: {{\n    publish: {{ allow: [ {} ] }}\n    subscribe: {{ allow: [ {} ] }} }} }}\n",
        pools.iter().map(FleetName::as_str).collect::<Vec<_>>().join(", "),
        quoted(&publish),
        quoted(&subscribe)
    )
}

/// The coordinator's `users` entry: unrestricted (it creates the streams, consumers and
/// buckets, publishes work, reads every agent's results, and is the only user that may
/// publish action requests on `porthawk.v1.action.<agent>`: agents' entries do not allow it,
/// and any other user of the server should deny `porthawk.v1.action.>`).
pub fn coordinator_users_entry(public: &str) -> String {
    format!(
        "# porthawk coordinator (porthawk serve [fleet]): unrestricted; the only user that may \
         publish on porthawk.v1.action.> (give any other user publish: {{ deny: [ \"porthawk.v1.action.>\" ] }})\n{{ nkey: {public} }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_entries() {
        let key = generate_user().unwrap();
        assert!(key.public.starts_with('U') && key.seed.starts_with("SU"));
        let agent = FleetName::new("agent", "eu-1").unwrap();
        let pools = [
            FleetName::new("pool", "eu").unwrap(),
            FleetName::new("pool", "dc2").unwrap(),
        ];
        let entry = agent_users_entry(&key.public, &agent, &pools);
        for want in [
            "\"$JS.API.CONSUMER.MSG.NEXT.PORTHAWK_WORK.pool-eu\"",
            "\"$JS.ACK.PORTHAWK_WORK.pool-dc2.>\"",
            "\"porthawk.v1.results.eu-1.>\"",
            "\"$KV.porthawk_agents.eu-1\"",
            "\"_INBOX_eu-1.>\"",
            "subscribe: { allow: [ \"_INBOX_eu-1.>\", \"porthawk.v1.action.eu-1\" ] }",
            "\"porthawk.v1.action-result.eu-1\"",
        ] {
            assert!(entry.contains(want), "{want} missing in {entry}");
        }
        assert!(!entry.contains("porthawk.v1.work"));
        assert!(!entry.contains("\"porthawk.v1.action.>"));
        assert!(!entry.contains("\"_INBOX.>"));
        let coordinator = coordinator_users_entry(&key.public);
        assert!(
            coordinator.contains("porthawk.v1.action.>"),
            "{coordinator}"
        );
    }
}
