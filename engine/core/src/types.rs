//! Small value types shared by every part of the engine: parties, time, money, ids and the
//! attribute sets that offers carry and requests filter on.

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::InputError;

/// Seconds since the Unix epoch. Every command carries one; the engine never reads a clock.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq, PartialOrd))]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + seconds`, or an overflow error.
    pub fn checked_add(self, seconds: u64) -> Result<Timestamp, InputError> {
        self.0
            .checked_add(seconds)
            .map(Timestamp)
            .ok_or(InputError::Overflow)
    }

    /// `self + seconds`, saturating at the end of time.
    pub fn saturating_add(self, seconds: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}", self.0)
    }
}

/// An amount of IPSX in token base units (10⁻¹⁸ IPSX). Integer only: no float ever touches
/// money. Prices are "base units per IP-second".
pub type Amount = u128;

/// An Ethereum address (20 bytes): the identity of every party.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq))]
pub struct Address(pub [u8; 20]);

impl Address {
    /// An address whose last eight bytes are `n`: handy for tests and demos.
    pub fn from_low_u64(n: u64) -> Address {
        let mut bytes = [0u8; 20];
        bytes[12..].copy_from_slice(&n.to_be_bytes());
        Address(bytes)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Address {
    type Err = InputError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("0x").unwrap_or(text);
        let bad = || InputError::BadAddress(text.chars().take(64).collect());
        if hex.len() != 40 {
            return Err(bad());
        }
        let mut bytes = [0u8; 20];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Address(bytes))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
        )]
        #[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
        #[rkyv(compare(PartialEq))]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// Identifies an offer in the Offer Orders List. Assigned by the engine in arrival order,
    /// so a smaller id is an older offer.
    OfferId,
    "offer-"
);
id_type!(
    /// Identifies a request in the Request Orders List, assigned in arrival order.
    RequestId,
    "request-"
);
id_type!(
    /// Identifies a deal in the deal book, assigned in creation order.
    DealId,
    "deal-"
);

/// What kind of network an IP lives on.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq))]
#[repr(u8)]
pub enum IpKind {
    /// A home connection.
    Residential = 0,
    /// A hosting provider's range.
    Datacenter = 1,
    /// A mobile carrier's address.
    Mobile = 2,
}

impl IpKind {
    /// Every kind, in a fixed order.
    pub const ALL: [IpKind; 3] = [IpKind::Residential, IpKind::Datacenter, IpKind::Mobile];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`IpKind`]s. The empty set, in a request, means "any kind".
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[rkyv(derive(Debug))]
pub struct KindSet(u8);

impl KindSet {
    /// No kind at all (a request with it accepts any kind).
    pub const EMPTY: KindSet = KindSet(0);

    /// The set holding exactly these kinds.
    pub fn of(kinds: &[IpKind]) -> KindSet {
        KindSet(kinds.iter().fold(0, |bits, kind| bits | kind.bit()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: IpKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a request filtering on this set accepts `kind` (empty accepts all).
    pub fn accepts(self, kind: IpKind) -> bool {
        self.is_empty() || self.contains(kind)
    }
}

/// A protocol an offer can serve and a request can require.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq))]
#[repr(u8)]
pub enum Protocol {
    /// Plain HTTP proxying (absolute-URI forwarding).
    Http = 0,
    /// HTTPS through HTTP CONNECT tunnels.
    Https = 1,
    /// SOCKS5 (RFC 1928).
    Socks5 = 2,
    /// Outbound mail (ports 25, 465, 587).
    Smtp = 3,
    /// A VPN tunnel.
    Vpn = 4,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Socks5,
        Protocol::Smtp,
        Protocol::Vpn,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Protocol`]s.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq, PartialOrd))]
pub struct ProtocolSet(u8);

impl ProtocolSet {
    /// No protocol.
    pub const EMPTY: ProtocolSet = ProtocolSet(0);

    /// The set holding exactly these protocols.
    pub fn of(protocols: &[Protocol]) -> ProtocolSet {
        ProtocolSet(protocols.iter().fold(0, |bits, p| bits | p.bit()))
    }

    /// Whether `protocol` is in the set.
    pub fn contains(self, protocol: Protocol) -> bool {
        self.0 & protocol.bit() != 0
    }

    /// Whether every protocol of `required` is in `self`.
    pub fn covers(self, required: ProtocolSet) -> bool {
        self.0 & required.0 == required.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The protocols in the set, in [`Protocol::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        Protocol::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

/// A half-open span of time `[from, until)`.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub struct Window {
    /// First second inside the window.
    pub from: Timestamp,
    /// First second after the window.
    pub until: Timestamp,
}

impl Window {
    /// Whether `[start, end)` lies inside the window.
    pub fn covers(&self, start: Timestamp, end: Timestamp) -> bool {
        self.from <= start && end <= self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_through_hex() {
        let address = Address::from_low_u64(0xdead_beef);
        let text = address.to_string();
        assert_eq!(text, "0x00000000000000000000000000000000deadbeef");
        assert_eq!(text.parse::<Address>(), Ok(address));
        assert!("0x1234".parse::<Address>().is_err());
        assert!(
            "0xzz00000000000000000000000000000000000000"
                .parse::<Address>()
                .is_err()
        );
    }

    #[test]
    fn sets_cover_and_accept() {
        let offered = ProtocolSet::of(&[Protocol::Http, Protocol::Socks5]);
        assert!(offered.covers(ProtocolSet::of(&[Protocol::Socks5])));
        assert!(!offered.covers(ProtocolSet::of(&[Protocol::Smtp])));
        assert!(offered.covers(ProtocolSet::EMPTY));
        assert!(KindSet::EMPTY.accepts(IpKind::Mobile));
        assert!(!KindSet::of(&[IpKind::Residential]).accepts(IpKind::Mobile));
    }
}
