//! Turning the probe flags (`--preset`, `--identify`, `--send`, `--expect`, `--banner`, `--tls`)
//! into the engine's probe spec.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use porthawk_core::{
    parse_escapes, preset, tls_client_config, Dialog, DialogStep, Pattern, ProbeSpec,
    IDENTIFY_PROBE,
};
use rustls::time_provider::DefaultTimeProvider;

use crate::args::ProbeArgs;

/// The probe spec of the flags; `connect_timeout` and `tries` come from the caller.
pub fn spec(args: &ProbeArgs, connect_timeout: Duration, tries: u8) -> Result<ProbeSpec> {
    let send = args
        .send
        .as_deref()
        .map(|s| parse_escapes(s).with_context(|| format!("in --send '{s}'")))
        .transpose()?;
    let expect = args
        .expect
        .as_deref()
        .map(|e| Pattern::regex(e).context("in --expect"))
        .transpose()?;
    let mut dialog = if let Some(name) = &args.preset {
        let preset = preset(name)?;
        Some(preset.dialog()?.with_tls(preset.tls))
    } else if args.identify {
        Some(Dialog::banner_or_probe(IDENTIFY_PROBE.to_vec()))
    } else if send.is_some() || expect.is_some() {
        Some(Dialog::send_expect(send, expect))
    } else if args.banner {
        Some(Dialog::banner())
    } else {
        None
    };
    if args.tls {
        dialog = Some(dialog.unwrap_or_default().over_tls());
    }
    if args.identify && args.tls {
        // Over TLS the probe must speak first; HTTP is the likeliest service there.
        dialog = Some(Dialog::banner_or_probe(IDENTIFY_PROBE.to_vec()).over_tls());
    }
    let needs_tls = dialog
        .as_ref()
        .is_some_and(|d| d.steps.contains(&DialogStep::StartTls));
    let tls_config = if needs_tls {
        Some(tls_client_config(Arc::new(DefaultTimeProvider)).context("cannot set up TLS")?)
    } else {
        None
    };
    Ok(ProbeSpec {
        connect_timeout,
        tries,
        dialog: dialog.map(Arc::new),
        read_timeout: args.read_timeout,
        dialog_timeout: args.dialog_timeout,
        tls_config,
    })
}
