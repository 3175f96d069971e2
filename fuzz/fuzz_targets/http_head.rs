//! The proxy's http head parser on hostile bytes (see `ipsx_proxy::fuzz::http_head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsx_proxy::fuzz::http_head(data));
