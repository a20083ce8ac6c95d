//! The fleet task's end of the monitors' rounds link (`rounds`) in `porthawk serve` with
//! `[fleet]`: over [`FleetState`]'s `publish_round`, the `MonitorRound`s of `take_rounds`,
//! and the live agents of `agent_list`. Its own module so that the link's types (which the
//! watch handle and the shared state know) do not depend on the fleet task.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::rounds::{rounds_link, FleetRounds, MonitorLink, RoundEvent};
use crate::fleet::FleetState;

/// The monitor runtime's link over fleet mode's [`FleetState`]: spawns [`serve_rounds`] on
/// the current tokio runtime. `None` when the rounds' records were already taken.
pub(crate) fn connect(fleet: Arc<FleetState>) -> Option<MonitorLink> {
    let records = fleet.take_rounds()?;
    let (link, side) = rounds_link();
    tokio::spawn(serve_rounds(fleet, records, side));
    Some(link)
}

/// The fleet task's end of the link over [`FleetState`]: publishes each round to its pool
/// (job `m<id>`, slice 0), forwards the records of each round (a round's last frame ends
/// it), and the live agents of each pool (only agents of `[fleet] agents`: the others'
/// results are refused) at start and whenever they change (the fleet task says so: no
/// timer). Ends when the runtime's end is gone.
async fn serve_rounds(
    fleet: Arc<FleetState>,
    mut records: mpsc::Receiver<crate::fleet::MonitorRound>,
    mut side: FleetRounds,
) {
    let mut changed = fleet.agents_changed.subscribe();
    changed.mark_changed();
    let mut watching = true;
    let mut last: Option<BTreeMap<String, u32>> = None;
    loop {
        tokio::select! {
            r = side.rounds.recv() => {
                let Some(r) = r else { return };
                let (fleet, events) = (Arc::clone(&fleet), side.events.clone());
                tokio::spawn(async move {
                    let id = r.id;
                    let published = fleet
                        .publish_round(&r.pool, r.id, 0, r.spec, r.deadline_ms)
                        .await;
                    if let Err(e) = published {
                        tracing::warn!(monitor = %r.monitor, pool = %r.pool, error = %e,
                            "a monitor round could not be published");
                        let incomplete = Some(format!("not published: {e}"));
                        let _ = events.send(RoundEvent::Done { id, incomplete }).await;
                    }
                });
            }
            m = records.recv() => {
                let Some(m) = m else { return };
                let (id, last_frame) = (m.monitor, m.last);
                let event = RoundEvent::Records {
                    id,
                    pool: m.pool,
                    agent: m.agent,
                    records: m.records,
                };
                if side.events.send(event).await.is_err() {
                    return;
                }
                if last_frame {
                    let done = RoundEvent::Done { id, incomplete: None };
                    if side.events.send(done).await.is_err() {
                        return;
                    }
                }
            }
            r = changed.changed(), if watching => {
                if r.is_err() {
                    // The fleet state is gone: nothing will change any more.
                    watching = false;
                    continue;
                }
                let list = fleet.agent_list();
                let mut live = BTreeMap::new();
                if list.connected {
                    for a in list.agents.iter().filter(|a| a.known) {
                        for p in &a.pools {
                            *live.entry(p.clone()).or_insert(0u32) += 1;
                        }
                    }
                }
                if last.as_ref() != Some(&live) {
                    last = Some(live.clone());
                    if side.events.send(RoundEvent::Agents(live)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
