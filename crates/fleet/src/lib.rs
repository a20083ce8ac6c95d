//! Fleet mode: `porthawk agent` processes on other machines take slices of sweeps from NATS
//! JetStream, run them on their own engine and publish the result frames back; the coordinator
//! (`porthawk serve` with `[fleet]`) publishes the slices and ingests the frames exactly once.
//! The design and the facts about nats-server 2.9 it rests on are in `docs/fleet.md`.

pub mod coord;
