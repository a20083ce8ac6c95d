//! `porthawk.toml` and the settings of a server: where it listens, its token, what API sweeps
//! may reach, and its limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use porthawk_core::{parse_target, AddrRange, TargetToken};
use porthawk_watch::config::{parse_file, span_error, ApiSection, ConfigError, WatchConfig};
use toml::Spanned;

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
    pub watch: std::sync::Arc<WatchConfig>,
    /// The config file, reloaded on SIGHUP or when it changes.
    pub config_path: Option<PathBuf>,
    /// Log what actions would run instead of running them.
    pub dry_run: bool,
    /// How the HTTP server treats connections and requests it does not trust.
    pub http: HttpGuard,
    /// Which ended sweeps are kept (`[api] keep_sweeps`, `keep_sweeps_for`); the rest are
    /// deleted with their results by the periodic pruning.
    pub sweep_retention: porthawk_store::SweepRetention,
    /// The modules of `serve --blackbox-config` for `/probe`.
    pub blackbox: std::sync::Arc<crate::blackbox::BlackboxModules>,
    /// Fleet mode (`[fleet]`): the NATS server, its credentials, the known agents and pools.
    pub fleet: Option<porthawk_watch::config::FleetConfig>,
}

/// The routes that stay open without the token when one is set, unless `[api] public` says
/// otherwise.
pub const DEFAULT_PUBLIC: [&str; 2] = ["/healthz", "/metrics"];

/// The routes `[api] public` may open: none of them shows action output, argv or results.
pub const PUBLIC_CHOICES: [&str; 5] = ["/healthz", "/metrics", "/v1/openapi.json", "/", "/probe"];

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
            blackbox: Default::default(),
            fleet: None,
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

impl ServerConfig {
    /// The defaults, overridden by the file at `path` (if any), then by `env_token` (the value
    /// of [`TOKEN_ENV`], if set). The file is read once, as the one `porthawk.toml` type.
    pub fn load(path: Option<&Path>, env_token: Option<String>) -> Result<Self, ServerError> {
        let mut config = ServerConfig::default();
        if let Some(path) = path {
            let (file, text) = read_file(path)?;
            config.apply_toml(&file, &text)?;
            config.config_path = Some(path.to_path_buf());
        }
        if let Some(token) = env_token {
            if token.trim().is_empty() {
                return Err(ServerError::Config(format!("{TOKEN_ENV} is set but empty")));
            }
            config.token = Some(token);
        }
        Ok(config)
    }

    /// Applies a `porthawk.toml` text (`file` names it in errors): parsed once as the one
    /// `porthawk_watch::config::ConfigFile` type, its `[api]` into these settings and its monitors, actions and
    /// notifications into [`ServerConfig::watch`] (host names are resolved by the monitors at each check). An
    /// error says `file:line: field: message`.
    pub fn apply_toml(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        let parsed = parse_file(file, text)?;
        let watch = WatchConfig::from_file(file, text, &parsed)?;
        if let Some(api) = &parsed.api {
            ApiChecks { file, text }.apply(self, api)?;
        }
        if let Some(fleet) = &parsed.fleet {
            self.fleet = Some(fleet.get_ref().check(file, text, fleet.span())?);
        }
        self.watch = std::sync::Arc::new(watch);
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

/// Reads the config file at `path`: its name as errors show it, and its text. Blocks.
pub fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(ConfigError {
            file,
            line: 0,
            field: "(file)".into(),
            message: format!("cannot read it: {e}"),
        }),
    }
}

/// Reads the file at `path` again for a reload: the same one type and the same checks as at
/// start (so a reload cannot accept what a start would refuse); its monitors, actions and
/// notifications. Blocks (file, DNS).
pub fn reload_watch(path: &Path) -> Result<WatchConfig, ConfigError> {
    let (file, text) = read_file(path)?;
    let mut config = ServerConfig::default();
    config.apply_toml(&file, &text)?;
    Ok(std::sync::Arc::unwrap_or_clone(config.watch))
}

/// The addresses of `host`, from the system's resolver. Blocks.
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let addrs = (host, 0).to_socket_addrs().map_err(|e| e.to_string())?;
    Ok(addrs.map(|a| a.ip()).collect())
}

/// The checks of `[api]`: each error names `api.KEY` and the line of the value.
struct ApiChecks<'a> {
    file: &'a str,
    text: &'a str,
}

impl ApiChecks<'_> {
    fn err<T>(&self, value: &Spanned<T>, field: &str, message: impl Into<String>) -> ConfigError {
        span_error(self.file, self.text, value.span(), field, message)
    }

    fn apply(&self, c: &mut ServerConfig, api: &ApiSection) -> Result<(), ConfigError> {
        if let Some(listen) = &api.listen {
            c.listen = listen.get_ref().parse().map_err(|_| {
                self.err(
                    listen,
                    "api.listen",
                    format!(
                        "'{}' is not an address and port like 127.0.0.1:9180",
                        listen.get_ref()
                    ),
                )
            })?;
        }
        if let Some(token) = &api.token {
            if token.get_ref().trim().is_empty() {
                return Err(self.err(token, "api.token", "must not be empty"));
            }
            c.token = Some(token.get_ref().clone());
        }
        if let Some(allow) = &api.allow {
            c.allow = allow
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    allow_entry(e.get_ref()).map_err(|m| self.err(e, &format!("api.allow[{i}]"), m))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(n) = api.max_body_bytes {
            c.limits.max_body_bytes = n;
        }
        if let Some(n) = api.max_sweep_probes {
            c.limits.max_sweep_probes = n;
        }
        if let Some(n) = api.max_concurrent_sweeps {
            c.limits.max_concurrent_sweeps = n;
        }
        self.apply_retention(&mut c.sweep_retention, api)?;
        self.apply_guard(&mut c.http, api)
    }

    fn apply_retention(
        &self,
        keep: &mut porthawk_store::SweepRetention,
        api: &ApiSection,
    ) -> Result<(), ConfigError> {
        if let Some(n) = &api.keep_sweeps {
            if *n.get_ref() == 0 {
                return Err(self.err(n, "api.keep_sweeps", "must be at least 1"));
            }
            keep.count = *n.get_ref();
        }
        if let Some(text) = &api.keep_sweeps_for {
            let d = porthawk_core::parse_duration(text.get_ref())
                .map_err(|e| self.err(text, "api.keep_sweeps_for", e))?;
            if d.is_zero() {
                return Err(self.err(text, "api.keep_sweeps_for", "must be more than 0s"));
            }
            keep.max_age = d;
        }
        Ok(())
    }

    fn apply_guard(&self, http: &mut HttpGuard, api: &ApiSection) -> Result<(), ConfigError> {
        if let Some(n) = &api.max_connections {
            if *n.get_ref() == 0 {
                return Err(self.err(n, "api.max_connections", "must be at least 1"));
            }
            http.max_connections = Some(*n.get_ref());
        }
        let timeout = |key: &str, text: &Spanned<String>| {
            let field = format!("api.{key}");
            let d = porthawk_core::parse_duration(text.get_ref())
                .map_err(|e| self.err(text, &field, e))?;
            if d.is_zero() {
                return Err(self.err(text, &field, "must be more than 0s"));
            }
            Ok(d)
        };
        if let Some(t) = &api.header_timeout {
            http.header_timeout = timeout("header_timeout", t)?;
        }
        if let Some(t) = &api.idle_timeout {
            http.idle_timeout = timeout("idle_timeout", t)?;
        }
        if let Some(hosts) = &api.hosts {
            for (i, h) in hosts.iter().enumerate() {
                let name = h.get_ref();
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
                if !ok {
                    return Err(self.err(
                        h,
                        &format!("api.hosts[{i}]"),
                        format!("'{name}' is not a host name or address"),
                    ));
                }
            }
            http.hosts = hosts
                .iter()
                .map(|h| h.get_ref().to_ascii_lowercase())
                .collect();
        }
        if let Some(public) = &api.public {
            for (i, p) in public.iter().enumerate() {
                if !PUBLIC_CHOICES.contains(&p.get_ref().as_str()) {
                    return Err(self.err(
                        p,
                        &format!("api.public[{i}]"),
                        format!(
                            "'{}' cannot be opened; public routes are chosen from {}",
                            p.get_ref(),
                            PUBLIC_CHOICES.join(", ")
                        ),
                    ));
                }
            }
            http.public = public.iter().map(|p| p.get_ref().clone()).collect();
        }
        Ok(())
    }
}

/// One `[api] allow` entry: an address, a range, or a block of any size.
fn allow_entry(e: &str) -> Result<AddrRange, String> {
    match parse_target(e) {
        _ if e.contains('/') => parse_block(e),
        Ok(TargetToken::Range(r)) => Ok(r),
        Ok(TargetToken::Host(_)) => Err(format!(
            "'{e}' is a host name; the allow-list takes addresses, blocks and ranges"
        )),
        Err(err) => Err(err.to_string()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_keeps_the_defaults() {
        let mut c = ServerConfig::default();
        c.apply_toml("porthawk.toml", "").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(c.token.is_none());
        assert_eq!(c.allow, default_allow());
    }

    #[test]
    fn api_section_and_monitor_tables_are_read() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            "porthawk.toml",
            r#"
[api]
listen = "127.0.0.1:1234"
token = "s3cret"
allow = ["127.0.0.0/8", "10.1.0.0/28"]
max_concurrent_sweeps = 2

[[monitor]]
name = "mail"
targets = ["127.0.0.1"]
ports = "25"
on_down = ["restart", "hook"]

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
        // The same parse gave the monitors.
        assert_eq!(c.watch.monitors.len(), 1);
        assert_eq!(c.watch.actions.len(), 1);
        assert_eq!(c.watch.notifiers.len(), 1);
    }

    #[test]
    fn sweep_retention_has_defaults_and_is_read_from_api() {
        let mut c = ServerConfig::default();
        c.apply_toml("porthawk.toml", "").unwrap();
        assert_eq!(c.sweep_retention.count, 1000);
        assert_eq!(c.sweep_retention.max_age, Duration::from_secs(30 * 86_400));
        c.apply_toml(
            "porthawk.toml",
            "[api]\nkeep_sweeps = 50\nkeep_sweeps_for = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(c.sweep_retention.count, 50);
        assert_eq!(c.sweep_retention.max_age, Duration::from_secs(7 * 86_400));
        let err = c
            .apply_toml("porthawk.toml", "[api]\nkeep_sweeps = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("porthawk.toml:2: api.keep_sweeps: "),
            "{err}"
        );
        let err = c
            .apply_toml("porthawk.toml", "[api]\nkeep_sweeps_for = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("porthawk.toml:2: api.keep_sweeps_for: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_api_key_is_named_with_its_line() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_toml(
                "porthawk.toml",
                "[api]\nlisten = \"127.0.0.1:1\"\ntokn = \"x\"\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("porthawk.toml:3: api.tokn: unknown field `tokn`"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_top_level_table_is_rejected() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_toml("porthawk.toml", "[apii]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apii"), "{err}");
    }

    #[test]
    fn bad_allow_entry_is_named() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_toml("porthawk.toml", "[api]\nallow = [\"10.0.0.0/99\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow[0]"), "{err}");
    }

    #[test]
    fn allow_takes_ipv6_blocks_of_any_size() {
        let mut c = ServerConfig::default();
        c.apply_toml("porthawk.toml", 
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
                .apply_toml("porthawk.toml", &format!("[api]\nallow = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("allow[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn guard_settings_are_read_and_checked() {
        let mut c = ServerConfig::default();
        assert_eq!(c.http.public, DEFAULT_PUBLIC);
        c.apply_toml(
            "porthawk.toml",
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
            let err = c
                .apply_toml("porthawk.toml", &format!("[api]\n{bad}\n"))
                .unwrap_err()
                .to_string();
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
