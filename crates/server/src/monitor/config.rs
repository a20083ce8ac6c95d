//! The monitoring config as the server reads it: the one `porthawk.toml` type, parsed by
//! `porthawk-watch` into its typed model, with host names resolved by the system's resolver.
//!
//! Both functions block (file, DNS): call them before the async runtime starts or on a
//! blocking thread.

use std::path::Path;

pub use porthawk_watch::config::*;

/// Reads and checks the file at `path` as at start (the whole file, `[api]` included); its
/// monitoring part.
pub fn load(path: &Path) -> Result<WatchConfig, ConfigError> {
    crate::config::reload_watch(path)
}

/// Parses and validates the monitoring part of a `porthawk.toml` text, resolving host names
/// with the system's resolver; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
    porthawk_watch::config::parse(file, text, &crate::config::resolve)
}
