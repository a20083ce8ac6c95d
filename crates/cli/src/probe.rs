//! Turning the probe flags (`--preset`, `--identify`, `--send`, `--expect`, `--banner`, `--tls`,
//! `--quit`, `--expect-all`, `--max-reply`, `--jail`, the TLS checks) into the engine's probe
//! spec, through the same `ProbeOptions` the API and monitors use.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use porthawk_core::{ProbeOptions, ProbeSpec, ProbeStep};
use rustls::time_provider::DefaultTimeProvider;

use crate::args::ProbeArgs;

/// The probe spec of the flags; `connect_timeout` and `tries` come from the caller.
pub fn spec(args: &ProbeArgs, connect_timeout: Duration, tries: u8) -> Result<ProbeSpec> {
    let options = ProbeOptions {
        preset: args.preset.clone(),
        identify: args.identify,
        max_probes: args.identify.then_some(args.max_probes),
        banner: args.banner,
        tls: args.tls,
        steps: steps(args)?,
        quit: args.quit.clone(),
        expect_all: args.expect_all,
        max_reply: usize::try_from(args.max_reply).ok(),
        tls_verify: args.verify,
        tls_ca_file: args.ca_file.as_ref().map(|p| p.display().to_string()),
        sni: args.sni.clone(),
        tls_cert: args.cert.as_ref().map(|p| p.display().to_string()),
        tls_key: args.key.as_ref().map(|p| p.display().to_string()),
        expect_alert: args.expect_alert.clone(),
        jail: args.jail,
        ..ProbeOptions::default()
    };
    options
        .spec(
            connect_timeout,
            tries,
            args.read_timeout,
            args.dialog_timeout,
            Arc::new(DefaultTimeProvider),
        )
        .map_err(|e| {
            // Options are named as the API names them; here they are flags.
            if e.field == "steps" {
                return anyhow!("in the --send/--expect steps: {e}");
            }
            anyhow!("in --{}: {e}", flag(e.field))
        })
}

/// The dialog steps of `--send` and `--expect`, in command-line order.
fn steps(args: &ProbeArgs) -> Result<Vec<ProbeStep>> {
    if args.steps.len() == args.send.len() + args.expect.len() {
        return Ok(args.steps.clone());
    }
    // Flags parsed without their order (not through `args::parse_from`): only one of each
    // has an order that is not in doubt, send first.
    if args.send.len() > 1 || args.expect.len() > 1 {
        bail!("the order of several --send and --expect flags is unknown");
    }
    let sends = args.send.iter().cloned().map(ProbeStep::Send);
    Ok(sends
        .chain(args.expect.iter().cloned().map(ProbeStep::Expect))
        .collect())
}

/// The flag of a `ProbeOptions` field, as the user typed it.
fn flag(field: &str) -> String {
    match field {
        "tls_verify" => "verify".into(),
        "tls_ca_file" => "ca-file".into(),
        "tls_cert" => "cert".into(),
        "tls_key" => "key".into(),
        "expect_alert" => "expect-alert".into(),
        other => other.replace('_', "-"),
    }
}
