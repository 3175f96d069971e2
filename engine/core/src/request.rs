//! A request as the book keeps it while it rests or has deals running.
//!
//! Every lease writes one of these and reads it again when the lease ends, so its size is paid
//! on every lease, twice: as a [`RequestSpec`] plus bookkeeping it was 288 bytes, five cache
//! lines. Most of that was room for what few requests use — a city, ASN lists, providers
//! excluded after failing it, subnets already leased — each an empty heap handle of 24 bytes.
//! Here those share one box, absent until a request needs one, and the record is 176 bytes.
//! A request gets its box when it arrives with a city or ASN filter, or later, once a
//! provider fails it or it leases with the distinct-subnets filter.

use std::collections::BTreeSet;

use rkyv::{Archive, Deserialize, Serialize};

use crate::book::Offer;
use crate::country::CountrySet;
use crate::order::{Filters, RequestSpec, Start, TimeInForce};
use crate::types::{Address, Amount, KindSet, ProtocolSet, RequestId, Timestamp};

/// A request as the book keeps it (see the module docs). [`RequestRecord::spec`] gives back
/// what was asked, as amended.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestRecord {
    /// Its id.
    pub id: RequestId,
    /// Who leases and pays.
    pub requester: Address,
    /// How many IPs it asked for.
    pub count: u32,
    /// When the leases start (amends change it).
    pub start: Start,
    /// How long each lease lasts, seconds (amends change it).
    pub duration: u64,
    /// Highest price per IP-second accepted (amends change it).
    pub max_price: Amount,
    /// IOC, FOK or GTC.
    pub time_in_force: TimeInForce,
    /// When it arrived.
    pub submitted_at: Timestamp,
    /// IPs leased for it so far (voided deals give theirs back).
    pub filled: u32,
    /// IPs still wanted while it rests.
    pub remaining: u32,
    /// Whether it rests in the Request Orders List.
    pub resting: bool,
    /// Deals of it that have not ended.
    pub open_deals: u32,
    /// The filters every request may use, kept inline.
    pub(crate) filters: KeptFilters,
    /// The rest, boxed; `None` while all of it is empty.
    pub(crate) rare: Option<Box<RareParts>>,
}

/// The filters kept inline: small, and read for every offer the matcher looks at.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct KeptFilters {
    pub(crate) countries: CountrySet,
    pub(crate) kinds: KindSet,
    pub(crate) protocols: ProtocolSet,
    pub(crate) min_rating: Option<u16>,
    pub(crate) min_uptime: Option<u16>,
    pub(crate) distinct_subnets: bool,
}

/// What few requests hold: filters with heap parts, and what the book learns as it fills.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct RareParts {
    /// City required (compared without case), if any.
    pub(crate) city: Option<String>,
    /// ASNs accepted; empty means any.
    pub(crate) asn_include: Vec<u32>,
    /// ASNs refused.
    pub(crate) asn_exclude: Vec<u32>,
    /// Providers that failed it and are not matched again for it, sorted.
    pub(crate) excluded: Vec<Address>,
    /// Subnets it leases already (kept only with the distinct-subnets filter).
    pub(crate) used_subnets: BTreeSet<u128>,
}

/// Subnets of a request that has none: what [`RequestRecord::used_subnets`] lends when the
/// record has no box.
static NO_SUBNETS: BTreeSet<u128> = BTreeSet::new();

impl RequestRecord {
    /// The record of a request just submitted as `spec`, at `now`.
    pub(crate) fn new(id: RequestId, spec: &RequestSpec, now: Timestamp) -> RequestRecord {
        let filters = &spec.filters;
        let rare = (filters.city.is_some()
            || !filters.asn_include.is_empty()
            || !filters.asn_exclude.is_empty())
        .then(|| {
            Box::new(RareParts {
                city: filters.city.clone(),
                asn_include: filters.asn_include.clone(),
                asn_exclude: filters.asn_exclude.clone(),
                ..RareParts::default()
            })
        });
        RequestRecord {
            id,
            requester: spec.requester,
            count: spec.count,
            start: spec.start,
            duration: spec.duration,
            max_price: spec.max_price,
            time_in_force: spec.time_in_force,
            submitted_at: now,
            filled: 0,
            remaining: spec.count,
            resting: false,
            open_deals: 0,
            filters: KeptFilters {
                countries: filters.countries,
                kinds: filters.kinds,
                protocols: filters.protocols,
                min_rating: filters.min_rating,
                min_uptime: filters.min_uptime,
                distinct_subnets: filters.distinct_subnets,
            },
            rare,
        }
    }

    /// What was asked, as amended since.
    pub fn spec(&self) -> RequestSpec {
        let rare = self.rare.as_deref();
        RequestSpec {
            requester: self.requester,
            count: self.count,
            filters: Filters {
                countries: self.filters.countries,
                city: rare.and_then(|rare| rare.city.clone()),
                asn_include: rare
                    .map(|rare| rare.asn_include.clone())
                    .unwrap_or_default(),
                asn_exclude: rare
                    .map(|rare| rare.asn_exclude.clone())
                    .unwrap_or_default(),
                kinds: self.filters.kinds,
                protocols: self.filters.protocols,
                min_rating: self.filters.min_rating,
                distinct_subnets: self.filters.distinct_subnets,
                min_uptime: self.filters.min_uptime,
            },
            start: self.start,
            duration: self.duration,
            max_price: self.max_price,
            time_in_force: self.time_in_force,
        }
    }

    /// When a resting request leaves the book: its GTC expiry, or right after a fixed start.
    pub fn expiry(&self) -> Timestamp {
        let expires_at = match self.time_in_force {
            TimeInForce::Gtc { expires_at } => expires_at,
            TimeInForce::Ioc | TimeInForce::Fok => self.submitted_at,
        };
        match self.start {
            Start::Now => expires_at,
            Start::At(start) => expires_at.min(start.saturating_add(1)),
        }
    }

    /// Providers that failed it and are not matched again for it, sorted.
    pub fn excluded(&self) -> &[Address] {
        self.rare.as_deref().map_or(&[], |rare| &rare.excluded)
    }

    /// Subnets it leases already (kept only with the distinct-subnets filter).
    pub fn used_subnets(&self) -> &BTreeSet<u128> {
        self.rare
            .as_deref()
            .map_or(&NO_SUBNETS, |rare| &rare.used_subnets)
    }

    /// Whether it takes the distinct-subnets filter.
    pub(crate) fn distinct_subnets(&self) -> bool {
        self.filters.distinct_subnets
    }

    /// The box, made on first need.
    pub(crate) fn rare_mut(&mut self) -> &mut RareParts {
        self.rare.get_or_insert_with(Box::default)
    }
}

impl KeptFilters {
    /// Whether `offer` passes the inline filters that need nothing but the offer.
    pub(crate) fn admit(&self, offer: &Offer) -> bool {
        self.countries.accepts(offer.country)
            && self.kinds.accepts(offer.kind)
            && offer.protocols.covers(self.protocols)
    }
}

impl RareParts {
    /// Whether `offer` passes the boxed filters: city, ASNs, and providers that failed the
    /// request.
    pub(crate) fn admit(&self, offer: &Offer) -> bool {
        self.city.as_deref().is_none_or(|city| {
            offer
                .city
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(city))
        }) && (self.asn_include.is_empty() || self.asn_include.contains(&offer.asn))
            && !self.asn_exclude.contains(&offer.asn)
            && !self.excluded.contains(&offer.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::country::Country;
    use crate::types::{IpKind, Protocol};

    fn plain() -> RequestSpec {
        RequestSpec {
            requester: Address::from_low_u64(7),
            count: 3,
            filters: Filters {
                countries: CountrySet::of(&[Country::parse("FR").expect("FR")]),
                kinds: KindSet::of(&[IpKind::Residential]),
                protocols: ProtocolSet::of(&[Protocol::Socks5]),
                min_rating: Some(450),
                min_uptime: Some(9_900),
                distinct_subnets: true,
                ..Filters::default()
            },
            start: Start::At(Timestamp(500)),
            duration: 60,
            max_price: 1_234,
            time_in_force: TimeInForce::Gtc {
                expires_at: Timestamp(900),
            },
        }
    }

    #[test]
    fn a_record_gives_back_what_was_asked() {
        let mut spec = plain();
        let record = RequestRecord::new(RequestId(1), &spec, Timestamp(100));
        assert_eq!(record.spec(), spec);
        assert!(record.rare.is_none(), "nothing rare asked, nothing boxed");
        spec.filters.city = Some("Lyon".into());
        spec.filters.asn_include = vec![64_500];
        spec.filters.asn_exclude = vec![64_501, 64_502];
        let record = RequestRecord::new(RequestId(1), &spec, Timestamp(100));
        assert_eq!(record.spec(), spec);
        assert!(record.excluded().is_empty() && record.used_subnets().is_empty());
    }

    #[test]
    fn the_record_stays_within_three_lines() {
        assert!(
            std::mem::size_of::<Option<RequestRecord>>() <= 192,
            "{} bytes",
            std::mem::size_of::<Option<RequestRecord>>()
        );
    }
}
