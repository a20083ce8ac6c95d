//! `porthawk.toml` and the settings of a server: where it listens, its token, what API sweeps
//! may reach, and its limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// How the HTTP server treats connections and requests it does not trust.
    pub http: HttpGuard,
    /// Which ended sweeps are kept (`[api] keep_sweeps`, `keep_sweeps_for`); the rest are
    /// deleted with their results by the periodic pruning.
    pub sweep_retention: porthawk_store::SweepRetention,
}

/// The routes that stay open without the token when one is set, unless `[api] public` says
/// otherwise.
pub const DEFAULT_PUBLIC: [&str; 2] = ["/healthz", "/metrics"];

/// The routes `[api] public` may open: none of them shows action output, argv or results.
pub const PUBLIC_CHOICES: [&str; 4] = ["/healthz", "/metrics", "/v1/openapi.json", "/"];

/// The HTTP server's defences against slow, hostile or cross-site clients (`[api]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGuard {
    /// The most client connections held open at once; `None` derives it from
    /// `RLIMIT_NOFILE` and the engine's in-flight probes ([`HttpGuard::connection_cap`]).
    pub max_connections: Option<usize>,
    /// How long a connection may take to send a whole request head, counted from its accept
    /// or from the end of its previous response (so it also ends idle kept-alive connections).
    pub header_timeout: Duration,
    /// How long the server waits for a whole request body once its head has arrived; a
    /// client that stalls mid-body gets 408.
    pub idle_timeout: Duration,
    /// Host names, besides the listen address and loopback names, that `Host` may carry.
    pub hosts: Vec<String>,
    /// Routes open without the token when one is set.
    pub public: Vec<String>,
}

impl Default for HttpGuard {
    fn default() -> Self {
        HttpGuard {
            max_connections: None,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            hosts: Vec::new(),
            public: DEFAULT_PUBLIC.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Descriptors kept back for probes, the store and the rest of the process whatever the
/// connection cap.
const FD_RESERVE: u64 = 128;

impl HttpGuard {
    /// The connection cap for a process with descriptor limit `nofile` whose engine keeps up
    /// to `inflight` probes in flight: the configured value, or half of what the probes and a
    /// reserve leave, from 8 to 1024, so that clients can never take the descriptors probes
    /// need (with the engine's default in-flight, 64 whatever the limit).
    pub fn connection_cap(&self, nofile: u64, inflight: usize) -> usize {
        if let Some(n) = self.max_connections {
            return n.max(1);
        }
        let left = nofile
            .saturating_sub(inflight as u64)
            .saturating_sub(FD_RESERVE);
        (left / 2).clamp(8, 1024) as usize
    }
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
            http: HttpGuard::default(),
            sweep_retention: porthawk_store::SweepRetention::default(),
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
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    hosts: Option<Vec<String>>,
    public: Option<Vec<String>>,
    keep_sweeps: Option<u64>,
    keep_sweeps_for: Option<String>,
}

/// The `[api]` settings of [`HttpGuard`], as written.
struct GuardSection {
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    hosts: Option<Vec<String>>,
    public: Option<Vec<String>>,
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
        self.apply_retention(api.keep_sweeps, api.keep_sweeps_for.as_deref())?;
        self.apply_guard(GuardSection {
            max_connections: api.max_connections,
            header_timeout: api.header_timeout,
            idle_timeout: api.idle_timeout,
            hosts: api.hosts,
            public: api.public,
        })
    }

    fn apply_retention(&mut self, count: Option<u64>, age: Option<&str>) -> Result<(), String> {
        if let Some(n) = count {
            if n == 0 {
                return Err("[api] keep_sweeps: must be at least 1".into());
            }
            self.sweep_retention.count = n;
        }
        if let Some(text) = age {
            let d = porthawk_core::parse_duration(text)
                .map_err(|e| format!("[api] keep_sweeps_for: {e}"))?;
            if d.is_zero() {
                return Err("[api] keep_sweeps_for: must be more than 0s".into());
            }
            self.sweep_retention.max_age = d;
        }
        Ok(())
    }

    fn apply_guard(&mut self, g: GuardSection) -> Result<(), String> {
        if let Some(n) = g.max_connections {
            if n == 0 {
                return Err("[api] max_connections: must be at least 1".into());
            }
            self.http.max_connections = Some(n);
        }
        let timeout = |key: &str, text: &str| {
            let d = porthawk_core::parse_duration(text).map_err(|e| format!("[api] {key}: {e}"))?;
            if d.is_zero() {
                return Err(format!("[api] {key}: must be more than 0s"));
            }
            Ok(d)
        };
        if let Some(t) = g.header_timeout {
            self.http.header_timeout = timeout("header_timeout", &t)?;
        }
        if let Some(t) = g.idle_timeout {
            self.http.idle_timeout = timeout("idle_timeout", &t)?;
        }
        if let Some(hosts) = g.hosts {
            for (i, h) in hosts.iter().enumerate() {
                let ok = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
                if !ok {
                    return Err(format!(
                        "[api] hosts[{i}]: '{h}' is not a host name or address"
                    ));
                }
            }
            self.http.hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        }
        if let Some(public) = g.public {
            for (i, p) in public.iter().enumerate() {
                if !PUBLIC_CHOICES.contains(&p.as_str()) {
                    return Err(format!(
                        "[api] public[{i}]: '{p}' cannot be opened; public routes are chosen from {}",
                        PUBLIC_CHOICES.join(", ")
                    ));
                }
            }
            self.http.public = public;
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
            _ if e.contains('/') => parse_block(e).map_err(|m| format!("[api] allow[{i}]: {m}")),
            Ok(TargetToken::Range(r)) => Ok(r),
            Ok(TargetToken::Host(_)) => Err(format!(
                "[api] allow[{i}]: '{e}' is a host name; the allow-list takes addresses, blocks and ranges"
            )),
            Err(err) => Err(format!("[api] allow[{i}]: {err}")),
        })
        .collect()
}

/// An `address/prefix` block of any size: unlike sweep targets (which cap the size of a
/// block), an allow-list entry may name a whole `fd00::/8`.
fn parse_block(text: &str) -> Result<AddrRange, String> {
    let t = text.trim();
    let (addr, prefix) = t
        .split_once('/')
        .ok_or_else(|| format!("'{t}' is not an address/prefix block"))?;
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{t}': '{addr}' is not an IP address"))?;
    let (max, n) = match ip {
        IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128u32, u128::from(a)),
    };
    let bits: u32 = prefix
        .parse()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| format!("'{t}': the prefix must be a number from 0 to {max}"))?;
    let host_bits = max - bits;
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let (first, last) = (n & !mask, (n & !mask) | mask);
    let join = |v: u128| match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    };
    AddrRange::new(join(first), join(last)).ok_or_else(|| format!("'{t}' is not a block"))
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
    fn sweep_retention_has_defaults_and_is_read_from_api() {
        let mut c = ServerConfig::default();
        c.apply_toml("").unwrap();
        assert_eq!(c.sweep_retention.count, 1000);
        assert_eq!(c.sweep_retention.max_age, Duration::from_secs(30 * 86_400));
        c.apply_toml("[api]\nkeep_sweeps = 50\nkeep_sweeps_for = \"7d\"\n")
            .unwrap();
        assert_eq!(c.sweep_retention.count, 50);
        assert_eq!(c.sweep_retention.max_age, Duration::from_secs(7 * 86_400));
        let err = c.apply_toml("[api]\nkeep_sweeps = 0\n").unwrap_err();
        assert!(err.contains("keep_sweeps"), "{err}");
        let err = c
            .apply_toml("[api]\nkeep_sweeps_for = \"soon\"\n")
            .unwrap_err();
        assert!(err.contains("keep_sweeps_for"), "{err}");
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
    fn allow_takes_ipv6_blocks_of_any_size() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            "[api]\nallow = [\"fd00::/8\", \"::1/128\", \"2001:db8::/32\", \"10.0.0.0/8\", \"0.0.0.0/0\", \"::/0\"]\n",
        )
        .unwrap();
        let has = |i: usize, ip: &str| c.allow[i].contains(ip.parse().unwrap());
        assert!(has(0, "fd00::1") && has(0, "fdff:ffff::1") && !has(0, "fe00::1"));
        assert!(has(1, "::1") && !has(1, "::2"));
        assert!(has(2, "2001:db8:ffff::9") && !has(2, "2001:db9::1"));
        assert!(has(3, "10.255.0.1") && !has(3, "11.0.0.1"));
        assert!(has(4, "255.255.255.255") && has(5, "ffff::1"));
        for bad in ["fd00::/129", "10.0.0.0/33", "fd00::/x", "nothost/8"] {
            let err = c
                .apply_toml(&format!("[api]\nallow = [\"{bad}\"]\n"))
                .unwrap_err();
            assert!(err.contains("allow[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn guard_settings_are_read_and_checked() {
        let mut c = ServerConfig::default();
        assert_eq!(c.http.public, DEFAULT_PUBLIC);
        c.apply_toml(
            "[api]\nmax_connections = 5\nheader_timeout = \"2s\"\nidle_timeout = \"1m\"\n\
             hosts = [\"Porthawk.LAN\"]\npublic = [\"/healthz\"]\n",
        )
        .unwrap();
        assert_eq!(c.http.max_connections, Some(5));
        assert_eq!(c.http.header_timeout, Duration::from_secs(2));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.hosts, ["porthawk.lan"]);
        assert_eq!(c.http.public, ["/healthz"]);
        for (bad, key) in [
            ("max_connections = 0", "max_connections"),
            ("header_timeout = \"0s\"", "header_timeout"),
            ("idle_timeout = \"soon\"", "idle_timeout"),
            ("hosts = [\"a b\"]", "hosts[0]"),
            ("public = [\"/v1/monitors\"]", "public[0]"),
        ] {
            let err = c.apply_toml(&format!("[api]\n{bad}\n")).unwrap_err();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn connection_cap_leaves_descriptors_for_probes() {
        let g = HttpGuard::default();
        assert_eq!(g.connection_cap(1024, 768), 64);
        assert_eq!(g.connection_cap(1024, 64), 416);
        assert_eq!(g.connection_cap(20_000, 19_744), 64);
        assert_eq!(g.connection_cap(1 << 20, 65_472), 1024);
        assert_eq!(g.connection_cap(256, 4096), 8);
        let g = HttpGuard {
            max_connections: Some(3),
            ..HttpGuard::default()
        };
        assert_eq!(g.connection_cap(1024, 768), 3);
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
