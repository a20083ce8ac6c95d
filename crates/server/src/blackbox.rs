//! blackbox_exporter's `blackbox.yml`, read as written: its `tcp` modules become the
//! [`ProbeModule`]s of `/probe`, next to porthawk.toml's `[module.NAME]`.
//!
//! What maps (blackbox's semantics, porthawk's dialog):
//! - `timeout` → the probe's timeout (connect, and the dialog after it);
//! - `tcp.preferred_ip_protocol`, `tcp.ip_protocol_fallback` (default `ip6`, fallback on);
//! - `tcp.tls: true` → a TLS handshake first;
//! - `tcp.query_response`: each entry's `expect` (a regular expression, matched line by
//!   line as blackbox does: multi-line mode with `\r\n` line ends), then its `send`
//!   (blackbox appends a newline; so does porthawk), then `starttls`;
//! - `tcp.tls_config` of a module that makes a handshake, as blackbox reads it: the chain,
//!   dates and name are **verified** unless `insecure_skip_verify: true` (blackbox's default
//!   is `false`), against `ca_file` or else the system's roots; `server_name` is the name
//!   sent as SNI and verified (else the target's); `cert_file` and `key_file` are the client
//!   certificate. These become porthawk's own TLS options (`tls_verify`, `tls_ca_file`,
//!   `sni`, `tls_cert`, `tls_key`), built into the probe by `ProbeOptions::spec` as for
//!   every other probe. A failed verification is `probe_success 0`.
//!
//! What is refused, with a message naming the module and the key, when the module is used
//! (and listed when the file is loaded): other probers (`http`, `icmp`, `dns`, `grpc`,
//! `unix`, `websocket`), `tls_config` keys porthawk's probe has no counterpart for (inline
//! `ca`, `cert`, `key`, the `*_ref` forms, `min_version`, `max_version`), files named in
//! `tls_config` that cannot be read, `source_ip_address`, `expect_bytes`, `labels`, and
//! `send` with regex group references (`${1}`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use porthawk_core::{parse_duration, Dialog, DialogStep, Pattern, ProbeOptions};
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
    let dialog = (!steps.is_empty()).then_some(Dialog { steps });
    // blackbox ignores tls_config without a handshake; so does porthawk.
    let tls = dialog
        .as_ref()
        .is_some_and(|d| d.steps.contains(&DialogStep::StartTls));
    let options = if tls {
        tls_options(tls_config)?
    } else {
        ProbeOptions::default()
    };
    // Built once here to check it (the CA and client certificate files are read), and
    // again by each probe, so that renewed files are used.
    options
        .spec(
            timeout,
            1,
            timeout,
            timeout,
            Arc::new(rustls::time_provider::DefaultTimeProvider),
        )
        .map_err(|e| format!("tcp.tls_config.{}: {e}", blackbox_key(e.field)))?;
    Ok(ProbeModule {
        name: name.to_string(),
        dialog,
        timeout,
        ip_protocol,
        ip_protocol_fallback,
        options,
        // blackbox has no state mapping: a refusal and a wrong reply fail, as there.
        states: porthawk_watch::config::StateMap::default(),
    })
}

/// blackbox's `tls_config` key for a TLS option of porthawk's.
fn blackbox_key(field: &str) -> &str {
    match field {
        "tls_ca_file" => "ca_file",
        "sni" => "server_name",
        "tls_cert" => "cert_file",
        "tls_key" => "key_file",
        "tls_verify" => "insecure_skip_verify",
        other => other,
    }
}

/// Whether a `send` holds a Go regexp template reference (`$1`, `${1}`, `$name`): a `$`
/// followed by a letter, digit, `_` or `{`.
fn regex_reference(send: &str) -> bool {
    let b = send.as_bytes();
    b.windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphanumeric() || w[1] == b'_' || w[1] == b'{'))
}

/// The TLS options of a module that makes a TLS handshake, from its `tls_config` as blackbox
/// reads it: verification is on unless `insecure_skip_verify: true`, against `ca_file` or
/// the system's roots; `server_name` is the name presented and verified (else the target's);
/// `cert_file` and `key_file` are the client certificate. File paths are used as written
/// (blackbox reads them from its working directory).
fn tls_options(tls_config: Option<serde_norway::Value>) -> Result<ProbeOptions, String> {
    let map: BTreeMap<String, serde_norway::Value> = match tls_config {
        None | Some(serde_norway::Value::Null) => BTreeMap::new(),
        Some(v) => serde_norway::from_value(v).map_err(|e| format!("tcp.tls_config: {e}"))?,
    };
    let mut options = ProbeOptions {
        tls: true,
        tls_verify: true,
        ..Default::default()
    };
    let mut ca_file = None;
    for (key, value) in map {
        let text = match &value {
            serde_norway::Value::Null => None,
            serde_norway::Value::String(s) if s.is_empty() => None,
            serde_norway::Value::String(s) => Some(s.clone()),
            _ if key == "insecure_skip_verify" => None,
            other => {
                return Err(format!(
                    "tcp.tls_config.{key}: expected a string, got {other:?}"
                ))
            }
        };
        match key.as_str() {
            "insecure_skip_verify" => match value {
                serde_norway::Value::Null => {}
                serde_norway::Value::Bool(skip) => options.tls_verify = !skip,
                other => {
                    return Err(format!(
                        "tcp.tls_config.insecure_skip_verify: expected true or false, got {other:?}"
                    ))
                }
            },
            "ca_file" => ca_file = text,
            "server_name" => options.sni = text,
            "cert_file" => options.tls_cert = text,
            "key_file" => options.tls_key = text,
            "ca" | "ca_ref" | "cert" | "cert_ref" | "key" | "key_ref" | "min_version"
            | "max_version" => {
                if text.is_some() {
                    let instead = match key.as_str() {
                        "ca" | "ca_ref" => " (give the CAs as ca_file)",
                        "cert" | "cert_ref" => " (give the certificate as cert_file)",
                        "key" | "key_ref" => " (give the key as key_file)",
                        _ => " (porthawk's probe accepts TLS 1.2 and 1.3)",
                    };
                    return Err(format!(
                        "tcp.tls_config.{key}: not supported by porthawk's TLS probe{instead}"
                    ));
                }
            }
            other => return Err(format!("tcp.tls_config.{other}: not a key of tls_config")),
        }
    }
    // With verification off, blackbox loads the CAs and never uses them.
    if options.tls_verify {
        options.tls_ca_file = ca_file;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA (O=porthawk tests, CN=Unit Test CA), for a readable `ca_file`.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBtzCCAV2gAwIBAgIUSukaDxLsiLbdquGi6ZTAujkpkAowCgYIKoZIzj0EAwIw\n\
MDEXMBUGA1UECgwOcG9ydGhhd2sgdGVzdHMxFTATBgNVBAMMDFVuaXQgVGVzdCBD\n\
QTAgFw0yNjExMzAyMDEyNDZaGA8yMTI2MTEwNjIwMTI0NlowMDEXMBUGA1UECgwO\n\
cG9ydGhhd2sgdGVzdHMxFTATBgNVBAMMDFVuaXQgVGVzdCBDQTBZMBMGByqGSM49\n\
AgEGCCqGSM49AwEHA0IABBEg5l40J3iUKNLTNgvfCgOqIJci6jriUzVBrsuLQ8K7\n\
+c1gEUnzIiXoqWU2j9+pvFDvJWGChYKQiPzM1SNlU6qjUzBRMB0GA1UdDgQWBBSL\n\
CVTHqsFamtNRjCXfi50R5dL/ATAfBgNVHSMEGDAWgBSLCVTHqsFamtNRjCXfi50R\n\
5dL/ATAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIAm6vJUnPMjD\n\
8l4pDOv9ZvB9Xqw0ciMaBRFxHj6de0isAiEA2zP2sbulidbUl0mLB4ddk/lHHn8Y\n\
+qzUzdqrBPHXSUk=\n\
-----END CERTIFICATE-----\n\
";

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
        assert!(!m.options.tls_verify);
        // tls_config without TLS is ignored, as blackbox ignores it.
        let m = module_of("      tls_config:\n        ca_file: /etc/ca.pem\n").unwrap();
        assert_eq!(m.options, ProbeOptions::default());
    }

    #[test]
    fn tls_config_maps_as_blackbox_reads_it() {
        let ca = std::env::temp_dir().join(format!("bbtls-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, TEST_CA).unwrap();
        let ca = ca.to_str().unwrap().to_string();
        // blackbox verifies by default: `tls: true` alone verifies against the system's roots.
        let m = module_of("      tls: true\n").unwrap();
        assert!(m.options.tls && m.options.tls_verify, "{m:?}");
        assert_eq!(m.options.tls_ca_file, None);
        let m =
            module_of("      tls: true\n      tls_config:\n        insecure_skip_verify: false\n")
                .unwrap();
        assert!(m.options.tls_verify);
        // ca_file and server_name: verification against those CAs, for that name.
        let m = module_of(&format!(
            "      tls: true\n      tls_config:\n        ca_file: {ca}\n        server_name: mx.example\n"
        ))
        .unwrap();
        assert!(m.options.tls_verify);
        assert_eq!(m.options.tls_ca_file.as_deref(), Some(ca.as_str()));
        assert_eq!(m.options.sni.as_deref(), Some("mx.example"));
        // insecure_skip_verify: true verifies nothing (its ca_file goes unused, as in blackbox)
        // and still presents server_name.
        let m = module_of(&format!(
            "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        ca_file: {ca}\n        server_name: mx.example\n"
        ))
        .unwrap();
        assert!(!m.options.tls_verify);
        assert_eq!(m.options.tls_ca_file, None);
        assert_eq!(m.options.sni.as_deref(), Some("mx.example"));
        // A STARTTLS in query_response takes the same tls_config.
        let m = module_of(&format!(
            "      query_response:\n        - starttls: true\n      tls_config:\n        ca_file: {ca}\n"
        ))
        .unwrap();
        assert!(m.options.tls_verify);
        assert_eq!(m.options.tls_ca_file.as_deref(), Some(ca.as_str()));
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn each_refusal_names_the_module_and_the_key() {
        let cases = [
            (
                "      tls: true\n      tls_config:\n        ca_file: /nonexistent/ca.pem\n",
                "tcp.tls_config.ca_file",
            ),
            (
                "      tls: true\n      tls_config:\n        cert_file: /nonexistent/c.pem\n        key_file: /nonexistent/k.pem\n",
                "tcp.tls_config.cert_file",
            ),
            (
                "      tls: true\n      tls_config:\n        cert_file: /c.pem\n",
                "tcp.tls_config.key_file",
            ),
            (
                "      tls: true\n      tls_config:\n        server_name: \"not a name!\"\n",
                "tcp.tls_config.server_name",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: true\n        min_version: TLS13\n",
                "tcp.tls_config.min_version",
            ),
            (
                "      tls: true\n      tls_config:\n        ca: \"-----BEGIN CERTIFICATE-----\"\n",
                "tcp.tls_config.ca",
            ),
            (
                "      tls: true\n      tls_config:\n        insecure_skip_verify: maybe\n",
                "tcp.tls_config.insecure_skip_verify",
            ),
            (
                "      tls: true\n      tls_config:\n        verify: true\n",
                "tcp.tls_config.verify",
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
