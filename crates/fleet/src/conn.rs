//! The connection to NATS: credentials (an nkey seed file), TLS with a client certificate,
//! the per-agent inbox prefix, and errors that say what failed.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerError};
use porthawk_core::{inbox_prefix, FleetName};

/// How to reach NATS and who to be.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// `nats://HOST:PORT` (or `tls://`).
    pub url: String,
    /// The name the connection is for (its inbox prefix is `_INBOX_<name>`).
    pub name: FleetName,
    /// A file holding the nkey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    /// CA certificate(s) to verify the server with (PEM).
    pub tls_ca: Option<PathBuf>,
    /// The client certificate (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Talk to a non-loopback server without nkey and TLS.
    pub allow_insecure: bool,
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Refused before any traffic: the settings are unsafe or incomplete.
    #[error("{0}")]
    Settings(String),
    /// The seed file could not be read.
    #[error("cannot read the nkey seed file {path}: {source}")]
    Seed {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the credentials.
    #[error("NATS server {url} refused the credentials (authorization violation): check the nkey seed and that its public key is in the server's users")]
    Auth {
        /// The server.
        url: String,
    },
    /// No server answered, or TLS failed.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The server.
        url: String,
        /// What the client said.
        message: String,
    },
}

/// The host part of a NATS URL (`nats://user@host:4222` → `host`), without brackets.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

/// Whether every server of `url` (a comma-separated list is allowed) is on loopback.
pub fn is_loopback_url(url: &str) -> bool {
    url.split(',').all(|u| match url_host(u.trim()) {
        Some("localhost") => true,
        Some(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    })
}

impl ConnConfig {
    /// The checks made before any traffic: a non-loopback server needs an nkey and TLS with a
    /// client certificate, unless `allow_insecure`; the TLS files come as cert and key together.
    pub fn check(&self) -> Result<(), ConnError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConnError::Settings(
                "--tls-cert and --tls-key go together (the client certificate and its key)".into(),
            ));
        }
        let secure = self.nkey.is_some() && self.tls_cert.is_some() && self.tls_ca.is_some();
        if !is_loopback_url(&self.url) && !secure && !self.allow_insecure {
            return Err(ConnError::Settings(format!(
                "refusing to talk to NATS at {} without credentials: a server off this host needs \
                 --nkey and --tls-ca/--tls-cert/--tls-key (or --allow-insecure to accept the risk)",
                self.url
            )));
        }
        Ok(())
    }

    /// Connects (once: a server that is not there is an error, not a wait), after
    /// [`ConnConfig::check`]. The returned [`ServerErrors`] collects what the server reports
    /// later (permission violations), so callers can say why a request went unanswered.
    pub async fn connect(&self) -> Result<(Client, ServerErrors), ConnError> {
        self.check()?;
        let errors = ServerErrors::default();
        let mut options = ConnectOptions::new()
            .name(format!("porthawk-agent {}", self.name))
            .custom_inbox_prefix(inbox_prefix(&self.name))
            .connection_timeout(Duration::from_secs(10))
            .request_timeout(Some(Duration::from_secs(10)));
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path).map_err(|source| ConnError::Seed {
                path: path.clone(),
                source,
            })?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let sink = errors.clone();
        options = options.event_callback(move |event| {
            let sink = sink.clone();
            async move {
                match event {
                    Event::ServerError(ServerError::Other(text)) => {
                        tracing::warn!(server_error = %text, "NATS server error");
                        sink.push(text);
                    }
                    Event::ServerError(ServerError::AuthorizationViolation) => {
                        sink.push("authorization violation".into());
                    }
                    Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
        match options.connect(self.url.as_str()).await {
            Ok(client) => Ok((client, errors)),
            Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
                Err(ConnError::Auth {
                    url: self.url.clone(),
                })
            }
            Err(e) => {
                let message = match e.kind() {
                    ConnectErrorKind::Io | ConnectErrorKind::TimedOut => {
                        format!("{e} (is nats-server running and reachable there?)")
                    }
                    ConnectErrorKind::Tls => format!("TLS failed: {e}"),
                    _ => e.to_string(),
                };
                Err(ConnError::Connect {
                    url: self.url.clone(),
                    message,
                })
            }
        }
    }
}

/// The errors the server sent on this connection (`-ERR 'Permissions Violation ...'`), the
/// latest last; a request that timed out is explained with them.
#[derive(Debug, Clone, Default)]
pub struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    fn push(&self, text: String) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() >= 16 {
                v.remove(0);
            }
            v.push(text);
        }
    }

    /// `"; the server said: ..."` with the errors so far, or an empty string.
    pub fn explain(&self) -> String {
        let v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        if v.is_empty() {
            String::new()
        } else {
            format!("; the server said: {}", v.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ConnConfig {
        ConnConfig {
            url: url.into(),
            name: FleetName::new("agent", "eu-1").unwrap(),
            nkey: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            allow_insecure: false,
        }
    }

    #[test]
    fn loopback_urls() {
        for url in [
            "nats://127.0.0.1:4222",
            "127.0.0.5:4222",
            "nats://localhost",
            "tls://[::1]:4222",
            "nats://u:p@127.0.0.1:1,nats://[::1]:2",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "nats://10.1.2.3:4222",
            "nats://nats.example.org:4222",
            "nats://127.0.0.1:1,nats://10.0.0.1:2",
            "nats://[fd00::1]:4222",
            "nats://127.0.0.1.example.org",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn a_remote_server_needs_credentials_or_consent() {
        let mut c = config("nats://10.1.2.3:4222");
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("without credentials"), "{err}");
        c.nkey = Some("seed".into());
        assert!(c.check().is_err());
        c.tls_ca = Some("ca.pem".into());
        c.tls_cert = Some("c.pem".into());
        c.tls_key = Some("k.pem".into());
        assert!(c.check().is_ok());
        let mut c = config("nats://10.1.2.3:4222");
        c.allow_insecure = true;
        assert!(c.check().is_ok());
        assert!(config("nats://127.0.0.1:4222").check().is_ok());
        let mut half = config("nats://127.0.0.1:4222");
        half.tls_cert = Some("c.pem".into());
        assert!(half.check().is_err());
    }
}
