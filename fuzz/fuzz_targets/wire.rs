//! Fuzz target `wire`: see `porthawk_core::fuzzing::wire_target` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| porthawk_core::fuzzing::wire_target(data));
