//! `porthawk.toml` and the settings of a server: where it listens, its token, what API sweeps
//! may reach, and its limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use porthawk_core::{parse_target, AddrRange, TargetToken};
use serde::Deserialize;

use crate::error::ServerError;

/// Where a server listens when nothing says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);

/// The environment variable that holds the API token.
pub const TOKEN_ENV: &str = "PORTHAWK_API_TOKEN";

/// Limits on what one request may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The most probes (addresses × ports) one sweep may hold.
    pub max_sweep_probes: u64,
    /// The most sweeps running at once.
    pub max_concurrent_sweeps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_sweep_probes: 1 << 32,
            max_concurrent_sweeps: 8,
        }
    }
}

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address the HTTP API listens on.
    pub listen: SocketAddr,
    /// The bearer token mutating routes require; `None` means no token (loopback only).
    pub token: Option<String>,
    /// The address ranges API sweeps may reach.
    pub allow: Vec<AddrRange>,
    /// The directory of the store.
    pub data_dir: PathBuf,
    /// Request limits.
    pub limits: Limits,
    /// How the engine runs.
    pub engine: porthawk_engine::EngineConfig,
    /// The monitors, actions and notifications.
    pub watch: std::sync::Arc<crate::monitor::WatchConfig>,
    /// The config file, reloaded on SIGHUP or when it changes.
    pub config_path: Option<PathBuf>,
    /// Log what actions would run instead of running them.
    pub dry_run: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            token: None,
            allow: default_allow(),
            data_dir: PathBuf::from("porthawk-data"),
            limits: Limits::default(),
            engine: porthawk_engine::EngineConfig::default(),
            watch: Default::default(),
            config_path: None,
            dry_run: false,
        }
    }
}

/// Loopback only: `127.0.0.0/8` and `::1`.
pub fn default_allow() -> Vec<AddrRange> {
    let v4 = AddrRange::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255)),
    );
    v4.into_iter()
        .chain([AddrRange::single(IpAddr::V6(Ipv6Addr::LOCALHOST))])
        .collect()
}

/// The file as written. Monitors, actions and notifications belong to a later version of the
/// server: their tables are accepted and ignored so that one file serves both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    api: ApiSection,
    #[serde(default, rename = "monitor")]
    _monitor: Option<toml::Value>,
    #[serde(default, rename = "action")]
    _action: Option<toml::Value>,
    #[serde(default, rename = "notify")]
    _notify: Option<toml::Value>,
    #[serde(default, rename = "allow_reboot")]
    _allow_reboot: Option<toml::Value>,
    #[serde(default, rename = "retention")]
    _retention: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: Option<String>,
    token: Option<String>,
    allow: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    max_sweep_probes: Option<u64>,
    max_concurrent_sweeps: Option<usize>,
}

impl ServerConfig {
    /// The defaults, overridden by the file at `path` (if any), then by `env_token` (the value
    /// of [`TOKEN_ENV`], if set).
    pub fn load(path: Option<&Path>, env_token: Option<String>) -> Result<Self, ServerError> {
        let mut config = ServerConfig::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| ServerError::ConfigFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            // The monitors first: their errors name the file, line and field.
            let watch = crate::monitor::config::parse(&path.display().to_string(), &text)
                .map_err(|e| ServerError::Config(e.to_string()))?;
            config.watch = std::sync::Arc::new(watch);
            config.config_path = Some(path.to_path_buf());
            config
                .apply_toml(&text)
                .map_err(|message| ServerError::ConfigFile {
                    path: path.to_path_buf(),
                    message,
                })?;
        }
        if let Some(token) = env_token {
            if token.trim().is_empty() {
                return Err(ServerError::Config(format!("{TOKEN_ENV} is set but empty")));
            }
            config.token = Some(token);
        }
        Ok(config)
    }

    /// Applies the settings of a `porthawk.toml` text; the error names the line and the field.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        // toml's message already says "TOML parse error at line L, column C" and names the
        // unknown or mistyped field; keep it on one line.
        let file: ConfigFile = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        let api = file.api;
        if let Some(listen) = api.listen {
            self.listen = listen.parse().map_err(|_| {
                format!("[api] listen: '{listen}' is not an address and port like 127.0.0.1:9180")
            })?;
        }
        if let Some(token) = api.token {
            if token.trim().is_empty() {
                return Err("[api] token: must not be empty".into());
            }
            self.token = Some(token);
        }
        if let Some(allow) = api.allow {
            self.allow = parse_allow(&allow)?;
        }
        if let Some(n) = api.max_body_bytes {
            self.limits.max_body_bytes = n;
        }
        if let Some(n) = api.max_sweep_probes {
            self.limits.max_sweep_probes = n;
        }
        if let Some(n) = api.max_concurrent_sweeps {
            self.limits.max_concurrent_sweeps = n;
        }
        Ok(())
    }

    /// Refuses unsafe combinations: without a token, the API may only listen on loopback.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "refusing to listen on {} without an API token: set [api] token in the config \
                 or {TOKEN_ENV}, or listen on a loopback address",
                self.listen
            )));
        }
        Ok(())
    }
}

fn parse_allow(entries: &[String]) -> Result<Vec<AddrRange>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match parse_target(e) {
            Ok(TargetToken::Range(r)) => Ok(r),
            Ok(TargetToken::Host(_)) => Err(format!(
                "[api] allow[{i}]: '{e}' is a host name; the allow-list takes addresses, blocks and ranges"
            )),
            Err(err) => Err(format!("[api] allow[{i}]: {err}")),
        })
        .collect()
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|" && !l.starts_with("| "))
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_keeps_the_defaults() {
        let mut c = ServerConfig::default();
        c.apply_toml("").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(c.token.is_none());
        assert_eq!(c.allow, default_allow());
    }

    #[test]
    fn api_section_and_monitor_tables_are_read() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            r#"
[api]
listen = "127.0.0.1:1234"
token = "s3cret"
allow = ["127.0.0.0/8", "10.1.0.0/28"]
max_concurrent_sweeps = 2

[[monitor]]
name = "mail"
ports = "25"

[action.restart]
exec = ["true"]

[notify.hook]
webhook = { url = "http://127.0.0.1:1/" }
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.limits.max_concurrent_sweeps, 2);
    }

    #[test]
    fn unknown_api_key_is_named_with_its_line() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_toml("[api]\nlisten = \"127.0.0.1:1\"\ntokn = \"x\"\n")
            .unwrap_err();
        assert!(err.contains("tokn"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_top_level_table_is_rejected() {
        let mut c = ServerConfig::default();
        let err = c.apply_toml("[apii]\nx = 1\n").unwrap_err();
        assert!(err.contains("apii"), "{err}");
    }

    #[test]
    fn bad_allow_entry_is_named() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_toml("[api]\nallow = [\"10.0.0.0/99\"]\n")
            .unwrap_err();
        assert!(err.contains("allow[0]"), "{err}");
    }

    #[test]
    fn no_token_means_loopback_only() {
        let mut c = ServerConfig {
            listen: "0.0.0.0:9180".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        c.token = Some("t".into());
        assert!(c.validate().is_ok());
        let c = ServerConfig::default();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn env_token_overrides_the_file() {
        let c = ServerConfig::load(None, Some("from-env".into())).unwrap();
        assert_eq!(c.token.as_deref(), Some("from-env"));
        assert!(ServerConfig::load(None, Some(" ".into())).is_err());
    }
}
