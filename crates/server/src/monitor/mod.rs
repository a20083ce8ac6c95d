//! Monitors: scheduled checks of target-ports, UP/DOWN state with thresholds and flap
//! detection, automatic actions, notifications, history, the status page and config reload.
//!
//! The sans-IO core lives in the `porthawk-watch` crate, re-exported here as `state` and
//! `watch`; this module is its runtime and its I/O:
//!
//! - `config`: the watch's config model, read from a file with host names resolved by the
//!   system (on a blocking thread when the runtime reloads it).
//! - `runtime`: the thread that drives the watch: jobs to the engine with a result sink of
//!   their own, actions, notifications, history, reload on SIGHUP or a changed file.
//! - `handle`: [`WatchHandle`], how the API talks to the runtime.
//! - `rounds`: the link to the fleet task, for monitors that probe from fleet pools;
//!   `fleet_rounds`: its fleet end over fleet mode's state.
//! - `actions`, `notify`: running commands and delivering email and webhooks; `remote`:
//!   actions run by a fleet agent (`agent = ..., run = ...`).
//! - `history`: the history records, as `porthawk-store` keeps them.
//! - `api`, `view`, `page`: the monitor routes, the views they and the status page share,
//!   and the status page.
//! - `metrics`: `porthawk_monitor_*`.

pub(crate) mod actions;
pub(crate) mod api;
pub mod config;
pub(crate) mod fleet_rounds;
pub(crate) mod handle;
pub(crate) mod history;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod page;
pub(crate) mod remote;
pub mod rounds;
pub(crate) mod runtime;
pub(crate) mod view;
pub use porthawk_watch::{state, watch};

pub use config::{ConfigError, WatchConfig};
pub use handle::{WatchHandle, WatchOptions};
pub use state::{Health, Tracker};
pub use watch::Watch;
