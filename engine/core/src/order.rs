//! What providers offer and requesters ask for, and the checks that need no state.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rkyv::{Archive, Deserialize, Serialize};

use crate::country::{Country, CountrySet};
use crate::error::InputError;
use crate::types::{Address, Amount, IpKind, KindSet, ProtocolSet, Timestamp, Window};

/// Largest number of IPs one offer may hold (a /16 of IPv4, a /112 of IPv6). Larger ranges
/// are split into several offers, which keeps every book operation bounded.
pub const MAX_IPS_PER_OFFER: usize = 65_536;
/// Largest number of IPs one request may lease.
pub const MAX_REQUEST_COUNT: u32 = 100_000;
/// Shortest lease, seconds.
pub const MIN_LEASE_SECONDS: u64 = 5;
/// Longest lease, seconds (30 days).
pub const MAX_LEASE_SECONDS: u64 = 30 * 24 * 3600;
/// Largest tenant cap of one IP.
pub const MAX_TENANTS: u16 = 1024;
/// Longest city or region name, bytes.
pub const MAX_TEXT_BYTES: usize = 64;
/// Longest ASN include/exclude list.
pub const MAX_ASN_ENTRIES: usize = 64;
/// Uptimes are in basis points: 10,000 is always up.
pub const MAX_BASIS_POINTS: u16 = 10_000;

/// The IPs of an offer.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum IpSpec {
    /// One address.
    Single(IpAddr),
    /// Several addresses, in the order the provider lists them.
    List(Vec<IpAddr>),
    /// Every address of a CIDR block (network address with zero host bits).
    Cidr {
        /// The block's first address.
        network: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
}

/// The checked addresses of an offer.
pub type OfferIps = smallvec::SmallVec<[IpAddr; 1]>;

impl IpSpec {
    /// The addresses, checked: none repeated, none unusable, at most [`MAX_IPS_PER_OFFER`].
    /// A home user's one IP stays inline (no allocation).
    pub fn expand(&self) -> Result<OfferIps, InputError> {
        let ips: OfferIps = match self {
            IpSpec::Single(ip) => smallvec::smallvec![canonical(*ip)],
            IpSpec::List(ips) => {
                if ips.len() > MAX_IPS_PER_OFFER {
                    return Err(InputError::TooManyIps {
                        count: ips.len() as u128,
                        max: MAX_IPS_PER_OFFER,
                    });
                }
                let listed: OfferIps = ips.iter().copied().map(canonical).collect();
                let mut sorted = listed.to_vec();
                sorted.sort_unstable();
                if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
                    // Which one, in listed order (the rare path: a set, not a sort, for that).
                    let mut seen = BTreeSet::new();
                    if let Some(ip) = ips.iter().find(|ip| !seen.insert(canonical(**ip))) {
                        return Err(InputError::DuplicateIp(*ip));
                    }
                }
                listed
            }
            IpSpec::Cidr { network, prefix } => OfferIps::from_vec(expand_cidr(*network, *prefix)?),
        };
        if ips.is_empty() {
            return Err(InputError::NoIps);
        }
        if let Some(bad) = ips.iter().find(|ip| !usable(**ip)) {
            return Err(InputError::UnusableIp(*bad));
        }
        Ok(ips)
    }
}

/// IPv4-mapped IPv6 addresses are the same host as their IPv4 form: store one spelling.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn expand_cidr(network: IpAddr, prefix: u8) -> Result<Vec<IpAddr>, InputError> {
    let bad = |reason| InputError::BadCidr {
        network,
        prefix,
        reason,
    };
    let (bits, base): (u32, u128) = match network {
        IpAddr::V4(v4) => (32, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (128, u128::from(v6)),
    };
    if u32::from(prefix) > bits {
        return Err(bad("prefix longer than the address"));
    }
    let host_bits = bits - u32::from(prefix);
    if host_bits >= 64 || (1u128 << host_bits) > MAX_IPS_PER_OFFER as u128 {
        return Err(InputError::TooManyIps {
            count: if host_bits >= 127 {
                u128::MAX
            } else {
                1u128 << host_bits
            },
            max: MAX_IPS_PER_OFFER,
        });
    }
    let size = 1u128 << host_bits;
    if base & (size - 1) != 0 {
        return Err(bad("host bits must be zero"));
    }
    Ok((0..size)
        .map(|offset| match network {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((base + offset) as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(base + offset)),
        })
        .collect())
}

/// The subnet that the "distinct subnets" filter compares: the /24 of an IPv4 address, the /48
/// of an IPv6 one.
pub fn subnet_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) >> 8),
        // Tag IPv6 keys so they can never equal an IPv4 /24.
        IpAddr::V6(v6) => (u128::from(v6) >> 80) | (1 << 127),
    }
}

/// A provider's offer: IPs with their attributes, window and price.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OfferSpec {
    /// Who lends the IPs and receives the payments.
    pub provider: Address,
    /// The IPs.
    pub ips: IpSpec,
    /// Where the IPs are.
    pub country: Country,
    /// Region, if the provider says.
    pub region: Option<String>,
    /// City, if the provider says.
    pub city: Option<String>,
    /// The autonomous system announcing the IPs.
    pub asn: u32,
    /// Residential, datacenter or mobile.
    pub kind: IpKind,
    /// Protocols the provider's proxy serves on these IPs.
    pub protocols: ProtocolSet,
    /// When the IPs can be leased.
    pub window: Window,
    /// Shortest lease accepted, seconds.
    pub min_lease: u64,
    /// Longest lease accepted, seconds.
    pub max_lease: u64,
    /// Price per IP-second, token base units.
    pub price: Amount,
    /// How many leases may share one IP at the same time (1 = exclusive).
    pub tenants: u16,
}

impl OfferSpec {
    /// Checks everything that needs no state and returns the expanded IP list.
    pub fn validate(&self, now: Timestamp) -> Result<OfferIps, InputError> {
        if !self.country.is_assigned() {
            return Err(InputError::UnknownCountry(format!(
                "#{}",
                self.country.index()
            )));
        }
        check_text("region", self.region.as_deref())?;
        check_text("city", self.city.as_deref())?;
        check_window(self.window, now)?;
        if self.min_lease < MIN_LEASE_SECONDS
            || self.max_lease > MAX_LEASE_SECONDS
            || self.min_lease > self.max_lease
        {
            return Err(InputError::BadLeaseBounds {
                min: self.min_lease,
                max: self.max_lease,
            });
        }
        check_price(self.price)?;
        if self.tenants == 0 || self.tenants > MAX_TENANTS {
            return Err(InputError::BadTenantCap {
                got: self.tenants,
                max: MAX_TENANTS,
            });
        }
        if self.protocols.is_empty() {
            return Err(InputError::NoProtocols);
        }
        self.ips.expand()
    }
}

pub(crate) fn check_window(window: Window, now: Timestamp) -> Result<(), InputError> {
    if window.until <= window.from {
        return Err(InputError::EmptyWindow);
    }
    if window.until <= now {
        return Err(InputError::WindowOver {
            until: window.until,
            now,
        });
    }
    Ok(())
}

pub(crate) fn check_price(price: Amount) -> Result<(), InputError> {
    if price == 0 {
        Err(InputError::ZeroPrice)
    } else {
        Ok(())
    }
}

fn check_text(field: &'static str, text: Option<&str>) -> Result<(), InputError> {
    match text {
        Some(text) if text.len() > MAX_TEXT_BYTES => Err(InputError::TextTooLong {
            field,
            max: MAX_TEXT_BYTES,
        }),
        _ => Ok(()),
    }
}

/// When a lease starts.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Start {
    /// At the moment it is matched.
    Now,
    /// At a fixed time, not before the request is submitted.
    At(Timestamp),
}

/// How long a request stays in the book.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TimeInForce {
    /// Immediate or cancel: take what is there now, drop the rest.
    Ioc,
    /// Fill or kill: all N now, or nothing.
    Fok,
    /// Good till cancelled (or `expires_at`): fill now what can be, rest in the Request Orders
    /// List and fill as offers arrive.
    Gtc {
        /// When the rest leaves the book.
        expires_at: Timestamp,
    },
}

/// What a requester accepts.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Filters {
    /// Countries accepted; empty means any.
    pub countries: CountrySet,
    /// City required (compared without case), if any.
    pub city: Option<String>,
    /// ASNs accepted; empty means any.
    pub asn_include: Vec<u32>,
    /// ASNs refused.
    pub asn_exclude: Vec<u32>,
    /// IP kinds accepted; empty means any.
    pub kinds: KindSet,
    /// Protocols every leased IP must serve.
    pub protocols: ProtocolSet,
    /// Minimum average rating of the provider, in hundredths of a star (450 = 4.5 stars).
    /// Providers without any rating do not pass a minimum.
    pub min_rating: Option<u16>,
    /// At most one IP per /24 (IPv4) or /48 (IPv6) across what this request leases.
    pub distinct_subnets: bool,
    /// Minimum relay-measured uptime of the provider, in basis points (9,900 = 99 %).
    /// Providers without a measure (never relayed) do not pass a minimum.
    pub min_uptime: Option<u16>,
}

/// A requester's request for N IPs.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestSpec {
    /// Who leases and pays.
    pub requester: Address,
    /// How many IPs.
    pub count: u32,
    /// Which IPs qualify.
    pub filters: Filters,
    /// When the leases start.
    pub start: Start,
    /// How long each lease lasts, seconds (5 s … 30 days).
    pub duration: u64,
    /// Highest price per IP-second accepted, token base units.
    pub max_price: Amount,
    /// IOC, FOK or GTC.
    pub time_in_force: TimeInForce,
}

impl RequestSpec {
    /// Checks everything that needs no state.
    pub fn validate(&self, now: Timestamp) -> Result<(), InputError> {
        if self.count == 0 {
            return Err(InputError::ZeroCount);
        }
        if self.count > MAX_REQUEST_COUNT {
            return Err(InputError::CountTooLarge {
                count: self.count,
                max: MAX_REQUEST_COUNT,
            });
        }
        check_duration(self.duration)?;
        check_price(self.max_price)?;
        if let Start::At(start) = self.start {
            if start < now {
                return Err(InputError::StartInPast { start, now });
            }
            start.checked_add(self.duration)?;
        }
        if let TimeInForce::Gtc { expires_at } = self.time_in_force
            && expires_at <= now
        {
            return Err(InputError::ExpiryNotInFuture { expires_at, now });
        }
        check_total_cost(self.max_price, self.count, self.duration)?;
        let filters = &self.filters;
        if !filters.countries.is_assigned() {
            return Err(InputError::UnknownCountry(
                "outside the ISO list".to_owned(),
            ));
        }
        check_text("city", filters.city.as_deref())?;
        for (field, list) in [
            ("asn_include", &filters.asn_include),
            ("asn_exclude", &filters.asn_exclude),
        ] {
            if list.len() > MAX_ASN_ENTRIES {
                return Err(InputError::TooManyEntries {
                    field,
                    max: MAX_ASN_ENTRIES,
                });
            }
        }
        if let Some(min) = filters.min_rating
            && !(100..=500).contains(&min)
        {
            return Err(InputError::BadMinRating(min));
        }
        if let Some(min) = filters.min_uptime
            && min > MAX_BASIS_POINTS
        {
            return Err(InputError::BadUptime(min));
        }
        Ok(())
    }
}

pub(crate) fn check_duration(duration: u64) -> Result<(), InputError> {
    if (MIN_LEASE_SECONDS..=MAX_LEASE_SECONDS).contains(&duration) {
        Ok(())
    } else {
        Err(InputError::DurationOutOfRange(duration))
    }
}

pub(crate) fn check_total_cost(price: Amount, count: u32, duration: u64) -> Result<(), InputError> {
    price
        .checked_mul(u128::from(count))
        .and_then(|total| total.checked_mul(u128::from(duration)))
        .map(|_| ())
        .ok_or(InputError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn cidr_blocks_expand_to_every_address() {
        let ips = IpSpec::Cidr {
            network: v4("10.1.2.0"),
            prefix: 30,
        }
        .expand()
        .expect("valid block");
        assert_eq!(
            ips[..],
            ["10.1.2.0", "10.1.2.1", "10.1.2.2", "10.1.2.3"].map(v4)
        );
        let v6 = IpSpec::Cidr {
            network: v4("2001:db8::"),
            prefix: 120,
        }
        .expand()
        .expect("valid v6 block");
        assert_eq!(v6.len(), 256);
        assert_eq!(v6[255], v4("2001:db8::ff"));
    }

    #[test]
    fn oversized_misaligned_and_odd_ranges_are_refused() {
        let cidr = |network: &str, prefix| IpSpec::Cidr {
            network: v4(network),
            prefix,
        };
        assert!(matches!(
            cidr("10.0.0.0", 15).expand(),
            Err(InputError::TooManyIps { count: 131_072, .. })
        ));
        assert!(matches!(
            cidr("::", 0).expand(),
            Err(InputError::TooManyIps { .. })
        ));
        assert!(matches!(
            cidr("10.0.0.1", 24).expand(),
            Err(InputError::BadCidr { .. })
        ));
        assert!(matches!(
            cidr("10.0.0.0", 33).expand(),
            Err(InputError::BadCidr { .. })
        ));
        assert_eq!(IpSpec::List(vec![]).expand(), Err(InputError::NoIps));
        assert_eq!(
            IpSpec::List(vec![v4("1.2.3.4"), v4("::ffff:1.2.3.4")]).expand(),
            Err(InputError::DuplicateIp(v4("::ffff:1.2.3.4")))
        );
        // The first IP listed again is named, whatever the sort found.
        assert_eq!(
            IpSpec::List(
                ["5.5.5.5", "1.1.1.1", "9.9.9.9", "1.1.1.1", "5.5.5.5"]
                    .map(v4)
                    .to_vec()
            )
            .expand(),
            Err(InputError::DuplicateIp(v4("1.1.1.1")))
        );
        for unusable in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert_eq!(
                IpSpec::Single(v4(unusable)).expand(),
                Err(InputError::UnusableIp(v4(unusable)))
            );
        }
    }

    #[test]
    fn subnets_group_by_24_and_48() {
        assert_eq!(subnet_of(v4("1.2.3.4")), subnet_of(v4("1.2.3.200")));
        assert_ne!(subnet_of(v4("1.2.3.4")), subnet_of(v4("1.2.4.4")));
        assert_eq!(
            subnet_of(v4("2001:db8:1::1")),
            subnet_of(v4("2001:db8:1:ff::1"))
        );
        assert_ne!(
            subnet_of(v4("2001:db8:1::1")),
            subnet_of(v4("2001:db8:2::1"))
        );
    }
}
