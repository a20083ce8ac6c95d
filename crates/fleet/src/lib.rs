//! Fleet mode: `porthawk agent` processes on other machines take slices of sweeps from NATS
//! JetStream, run them on their own engine and publish the result frames back; the coordinator
//! (`porthawk serve` with `[fleet]`) publishes the slices and ingests the frames exactly once.
//! The design and the facts about nats-server 2.9 it rests on are in `docs/fleet.md`.
//!
//! This crate holds the agent ([`agent::run`]), the connection set-up both sides share
//! ([`conn::ConnConfig`]) the nkey users of `porthawk fleet add-agent` ([`addagent`]), and
//! the coordinator's NATS interface ([`coord::Coord`]).
//! The wire types and names are in `porthawk_core` (`fleet.rs`), sans-IO.

pub mod addagent;
pub mod agent;
pub mod conn;
pub mod coord;
pub mod remedy;
mod slice;
