//! Probe options as users give them (flags, API fields, config keys) and the one way to turn
//! them into a [`ProbeSpec`]: the CLI, the API and the monitors all call [`ProbeOptions::spec`].

use std::sync::Arc;
use std::time::Duration;

use rustls::time_provider::TimeProvider;

use crate::{parse_escapes, preset, Dialog, DialogStep, Pattern, ProbeSpec, IDENTIFY_PROBE};

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
    }

    /// The dialog the options describe, if any.
    pub fn dialog(&self) -> Result<Option<Dialog>, ProbeOptionsError> {
        let err = |field, message: String| ProbeOptionsError { field, message };
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
        let mut dialog = if let Some(name) = &self.preset {
            let p = preset(name).map_err(|e| err("preset", e.to_string()))?;
            let d = p.dialog().map_err(|e| err("preset", e.to_string()))?;
            Some(d.with_tls(p.tls))
        } else if self.identify {
            Some(Dialog::banner_or_probe(IDENTIFY_PROBE.to_vec()))
        } else if send.is_some() || expect.is_some() {
            Some(Dialog::send_expect(send, expect))
        } else if self.banner {
            Some(Dialog::banner())
        } else {
            None
        };
        if self.tls {
            dialog = Some(dialog.unwrap_or_default().over_tls());
        }
        Ok(dialog)
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
        let needs_tls = dialog
            .as_ref()
            .is_some_and(|d| d.steps.contains(&DialogStep::StartTls));
        let tls_config = if needs_tls {
            Some(
                crate::tls_client_config(time).map_err(|e| ProbeOptionsError {
                    field: "tls",
                    message: format!("cannot set up TLS: {e}"),
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
        })
    }
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
}
