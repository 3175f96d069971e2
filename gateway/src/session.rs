//! Wallet sign-in (EIP-4361, "Sign-In with Ethereum") and sessions, sans I/O.
//!
//! 1. The client names its address; [`SignIn::challenge`] answers with an EIP-4361 message
//!    holding a single-use nonce (the caller supplies the randomness and the time).
//! 2. The wallet signs the message with `personal_sign` (EIP-191); no key leaves the wallet.
//! 3. [`SignIn::complete`] recovers the signer from the message it issued (never from text the
//!    client sends back), checks it is the address challenged, consumes the nonce, and returns
//!    a [`Session`] token.
//! 4. [`SignIn::verify`] checks a token on every call. Tokens are MACed, not stored
//!    (`address ‖ expiry ‖ HMAC-SHA256 tag[16]`), so sessions survive a node restart as long as
//!    the node keeps its session key, and checking one takes no lock or lookup.
//!
//! A failed completion (wrong signer, bad signature) changes nothing: the challenge stays
//! usable until it expires, so a stranger who guesses a nonce cannot burn a user's sign-in.

use std::collections::HashMap;

use alloy_primitives::{Address, eip191_hash_message};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ipsx_channels::crypto::{Signature, recover_signer};
use sha2::Sha256;

const TOKEN_LABEL: &[u8] = b"ipsx-session-v1";
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 20 + 8 + TAG_LEN;

/// Who the node is, as every sign-in message states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInDomain {
    /// The host the user signs in to (EIP-4361 `domain`), e.g. `127.0.0.1:8545`.
    pub domain: String,
    /// The node's API base URI.
    pub uri: String,
    /// The chain the node settles on.
    pub chain_id: u64,
    /// A human sentence shown by the wallet.
    pub statement: String,
}

/// Lifetimes and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Seconds a challenge may be answered. Default 300.
    pub challenge_ttl: u64,
    /// Seconds a session lasts. Default 86,400.
    pub session_ttl: u64,
    /// Challenges outstanding at once (a flood of challenge requests cannot grow memory
    /// without bound). Default 100,000.
    pub max_pending: usize,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self {
            challenge_ttl: 300,
            session_ttl: 86_400,
            max_pending: 100_000,
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
    /// No outstanding challenge has this nonce (never issued, already used, or expired and
    /// purged).
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
    /// Too many challenges are outstanding; try again shortly.
    #[error("too many sign-ins in progress")]
    TooManyPending,
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

struct Pending {
    address: Address,
    message: String,
    expires_at: u64,
}

/// The node's sign-in state: outstanding challenges and the session key.
pub struct SignIn {
    domain: SignInDomain,
    limits: SignInLimits,
    key: [u8; 32],
    pending: HashMap<String, Pending>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("domain", &self.domain)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Sign-in for `domain`, tokens MACed under `session_key` (keep it across restarts).
    pub fn new(domain: SignInDomain, limits: SignInLimits, session_key: [u8; 32]) -> Self {
        Self {
            domain,
            limits,
            key: session_key,
            pending: HashMap::new(),
        }
    }

    /// Issues a challenge for `address` at `now` with 16 random bytes from the caller.
    pub fn challenge(
        &mut self,
        address: Address,
        now: u64,
        randomness: [u8; 16],
    ) -> Result<Challenge, SignInError> {
        if self.pending.len() >= self.limits.max_pending {
            self.pending.retain(|_, pending| pending.expires_at >= now);
            if self.pending.len() >= self.limits.max_pending {
                return Err(SignInError::TooManyPending);
            }
        }
        // EIP-4361 nonces are alphanumeric, at least 8 characters.
        let nonce: String = randomness.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now.saturating_add(self.limits.challenge_ttl);
        let message = self.message(address, &nonce, now, expires_at);
        self.pending.insert(
            nonce.clone(),
            Pending {
                address,
                message: message.clone(),
                expires_at,
            },
        );
        Ok(Challenge {
            nonce,
            message,
            expires_at,
        })
    }

    /// Completes the challenge `nonce` with the wallet's `personal_sign` signature.
    pub fn complete(
        &mut self,
        nonce: &str,
        signature: &[u8],
        now: u64,
    ) -> Result<Session, SignInError> {
        let pending = self.pending.get(nonce).ok_or(SignInError::UnknownNonce)?;
        if now > pending.expires_at {
            let expired = pending.expires_at;
            self.pending.remove(nonce);
            return Err(SignInError::Expired(expired));
        }
        let signature = Signature::from_slice(signature)
            .map_err(|error| SignInError::BadSignature(error.to_string()))?;
        let digest = eip191_hash_message(pending.message.as_bytes());
        let signer = recover_signer(&digest, &signature)
            .map_err(|error| SignInError::BadSignature(error.to_string()))?;
        if signer != pending.address {
            return Err(SignInError::WrongSigner {
                signer,
                expected: pending.address,
            });
        }
        let address = pending.address;
        self.pending.remove(nonce);
        let expires_at = now.saturating_add(self.limits.session_ttl);
        Ok(Session {
            token: self.token(address, expires_at),
            address,
            expires_at,
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
        self.mac(body)
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

    /// Challenges outstanding (for metrics).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn token(&self, address: Address, expires_at: u64) -> String {
        let mut body = Vec::with_capacity(TOKEN_LEN);
        body.extend_from_slice(address.as_slice());
        body.extend_from_slice(&expires_at.to_be_bytes());
        let tag = self.mac(&body).finalize().into_bytes();
        body.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(TOKEN_LABEL);
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
            SignInDomain {
                domain: "127.0.0.1:7700".into(),
                uri: "http://127.0.0.1:7700".into(),
                chain_id: 31337,
                statement: "Sign in to the IPSX node.".into(),
            },
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
    fn a_wallet_signs_in_and_its_token_names_it_until_expiry() {
        let mut sign_in = sign_in();
        let alice = wallet(1);
        let challenge = sign_in
            .challenge(alice.address(), 1_700_000_000, [7; 16])
            .expect("challenge");
        assert_eq!(
            challenge.message,
            format!(
                "127.0.0.1:7700 wants you to sign in with your Ethereum account:\n{}\n\n\
                 Sign in to the IPSX node.\n\nURI: http://127.0.0.1:7700\nVersion: 1\n\
                 Chain ID: 31337\nNonce: 07070707070707070707070707070707\n\
                 Issued At: 2023-11-14T22:13:20Z\nExpiration Time: 2023-11-14T22:18:20Z",
                alice.address()
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
        let mut sign_in = sign_in();
        let (alice, mallory) = (wallet(1), wallet(2));
        let challenge = sign_in
            .challenge(alice.address(), 100, [1; 16])
            .expect("challenge");
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
    fn late_answers_and_altered_or_foreign_tokens_are_refused() {
        let mut sign_in = sign_in();
        let alice = wallet(1);
        let challenge = sign_in
            .challenge(alice.address(), 100, [3; 16])
            .expect("challenge");
        let signature = personal_sign(&alice, &challenge.message);
        assert_eq!(
            sign_in.complete(&challenge.nonce, &signature, 401),
            Err(SignInError::Expired(400))
        );
        let challenge = sign_in
            .challenge(alice.address(), 500, [4; 16])
            .expect("challenge");
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
    fn outstanding_challenges_are_bounded_and_expired_ones_make_room() {
        let mut sign_in = SignIn::new(
            sign_in().domain,
            SignInLimits {
                max_pending: 2,
                ..SignInLimits::default()
            },
            [9; 32],
        );
        let alice = wallet(1).address();
        sign_in.challenge(alice, 100, [1; 16]).expect("first");
        sign_in.challenge(alice, 100, [2; 16]).expect("second");
        assert_eq!(
            sign_in.challenge(alice, 101, [3; 16]),
            Err(SignInError::TooManyPending)
        );
        assert_eq!(sign_in.pending(), 2, "the refusal changed nothing");
        assert!(
            sign_in.challenge(alice, 401, [3; 16]).is_ok(),
            "expired ones purged"
        );
        assert_eq!(sign_in.pending(), 1);
    }
}
