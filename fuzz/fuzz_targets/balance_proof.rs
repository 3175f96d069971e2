//! The 129-byte balance-proof wire form, as a payer (or anyone on the stream) might send it:
//! decoding never panics, a decoded proof re-encodes to the same bytes, and recovering its
//! signer either fails cleanly or names an address.
#![no_main]

use ipsx_channels::{ChannelDomain, SignedProof};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(proof) = SignedProof::decode(data) else {
        return;
    };
    assert_eq!(&proof.encode()[..], data, "the wire form round-trips");
    let domain = ChannelDomain::new(31337, alloy_primitives::Address::repeat_byte(0xce));
    let _ = domain.proof_signer(&proof);
});
