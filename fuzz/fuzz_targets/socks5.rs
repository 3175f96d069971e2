//! The proxy's socks5 parser on hostile bytes (see `ipsx_proxy::fuzz::socks5`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsx_proxy::fuzz::socks5(data));
