//! The journal decoder on a damaged disk's bytes (see `ipsx_engine_runtime::fuzz::journal`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsx_engine_runtime::fuzz::journal(data));
