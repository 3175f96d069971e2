//! The crawler endpoint's SOCKS5 negotiation on hostile bytes (see `ipsx_gate::fuzz::socks5`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsx_gate::fuzz::socks5(data));
