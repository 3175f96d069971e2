//! The relay's first look at a requester's bytes (SOCKS5 greeting and credentials, HTTP request
//! heads) and its credential and ticket checks, on hostile bytes: no panic, no read past the
//! input, and nothing without the node's seal passes.
#![no_main]

use ipsx_relay::RelayKey;
use ipsx_relay::sniff::{self, Sniffed};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = RelayKey::new([7; 32]);
    if let Sniffed::Done(length, _) = sniff::socks_greeting(data) {
        assert!(length <= data.len());
    }
    let mut presented = Vec::new();
    if let Sniffed::Done(length, credentials) = sniff::socks_auth(data) {
        assert!(length <= data.len());
        presented.push(credentials);
    }
    if let Sniffed::Done(length, credentials) = sniff::http_head(data) {
        assert!(length <= data.len());
        presented.extend(credentials);
    }
    for credentials in presented {
        assert!(key.check(&credentials.username, &credentials.password, 0).is_err());
    }
    assert!(key.check_ticket(data, 0).is_err());
});
