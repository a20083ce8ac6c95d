//! What the fleet task, the API and the monitors share: the connection, the running fleet
//! sweeps, the live agents, and the monitors' rounds (see the parent module).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use porthawk_core::{FleetJob, FleetName, ProbeRecord, SpecRef, SweepSpec, WorkItem};
use porthawk_fleet::coord::Coord;
use porthawk_watch::config::FleetConfig;
use serde::Serialize;
use utoipa::ToSchema;

/// An agent as `GET /v1/fleet/agents` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    /// Its name (the registry key, and the token of its results subject).
    pub name: String,
    /// The pools it takes work from.
    pub pools: Vec<String>,
    /// Its porthawk version.
    pub version: String,
    /// Its engine's backend.
    pub backend: String,
    /// Its engine's shards.
    pub shards: u32,
    /// Its engine's in-flight limit.
    pub inflight: u32,
    /// Probes per second, as its last heartbeat said.
    pub probes_per_s: u64,
    /// The slices it runs: `job`, `slice`, `attempt` (`<work seq>.<delivered>`).
    pub running: Vec<RunningView>,
    /// When the coordinator last saw a new heartbeat of it, in seconds since the Unix epoch.
    pub last_heartbeat: f64,
    /// Whether it is one of `[fleet] agents` (results of others are refused).
    pub known: bool,
}

/// A slice an agent runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunningView {
    /// The job: `s<sweep>` or `m<monitor>`.
    pub job: String,
    /// The slice.
    pub slice: u32,
    /// The attempt: `<work seq>.<delivered>`.
    pub attempt: String,
}

/// `GET /v1/fleet/agents`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentList {
    /// Whether the coordinator is connected to NATS now.
    pub connected: bool,
    /// The live agents (a registry key present), by name.
    pub agents: Vec<AgentView>,
}

/// The records of one monitor round, run by one agent of one pool.
#[derive(Debug, Clone)]
pub struct MonitorRound {
    /// The monitor's job id (`m<id>`).
    pub monitor: u64,
    /// The round (the work item's slice number).
    pub round: u32,
    /// The pool it was published to.
    pub pool: String,
    /// The agent that ran it.
    pub agent: String,
    /// Its records (those of one frame; a round may come in several).
    pub records: Vec<ProbeRecord>,
    /// Set on the attempt's last frame.
    pub last: bool,
}

/// What the fleet task, the API and the monitors share ([`crate::AppState::fleet`]).
pub struct FleetState {
    /// The `[fleet]` section.
    pub config: FleetConfig,
    pub(crate) coord: Mutex<Option<Arc<Coord>>>,
    pub(crate) runs: Mutex<HashMap<u64, Arc<super::Run>>>,
    pub(crate) agents: Mutex<BTreeMap<String, AgentView>>,
    /// Marked changed when the live agents (who, in which pools) or the connection change:
    /// the monitors' link waits on it instead of looking on a timer.
    pub(crate) agents_changed: tokio::sync::watch::Sender<()>,
    /// Sweeps created by the API, for the task to start.
    pub(crate) created: tokio::sync::mpsc::UnboundedSender<u64>,
    /// Wakes the publisher (a slice completed or failed, a sweep was created, the live
    /// agents changed).
    pub(crate) wake: tokio::sync::Notify,
    /// Wakes the janitor, which sleeps while no fleet sweep runs (a sweep was activated).
    pub(crate) janitor_wake: tokio::sync::Notify,
    /// Wakes the slices gauge's refresh (slices claimed, completed, failed; a sweep ended).
    pub(crate) slices_changed: tokio::sync::Notify,
    /// The pool of each monitor round published, to label its records.
    pub(crate) round_pools: Mutex<HashMap<(u64, u32), String>>,
    pub(crate) rounds_tx: tokio::sync::mpsc::Sender<MonitorRound>,
    pub(crate) rounds_rx: Mutex<Option<tokio::sync::mpsc::Receiver<MonitorRound>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FleetState {
    pub(crate) fn coord(&self) -> Option<Arc<Coord>> {
        lock(&self.coord).clone()
    }

    /// The live agents.
    pub fn agent_list(&self) -> AgentList {
        AgentList {
            connected: self.coord().is_some(),
            agents: lock(&self.agents).values().cloned().collect(),
        }
    }

    pub(crate) fn live_in_pool(&self, pool: &str) -> Vec<AgentView> {
        lock(&self.agents)
            .values()
            .filter(|v| v.pools.iter().any(|p| p == pool))
            .cloned()
            .collect()
    }

    /// Publishes one monitor round to a pool: an inline spec, a deadline (an agent acks an
    /// expired round without probing). Its records come back on [`FleetState::take_rounds`].
    pub async fn publish_round(
        &self,
        pool: &str,
        monitor: u64,
        round: u32,
        spec: SweepSpec,
        deadline_ms: u64,
    ) -> Result<(), String> {
        let coord = self.coord().ok_or("not connected to NATS")?;
        let pool_name = FleetName::new("pool", pool).map_err(|e| e.to_string())?;
        let item = WorkItem {
            job: FleetJob::Monitor(monitor),
            slice: round,
            start: 0,
            end: spec.total,
            spec: SpecRef::Inline(Box::new(spec)),
            deadline_ms: Some(deadline_ms),
            rate: None,
            epoch: 1,
        };
        lock(&self.round_pools).insert((monitor, round), pool.to_string());
        coord
            .publish_work(&pool_name, &item)
            .await
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    /// The receiver of monitor rounds' records (once: the monitors' runtime takes it).
    pub fn take_rounds(&self) -> Option<tokio::sync::mpsc::Receiver<MonitorRound>> {
        lock(&self.rounds_rx).take()
    }
}

impl AgentList {
    /// The rows of the status page's "Fleet agents" section (`page::fleet`).
    pub fn page_rows(&self) -> Vec<crate::page::fleet::AgentRow> {
        self.agents
            .iter()
            .map(|a| crate::page::fleet::AgentRow {
                name: a.name.clone(),
                pools: a.pools.clone(),
                version: a.version.clone(),
                backend: a.backend.clone(),
                shards: a.shards,
                inflight: a.inflight,
                probes_per_s: a.probes_per_s as f64,
                running_slices: u32::try_from(a.running.len()).unwrap_or(u32::MAX),
                last_heartbeat_ms: (a.last_heartbeat * 1000.0) as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_become_the_pages_rows() {
        let list = AgentList {
            connected: true,
            agents: vec![AgentView {
                name: "eu-1".into(),
                pools: vec!["eu".into()],
                version: "0.1.0".into(),
                backend: "uring".into(),
                shards: 2,
                inflight: 10,
                probes_per_s: 5,
                running: vec![RunningView {
                    job: "s7".into(),
                    slice: 3,
                    attempt: "9.1".into(),
                }],
                last_heartbeat: 1_700_000_000.5,
                known: true,
            }],
        };
        let rows = list.page_rows();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.name.as_str(), r.shards, r.inflight), ("eu-1", 2, 10));
        assert_eq!(
            (r.running_slices, r.last_heartbeat_ms),
            (1, 1_700_000_000_500)
        );
        assert_eq!(r.probes_per_s, 5.0);
    }
}
