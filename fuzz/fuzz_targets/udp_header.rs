//! The proxy's udp header parser on hostile bytes (see `ipsx_proxy::fuzz::udp_header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsx_proxy::fuzz::udp_header(data));
