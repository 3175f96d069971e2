//! The node's API bodies and sign-in inputs as any client may send them: the first byte picks
//! what the rest is. Bodies that parse go through the node's own conversions and the engine's
//! checks; nonces, signatures and tokens through sign-in. Nothing may panic, and no forged
//! nonce or token may be accepted.
#![no_main]

use ipsx_api::{ChallengeRequest, ChannelBody, LeaseBody, OfferBody, ProviderBody, RatingBody, SessionRequest};
use ipsx_gateway::market::{offer_ips, offer_spec, request_spec};
use ipsx_gateway::session::{SignIn, SignInDomain, SignInLimits, parse_address};

const NOW: u64 = 1_800_000_000;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let party = alloy_primitives::Address::repeat_byte(0x11);
    match kind % 8 {
        0 => {
            if let Ok(lease) = serde_json::from_slice::<LeaseBody>(body)
                && let Ok(spec) = request_spec(&lease, party)
            {
                let _ = spec.validate(ipsx_engine::Timestamp(NOW));
            }
        }
        1 => {
            if let Ok(offer) = serde_json::from_slice::<OfferBody>(body) {
                let _ = offer_ips(&offer);
                if let Ok(spec) = offer_spec(&offer, party, NOW) {
                    let _ = spec.validate(ipsx_engine::Timestamp(NOW));
                }
            }
        }
        2 => {
            if let Ok(request) = serde_json::from_slice::<ChallengeRequest>(body) {
                let _ = parse_address(&request.address);
            }
        }
        3 => {
            if let Ok(request) = serde_json::from_slice::<SessionRequest>(body) {
                let signature = alloy_primitives::hex::decode(request.signature.trim()).unwrap_or_default();
                assert!(sign_in().complete(&request.nonce, &signature, NOW).is_err(), "a forged nonce signed in");
            }
        }
        4 => {
            let text = String::from_utf8_lossy(body);
            assert!(sign_in().verify(&text, NOW).is_err(), "a forged session token");
        }
        5 => {
            let _ = serde_json::from_slice::<RatingBody>(body);
            let _ = serde_json::from_slice::<ChannelBody>(body);
        }
        6 => {
            let _ = serde_json::from_slice::<ProviderBody>(body);
        }
        _ => {
            let _ = parse_address(&String::from_utf8_lossy(body));
        }
    }
});

fn sign_in() -> SignIn {
    SignIn::new(
        SignInDomain::for_url("http://127.0.0.1:7700", 31337).expect("domain"),
        SignInLimits::default(),
        [9; 32],
    )
}
