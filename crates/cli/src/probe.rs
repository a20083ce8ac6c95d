//! Turning the probe flags (`--preset`, `--identify`, `--send`, `--expect`, `--banner`, `--tls`)
//! into the engine's probe spec, through the same `ProbeOptions` the API and monitors use.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use porthawk_core::{ProbeOptions, ProbeSpec};
use rustls::time_provider::DefaultTimeProvider;

use crate::args::ProbeArgs;

/// The probe spec of the flags; `connect_timeout` and `tries` come from the caller.
pub fn spec(args: &ProbeArgs, connect_timeout: Duration, tries: u8) -> Result<ProbeSpec> {
    let options = ProbeOptions {
        preset: args.preset.clone(),
        identify: args.identify,
        send: args.send.clone(),
        expect: args.expect.clone(),
        banner: args.banner,
        tls: args.tls,
        tls_verify: args.verify,
        tls_ca_file: args.ca_file.as_ref().map(|p| p.display().to_string()),
        sni: args.sni.clone(),
        tls_cert: args.cert.as_ref().map(|p| p.display().to_string()),
        tls_key: args.key.as_ref().map(|p| p.display().to_string()),
        expect_alert: args.expect_alert.clone(),
    };
    options
        .spec(
            connect_timeout,
            tries,
            args.read_timeout,
            args.dialog_timeout,
            Arc::new(DefaultTimeProvider),
        )
        .map_err(|e| anyhow!("in --{}: {e}", flag(e.field)))
}

/// The flag of a `ProbeOptions` field, as the user typed it.
fn flag(field: &str) -> &str {
    match field {
        "tls_verify" => "verify",
        "tls_ca_file" => "ca-file",
        "tls_cert" => "cert",
        "tls_key" => "key",
        "expect_alert" => "expect-alert",
        other => other,
    }
}
