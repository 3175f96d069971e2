//! secp256k1 keys and Ethereum-style 65-byte signatures over EIP-712 digests.
//!
//! Signing and recovery go through libsecp256k1 (the `secp256k1` crate, Bitcoin Core's C
//! library): recovering a signer is about 3x faster there than with the pure-Rust `k256`, and the
//! hub does one recovery per requester and one signature per provider every second (see the
//! `channels` criterion bench, which measures both). [`recover_signer_k256`] keeps the pure-Rust
//! path for cross-checks and the comparison.
//!
//! Signatures are `r ‖ s ‖ v` with `v` = 27 or 28 and a low `s`, the form wallets return from
//! `eth_signTypedData_v4` and the only form the contract's OpenZeppelin `ECDSA.recover` takes.

use alloy_primitives::{Address, B256, keccak256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SECP256K1, SecretKey};

use crate::error::SignatureError;

/// Half the curve order: signatures with a larger `s` are the malleable twin of a valid one.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// A 65-byte Ethereum signature: `r ‖ s ‖ v`, `v` in {27, 28}.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 65]);

impl Signature {
    /// The signature from its 65 bytes; checks the length only (recovery checks the rest).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureError> {
        let array: [u8; 65] = bytes
            .try_into()
            .map_err(|_| SignatureError::Length(bytes.len()))?;
        Ok(Self(array))
    }

    /// The bytes, as the contract takes them.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature(0x{})", alloy_primitives::hex::encode(self.0))
    }
}

/// A private key that signs balance proofs.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    address: Address,
}

impl SigningKey {
    /// A key from its 32 bytes; fails on zero or a value at or above the curve order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        let secret = SecretKey::from_byte_array(*bytes).map_err(|_| SignatureError::BadKey)?;
        let address = address_of(&PublicKey::from_secret_key(SECP256K1, &secret));
        Ok(Self { secret, address })
    }

    /// A key from hex (with or without `0x`), as wallets and anvil print them.
    pub fn from_hex(hex: &str) -> Result<Self, SignatureError> {
        let bytes: [u8; 32] = alloy_primitives::hex::decode_to_array(hex.trim())
            .map_err(|_| SignatureError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// The Ethereum address of this key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The 32 secret bytes (to hand to a transaction signer).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low `s`).
    pub fn sign_digest(&self, digest: &B256) -> Signature {
        let message = Message::from_digest(digest.0);
        let (recovery_id, compact) = SECP256K1
            .sign_ecdsa_recoverable(message, &self.secret)
            .serialize_compact();
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&compact);
        bytes[64] = 27 + i32::from(recovery_id) as u8;
        Signature(bytes)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("SigningKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The address that signed `digest`, through libsecp256k1. Refuses what the contract refuses:
/// `v` other than 27/28, high `s`, and points that do not recover.
pub fn recover_signer(digest: &B256, signature: &Signature) -> Result<Address, SignatureError> {
    let recovery_id = check_shape(signature)?;
    let recoverable = RecoverableSignature::from_compact(&signature.0[..64], recovery_id)
        .map_err(|_| SignatureError::Invalid)?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(digest.0), &recoverable)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(address_of(&key))
}

/// [`recover_signer`] through the pure-Rust `k256` crate (what alloy uses by default): same
/// answers, slower; kept for cross-checks and the benchmark comparison.
pub fn recover_signer_k256(
    digest: &B256,
    signature: &Signature,
) -> Result<Address, SignatureError> {
    check_shape(signature)?;
    let parsed =
        alloy_primitives::Signature::from_raw(&signature.0).map_err(|_| SignatureError::Invalid)?;
    parsed
        .recover_address_from_prehash(digest)
        .map_err(|_| SignatureError::Invalid)
}

fn check_shape(signature: &Signature) -> Result<RecoveryId, SignatureError> {
    let v = signature.0[64];
    let recovery_id = match v {
        27 => RecoveryId::Zero,
        28 => RecoveryId::One,
        other => return Err(SignatureError::BadV(other)),
    };
    if signature.0[32..64] > HALF_ORDER[..] {
        return Err(SignatureError::HighS);
    }
    Ok(recovery_id)
}

fn address_of(key: &PublicKey) -> Address {
    let uncompressed = key.serialize_uncompressed();
    Address::from_slice(&keccak256(&uncompressed[1..])[12..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn a_key_knows_its_address() {
        let key = SigningKey::from_hex(ANVIL_KEY).expect("key");
        assert_eq!(
            key.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn both_backends_recover_the_signer_and_refuse_the_malleable_twin() {
        let key = SigningKey::from_hex(ANVIL_KEY).expect("key");
        let digest = keccak256(b"ipsx");
        let signature = key.sign_digest(&digest);
        assert_eq!(recover_signer(&digest, &signature), Ok(key.address()));
        assert_eq!(recover_signer_k256(&digest, &signature), Ok(key.address()));

        // (r, n - s, v ^ 1) is the same signature in high-s form: refused like the contract does.
        let mut twin = signature;
        let s = alloy_primitives::U256::from_be_slice(&signature.0[32..64]);
        let n = alloy_primitives::U256::from_be_slice(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c,
            0xd0, 0x36, 0x41, 0x41,
        ]);
        twin.0[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        twin.0[64] = 55 - twin.0[64]; // 27 <-> 28
        assert_eq!(recover_signer(&digest, &twin), Err(SignatureError::HighS));
        assert_eq!(
            recover_signer_k256(&digest, &twin),
            Err(SignatureError::HighS)
        );
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        assert_eq!(
            Signature::from_slice(&[0u8; 64]),
            Err(SignatureError::Length(64))
        );
        let key = SigningKey::from_hex(ANVIL_KEY).expect("key");
        let digest = keccak256(b"ipsx");
        let mut signature = key.sign_digest(&digest);
        signature.0[64] = 1;
        assert_eq!(
            recover_signer(&digest, &signature),
            Err(SignatureError::BadV(1))
        );
        assert_eq!(
            recover_signer(&digest, &Signature([0u8; 65])),
            Err(SignatureError::BadV(0))
        );
        let mut zero = Signature([0u8; 65]);
        zero.0[64] = 27;
        assert_eq!(recover_signer(&digest, &zero), Err(SignatureError::Invalid));
        assert!(SigningKey::from_bytes(&[0u8; 32]).is_err());
        assert!(SigningKey::from_hex("0x12").is_err());
    }
}
