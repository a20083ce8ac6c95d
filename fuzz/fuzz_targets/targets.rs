//! Fuzz target `targets`: see `porthawk_core::fuzzing::targets_target` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| porthawk_core::fuzzing::targets_target(data));
