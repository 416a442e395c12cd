#![no_main]
//! Fuzz target: see `wiredb_core::fuzz::file_log` for the property it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wiredb_core::fuzz::file_log(data));
