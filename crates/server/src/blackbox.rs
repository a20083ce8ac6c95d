//! blackbox_exporter's `blackbox.yml`, read as written: its `tcp` modules become the
//! [`ProbeModule`]s of `/probe`, next to porthawk.toml's `[module.NAME]`.
//!
//! What maps (blackbox's semantics, porthawk's dialog):
//! - `timeout` → the probe's timeout (connect, and the dialog after it);
//! - `tcp.preferred_ip_protocol`, `tcp.ip_protocol_fallback` (default `ip6`, fallback on);
//! - `tcp.tls: true` → a TLS handshake first (SNI: the target's name);
//! - `tcp.query_response`: each entry's `expect` (a regular expression, matched line by
//!   line as blackbox does: multi-line mode with `\r\n` line ends), then its `send`
//!   (blackbox appends a newline; so does porthawk), then `starttls`;
//! - `tcp.tls_config.insecure_skip_verify: true`: porthawk reports certificates without
//!   judging them, which is what this asks for.
//!
//! What is refused, with a message naming the module and the key, when the module is used
//! (and listed when the file is loaded): other probers (`http`, `icmp`, `dns`, `grpc`,
//! `unix`, `websocket`), TLS without `insecure_skip_verify: true` (porthawk does not verify
//! chains), `tls_config` keys porthawk's probe has no counterpart for (`ca_file`,
//! `server_name`, `cert_file`, `key_file`, `min_version`, ...), `source_ip_address`,
//! `expect_bytes`, `labels`, and `send` with regex group references (`${1}`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use porthawk_core::{parse_duration, Dialog, DialogStep, Pattern};
use porthawk_watch::config::{IpProtocol, ProbeModule, DEFAULT_MODULE_TIMEOUT};
use serde::Deserialize;

/// The modules of a blackbox.yml by name: usable, or refused with the reason.
pub type BlackboxModules = BTreeMap<String, Result<Arc<ProbeModule>, String>>;

/// Why a blackbox.yml could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct BlackboxError {
    /// The file, as the user named it.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    modules: BTreeMap<String, RawModule>,
}

#[derive(Debug, Deserialize)]
struct RawModule {
    #[serde(default)]
    prober: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    tcp: Option<BTreeMap<String, serde_norway::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueryResponse {
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_bytes: Option<serde_norway::Value>,
    #[serde(default)]
    labels: Option<serde_norway::Value>,
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    starttls: Option<bool>,
}

/// Reads the blackbox.yml at `path`. A file that cannot be read or is not YAML of
/// blackbox's shape is an error; a module porthawk cannot run as written is kept as
/// refused, with the reason.
pub fn load(path: &Path) -> Result<BlackboxModules, BlackboxError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| BlackboxError {
        file: file.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses a blackbox.yml text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<BlackboxModules, BlackboxError> {
    let raw: RawFile = serde_norway::from_str(text).map_err(|e| BlackboxError {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    Ok(raw
        .modules
        .into_iter()
        .map(|(name, m)| {
            let module = module(&name, m)
                .map(Arc::new)
                .map_err(|why| format!("{file}: module '{name}': {why}"));
            (name, module)
        })
        .collect())
}

fn module(name: &str, m: RawModule) -> Result<ProbeModule, String> {
    if m.prober != "tcp" {
        let kind = if m.prober.is_empty() {
            "(none)"
        } else {
            m.prober.as_str()
        };
        return Err(format!(
            "prober: uses the '{kind}' prober; porthawk's /probe runs tcp modules only"
        ));
    }
    let timeout = match &m.timeout {
        Some(t) => parse_duration(t).map_err(|e| format!("timeout: {e}"))?,
        None => DEFAULT_MODULE_TIMEOUT,
    };
    if timeout.is_zero() || timeout > Duration::from_secs(120) {
        return Err("timeout: must be more than 0s and at most 120s".into());
    }
    let mut tcp = m.tcp.unwrap_or_default();
    let take_str =
        |tcp: &mut BTreeMap<String, serde_norway::Value>, key: &str| match tcp.remove(key) {
            None | Some(serde_norway::Value::Null) => Ok(None),
            Some(serde_norway::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("tcp.{key}: expected a string, got {other:?}")),
        };
    let take_bool =
        |tcp: &mut BTreeMap<String, serde_norway::Value>, key: &str| match tcp.remove(key) {
            None | Some(serde_norway::Value::Null) => Ok(None),
            Some(serde_norway::Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(format!("tcp.{key}: expected true or false, got {other:?}")),
        };
    let ip_protocol = match take_str(&mut tcp, "preferred_ip_protocol")?.as_deref() {
        None | Some("") | Some("ip6") => IpProtocol::Ip6,
        Some("ip4") => IpProtocol::Ip4,
        Some(other) => {
            return Err(format!(
                "tcp.preferred_ip_protocol: '{other}' is neither ip4 nor ip6"
            ))
        }
    };
    let ip_protocol_fallback = take_bool(&mut tcp, "ip_protocol_fallback")?.unwrap_or(true);
    if take_str(&mut tcp, "source_ip_address")?.is_some_and(|s| !s.is_empty()) {
        return Err(
            "tcp.source_ip_address: porthawk probes from the address the system chooses".into(),
        );
    }
    let tls = take_bool(&mut tcp, "tls")?.unwrap_or(false);
    let tls_config = tcp.remove("tls_config");
    let query_response = match tcp.remove("query_response") {
        None | Some(serde_norway::Value::Null) => Vec::new(),
        Some(v) => serde_norway::from_value::<Vec<RawQueryResponse>>(v)
            .map_err(|e| format!("tcp.query_response: {e}"))?,
    };
    if let Some(key) = tcp.keys().next() {
        return Err(format!("tcp.{key}: not a key of blackbox's tcp prober"));
    }

    let mut steps = Vec::new();
    if tls {
        steps.push(DialogStep::StartTls);
    }
    for (i, qr) in query_response.into_iter().enumerate() {
        let at = |key: &str| format!("tcp.query_response[{i}].{key}");
        if qr.expect_bytes.is_some() {
            return Err(format!(
                "{}: porthawk matches regular expressions only",
                at("expect_bytes")
            ));
        }
        if qr.labels.is_some() {
            return Err(format!(
                "{}: porthawk does not export probe_expect_info",
                at("labels")
            ));
        }
        if let Some(expect) = qr.expect.filter(|e| !e.is_empty()) {
            // Blackbox matches each line on its own (Go's line scanner drops the "\r\n"),
            // so `^` and `$` are line anchors here too, with "\r\n" line ends.
            let pattern = Pattern::regex(&format!("(?mR){expect}"))
                .map_err(|e| format!("{}: {e}", at("expect")))?;
            steps.push(DialogStep::Expect {
                expect: pattern,
                reject: None,
            });
        }
        if let Some(send) = qr.send.filter(|s| !s.is_empty()) {
            if regex_reference(&send) {
                return Err(format!(
                    "{}: regex group references ('$1', '${{name}}') are not supported",
                    at("send")
                ));
            }
            let mut bytes = send.into_bytes();
            bytes.push(b'\n');
            steps.push(DialogStep::Send(bytes));
        }
        if qr.starttls == Some(true) {
            steps.push(DialogStep::StartTls);
        }
    }
    if steps.contains(&DialogStep::StartTls) {
        check_tls_config(tls_config)?;
    }
    Ok(ProbeModule {
        name: name.to_string(),
        dialog: (!steps.is_empty()).then_some(Dialog { steps }),
        timeout,
        ip_protocol,
        ip_protocol_fallback,
    })
}

/// Whether a `send` holds a Go regexp template reference (`$1`, `${1}`, `$name`): a `$`
/// followed by a letter, digit, `_` or `{`.
fn regex_reference(send: &str) -> bool {
    let b = send.as_bytes();
    b.windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphanumeric() || w[1] == b'_' || w[1] == b'{'))
}

/// The `tls_config` of a module that makes a TLS handshake: porthawk reports certificates
/// without verifying them, so only `insecure_skip_verify: true` says what porthawk does.
fn check_tls_config(tls_config: Option<serde_norway::Value>) -> Result<(), String> {
    let map: BTreeMap<String, serde_norway::Value> = match tls_config {
        None | Some(serde_norway::Value::Null) => BTreeMap::new(),
        Some(v) => serde_norway::from_value(v).map_err(|e| format!("tcp.tls_config: {e}"))?,
    };
    for (key, value) in &map {
        match key.as_str() {
            "insecure_skip_verify" => {}
            "ca_file" | "ca" | "ca_ref" | "server_name" | "cert_file" | "cert" | "cert_ref"
            | "key_file" | "key" | "key_ref" | "min_version" | "max_version" => {
                if !matches!(value, serde_norway::Value::Null) && value.as_str() != Some("") {
                    return Err(format!(
                        "tcp.tls_config.{key}: not supported by porthawk's TLS probe (it sends \
                         the target's name as SNI, presents no client certificate and reports \
                         certificates without verifying them)"
                    ));
                }
            }
            other => return Err(format!("tcp.tls_config.{other}: not a key of tls_config")),
        }
    }
    match map.get("insecure_skip_verify") {
        Some(serde_norway::Value::Bool(true)) => Ok(()),
        _ => Err(
            "tcp.tls_config.insecure_skip_verify: porthawk does not verify certificate chains; \
             set insecure_skip_verify: true to probe with TLS and report the certificate"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Result<Arc<ProbeModule>, String> {
        let modules = parse("blackbox.yml", yaml).unwrap();
        assert_eq!(modules.len(), 1, "{modules:?}");
        modules.into_values().next().unwrap()
    }

    fn module_of(tcp: &str) -> Result<Arc<ProbeModule>, String> {
        one(&format!("modules:\n  m:\n    prober: tcp\n    tcp:\n{tcp}"))
    }

    #[test]
    fn a_plain_tcp_module_is_a_connect() {
        let m = one("modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 3s\n").unwrap();
        assert_eq!(m.dialog, None);
        assert_eq!(m.timeout, Duration::from_secs(3));
        assert_eq!(m.ip_protocol, IpProtocol::Ip6);
        assert!(m.ip_protocol_fallback);
        let m = one("modules:\n  c:\n    prober: tcp\n").unwrap();
        assert_eq!(m.timeout, DEFAULT_MODULE_TIMEOUT);
    }

    #[test]
    fn query_response_becomes_expect_send_and_starttls_steps() {
        // blackbox's own smtp_starttls example.
        let m = module_of(
            r#"      query_response:
        - expect: "^220 ([^ ]+) ESMTP (.+)$"
        - send: "EHLO prober"
        - expect: "^250-STARTTLS"
        - send: "STARTTLS"
        - expect: "^220"
        - starttls: true
        - send: "EHLO prober"
        - expect: "^250-AUTH"
        - send: "QUIT"
      tls_config:
        insecure_skip_verify: true
"#,
        )
        .unwrap();
        let steps = &m.dialog.as_ref().unwrap().steps;
        assert_eq!(steps.len(), 9);
        assert_eq!(steps[1], DialogStep::Send(b"EHLO prober\n".to_vec()));
        assert_eq!(steps[5], DialogStep::StartTls);
        match &steps[0] {
            DialogStep::Expect { expect, reject } => {
                assert!(reject.is_none());
                // Line by line, as blackbox matches: the greeting's line, "\r\n" ended.
                assert!(expect.is_match(b"220 mx.example ESMTP Postfix\r\n250 x\r\n"));
                assert!(!expect.is_match(b"554 go away\r\n"));
            }
            other => panic!("{other:?}"),
        }
        match &steps[2] {
            DialogStep::Expect { expect, .. } => {
                assert!(expect.is_match(b"250-mx.example\r\n250-STARTTLS\r\n250 OK\r\n"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_and_ip_protocol_keys_map() {
        let m = module_of(
            "      tls: true\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n      tls_config:\n        insecure_skip_verify: true\n",
        )
        .unwrap();
        assert_eq!(m.dialog.as_ref().unwrap().steps, [DialogStep::StartTls]);
        assert_eq!(m.ip_protocol, IpProtocol::Ip4);
        assert!(!m.ip_protocol_fallback);
        // tls_config without TLS is ignored, as blackbox ignores it.
        assert!(module_of("      tls_config:\n        ca_file: /etc/ca.pem\n").is_ok());
    }

    #[test]
    fn each_refusal_names_the_module_and_the_key() {
        let cases = [
            ("      tls: true\n", "tcp.tls_config.insecure_skip_verify"),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: false\n",
                "tcp.tls_config.insecure_skip_verify",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        ca_file: /ca.pem\n",
                "tcp.tls_config.ca_file",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        server_name: mx\n",
                "tcp.tls_config.server_name",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        cert_file: /c.pem\n        key_file: /k.pem\n",
                "tcp.tls_config.cert_file",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        min_version: TLS13\n",
                "tcp.tls_config.min_version",
            ),
            ("      source_ip_address: 10.0.0.1\n", "tcp.source_ip_address"),
            ("      preferred_ip_protocol: ip5\n", "tcp.preferred_ip_protocol"),
            ("      bogus: 1\n", "tcp.bogus"),
            (
                "      query_response:\n        - expect_bytes: \"\\x00\"\n",
                "tcp.query_response[0].expect_bytes",
            ),
            (
                "      query_response:\n        - expect: \"^(.*)$\"\n          labels:\n            - name: x\n              value: ${1}\n",
                "tcp.query_response[0].labels",
            ),
            (
                "      query_response:\n        - expect: \"^(.*)$\"\n        - send: \"HELLO ${1}\"\n",
                "tcp.query_response[1].send",
            ),
            (
                "      query_response:\n        - expect: \"(\"\n",
                "tcp.query_response[0].expect",
            ),
            (
                "      query_response:\n        - sned: x\n",
                "tcp.query_response",
            ),
        ];
        for (tcp, key) in cases {
            let e = module_of(tcp).unwrap_err();
            assert!(e.starts_with("blackbox.yml: module 'm': "), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
        for (kind, body) in [
            ("http", "    http:\n      valid_status_codes: []\n"),
            ("icmp", ""),
            ("dns", "    dns:\n      query_name: example.com\n"),
            ("grpc", ""),
        ] {
            let e = one(&format!(
                "modules:\n  k_{kind}:\n    prober: {kind}\n{body}"
            ))
            .unwrap_err();
            assert!(e.contains(&format!("module 'k_{kind}'")), "{e}");
            assert!(e.contains(&format!("'{kind}' prober")), "{e}");
        }
        let e = one("modules:\n  t:\n    prober: tcp\n    timeout: soon\n").unwrap_err();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_blackbox_yaml_is_an_error() {
        assert!(parse("b.yml", "modules: [1, 2").is_err());
        assert!(parse("b.yml", "modules:\n  m: 3\n").is_err());
        let e = load(Path::new("/nonexistent/blackbox.yml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/blackbox.yml: cannot read it"),
            "{e}"
        );
    }
}
