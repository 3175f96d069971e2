//! # ipsx-credentials — lease credentials and relay tickets
//!
//! The node issues one username and password per leased IP; whoever serves that IP checks them
//! without calling the node back:
//!
//! ```text
//! node ── issue(grant) with the provider's key ──► username = lease id,
//!                                                  password = base64url(grant ‖ tag)
//!      └─ for a relayed provider, also seal with the relay's key ──► password ‖ "." ‖ seal
//! relay ── RelayKey::check: seal, window ──► route by grant.ip to the provider's connection
//! provider's proxy ── CredentialKey::verify: tag, window, IP ──► serve
//! ```
//!
//! The node and each provider share a 32-byte [`CredentialKey`] (set up when the provider
//! registers); the node and its relays share a [`RelayKey`]. A relay cannot make credentials a
//! provider accepts (it never holds the provider's key), and a provider ignores the relay's
//! seal. The grant holds the IP, the protocols and the validity window, and the tag is
//! HMAC-SHA256 over a version label, the lease id and the grant, truncated to 16 bytes. The
//! proxy recomputes the tag (compared in constant time), so a wrong secret, another lease's
//! password or an edited grant fail the same way; then it checks the window and that the
//! client came in on the grant's IP.
//!
//! ```
//! use ipsx_credentials::{CredentialKey, Grant, Protocols, RelayKey};
//!
//! let provider = CredentialKey::new([7; 32]);
//! let relay = RelayKey::new([9; 32]);
//! let grant = Grant {
//!     lease: 42,
//!     ip: "203.0.113.7".parse().unwrap(),
//!     protocols: Protocols::SOCKS5,
//!     not_before: 100,
//!     not_after: 200,
//! };
//! let issued = relay.seal(provider.issue(&grant));
//! let (user, pass) = (issued.username.as_bytes(), issued.password.as_bytes());
//! assert_eq!(relay.check(user, pass, 150), Ok(grant));
//! assert_eq!(provider.verify(user, pass, grant.ip, 150), Ok(grant));
//! assert!(RelayKey::new([1; 32]).check(user, pass, 150).is_err());
//! ```

mod relay;

pub use relay::{RelayKey, TicketError};

use std::net::{IpAddr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const LABEL: &[u8] = b"ipsx-lease-v1";
const TAG_LEN: usize = 16;
pub(crate) const GRANT_LEN: usize = 16 + 1 + 8 + 8;

/// A lease's id (the engine's deal id).
pub type LeaseId = u64;

/// What a lease may use, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protocols(pub u8);

impl Protocols {
    /// Plain HTTP through the HTTP proxy.
    pub const HTTP: Self = Self(1);
    /// HTTPS through HTTP CONNECT.
    pub const HTTPS: Self = Self(2);
    /// SOCKS5.
    pub const SOCKS5: Self = Self(4);
    /// Mail ports 25, 465, 587.
    pub const SMTP: Self = Self(8);
    /// UDP for VPN apps, through SOCKS5 UDP ASSOCIATE (needs SOCKS5 too).
    pub const VPN: Self = Self(16);

    /// Both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every protocol of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    const NAMES: [(&'static str, Self); 5] = [
        ("http", Self::HTTP),
        ("https", Self::HTTPS),
        ("socks5", Self::SOCKS5),
        ("smtp", Self::SMTP),
        ("vpn", Self::VPN),
    ];
}

/// A protocol list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (known: http, https, socks5, smtp, vpn)")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocols {
    type Err = UnknownProtocol;

    /// Parses a comma-separated list such as `socks5,http,https`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .try_fold(Self::default(), |set, name| {
                Self::NAMES
                    .iter()
                    .find(|(known, _)| known.eq_ignore_ascii_case(name))
                    .map(|(_, protocol)| set.union(*protocol))
                    .ok_or_else(|| UnknownProtocol(name.to_owned()))
            })
    }
}

impl std::fmt::Display for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, protocol)| self.contains(*protocol))
            .map(|(name, _)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What one lease credential grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The lease.
    pub lease: LeaseId,
    /// The leased IP: connections must come in on it and leave from it.
    pub ip: IpAddr,
    /// What the lease may use.
    pub protocols: Protocols,
    /// First valid second (unix).
    pub not_before: u64,
    /// First second no longer valid (unix): the lease's end.
    pub not_after: u64,
}

/// A refused credential. Deliberately coarse towards the client; the variants are for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The username is not a lease id or the password does not decode.
    #[error("malformed lease credentials")]
    Malformed,
    /// The tag does not match: wrong secret, another lease's password, or an altered grant.
    #[error("lease credentials do not verify")]
    BadSecret,
    /// Before the lease's start.
    #[error("lease {0} has not started")]
    NotYetValid(LeaseId),
    /// At or after the lease's end.
    #[error("lease {0} has expired")]
    Expired(LeaseId),
    /// The client came in on another IP than the one leased.
    #[error("lease {lease} is for {leased}, not {arrived}")]
    WrongIp {
        /// The lease.
        lease: LeaseId,
        /// Its IP.
        leased: IpAddr,
        /// The IP the client connected to.
        arrived: IpAddr,
    },
}

/// The key shared by the node (which issues) and the provider's proxy (which verifies).
#[derive(Clone)]
pub struct CredentialKey([u8; 32]);

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

/// A username and password for one leased IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The lease id, in decimal.
    pub username: String,
    /// The grant and its tag, base64url.
    pub password: String,
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn encode_grant(grant: &Grant) -> [u8; GRANT_LEN] {
    let mut bytes = [0u8; GRANT_LEN];
    let v6 = match canonical(grant.ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    bytes[..16].copy_from_slice(&v6.octets());
    bytes[16] = grant.protocols.0;
    bytes[17..25].copy_from_slice(&grant.not_before.to_be_bytes());
    bytes[25..33].copy_from_slice(&grant.not_after.to_be_bytes());
    bytes
}

/// A credential key that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a credential key is 64 hex digits (32 bytes)")]
pub struct BadKey;

impl CredentialKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as 64 hex digits, as key files hold it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key from 64 hex digits (surrounding whitespace ignored), as key files hold it.
    pub fn from_hex(text: &str) -> Result<Self, BadKey> {
        let digits = text.trim().as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(BadKey);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| BadKey)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadKey)?;
        }
        Ok(Self(bytes))
    }

    fn mac(&self, lease: LeaseId, grant: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(LABEL);
        mac.update(&lease.to_be_bytes());
        mac.update(grant);
        mac
    }

    /// Issues the credentials for one leased IP (the node's side).
    pub fn issue(&self, grant: &Grant) -> Credentials {
        let encoded = encode_grant(grant);
        let tag = self.mac(grant.lease, &encoded).finalize().into_bytes();
        let mut password = Vec::with_capacity(GRANT_LEN + TAG_LEN);
        password.extend_from_slice(&encoded);
        password.extend_from_slice(&tag[..TAG_LEN]);
        Credentials {
            username: grant.lease.to_string(),
            password: URL_SAFE_NO_PAD.encode(password),
        }
    }

    /// Verifies credentials presented on a connection to `arrived_on` at `now` (the proxy's
    /// side).
    pub fn verify(
        &self,
        username: &[u8],
        password: &[u8],
        arrived_on: IpAddr,
        now: u64,
    ) -> Result<Grant, AuthError> {
        let (lease, decoded) = decode(username, password)?;
        let (encoded, tag) = decoded.split_at(GRANT_LEN);
        self.mac(lease, encoded)
            .verify_truncated_left(tag)
            .map_err(|_| AuthError::BadSecret)?;
        let grant = decode_grant(lease, encoded);
        check_window(&grant, now)?;
        let arrived = canonical(arrived_on);
        if arrived != grant.ip {
            return Err(AuthError::WrongIp {
                lease: grant.lease,
                leased: grant.ip,
                arrived,
            });
        }
        Ok(grant)
    }
}

/// The lease id of a username and the grant and tag of a password (a relay's seal after a
/// `.` is left out: it is the relay's business).
pub(crate) fn decode(username: &[u8], password: &[u8]) -> Result<(LeaseId, Vec<u8>), AuthError> {
    let lease: LeaseId = std::str::from_utf8(username)
        .ok()
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|u| u.parse().ok())
        .ok_or(AuthError::Malformed)?;
    let ours = password
        .split(|&byte| byte == b'.')
        .next()
        .unwrap_or_default();
    let decoded = URL_SAFE_NO_PAD
        .decode(ours)
        .map_err(|_| AuthError::Malformed)?;
    if decoded.len() != GRANT_LEN + TAG_LEN {
        return Err(AuthError::Malformed);
    }
    Ok((lease, decoded))
}

pub(crate) fn decode_grant(lease: LeaseId, encoded: &[u8]) -> Grant {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&encoded[..16]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&encoded[17..25]);
    let not_before = u64::from_be_bytes(word);
    word.copy_from_slice(&encoded[25..33]);
    let not_after = u64::from_be_bytes(word);
    Grant {
        lease,
        ip: canonical(IpAddr::V6(Ipv6Addr::from(ip))),
        protocols: Protocols(encoded[16]),
        not_before,
        not_after,
    }
}

pub(crate) fn check_window(grant: &Grant, now: u64) -> Result<(), AuthError> {
    if now < grant.not_before {
        return Err(AuthError::NotYetValid(grant.lease));
    }
    if now >= grant.not_after {
        return Err(AuthError::Expired(grant.lease));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists_parse_and_print() {
        let parsed: Protocols = "socks5, HTTP,https".parse().expect("parses");
        assert_eq!(
            parsed,
            Protocols::SOCKS5
                .union(Protocols::HTTP)
                .union(Protocols::HTTPS)
        );
        assert_eq!(parsed.to_string(), "http,https,socks5");
        assert_eq!(
            "socks5,ftp".parse::<Protocols>(),
            Err(UnknownProtocol("ftp".into()))
        );
    }

    #[test]
    fn keys_parse_from_hex_only_at_full_length() {
        let key = CredentialKey::from_hex(&format!("{}\n", "ab".repeat(32))).expect("parses");
        assert_eq!(key.0, [0xab; 32]);
        assert_eq!(
            CredentialKey::from_hex(&key.to_hex()).map(|k| k.0),
            Ok([0xab; 32])
        );
        assert_eq!(
            CredentialKey::from_hex(&"ab".repeat(31)).err(),
            Some(BadKey)
        );
        assert_eq!(
            CredentialKey::from_hex(&"zz".repeat(32)).err(),
            Some(BadKey)
        );
        assert_eq!(CredentialKey::from_hex(&"é".repeat(32)).err(), Some(BadKey));
        assert_eq!(
            CredentialKey::from_hex(&"+a".repeat(32)).err(),
            Some(BadKey)
        );
    }

    fn grant(lease: LeaseId, ip: &str) -> Grant {
        Grant {
            lease,
            ip: ip.parse().expect("ip"),
            protocols: Protocols::SOCKS5.union(Protocols::HTTPS),
            not_before: 100,
            not_after: 200,
        }
    }

    #[test]
    fn issued_credentials_verify_on_their_ip_within_their_window() {
        let key = CredentialKey::new([7; 32]);
        for ip in ["127.0.0.2", "2001:db8::7"] {
            let g = grant(42, ip);
            let c = key.issue(&g);
            assert_eq!(c.username, "42");
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(
                key.verify(c.username.as_bytes(), c.password.as_bytes(), ip, 150),
                Ok(g)
            );
        }
        // An IPv4 lease reached through a v4-mapped socket address still matches.
        let c = key.issue(&grant(42, "127.0.0.2"));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert!(
            key.verify(c.username.as_bytes(), c.password.as_bytes(), mapped, 150)
                .is_ok()
        );
    }

    #[test]
    fn every_wrong_credential_is_refused() {
        let key = CredentialKey::new([7; 32]);
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let c = key.issue(&grant(42, "127.0.0.2"));
        let other = key.issue(&grant(43, "127.0.0.2"));
        let verify =
            |u: &str, p: &str, ip: IpAddr, now| key.verify(u.as_bytes(), p.as_bytes(), ip, now);
        assert_eq!(
            verify(&c.username, &other.password, ip, 150),
            Err(AuthError::BadSecret)
        );
        let foreign = CredentialKey::new([8; 32]).issue(&grant(42, "127.0.0.2"));
        assert_eq!(
            verify(&c.username, &foreign.password, ip, 150),
            Err(AuthError::BadSecret)
        );
        assert_eq!(
            verify(&c.username, &c.password, ip, 99),
            Err(AuthError::NotYetValid(42))
        );
        assert_eq!(
            verify(&c.username, &c.password, ip, 200),
            Err(AuthError::Expired(42))
        );
        let elsewhere: IpAddr = "127.0.0.3".parse().expect("ip");
        assert!(matches!(
            verify(&c.username, &c.password, elsewhere, 150),
            Err(AuthError::WrongIp { .. })
        ));
        for (u, p) in [
            ("", c.password.as_str()),
            ("x42", c.password.as_str()),
            ("42", "!!"),
            ("42", "AAAA"),
        ] {
            assert_eq!(verify(u, p, ip, 150), Err(AuthError::Malformed), "{u}:{p}");
        }
        // Flipping any bit of the grant breaks the tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&c.password).expect("b64");
        raw[16] ^= Protocols::SMTP.0;
        let edited = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            verify(&c.username, &edited, ip, 150),
            Err(AuthError::BadSecret)
        );
    }
}
