//! Probe options as users give them (flags, API fields, config keys) and the one way to turn
//! them into a [`ProbeSpec`]: the CLI, the API and the monitors all call [`ProbeOptions::spec`].

use std::sync::Arc;
use std::time::Duration;

use rustls::time_provider::TimeProvider;

use crate::{
    parse_escapes, preset, Dialog, DialogStep, Pattern, ProbeSpec, SendPiece, TlsMode,
    DEFAULT_MAX_PROBES, MAX_CAPTURES, MAX_REPLY_LIMIT, READ_LIMIT,
};

/// What to do once connected, before it is compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeOptions {
    /// A named dialog (`smtp`, `https`, ...).
    pub preset: Option<String>,
    /// Read the banner, and probe services that wait for the client.
    pub identify: bool,
    /// Bytes to send, with escapes (`PING\r\n`).
    pub send: Option<String>,
    /// A regular expression the reply must match.
    pub expect: Option<String>,
    /// Read the banner.
    pub banner: bool,
    /// Handshake TLS before the dialog.
    pub tls: bool,
    /// Dialog steps in order (`--send`/`--expect` repeated, `steps = [...]` in monitors,
    /// `probe.steps` in the API); `send` and `expect` are the one-step form of the same.
    /// After a STARTTLS preset they run inside the TLS session.
    pub steps: Vec<ProbeStep>,
    /// Bytes sent after the last step (`--quit`), with escapes and captures as in a send.
    pub quit: Option<String>,
    /// Expects with no send between them are one read whose reply must match every one of
    /// them (check_tcp's `-A`), instead of one read each.
    pub expect_all: bool,
    /// Bytes one read may keep while it waits for its pattern (default [`READ_LIMIT`], at
    /// most [`MAX_REPLY_LIMIT`]).
    pub max_reply: Option<usize>,
    /// Keep the peer's bytes out of failure reasons (`check --jail`).
    pub jail: bool,
    // TLS checks (issue 11 items 5, 6, 13, 14); each needs a TLS dialog (`tls` or a TLS
    // preset), except `expect_alert`, which is one.
    /// Verify the certificate chain, dates and name (`--verify`, `tls_verify`).
    pub tls_verify: bool,
    /// A PEM file of the CAs to trust instead of the system's (`--ca-file`, `tls_ca_file`);
    /// needs `tls_verify`.
    pub tls_ca_file: Option<String>,
    /// The server name to present and verify instead of the target's (`--sni`, `sni`).
    pub sni: Option<String>,
    /// A PEM client certificate chain to present (`--cert`, `tls_cert`); with `tls_key`.
    pub tls_cert: Option<String>,
    /// The PEM private key of `tls_cert` (`--key`, `tls_key`).
    pub tls_key: Option<String>,
    /// The TLS alert the server must answer the handshake with, by its RFC 8446 name
    /// (`--expect-alert certificate_required`, `expect_alert`).
    pub expect_alert: Option<String>,
    /// The most protocol probes `identify` sends to a silent port (default
    /// [`DEFAULT_MAX_PROBES`]; 0: only the banner).
    pub max_probes: Option<u8>,
}

/// One step of a user's dialog: `{ send = "..." }` or `{ expect = "..." }` in a monitor,
/// `{"send": "..."}` or `{"expect": "..."}` in the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ProbeStep {
    /// Bytes to send, with escapes (`\r \n \t \0 \\ \xHH`) and earlier captures (`${1}`).
    Send(String),
    /// A regular expression the reply must match (line-aware: `^` and `$` match at every
    /// line); its capture groups are kept for later sends and the result.
    Expect(String),
}

/// Which option is wrong and why; `field` names it as the user wrote it (`send`, `expect`,
/// `preset`, `tls`), for callers to prefix (`--`, `probe.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeOptionsError {
    /// The option at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ProbeOptions {
    /// Whether any option asks for a dialog.
    pub fn has_dialog(&self) -> bool {
        self.preset.is_some()
            || self.identify
            || self.send.is_some()
            || self.expect.is_some()
            || self.banner
            || self.tls
            || !self.steps.is_empty()
            || self.quit.is_some()
            || self.expect_alert.is_some()
    }

    /// The dialog the options describe, if any.
    pub fn dialog(&self) -> Result<Option<Dialog>, ProbeOptionsError> {
        let err = |field, message: String| ProbeOptionsError { field, message };
        if self.max_probes.is_some()
            && !(self.identify || self.preset.as_deref() == Some("identify"))
        {
            return Err(err(
                "max_probes",
                "max_probes needs identification (identify, or the identify preset)".into(),
            ));
        }
        if !self.steps.is_empty() || self.quit.is_some() {
            return self.dialog_of_steps().map(Some);
        }
        if self.preset.is_some() && (self.send.is_some() || self.expect.is_some()) {
            return Err(err(
                "preset",
                "a preset cannot be combined with send or expect".into(),
            ));
        }
        let send = self
            .send
            .as_deref()
            .map(|s| parse_escapes(s).map_err(|e| err("send", format!("invalid send '{s}': {e}"))))
            .transpose()?;
        let expect = self
            .expect
            .as_deref()
            .map(|e| Pattern::regex(e).map_err(|e| err("expect", e.to_string())))
            .transpose()?;
        let identify = self.identify || self.preset.as_deref() == Some("identify");
        let mut dialog = if identify {
            // `--identify` and the `identify` preset (the API's way to ask) are one plan.
            Some(Dialog::identify(
                self.max_probes.unwrap_or(DEFAULT_MAX_PROBES),
            ))
        } else if let Some(name) = &self.preset {
            let p = preset(name).map_err(|e| err("preset", e.to_string()))?;
            let d = p
                .dialog_for(self.sni.as_deref())
                .map_err(|e| err("preset", e.to_string()))?;
            Some(d.with_tls(p.tls))
        } else if send.is_some() || expect.is_some() {
            Some(Dialog::send_expect(send, expect))
        } else if self.banner {
            Some(Dialog::banner())
        } else {
            None
        };
        if self.tls || self.expect_alert.is_some() {
            dialog = Some(dialog.unwrap_or_default().over_tls());
        }
        Ok(dialog)
    }

    /// The dialog of `steps` and `quit` (with the one-step `send`/`expect`, a preset before
    /// them, and TLS).
    fn dialog_of_steps(&self) -> Result<Dialog, ProbeOptionsError> {
        let err = |field, message: String| ProbeOptionsError { field, message };
        if !self.steps.is_empty() && (self.send.is_some() || self.expect.is_some()) {
            return Err(err(
                "steps",
                "give the dialog as steps or as send and expect, not both".into(),
            ));
        }
        if self.identify {
            return Err(err(
                "identify",
                "identify cannot be combined with dialog steps".into(),
            ));
        }
        let mut user: Vec<ProbeStep> = self.steps.clone();
        if user.is_empty() {
            user.extend(self.send.clone().map(ProbeStep::Send));
            user.extend(self.expect.clone().map(ProbeStep::Expect));
        }
        let mut dialog = match &self.preset {
            Some(name) => {
                let p = preset(name).map_err(|e| err("preset", e.to_string()))?;
                if p.tls != TlsMode::StartTls {
                    return Err(err(
                        "preset",
                        format!(
                            "steps can only follow a STARTTLS preset (they run inside its TLS \
                             session); '{}' ends its own dialog: use steps alone, or with tls",
                            p.name
                        ),
                    ));
                }
                p.dialog()
                    .map_err(|e| err("preset", e.to_string()))?
                    .with_tls(p.tls)
            }
            None => Dialog::default(),
        };
        // Errors in `steps` name it; in the one-step form, `send` or `expect`.
        let field = |kind| if self.steps.is_empty() { kind } else { "steps" };
        let mut groups = 0usize;
        let mut pending: Vec<Pattern> = Vec::new();
        let flush = |pending: &mut Vec<Pattern>, steps: &mut Vec<DialogStep>| {
            if !pending.is_empty() {
                steps.push(DialogStep::ExpectAll {
                    patterns: std::mem::take(pending),
                });
            }
        };
        for (i, step) in user.iter().enumerate() {
            let n = i + 1;
            match step {
                ProbeStep::Expect(source) => {
                    let pattern = Pattern::regex(source)
                        .map_err(|e| err(field("expect"), format!("in step {n}: {e}")))?;
                    groups += pattern.groups();
                    if !self.expect_all {
                        flush(&mut pending, &mut dialog.steps);
                    }
                    pending.push(pattern);
                }
                ProbeStep::Send(text) => {
                    flush(&mut pending, &mut dialog.steps);
                    let send = send_step(text, groups)
                        .map_err(|m| err(field("send"), format!("in step {n}: {m}")))?;
                    dialog.steps.push(send);
                }
            }
        }
        flush(&mut pending, &mut dialog.steps);
        if !user.iter().any(|s| matches!(s, ProbeStep::Expect(_))) && self.preset.is_none() {
            // Sends alone: the reply is read as the banner, as `--send` alone always did.
            dialog.steps.push(DialogStep::Banner);
        }
        if let Some(quit) = &self.quit {
            let send = send_step(quit, groups).map_err(|m| err("quit", m))?;
            dialog.steps.push(send);
        }
        if self.tls {
            dialog = dialog.over_tls();
        }
        Ok(dialog)
    }

    /// The reply limit, checked.
    fn max_reply(&self) -> Result<usize, ProbeOptionsError> {
        match self.max_reply {
            None => Ok(READ_LIMIT),
            Some(n) if (1..=MAX_REPLY_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ProbeOptionsError {
                field: "max_reply",
                message: format!(
                    "max reply of {n} bytes is out of range: give 1 to {MAX_REPLY_LIMIT} bytes"
                ),
            }),
        }
    }

    /// The probe spec: these options with the given timeouts. `time` is the clock TLS uses
    /// (the core reads none): `Arc::new(rustls::time_provider::DefaultTimeProvider)` in a
    /// program.
    pub fn spec(
        &self,
        connect_timeout: Duration,
        tries: u8,
        read_timeout: Duration,
        dialog_timeout: Duration,
        time: Arc<dyn TimeProvider>,
    ) -> Result<ProbeSpec, ProbeOptionsError> {
        let dialog = self.dialog()?;
        let max_reply = self.max_reply()?;
        let needs_tls = dialog
            .as_ref()
            .is_some_and(|d| d.steps.contains(&DialogStep::StartTls));
        let tls_check = self.tls_check(needs_tls, &time)?;
        let client_auth = self.client_auth()?;
        // An identify plan makes a TLS handshake of its own when a reply shows TLS.
        let identifies = dialog.as_ref().is_some_and(|d| {
            d.steps
                .iter()
                .any(|s| matches!(s, DialogStep::Identify { .. }))
        });
        let tls_config = if needs_tls || identifies {
            Some(
                crate::tls_client_config_with(time, client_auth).map_err(|e| {
                    ProbeOptionsError {
                        field: if self.tls_cert.is_some() {
                            "tls_cert"
                        } else {
                            "tls"
                        },
                        message: format!("cannot set up TLS: {e}"),
                    }
                })?,
            )
        } else {
            None
        };
        Ok(ProbeSpec {
            connect_timeout,
            tries,
            dialog: dialog.map(Arc::new),
            read_timeout,
            dialog_timeout,
            tls_config,
            max_reply,
            jail: self.jail,
            tls_check: tls_check.map(Arc::new),
        })
    }

    /// The TLS checks of the options (`None` when they ask for none); reads the CA file or
    /// the system's CA bundle when verifying. `tls` says whether the dialog makes a handshake.
    fn tls_check(
        &self,
        tls: bool,
        time: &Arc<dyn TimeProvider>,
    ) -> Result<Option<crate::TlsCheck>, ProbeOptionsError> {
        let err = |field, message: String| ProbeOptionsError { field, message };
        let asked = [
            ("tls_verify", self.tls_verify),
            ("tls_ca_file", self.tls_ca_file.is_some()),
            ("sni", self.sni.is_some()),
            ("tls_cert", self.tls_cert.is_some()),
            ("tls_key", self.tls_key.is_some()),
        ];
        if let Some((field, _)) = asked.iter().find(|(_, given)| *given).filter(|_| !tls) {
            return Err(err(
                field,
                "needs a TLS dialog: tls, or a TLS preset (https, smtps, ...)".into(),
            ));
        }
        if self.tls_ca_file.is_some() && !self.tls_verify {
            return Err(err("tls_ca_file", "a CA file needs verification on".into()));
        }
        if let Some(sni) = &self.sni {
            if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
                return Err(err("sni", format!("invalid server name '{sni}'")));
            }
        }
        let expect_alert = match &self.expect_alert {
            Some(name) => Some(crate::alert_by_name(name).ok_or_else(|| {
                err(
                    "expect_alert",
                    format!(
                        "unknown TLS alert '{name}': expected an RFC 8446 name such as \
                         certificate_required or handshake_failure"
                    ),
                )
            })?),
            None => None,
        };
        let verify = if self.tls_verify {
            let roots = match &self.tls_ca_file {
                Some(file) => {
                    let pem = std::fs::read(file)
                        .map_err(|e| err("tls_ca_file", format!("cannot read {file}: {e}")))?;
                    crate::roots_from_pem(file, &pem).map_err(|m| err("tls_ca_file", m))?
                }
                None => crate::system_roots().map_err(|m| err("tls_verify", m))?,
            };
            let verifier = crate::TlsVerifier::new(roots, Arc::clone(time))
                .map_err(|m| err("tls_verify", m))?;
            Some(verifier)
        } else {
            None
        };
        if verify.is_none() && expect_alert.is_none() && self.sni.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::TlsCheck {
            sni: self.sni.clone(),
            verify,
            expect_alert,
        }))
    }

    /// The client certificate and key, read from their files.
    fn client_auth(&self) -> Result<Option<crate::ClientAuth>, ProbeOptionsError> {
        let err = |field, message: String| ProbeOptionsError { field, message };
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(err("tls_key", "a client certificate needs its key".into()))
            }
            (None, Some(_)) => {
                return Err(err("tls_cert", "a client key needs its certificate".into()))
            }
        };
        let cert_pem =
            std::fs::read(cert).map_err(|e| err("tls_cert", format!("cannot read {cert}: {e}")))?;
        let key_pem =
            std::fs::read(key).map_err(|e| err("tls_key", format!("cannot read {key}: {e}")))?;
        crate::client_auth_from_pem(cert, &cert_pem, key, &key_pem)
            .map(Some)
            .map_err(|m| {
                let field = if m.starts_with(key.as_str()) {
                    "tls_key"
                } else {
                    "tls_cert"
                };
                err(field, m)
            })
    }
}

/// The step that sends `text`: its escapes decoded, and `${N}` references to the `groups`
/// captures taken before it kept apart, to be filled in when it is sent. Write `\x24{` for
/// a literal `${`.
fn send_step(text: &str, groups: usize) -> Result<DialogStep, String> {
    let decode = |t: &str| parse_escapes(t).map_err(|e| format!("invalid send '{text}': {e}"));
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "invalid send '{text}': '${{' without a closing '}}' (write \\x24{{ for a literal ${{)"
            ));
        };
        let n: usize = after[..close].parse().map_err(|_| {
            format!(
                "invalid send '{text}': '${{{}}}' is not a capture number (write \\x24{{ for a literal ${{)",
                &after[..close]
            )
        })?;
        if n == 0 || n > groups.min(MAX_CAPTURES) {
            return Err(format!(
                "'${{{n}}}' in '{text}' refers to capture {n}, but the expects before it have {} \
                 capture group(s) (at most {MAX_CAPTURES} are kept)",
                groups.min(MAX_CAPTURES)
            ));
        }
        pieces.push(SendPiece::Bytes(decode(&rest[..at])?));
        pieces.push(SendPiece::Capture(n));
        rest = &after[close + 1..];
    }
    let tail = decode(rest)?;
    if pieces.is_empty() {
        return Ok(DialogStep::Send(tail));
    }
    pieces.push(SendPiece::Bytes(tail));
    pieces.retain(|p| !matches!(p, SendPiece::Bytes(b) if b.is_empty()));
    Ok(DialogStep::SendCaptures(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::time_provider::DefaultTimeProvider;

    fn spec(o: ProbeOptions) -> Result<ProbeSpec, ProbeOptionsError> {
        let s = Duration::from_secs(1);
        o.spec(s, 1, s, s, Arc::new(DefaultTimeProvider))
    }

    #[test]
    fn options_build_the_expected_dialogs() {
        assert!(spec(ProbeOptions::default()).unwrap().dialog.is_none());
        let smtps = spec(ProbeOptions {
            preset: Some("smtps".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            smtps.dialog.as_ref().unwrap().steps.first(),
            Some(&DialogStep::StartTls)
        );
        assert!(smtps.tls_config.is_some());
        let ping = spec(ProbeOptions {
            send: Some("PING\\r\\n".into()),
            expect: Some("^\\+PONG".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            ping.dialog.as_ref().unwrap().steps[0],
            DialogStep::Send(b"PING\r\n".to_vec())
        );
        assert!(ping.tls_config.is_none());
    }

    #[test]
    fn errors_name_the_option() {
        let cases = [
            (
                ProbeOptions {
                    preset: Some("nope".into()),
                    ..Default::default()
                },
                "preset",
            ),
            (
                ProbeOptions {
                    send: Some("\\q".into()),
                    ..Default::default()
                },
                "send",
            ),
            (
                ProbeOptions {
                    expect: Some("(".into()),
                    ..Default::default()
                },
                "expect",
            ),
            (
                ProbeOptions {
                    preset: Some("smtp".into()),
                    send: Some("x".into()),
                    ..Default::default()
                },
                "preset",
            ),
        ];
        for (o, field) in cases {
            assert_eq!(spec(o).unwrap_err().field, field);
        }
    }

    #[test]
    fn dialog_step_errors_name_the_option_and_the_step() {
        let steps = |list: &[ProbeStep]| ProbeOptions {
            steps: list.to_vec(),
            ..Default::default()
        };
        let send = |s: &str| ProbeStep::Send(s.into());
        let expect = |s: &str| ProbeStep::Expect(s.into());
        let cases: Vec<(ProbeOptions, &str, &str)> = vec![
            (
                steps(&[expect("^220 (x)"), send("a ${2}")]),
                "steps",
                "in step 2: '${2}' in 'a ${2}' refers to capture 2, but the expects before it \
                 have 1 capture group(s) (at most 16 are kept)",
            ),
            (
                steps(&[send("${1}"), expect("(x)")]),
                "steps",
                "in step 1: '${1}' in '${1}' refers to capture 1",
            ),
            (
                steps(&[send("${x}")]),
                "steps",
                "in step 1: invalid send '${x}'",
            ),
            (
                steps(&[send("${1")]),
                "steps",
                "in step 1: invalid send '${1'",
            ),
            (
                steps(&[expect("(")]),
                "steps",
                "in step 1: invalid pattern '('",
            ),
            (
                ProbeOptions {
                    preset: Some("smtp".into()),
                    ..steps(&[send("x")])
                },
                "preset",
                "steps can only follow a STARTTLS preset",
            ),
            (
                ProbeOptions {
                    send: Some("x".into()),
                    ..steps(&[send("x")])
                },
                "steps",
                "give the dialog as steps",
            ),
            (
                ProbeOptions {
                    max_reply: Some(MAX_REPLY_LIMIT + 1),
                    ..steps(&[expect("x")])
                },
                "max_reply",
                "max reply of 1048577 bytes is out of range",
            ),
            (
                ProbeOptions {
                    max_reply: Some(0),
                    ..Default::default()
                },
                "max_reply",
                "max reply of 0 bytes",
            ),
        ];
        for (o, field, message) in cases {
            let e = spec(o).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.starts_with(message), "{e}");
        }
        // A literal `${` is written with an escape; a reference fills in a capture.
        let d = steps(&[expect("^(a)"), send(r"\x24{1}=${1}")])
            .dialog()
            .unwrap()
            .unwrap();
        assert_eq!(
            d.steps[1],
            DialogStep::SendCaptures(vec![
                SendPiece::Bytes(b"${1}=".to_vec()),
                SendPiece::Capture(1)
            ])
        );
        // The one-step form and steps give the same dialog; sends alone read a banner.
        let one = ProbeOptions {
            send: Some("PING".into()),
            ..Default::default()
        };
        assert_eq!(
            one.dialog().unwrap().unwrap().steps,
            [DialogStep::Send(b"PING".to_vec()), DialogStep::Banner]
        );
        let max = spec(ProbeOptions {
            max_reply: Some(MAX_REPLY_LIMIT),
            jail: true,
            ..steps(&[expect("x")])
        })
        .unwrap();
        assert_eq!((max.max_reply, max.jail), (MAX_REPLY_LIMIT, true));
    }

    #[test]
    fn steps_read_from_config_and_json() {
        #[derive(serde::Deserialize)]
        struct Wrap {
            steps: Vec<ProbeStep>,
        }
        let w: Wrap = serde_json::from_str(r#"{"steps":[{"send":"a"},{"expect":"^b"}]}"#).unwrap();
        assert_eq!(
            w.steps,
            [ProbeStep::Send("a".into()), ProbeStep::Expect("^b".into())]
        );
        assert!(serde_json::from_str::<Wrap>(r#"{"steps":[{"sned":"a"}]}"#).is_err());
        assert!(serde_json::from_str::<Wrap>(r#"{"steps":[{"send":"a","expect":"b"}]}"#).is_err());
    }

    #[test]
    fn tls_checks_need_tls_and_name_their_option() {
        let tls = || ProbeOptions {
            tls: true,
            ..Default::default()
        };
        let cases = [
            (
                ProbeOptions {
                    sni: Some("mx.example".into()),
                    ..Default::default()
                },
                "sni",
                "needs a TLS dialog",
            ),
            (
                ProbeOptions {
                    tls_verify: true,
                    preset: Some("smtp".into()),
                    ..Default::default()
                },
                "tls_verify",
                "needs a TLS dialog",
            ),
            (
                ProbeOptions {
                    tls_ca_file: Some("/x".into()),
                    ..tls()
                },
                "tls_ca_file",
                "needs verification on",
            ),
            (
                ProbeOptions {
                    tls_cert: Some("/x".into()),
                    ..tls()
                },
                "tls_key",
                "needs its key",
            ),
            (
                ProbeOptions {
                    expect_alert: Some("certificate-required".into()),
                    ..Default::default()
                },
                "expect_alert",
                "unknown TLS alert 'certificate-required'",
            ),
            (
                ProbeOptions {
                    sni: Some("not a name!".into()),
                    ..tls()
                },
                "sni",
                "invalid server name",
            ),
            (
                ProbeOptions {
                    tls_verify: true,
                    tls_ca_file: Some("/nonexistent/ca.pem".into()),
                    ..tls()
                },
                "tls_ca_file",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                ProbeOptions {
                    tls_cert: Some("/nonexistent/c.pem".into()),
                    tls_key: Some("/nonexistent/k.pem".into()),
                    ..tls()
                },
                "tls_cert",
                "cannot read /nonexistent/c.pem",
            ),
        ];
        for (o, field, message) in cases {
            let e = spec(o).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }

    #[test]
    fn tls_checks_reach_the_spec() {
        // An expected alert is a TLS dialog of its own.
        let s = spec(ProbeOptions {
            expect_alert: Some("certificate_required".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            s.dialog.as_ref().map(|d| d.steps.clone()),
            Some(vec![DialogStep::StartTls])
        );
        assert!(s.tls_config.is_some());
        let check = s.tls_check.as_ref().unwrap();
        assert_eq!(
            check.expect_alert,
            Some(rustls::AlertDescription::CertificateRequired)
        );
        assert!(check.verify.is_none());
        // Verification against the system's roots, with a name.
        let s = spec(ProbeOptions {
            preset: Some("https".into()),
            tls_verify: true,
            sni: Some("www.example".into()),
            ..Default::default()
        })
        .unwrap();
        let check = s.tls_check.as_ref().unwrap();
        assert!(check.verify.is_some());
        assert_eq!(check.sni.as_deref(), Some("www.example"));
        // Plain TLS asks for no checks.
        let s = spec(ProbeOptions {
            tls: true,
            ..Default::default()
        })
        .unwrap();
        assert!(s.tls_check.is_none());
    }
}
