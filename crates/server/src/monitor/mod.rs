//! Monitors: scheduled checks of target-ports, UP/DOWN state with thresholds and flap
//! detection, automatic actions, notifications, history, the status page and config reload.
//!
//! - `config`: the `[[monitor]]`, `[action.NAME]` and `[notify.NAME]` tables, validated with
//!   errors that name the file, line and field.
//! - `state`: the state machine of one target-port ([`Tracker`]).
//! - `watch`: [`Watch`], every monitor's schedule, incidents and policies (cooldowns,
//!   `max_per_hour`, escalation, grouping, reminders, silences) as plain code fed a clock.
//! - `runtime`: the thread that drives the watch: jobs to the engine, results from the
//!   aggregator, actions, notifications, history, reload on SIGHUP or a changed file.
//! - `actions`, `notify`: running commands and delivering email and webhooks.
//! - `history`: the monitor tables of the store.
//! - `api`, `page`: the monitor routes and the status page.
//! - `metrics`: `porthawk_monitor_*`.

pub(crate) mod actions;
pub(crate) mod api;
pub mod config;
pub(crate) mod history;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod page;
pub(crate) mod runtime;
pub mod state;
pub mod watch;

pub use config::{ConfigError, WatchConfig};
pub use runtime::{WatchHandle, WatchOptions};
pub use state::{Health, Tracker};
pub use watch::Watch;
