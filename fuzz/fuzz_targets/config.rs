//! Fuzz target `config`: see `porthawk_watch::fuzzing::config_target` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| porthawk_watch::fuzzing::config_target(data));
