//! The monitoring config as the server reads it: the one `porthawk.toml` type, parsed by
//! `porthawk-watch` into its typed model (host names among the targets are resolved by the
//! runtime at every check).
//!
//! `load` blocks (file): call it before the async runtime starts or on a blocking thread.

use std::path::Path;

pub use porthawk_watch::config::*;

/// Reads and checks the file at `path` as at start (the whole file, `[api]` included); its
/// monitoring part.
pub fn load(path: &Path) -> Result<WatchConfig, ConfigError> {
    crate::config::reload_watch(path)
}

/// Parses and validates the monitoring part of a `porthawk.toml` text; `file` names it in
/// errors.
pub fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
    porthawk_watch::config::parse(file, text)
}
