//! The crawler endpoint's username/password grammar on hostile bytes: a SOCKS5 client sends
//! any bytes as its username and password (split here at the first NUL), an HTTP client any
//! `Proxy-Authorization`. Every input parses or names the parameter it refuses; whatever
//! parses is well-formed.
#![no_main]

use ipsx_gate::{Stickiness, Target};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (username, password) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let (Ok(username), Ok(password)) = (std::str::from_utf8(username), std::str::from_utf8(password))
    else {
        return;
    };
    match Target::parse(username, password) {
        Err(error) => assert!(!error.param.is_empty()),
        Ok(target) => {
            let filter = &target.filter;
            assert!(filter.countries.iter().all(|c| c.len() == 2
                && c.bytes().all(|b| b.is_ascii_uppercase())));
            assert!(filter.countries.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
            assert!(filter.min_rating.is_none_or(|r| r <= 500));
            if let Stickiness::Session { id, idle_secs } = &target.stickiness {
                assert!(!id.is_empty() && id.len() <= 64);
                assert!((60..=1_440 * 60).contains(idle_secs));
            }
        }
    }
});
