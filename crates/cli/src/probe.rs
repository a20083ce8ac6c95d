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
    };
    options
        .spec(
            connect_timeout,
            tries,
            args.read_timeout,
            args.dialog_timeout,
            Arc::new(DefaultTimeProvider),
        )
        .map_err(|e| anyhow!("in --{}: {e}", e.field))
}
