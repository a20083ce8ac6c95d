//! The monitors' sans-IO core: what `porthawk serve` watches and how it judges, as plain code
//! driven by its caller.
//!
//! - [`config`]: `porthawk.toml` as one type ([`config::ConfigFile`], every section
//!   `deny_unknown_fields`), and its `[[monitor]]`, `[action.NAME]` and `[notify.NAME]` tables
//!   read into the typed model ([`WatchConfig`], [`config::MonitorSpec`], [`config::ActionSpec`],
//!   [`config::NotifySpec`]), with errors that name the file, line and field. Host names are
//!   resolved by a function the caller passes.
//! - [`state`]: the state machine of one target-port ([`Tracker`]).
//! - [`watch`]: [`Watch`], every monitor's schedule, incidents and policies (cooldowns,
//!   `max_per_hour`, escalation, grouping, reminders, silences), fed `now_ms` in every call.
//!
//! Architecture invariant: nothing here reads the clock, touches a socket or a file, spawns a
//! thread or depends on tokio, axum or rusqlite. The server's monitor runtime submits the
//! [`watch::Check`]s as engine jobs, feeds the results back, and carries out the
//! [`watch::Effect`]s; the tests drive the same code with a fake clock.

pub mod config;
pub mod fuzzing;
pub mod state;
pub mod watch;

pub use config::{ConfigError, WatchConfig};
pub use state::{Health, Tracker};
pub use watch::Watch;
