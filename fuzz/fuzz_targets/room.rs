#![no_main]
//! Fuzz target: see `wiredb_core::fuzz::room` for the property it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wiredb_core::fuzz::room(data));
