//! What the node and its relays share: a seal on the credentials of relayed leases, so a relay
//! drops garbage before it reaches a provider, and tickets that tell a relay which provider a
//! QUIC connection belongs to.
//!
//! The seal is HMAC-SHA256 under the relay key over the username and the provider's password,
//! truncated to 12 bytes and appended as `.` + base64url. It adds nothing a provider checks:
//! a relay holding only the relay key can reject credentials but never make ones a provider
//! serves.
//!
//! A ticket is `base64url(provider ‖ not_after ‖ tag)`: the provider's 20-byte address and the
//! first second it is no longer valid, tagged under the relay key. The node hands one to a
//! signed-in provider; the provider presents it to the relay over TLS.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{AuthError, BadKey, CredentialKey, Credentials, GRANT_LEN, Grant, check_window};

const SEAL_LABEL: &[u8] = b"ipsx-relay-seal-v1";
const REPORT_LABEL: &[u8] = b"ipsx-relay-report-v1";
const TICKET_LABEL: &[u8] = b"ipsx-relay-ticket-v1";
const SEAL_LEN: usize = 12;
const TICKET_TAG_LEN: usize = 16;
const TICKET_LEN: usize = 20 + 8 + TICKET_TAG_LEN;

/// The key a node shares with its relays.
#[derive(Clone)]
pub struct RelayKey([u8; 32]);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(..)")
    }
}

/// A ticket the relay does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket at all.
    #[error("malformed relay ticket")]
    Malformed,
    /// Made with another key, or edited.
    #[error("relay ticket does not verify")]
    BadTag,
    /// Past its validity.
    #[error("relay ticket expired")]
    Expired,
}

impl RelayKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as 64 hex digits, as key files hold it.
    pub fn to_hex(&self) -> String {
        CredentialKey::new(self.0).to_hex()
    }

    /// A key from 64 hex digits, as key files hold it.
    pub fn from_hex(text: &str) -> Result<Self, BadKey> {
        CredentialKey::from_hex(text).map(|key| Self(key.0))
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        for part in parts {
            // Length-prefixed, so no two splits of the same bytes tag alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// Adds the relay's seal to credentials the provider's key issued (the node's side).
    pub fn seal(&self, credentials: Credentials) -> Credentials {
        let tag = self
            .mac(
                SEAL_LABEL,
                &[
                    credentials.username.as_bytes(),
                    credentials.password.as_bytes(),
                ],
            )
            .finalize()
            .into_bytes();
        let password = format!(
            "{}.{}",
            credentials.password,
            URL_SAFE_NO_PAD.encode(&tag[..SEAL_LEN])
        );
        Credentials {
            username: credentials.username,
            password,
        }
    }

    /// Checks the seal and the window of sealed credentials and answers their grant (the
    /// relay's side). The provider's own tag is not checked here: only the provider can.
    pub fn check(&self, username: &[u8], password: &[u8], now: u64) -> Result<Grant, AuthError> {
        let dot = password
            .iter()
            .rposition(|&byte| byte == b'.')
            .ok_or(AuthError::Malformed)?;
        let (theirs, seal) = (&password[..dot], &password[dot + 1..]);
        let seal = URL_SAFE_NO_PAD
            .decode(seal)
            .map_err(|_| AuthError::Malformed)?;
        if seal.len() != SEAL_LEN {
            return Err(AuthError::Malformed);
        }
        self.mac(SEAL_LABEL, &[username, theirs])
            .verify_truncated_left(&seal)
            .map_err(|_| AuthError::BadSecret)?;
        let (lease, decoded) = crate::decode(username, theirs)?;
        let grant = crate::decode_grant(lease, &decoded[..GRANT_LEN]);
        check_window(&grant, now)?;
        Ok(grant)
    }

    /// The tag a relay run apart puts on a report to the node (hex), over the report's bytes.
    pub fn report_tag(&self, body: &[u8]) -> String {
        self.mac(REPORT_LABEL, &[body])
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether `tag` (hex) is this key's tag on `body`, compared in constant time.
    pub fn check_report(&self, body: &[u8], tag: &str) -> bool {
        let Ok(expected) = CredentialKey::from_hex(tag) else {
            return false;
        };
        self.mac(REPORT_LABEL, &[body])
            .verify_slice(&expected.0)
            .is_ok()
    }

    /// A ticket naming `provider`, valid before `not_after` (unix seconds).
    pub fn ticket(&self, provider: [u8; 20], not_after: u64) -> String {
        let expiry = not_after.to_be_bytes();
        let tag = self
            .mac(TICKET_LABEL, &[&provider, &expiry])
            .finalize()
            .into_bytes();
        let mut bytes = Vec::with_capacity(TICKET_LEN);
        bytes.extend_from_slice(&provider);
        bytes.extend_from_slice(&expiry);
        bytes.extend_from_slice(&tag[..TICKET_TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The provider a ticket names, if it verifies and is valid at `now`.
    pub fn check_ticket(&self, ticket: &[u8], now: u64) -> Result<[u8; 20], TicketError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(ticket)
            .map_err(|_| TicketError::Malformed)?;
        if bytes.len() != TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let (provider, rest) = bytes.split_at(20);
        let (expiry, tag) = rest.split_at(8);
        self.mac(TICKET_LABEL, &[provider, expiry])
            .verify_truncated_left(tag)
            .map_err(|_| TicketError::BadTag)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(expiry);
        if now >= u64::from_be_bytes(word) {
            return Err(TicketError::Expired);
        }
        let mut address = [0u8; 20];
        address.copy_from_slice(provider);
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocols;

    fn grant() -> Grant {
        Grant {
            lease: 7,
            ip: "203.0.113.9".parse().expect("ip"),
            protocols: Protocols::HTTP,
            not_before: 100,
            not_after: 200,
        }
    }

    #[test]
    fn sealed_credentials_pass_the_relay_and_the_provider_and_nothing_else_passes_the_relay() {
        let provider = CredentialKey::new([1; 32]);
        let relay = RelayKey::new([2; 32]);
        let sealed = relay.seal(provider.issue(&grant()));
        let user = sealed.username.as_bytes();
        assert_eq!(
            relay.check(user, sealed.password.as_bytes(), 150),
            Ok(grant())
        );
        assert_eq!(
            provider.verify(user, sealed.password.as_bytes(), grant().ip, 150),
            Ok(grant())
        );
        // Unsealed, sealed by another relay, for another lease, outside the window.
        let bare = provider.issue(&grant());
        assert_eq!(
            relay.check(user, bare.password.as_bytes(), 150),
            Err(AuthError::Malformed)
        );
        let foreign = RelayKey::new([3; 32]).seal(bare.clone());
        assert_eq!(
            relay.check(user, foreign.password.as_bytes(), 150),
            Err(AuthError::BadSecret)
        );
        assert_eq!(
            relay.check(b"8", sealed.password.as_bytes(), 150),
            Err(AuthError::BadSecret)
        );
        assert_eq!(
            relay.check(user, sealed.password.as_bytes(), 200),
            Err(AuthError::Expired(7))
        );
        // A relay can seal anything, but the provider's tag is not the relay's to make.
        let forged_grant = Grant {
            not_after: 10_000,
            ..grant()
        };
        let forged = relay.seal(CredentialKey::new([9; 32]).issue(&forged_grant));
        assert_eq!(
            provider.verify(user, forged.password.as_bytes(), grant().ip, 150),
            Err(AuthError::BadSecret)
        );
    }

    #[test]
    fn reports_verify_under_their_key_only_and_unaltered() {
        let relay = RelayKey::new([2; 32]);
        let tag = relay.report_tag(b"{\"seq\":1}");
        assert!(relay.check_report(b"{\"seq\":1}", &tag));
        assert!(!relay.check_report(b"{\"seq\":2}", &tag));
        assert!(!RelayKey::new([3; 32]).check_report(b"{\"seq\":1}", &tag));
        assert!(!relay.check_report(b"{\"seq\":1}", "zz"));
    }

    #[test]
    fn tickets_name_their_provider_until_they_expire_and_resist_edits() {
        let relay = RelayKey::new([2; 32]);
        let ticket = relay.ticket([5; 20], 1_000);
        assert_eq!(relay.check_ticket(ticket.as_bytes(), 999), Ok([5; 20]));
        assert_eq!(
            relay.check_ticket(ticket.as_bytes(), 1_000),
            Err(TicketError::Expired)
        );
        assert_eq!(
            RelayKey::new([3; 32]).check_ticket(ticket.as_bytes(), 999),
            Err(TicketError::BadTag)
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&ticket).expect("b64");
        raw[0] ^= 1;
        assert_eq!(
            relay.check_ticket(URL_SAFE_NO_PAD.encode(raw).as_bytes(), 999),
            Err(TicketError::BadTag)
        );
        assert_eq!(
            relay.check_ticket(b"not a ticket", 0),
            Err(TicketError::Malformed)
        );
    }
}
