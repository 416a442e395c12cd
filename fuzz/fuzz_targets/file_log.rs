#![no_main]
//! Fuzz target: see `wiredb_core::fuzz::file_log` for the property it checks.
//!
//! yrs panics on some inputs, and wiredb catches those panics. libFuzzer's panic hook would
//! abort on them all the same; a silent hook leaves only the panics nobody catches, which
//! abort on their way out of the target, as crashes.

libfuzzer_sys::fuzz_target!(
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| wiredb_core::fuzz::file_log(data)
);
