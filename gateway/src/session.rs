//! Wallet sign-in (EIP-4361, "Sign-In with Ethereum") and sessions, sans I/O.
//!
//! 1. The client names its address; [`SignIn::challenge`] answers with an EIP-4361 message
//!    whose nonce carries everything needed to check the answer later — the address, 8 random
//!    bytes, the issue and expiry times and an HMAC-SHA256 tag over them under the node's key —
//!    so issuing one stores nothing: no flood of challenge requests can fill a table and lock
//!    other users out.
//! 2. The wallet signs the message with `personal_sign` (EIP-191); no key leaves the wallet.
//!    Signatures with `v` = 27/28 or 0/1 are accepted (wallets and libraries differ).
//! 3. [`SignIn::complete`] checks the nonce's tag and expiry, rebuilds the message it issued
//!    (never trusting text the client sends back), recovers the signer, checks it is the
//!    address challenged, and marks the nonce used: single use is enforced here, in a set that
//!    holds only nonces completed with a valid signature and forgets them when they expire.
//! 4. [`SignIn::verify`] checks a token on every call. Tokens are MACed, not stored
//!    (`address ‖ expiry ‖ HMAC-SHA256 tag[16]`), so sessions survive a node restart as long as
//!    the node keeps its session key, and checking one takes no lock or lookup.
//!
//! A failed completion (wrong signer, bad signature) changes nothing: the challenge stays
//! usable until it expires, so a stranger who guesses a nonce cannot burn a user's sign-in.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy_primitives::{Address, eip191_hash_message, hex};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ipsx_channels::crypto::{Signature, recover_signer};
use sha2::Sha256;

const TOKEN_LABEL: &[u8] = b"ipsx-session-v1";
const NONCE_LABEL: &[u8] = b"ipsx-challenge-v1";
/// Login links are nonces under another label: a challenge cannot be redeemed as a link, nor
/// a link completed as a challenge.
const LINK_LABEL: &[u8] = b"ipsx-login-link-v1";
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 20 + 8 + TAG_LEN;
/// Nonce bytes: address, randomness, issued at, expires at, tag (hex on the wire: 120 digits,
/// alphanumeric as EIP-4361 asks).
const NONCE_LEN: usize = 20 + 8 + 8 + 8 + TAG_LEN;

/// Who the node is, as every sign-in message states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInDomain {
    /// The host the user signs in to (EIP-4361 `domain`), e.g. `127.0.0.1:8545`: the authority
    /// of the URL clients reach the node at, which their verifiers compare with.
    pub domain: String,
    /// The node's API base URI.
    pub uri: String,
    /// The chain the node settles on.
    pub chain_id: u64,
    /// A human sentence shown by the wallet.
    pub statement: String,
}

impl SignInDomain {
    /// The domain of a node reached at `public_url` (`http://host:port`, `https://host`…).
    pub fn for_url(public_url: &str, chain_id: u64) -> Result<Self, String> {
        let uri: axum::http::Uri = public_url
            .trim()
            .parse()
            .map_err(|e| format!("{public_url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("{public_url:?} has no scheme (http:// or https://)"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{public_url:?} has no host"))?;
        if authority.as_str().contains('@') || authority.port_u16() == Some(0) {
            return Err(format!("{public_url:?} is not a reachable address"));
        }
        Ok(Self {
            domain: authority.as_str().to_owned(),
            uri: format!("{scheme}://{authority}"),
            chain_id,
            statement: "Sign in to the IPSX node.".to_owned(),
        })
    }
}

/// Lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Seconds a challenge may be answered. Default 300.
    pub challenge_ttl: u64,
    /// Seconds a session lasts. Default 86,400.
    pub session_ttl: u64,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self {
            challenge_ttl: 300,
            session_ttl: 86_400,
        }
    }
}

/// A challenge to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The nonce that names it in [`SignIn::complete`].
    pub nonce: String,
    /// The exact text the wallet signs.
    pub message: String,
    /// Last second it may be answered (unix).
    pub expires_at: u64,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token to send with every call.
    pub token: String,
    /// Whose session it is.
    pub address: Address,
    /// First second it is no longer valid (unix).
    pub expires_at: u64,
}

/// Why a sign-in step was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The nonce is not one this node issued (malformed, altered, or under another key), or
    /// it was already used.
    #[error("unknown or already used sign-in nonce")]
    UnknownNonce,
    /// The challenge expired.
    #[error("the sign-in challenge expired at {0}")]
    Expired(u64),
    /// The signature is not 65 bytes of a valid secp256k1 signature.
    #[error("malformed signature: {0}")]
    BadSignature(String),
    /// The message was signed by another address than the one challenged.
    #[error("signed by {signer}, not by {expected}")]
    WrongSigner {
        /// Who signed.
        signer: Address,
        /// Who was challenged.
        expected: Address,
    },
}

/// Why a session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not a token this node issued (malformed, altered, or under another key).
    #[error("invalid session token")]
    Invalid,
    /// The session is over.
    #[error("session expired at {0}")]
    Expired(u64),
}

/// A nonce, decoded and authenticated.
struct Nonce {
    address: Address,
    issued: u64,
    expires: u64,
    tag: [u8; TAG_LEN],
}

/// Nonces completed and not yet expired: the only sign-in state the node keeps.
#[derive(Default)]
struct Used {
    by_tag: HashMap<[u8; TAG_LEN], u64>,
    /// Size after the last purge: purging again once it doubles keeps inserts O(1) amortised.
    purged_at: usize,
}

impl Used {
    /// Marks `tag` used until `expires`; `false` if it already was.
    fn take(&mut self, tag: [u8; TAG_LEN], expires: u64, now: u64) -> bool {
        if self.by_tag.len() >= (2 * self.purged_at).max(1024) {
            self.by_tag.retain(|_, expires| *expires >= now);
            self.purged_at = self.by_tag.len();
        }
        match self.by_tag.entry(tag) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(expires);
                true
            }
        }
    }
}

/// The node's sign-in: the session key, and the nonces already used.
pub struct SignIn {
    domain: SignInDomain,
    limits: SignInLimits,
    key: [u8; 32],
    used: Mutex<Used>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Sign-in for `domain`, nonces and tokens MACed under `session_key` (keep it across
    /// restarts to keep sessions).
    pub fn new(domain: SignInDomain, limits: SignInLimits, session_key: [u8; 32]) -> Self {
        Self {
            domain,
            limits,
            key: session_key,
            used: Mutex::new(Used::default()),
        }
    }

    /// What sign-in messages say about the node.
    pub fn domain(&self) -> &SignInDomain {
        &self.domain
    }

    /// Issues a challenge for `address` at `now` with 8 random bytes from the caller. Stores
    /// nothing.
    pub fn challenge(&self, address: Address, now: u64, randomness: [u8; 8]) -> Challenge {
        let expires_at = now.saturating_add(self.limits.challenge_ttl);
        let nonce = self.seal(NONCE_LABEL, address, randomness, now, expires_at);
        Challenge {
            message: self.message(address, &nonce, now, expires_at),
            nonce,
            expires_at,
        }
    }

    /// Completes the challenge `nonce` with the wallet's `personal_sign` signature.
    pub fn complete(
        &self,
        nonce: &str,
        signature: &[u8],
        now: u64,
    ) -> Result<Session, SignInError> {
        let decoded = self.decode_nonce(nonce)?;
        if now > decoded.expires {
            return Err(SignInError::Expired(decoded.expires));
        }
        let signature = normalize_v(signature)?;
        let message = self.message(decoded.address, nonce, decoded.issued, decoded.expires);
        let digest = eip191_hash_message(message.as_bytes());
        let signer = recover_signer(&digest, &signature)
            .map_err(|error| SignInError::BadSignature(error.to_string()))?;
        if signer != decoded.address {
            return Err(SignInError::WrongSigner {
                signer,
                expected: decoded.address,
            });
        }
        self.open(decoded, now)
    }

    /// A one-time login link for `address` (signed in already, e.g. by the CLI): whoever
    /// redeems the code within the challenge lifetime gets a session of `address`, once. Stores
    /// nothing; returns the code and when it expires.
    pub fn login_link(&self, address: Address, now: u64, randomness: [u8; 8]) -> (String, u64) {
        let expires_at = now.saturating_add(self.limits.challenge_ttl);
        let code = self.seal(LINK_LABEL, address, randomness, now, expires_at);
        (code, expires_at)
    }

    /// Trades a login link's code for a session, once.
    pub fn redeem_link(&self, code: &str, now: u64) -> Result<Session, SignInError> {
        let decoded = self.decode(LINK_LABEL, code)?;
        if now > decoded.expires {
            return Err(SignInError::Expired(decoded.expires));
        }
        self.open(decoded, now)
    }

    /// A nonce or link code: address, randomness, issued, expires, and a MAC under `label`.
    fn seal(
        &self,
        label: &[u8],
        address: Address,
        randomness: [u8; 8],
        now: u64,
        expires_at: u64,
    ) -> String {
        let mut bytes = Vec::with_capacity(NONCE_LEN);
        bytes.extend_from_slice(address.as_slice());
        bytes.extend_from_slice(&randomness);
        bytes.extend_from_slice(&now.to_be_bytes());
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        let tag = self.mac(label, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        hex::encode(&bytes)
    }

    /// Marks a checked nonce used and opens its session; refused if it was used before.
    fn open(&self, decoded: Nonce, now: u64) -> Result<Session, SignInError> {
        let fresh = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(decoded.tag, decoded.expires, now);
        if !fresh {
            return Err(SignInError::UnknownNonce);
        }
        let expires_at = now.saturating_add(self.limits.session_ttl);
        Ok(Session {
            token: self.token(decoded.address, expires_at),
            address: decoded.address,
            expires_at,
        })
    }

    fn decode_nonce(&self, nonce: &str) -> Result<Nonce, SignInError> {
        self.decode(NONCE_LABEL, nonce)
    }

    fn decode(&self, label: &[u8], nonce: &str) -> Result<Nonce, SignInError> {
        let bytes = hex::decode(nonce.trim()).map_err(|_| SignInError::UnknownNonce)?;
        if bytes.len() != NONCE_LEN {
            return Err(SignInError::UnknownNonce);
        }
        let (body, tag) = bytes.split_at(NONCE_LEN - TAG_LEN);
        self.mac(label, body)
            .verify_truncated_left(tag)
            .map_err(|_| SignInError::UnknownNonce)?;
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        Ok(Nonce {
            address: Address::from_slice(&body[..20]),
            issued: word(28),
            expires: word(36),
            tag: tag_bytes,
        })
    }

    /// The address a session token belongs to, if it is valid at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Address, SessionError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| SessionError::Invalid)?;
        if bytes.len() != TOKEN_LEN {
            return Err(SessionError::Invalid);
        }
        let (body, tag) = bytes.split_at(20 + 8);
        self.mac(TOKEN_LABEL, body)
            .verify_truncated_left(tag)
            .map_err(|_| SessionError::Invalid)?;
        let address = Address::from_slice(&body[..20]);
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&body[20..]);
        let expires_at = u64::from_be_bytes(expiry);
        if now >= expires_at {
            return Err(SessionError::Expired(expires_at));
        }
        Ok(address)
    }

    /// Completed nonces remembered until they expire (for metrics and tests).
    pub fn used_nonces(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .by_tag
            .len()
    }

    fn token(&self, address: Address, expires_at: u64) -> String {
        let mut body = Vec::with_capacity(TOKEN_LEN);
        body.extend_from_slice(address.as_slice());
        body.extend_from_slice(&expires_at.to_be_bytes());
        let tag = self.mac(TOKEN_LABEL, &body).finalize().into_bytes();
        body.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    fn mac(&self, label: &[u8], body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        mac.update(body);
        mac
    }

    /// The EIP-4361 message, field for field.
    fn message(&self, address: Address, nonce: &str, issued: u64, expires: u64) -> String {
        let SignInDomain {
            domain,
            uri,
            chain_id,
            statement,
        } = &self.domain;
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n\
             {address}\n\n\
             {statement}\n\n\
             URI: {uri}\n\
             Version: 1\n\
             Chain ID: {chain_id}\n\
             Nonce: {nonce}\n\
             Issued At: {}\n\
             Expiration Time: {}",
            rfc3339(issued),
            rfc3339(expires),
        )
    }
}

/// A 65-byte signature with `v` as 27/28; wallets and libraries also send 0/1.
fn normalize_v(signature: &[u8]) -> Result<Signature, SignInError> {
    let mut bytes: [u8; 65] = signature.try_into().map_err(|_| {
        SignInError::BadSignature(format!("{} bytes, expected 65", signature.len()))
    })?;
    bytes[64] = match bytes[64] {
        0 | 1 => bytes[64] + 27,
        27 | 28 => bytes[64],
        other => {
            return Err(SignInError::BadSignature(format!(
                "v = {other}; expected 27, 28, 0 or 1"
            )));
        }
    };
    Signature::from_slice(&bytes).map_err(|error| SignInError::BadSignature(error.to_string()))
}

/// An address as a person or wallet writes it: all lower- or upper-case hex, or mixed case with
/// a valid EIP-55 checksum (a mixed-case address with a wrong checksum is a typo, refused).
pub fn parse_address(text: &str) -> Result<Address, String> {
    let text = text.trim();
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let mixed = digits.chars().any(|c| c.is_ascii_uppercase())
        && digits.chars().any(|c| c.is_ascii_lowercase());
    if mixed {
        Address::parse_checksummed(text, None)
            .map_err(|_| format!("{text:?} has a wrong EIP-55 checksum"))
    } else {
        text.parse()
            .map_err(|_| format!("{text:?} is not an Ethereum address"))
    }
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    fn sign_in() -> SignIn {
        SignIn::new(
            SignInDomain::for_url("http://127.0.0.1:7700", 31337).expect("domain"),
            SignInLimits::default(),
            [9; 32],
        )
    }

    fn wallet(seed: u8) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&[seed; 32].into()).expect("key")
    }

    fn personal_sign(wallet: &PrivateKeySigner, message: &str) -> Vec<u8> {
        wallet
            .sign_message_sync(message.as_bytes())
            .expect("sign")
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn a_login_link_opens_one_session_once_and_is_no_challenge() {
        let sign_in = sign_in();
        let alice = wallet(1);
        let now = 1_700_000_000;
        let (code, expires_at) = sign_in.login_link(alice.address(), now, [3; 8]);
        assert_eq!(expires_at, now + SignInLimits::default().challenge_ttl);
        // A challenge's nonce is not a link, nor a link a challenge.
        let challenge = sign_in.challenge(alice.address(), now, [3; 8]);
        assert_eq!(
            sign_in.redeem_link(&challenge.nonce, now),
            Err(SignInError::UnknownNonce)
        );
        let signed = personal_sign(&alice, &challenge.message);
        assert!(sign_in.complete(&code, &signed, now).is_err());
        // Altered, late, or twice: refused.
        let mut altered = code.clone().into_bytes();
        altered[0] = if altered[0] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(altered).expect("hex");
        assert_eq!(
            sign_in.redeem_link(&altered, now),
            Err(SignInError::UnknownNonce)
        );
        assert_eq!(
            sign_in.redeem_link(&code, expires_at + 1),
            Err(SignInError::Expired(expires_at))
        );
        let session = sign_in.redeem_link(&code, now + 1).expect("redeemed");
        assert_eq!(sign_in.verify(&session.token, now + 2), Ok(alice.address()));
        assert_eq!(
            sign_in.redeem_link(&code, now + 2),
            Err(SignInError::UnknownNonce),
            "once"
        );
    }

    #[test]
    fn a_wallet_signs_in_and_its_token_names_it_until_expiry() {
        let sign_in = sign_in();
        let alice = wallet(1);
        let challenge = sign_in.challenge(alice.address(), 1_700_000_000, [7; 8]);
        assert_eq!(challenge.nonce.len(), 120);
        assert!(challenge.nonce.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            challenge.message,
            format!(
                "127.0.0.1:7700 wants you to sign in with your Ethereum account:\n{}\n\n\
                 Sign in to the IPSX node.\n\nURI: http://127.0.0.1:7700\nVersion: 1\n\
                 Chain ID: 31337\nNonce: {}\n\
                 Issued At: 2023-11-14T22:13:20Z\nExpiration Time: 2023-11-14T22:18:20Z",
                alice.address(),
                challenge.nonce
            )
        );
        let signature = personal_sign(&alice, &challenge.message);
        let session = sign_in
            .complete(&challenge.nonce, &signature, 1_700_000_010)
            .expect("signed in");
        assert_eq!(session.address, alice.address());
        assert_eq!(
            sign_in.verify(&session.token, 1_700_000_020),
            Ok(alice.address())
        );
        assert_eq!(
            sign_in.verify(&session.token, session.expires_at),
            Err(SessionError::Expired(session.expires_at))
        );
        assert_eq!(
            sign_in.complete(&challenge.nonce, &signature, 1_700_000_011),
            Err(SignInError::UnknownNonce),
            "a nonce is used once"
        );
    }

    #[test]
    fn another_wallets_signature_changes_nothing() {
        let sign_in = sign_in();
        let (alice, mallory) = (wallet(1), wallet(2));
        let challenge = sign_in.challenge(alice.address(), 100, [1; 8]);
        let forged = personal_sign(&mallory, &challenge.message);
        assert_eq!(
            sign_in.complete(&challenge.nonce, &forged, 101),
            Err(SignInError::WrongSigner {
                signer: mallory.address(),
                expected: alice.address()
            })
        );
        assert!(matches!(
            sign_in.complete(&challenge.nonce, &[0u8; 10], 101),
            Err(SignInError::BadSignature(_))
        ));
        // Alice can still complete her own challenge.
        let good = personal_sign(&alice, &challenge.message);
        assert!(sign_in.complete(&challenge.nonce, &good, 102).is_ok());
    }

    #[test]
    fn forged_altered_and_foreign_nonces_are_unknown() {
        let sign_in = sign_in();
        let (alice, mallory) = (wallet(1), wallet(2));
        let challenge = sign_in.challenge(alice.address(), 100, [1; 8]);
        // Mallory rewrites the nonce to name her own address and signs the matching message.
        let mut bytes = hex::decode(&challenge.nonce).expect("hex");
        bytes[..20].copy_from_slice(mallory.address().as_slice());
        let forged = hex::encode(&bytes);
        assert_eq!(
            sign_in.complete(&forged, &[0u8; 65], 101),
            Err(SignInError::UnknownNonce)
        );
        // Pushing the expiry breaks the tag too.
        let mut bytes = hex::decode(&challenge.nonce).expect("hex");
        bytes[43] ^= 1;
        assert_eq!(
            sign_in.complete(&hex::encode(&bytes), &[0u8; 65], 101),
            Err(SignInError::UnknownNonce)
        );
        let other_node = SignIn::new(sign_in.domain.clone(), SignInLimits::default(), [8; 32]);
        let signature = personal_sign(&alice, &challenge.message);
        assert_eq!(
            other_node.complete(&challenge.nonce, &signature, 101),
            Err(SignInError::UnknownNonce)
        );
        for junk in ["", "zz", "00", &"0".repeat(120)] {
            assert_eq!(
                sign_in.complete(junk, &signature, 101),
                Err(SignInError::UnknownNonce)
            );
        }
    }

    #[test]
    fn late_answers_and_altered_or_foreign_tokens_are_refused() {
        let sign_in = sign_in();
        let alice = wallet(1);
        let challenge = sign_in.challenge(alice.address(), 100, [3; 8]);
        let signature = personal_sign(&alice, &challenge.message);
        assert_eq!(
            sign_in.complete(&challenge.nonce, &signature, 401),
            Err(SignInError::Expired(400))
        );
        let challenge = sign_in.challenge(alice.address(), 500, [4; 8]);
        let signature = personal_sign(&alice, &challenge.message);
        let session = sign_in
            .complete(&challenge.nonce, &signature, 501)
            .expect("session");
        let mut altered = URL_SAFE_NO_PAD.decode(&session.token).expect("b64");
        altered[25] ^= 1; // push the expiry
        assert_eq!(
            sign_in.verify(&URL_SAFE_NO_PAD.encode(altered), 600),
            Err(SessionError::Invalid)
        );
        let other_node = SignIn::new(sign_in.domain.clone(), SignInLimits::default(), [8; 32]);
        assert_eq!(
            other_node.verify(&session.token, 600),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            sign_in.verify("not a token", 600),
            Err(SessionError::Invalid)
        );
        assert_eq!(sign_in.verify("", 600), Err(SessionError::Invalid));
    }

    #[test]
    fn a_flood_of_challenges_stores_nothing_and_used_nonces_are_forgotten_once_expired() {
        let sign_in = sign_in();
        let alice = wallet(1);
        for n in 0..100_000u64 {
            let _ = sign_in.challenge(alice.address(), 100, n.to_be_bytes());
        }
        assert_eq!(sign_in.used_nonces(), 0, "issuing keeps no state");
        let challenge = sign_in.challenge(alice.address(), 100, [9; 8]);
        let signature = personal_sign(&alice, &challenge.message);
        assert!(sign_in.complete(&challenge.nonce, &signature, 101).is_ok());
        assert_eq!(sign_in.used_nonces(), 1);
        // Completions long after expiry purge what expired.
        let mut used = sign_in.used.lock().expect("lock");
        for n in 0..2_000u16 {
            let mut tag = [0u8; TAG_LEN];
            tag[..2].copy_from_slice(&n.to_be_bytes());
            tag[2] = 1;
            assert!(used.take(tag, 400, 401 + u64::from(n)));
        }
        assert!(used.by_tag.len() < 2_000, "expired entries were purged");
    }

    #[test]
    fn signatures_with_v_0_or_1_are_accepted_and_others_refused() {
        let sign_in = sign_in();
        let alice = wallet(1);
        let challenge = sign_in.challenge(alice.address(), 100, [5; 8]);
        let mut signature = personal_sign(&alice, &challenge.message);
        let v = signature[64];
        signature[64] = 42;
        assert!(matches!(
            sign_in.complete(&challenge.nonce, &signature, 101),
            Err(SignInError::BadSignature(_))
        ));
        signature[64] = v - 27;
        assert_eq!(
            sign_in
                .complete(&challenge.nonce, &signature, 101)
                .map(|s| s.address),
            Ok(alice.address())
        );
    }

    #[test]
    fn addresses_with_a_wrong_checksum_are_refused() {
        let good = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert!(parse_address(good).is_ok());
        assert!(parse_address(&good.to_ascii_lowercase()).is_ok());
        assert!(parse_address(&format!("0x{}", good[2..].to_ascii_uppercase())).is_ok());
        let typo = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert!(
            parse_address(typo)
                .expect_err("bad checksum")
                .contains("checksum")
        );
        assert!(parse_address("0x1234").is_err());
    }

    #[test]
    fn the_domain_comes_from_the_public_url() {
        let domain = SignInDomain::for_url("https://node.example:8443/", 1).expect("url");
        assert_eq!(domain.domain, "node.example:8443");
        assert_eq!(domain.uri, "https://node.example:8443");
        assert!(SignInDomain::for_url("http://127.0.0.1:0", 1).is_err());
        assert!(SignInDomain::for_url("127.0.0.1:80", 1).is_err());
    }
}
