//! Fuzz target `duration`: see `porthawk_core::fuzzing::duration_target` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| porthawk_core::fuzzing::duration_target(data));
