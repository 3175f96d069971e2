//! Market depth: how many unleased IPs wait at each price, per country, kind and protocol.
//!
//! The matcher keeps one counter per (country, kind, protocol set, price) up to date as offers
//! change; [`MarketDepth`] is an owned copy that readers hold without touching the matcher.

use std::collections::BTreeMap;

use crate::country::Country;
use crate::types::{Amount, IpKind, Protocol, ProtocolSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DepthKey {
    pub(crate) country: Country,
    pub(crate) kind: IpKind,
    pub(crate) protocols: ProtocolSet,
    pub(crate) price: Amount,
}

/// Unleased IPs per (country, kind, protocol set, price), maintained incrementally.
#[derive(Clone, Debug, Default)]
pub(crate) struct DepthCounters {
    counts: rustc_hash::FxHashMap<DepthKey, u64>,
}

impl DepthCounters {
    pub(crate) fn add(&mut self, key: DepthKey, delta: i64) {
        if delta == 0 {
            return;
        }
        let count = self.counts.entry(key).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            self.counts.remove(&key);
        }
    }

    pub(crate) fn snapshot(&self) -> MarketDepth {
        let mut levels: BTreeMap<(Country, Protocol, IpKind, Amount), u64> = BTreeMap::new();
        for (key, count) in &self.counts {
            for protocol in key.protocols.iter() {
                *levels
                    .entry((key.country, protocol, key.kind, key.price))
                    .or_default() += count;
            }
        }
        MarketDepth {
            levels: levels
                .into_iter()
                .map(|((country, protocol, kind, price), ips)| DepthLevel {
                    country,
                    protocol,
                    kind,
                    price,
                    ips,
                })
                .collect(),
        }
    }
}

/// One price level of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthLevel {
    /// Country of the IPs.
    pub country: Country,
    /// A protocol they serve (an IP serving three protocols counts under each).
    pub protocol: Protocol,
    /// Their kind.
    pub kind: IpKind,
    /// Price per IP-second.
    pub price: Amount,
    /// Unleased IPs at this level.
    pub ips: u64,
}

/// A copy of the book's depth, ordered by country, protocol, kind, then price (cheapest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketDepth {
    /// The levels.
    pub levels: Vec<DepthLevel>,
}

impl MarketDepth {
    /// Unleased IPs in `country` serving `protocol`, over every kind and price.
    pub fn ips(&self, country: Country, protocol: Protocol) -> u64 {
        self.levels
            .iter()
            .filter(|l| l.country == country && l.protocol == protocol)
            .map(|l| l.ips)
            .sum()
    }
}
