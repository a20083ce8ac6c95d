//! The monitoring config as the server reads it: the file, parsed by `porthawk-watch` into
//! its typed model, with host names resolved by the system's resolver.
//!
//! Both functions block (file, DNS): call them before the async runtime starts or on a
//! blocking thread.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

pub use porthawk_watch::config::*;

/// Reads and validates the monitoring part of the file at `path`.
pub fn load(path: &Path) -> Result<WatchConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        field: "(file)".into(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses and validates the monitoring part of a `porthawk.toml` text, resolving host names
/// with the system's resolver; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
    porthawk_watch::config::parse(file, text, &resolve)
}

/// The addresses of `host`, from the system's resolver.
fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let addrs = (host, 0).to_socket_addrs().map_err(|e| e.to_string())?;
    Ok(addrs.map(|a| a.ip()).collect())
}
