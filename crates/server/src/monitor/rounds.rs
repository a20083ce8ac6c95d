//! The monitors' side of fleet mode: the rounds the monitor runtime hands the fleet task to
//! publish to a pool, and what comes back (the records of those rounds, their ends, and the
//! pools' live agents).
//!
//! [`rounds_link`] makes both ends. The runtime holds the [`MonitorLink`] (given to it with
//! `WatchHandle::attach_fleet`); the fleet task holds the [`FleetRounds`]. For each
//! [`RoundRequest`] the fleet task publishes one work item on `porthawk.v1.work.<pool>.m<id>`
//! (job `FleetJob::Monitor(id)`, slice 0, positions `0..spec.total`, the spec inline, the
//! deadline), and for the result frames of that job it sends [`RoundEvent::Records`] (the
//! agent taken from the results subject) and, after the last frame (or an `expired`,
//! `cancelled` or `error` end, or a failed publish), one [`RoundEvent::Done`]. It sends
//! [`RoundEvent::Agents`] whenever the registry's live agents per pool change.
//!
//! A round that never ends (no agent took it, the fleet task is gone) is ended by the
//! runtime at its deadline: an unknown check, never a DOWN one.
//!
//! In `porthawk serve` with `[fleet]`, `fleet_rounds` plays the fleet task's end over
//! `FleetState`.

use std::collections::BTreeMap;

use porthawk_core::ProbeRecord;
use porthawk_core::SweepSpec;
use tokio::sync::mpsc;

/// Events the fleet task may queue before it waits for the monitor runtime.
const EVENTS: usize = 256;

/// One round of a monitor chunk for a pool's agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRequest {
    /// The round: the monitor job's id, also the work item's `FleetJob::Monitor(id)`.
    pub id: u64,
    /// The monitor, for logs.
    pub monitor: String,
    /// The pool to publish to (a valid pool name: the config checked it).
    pub pool: String,
    /// The chunk's target-ports and probe, inline in the work item.
    pub spec: SweepSpec,
    /// Unix milliseconds after which agents must not probe it: the chunk's next round is
    /// due then.
    pub deadline_ms: u64,
}

/// What the fleet task tells the monitor runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundEvent {
    /// Records of round `id`, probed by `agent` of `pool`.
    Records {
        /// The round.
        id: u64,
        /// The pool the work item was published to.
        pool: String,
        /// The agent, from the results subject (authenticated by NATS permissions).
        agent: String,
        /// The records (one per target-port over the round's frames).
        records: Vec<ProbeRecord>,
    },
    /// Round `id` is over: no more records will come.
    Done {
        /// The round.
        id: u64,
        /// Why, when it ended without all its records (`expired`, `cancelled`, `error: ...`,
        /// `not published: ...`).
        incomplete: Option<String>,
    },
    /// Live agents per pool, all pools (a pool missing here has none).
    Agents(BTreeMap<String, u32>),
}

/// The monitor runtime's end of the link.
#[derive(Debug)]
pub struct MonitorLink {
    pub(super) rounds: mpsc::UnboundedSender<RoundRequest>,
    pub(super) events: mpsc::Receiver<RoundEvent>,
}

/// The fleet task's end of the link.
#[derive(Debug)]
pub struct FleetRounds {
    /// Rounds to publish.
    pub rounds: mpsc::UnboundedReceiver<RoundRequest>,
    /// Where records, round ends and agent counts go.
    pub events: mpsc::Sender<RoundEvent>,
}

/// A link between the monitor runtime and the fleet task.
pub fn rounds_link() -> (MonitorLink, FleetRounds) {
    let (rounds_tx, rounds_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::channel(EVENTS);
    (
        MonitorLink {
            rounds: rounds_tx,
            events: events_rx,
        },
        FleetRounds {
            rounds: rounds_rx,
            events: events_tx,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::http::Request;
    use porthawk_core::{PortState, ProbeRecord};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::test_support::{test_server, TempDir};

    /// A monitor of one port from pools `a` and `b`, judged by `quorum`; its DOWN action
    /// appends a line to `mark`.
    fn config(quorum: &str, mark: &std::path::Path) -> String {
        format!(
            r#"
[[monitor]]
name = "mx"
targets = ["127.0.0.1"]
ports = "25"
interval = "200ms"
timeout = "100ms"
fail_after = 2
recover_after = 1
from = ["a", "b"]
quorum = "{quorum}"
on_down = ["mark"]
group_wait = "0s"

[action.mark]
exec = ["sh", "-c", "echo ran >> '{}'"]
cooldown = "0s"
max_per_hour = 100

[fleet]
nats = "nats://127.0.0.1:4222"
pools = ["a", "b"]
"#,
            mark.display()
        )
    }

    /// Plays the fleet task: answers every round with one record per target-port of its
    /// spec, open from pool `a`, filtered (port dropped on the path) from pool `b`; checks
    /// that each round is well formed and names a pool of the monitor.
    async fn play_fleet(mut fleet: FleetRounds, agents: BTreeMap<String, u32>) {
        let _ = fleet.events.send(RoundEvent::Agents(agents)).await;
        while let Some(r) = fleet.rounds.recv().await {
            assert!(r.pool == "a" || r.pool == "b", "{r:?}");
            assert_eq!(r.monitor, "mx");
            assert!(r.deadline_ms > 0);
            let space = r.spec.space().unwrap();
            assert_eq!(space.len(), 1);
            let records: Vec<ProbeRecord> = (0..space.len())
                .filter_map(|i| space.get(i))
                .map(|a| {
                    let state = if r.pool == "a" {
                        PortState::Open
                    } else {
                        PortState::Filtered
                    };
                    ProbeRecord::new(a.ip(), a.port(), state, 10, 1)
                })
                .collect();
            let agent = format!("{}-1", r.pool);
            let sent = fleet
                .events
                .send(RoundEvent::Records {
                    id: r.id,
                    pool: r.pool,
                    agent,
                    records,
                })
                .await;
            let done = fleet
                .events
                .send(RoundEvent::Done {
                    id: r.id,
                    incomplete: None,
                })
                .await;
            if sent.is_err() || done.is_err() {
                return;
            }
        }
    }

    async fn monitor(app: &axum::Router) -> Value {
        let req = Request::get("/v1/monitors/mx").body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Waits (at most 15 s) until the monitor's state is `want`.
    async fn wait_state(app: &axum::Router, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = monitor(app).await;
            if v["state"] == want {
                return v;
            }
            assert!(Instant::now() < deadline, "never {want}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The API document describes what the monitor routes now say about vantage points.
    #[test]
    fn openapi_documents_the_vantages() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for s in ["VantageView", "TargetVantageView"] {
            assert!(
                schemas[s]["properties"]["state"].is_object(),
                "{s}: {schemas}"
            );
        }
        let summary = &schemas["MonitorSummary"]["properties"];
        assert!(summary["vantages"].is_object() && summary["quorum"].is_object());
        assert!(schemas["TargetView"]["properties"]["partial"].is_object());
        assert!(schemas["MonitorCounts"]["properties"]["partial"].is_object());
    }

    fn agents(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    /// Quorum "all": the port is seen DOWN from pool b only. The monitor is `partial`, the
    /// API says what each vantage sees, and the DOWN action never runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_rounds_judged_by_quorum_all_are_partial_without_action() {
        let marks = TempDir::new("vantage-all-mark");
        let mark = marks.path().join("mark");
        let text = config("all", &mark);
        let (server, _dir) = test_server("vantage-all", |c| {
            c.watch = std::sync::Arc::new(crate::monitor::config::parse("t.toml", &text).unwrap());
        });
        let (link, fleet) = rounds_link();
        server.state().0.watch.attach_fleet(link);
        tokio::spawn(play_fleet(fleet, agents(&[("a", 1), ("b", 2)])));
        let app = crate::app(server.state());
        let v = wait_state(&app, "partial").await;
        assert_eq!(v["quorum"], "all");
        let vantages = v["vantages"].as_array().unwrap();
        assert_eq!(vantages[0]["name"], "a");
        assert_eq!(vantages[0]["state"], "up");
        assert_eq!(vantages[0]["agents"], 1);
        assert_eq!(vantages[1]["name"], "b");
        assert_eq!(vantages[1]["state"], "down");
        assert_eq!(vantages[1]["agents"], 2);
        let t = &v["target_list"][0];
        assert_eq!(
            (t["state"].as_str(), t["partial"].as_bool()),
            (Some("up"), Some(true))
        );
        assert_eq!(t["vantages"][1]["state"], "down");
        // More rounds, still partial, and the action has not run.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(monitor(&app).await["state"], "partial");
        assert!(!mark.exists(), "a partial outage ran the DOWN action");
        server.shutdown();
    }

    /// Quorum "any": the same view from pool b is the monitor's DOWN, and the action runs;
    /// then pool b loses its agents and shows `no-agents`, while the DOWN verdict holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_rounds_judged_by_quorum_any_are_down_and_run_the_action() {
        let marks = TempDir::new("vantage-any-mark");
        let mark = marks.path().join("mark");
        let text = config("any", &mark);
        let (server, _dir) = test_server("vantage-any", |c| {
            c.watch = std::sync::Arc::new(crate::monitor::config::parse("t.toml", &text).unwrap());
        });
        let (link, fleet) = rounds_link();
        server.state().0.watch.attach_fleet(link);
        let (agents_tx, mut agents_rx) = mpsc::channel::<BTreeMap<String, u32>>(4);
        let events = fleet.events.clone();
        tokio::spawn(play_fleet(fleet, agents(&[("a", 1), ("b", 1)])));
        tokio::spawn(async move {
            while let Some(a) = agents_rx.recv().await {
                let _ = events.send(RoundEvent::Agents(a)).await;
            }
        });
        let app = crate::app(server.state());
        let v = wait_state(&app, "down").await;
        let reason = v["target_list"][0]["last"]["reason"].as_str().unwrap_or("");
        assert!(reason.starts_with("from "), "{v}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !std::fs::read_to_string(&mark).is_ok_and(|t| t.contains("ran")) {
            assert!(Instant::now() < deadline, "the DOWN action never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agents_tx.send(agents(&[("a", 1)])).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = monitor(&app).await;
            if v["vantages"][1]["state"] == "no-agents" {
                assert_eq!(v["vantages"][1]["agents"], 0);
                assert_eq!(v["state"], "down", "no agents is no recovery: {v}");
                break;
            }
            assert!(Instant::now() < deadline, "b never no-agents: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.shutdown();
    }
}
