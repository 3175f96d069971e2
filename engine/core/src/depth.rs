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

/// A price level's index in [`DepthCounters`], held by each offer at that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LevelId(u32);

/// Unleased IPs per (country, kind, protocol set, price), maintained incrementally.
///
/// Every lease and every lease end changes an offer's idle count, so its level's counter moves
/// twice per lease. An offer holds its level's index (taken when it is placed or re-priced), so
/// that move is an index, not a hash of a 40-byte key and a probe.
#[derive(Clone, Debug, Default)]
pub(crate) struct DepthCounters {
    ids: rustc_hash::FxHashMap<DepthKey, LevelId>,
    levels: Vec<Level>,
    /// Indexes of levels no offer holds, for reuse.
    free: Vec<LevelId>,
}

#[derive(Clone, Debug)]
struct Level {
    key: DepthKey,
    ips: u64,
    /// Offers at this level: it is forgotten when the last one leaves it.
    offers: u32,
}

impl DepthCounters {
    /// The level of `key`, for one more offer at it.
    pub(crate) fn attach(&mut self, key: DepthKey) -> LevelId {
        let id = *self.ids.entry(key).or_insert_with(|| {
            let level = Level {
                key,
                ips: 0,
                offers: 0,
            };
            match self.free.pop() {
                Some(id) => {
                    self.levels[id.0 as usize] = level;
                    id
                }
                None => {
                    self.levels.push(level);
                    LevelId(u32::try_from(self.levels.len() - 1).expect("fewer than 2^32 levels"))
                }
            }
        });
        self.levels[id.0 as usize].offers += 1;
        id
    }

    /// One offer left level `id` (its idle IPs taken off first).
    pub(crate) fn detach(&mut self, id: LevelId) {
        let level = &mut self.levels[id.0 as usize];
        level.offers -= 1;
        if level.offers == 0 {
            debug_assert_eq!(level.ips, 0, "a level's IPs belong to its offers");
            self.ids.remove(&level.key);
            self.free.push(id);
        }
    }

    /// Moves level `id`'s count of unleased IPs by `delta`.
    pub(crate) fn add(&mut self, id: LevelId, delta: i64) {
        let level = &mut self.levels[id.0 as usize];
        level.ips = level.ips.saturating_add_signed(delta);
    }

    pub(crate) fn snapshot(&self) -> MarketDepth {
        let mut levels: BTreeMap<(Country, Protocol, IpKind, Amount), u64> = BTreeMap::new();
        let held = self.ids.values().map(|id| &self.levels[id.0 as usize]);
        for Level {
            key, ips: count, ..
        } in held.filter(|level| level.ips > 0)
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(price: Amount) -> DepthKey {
        DepthKey {
            country: Country::parse("DE").expect("assigned"),
            kind: IpKind::Residential,
            protocols: ProtocolSet::of(&[Protocol::Http, Protocol::Socks5]),
            price,
        }
    }

    #[test]
    fn offers_at_one_price_share_a_level_that_lives_while_one_of_them_does() {
        let mut depth = DepthCounters::default();
        let (a, b) = (depth.attach(key(5)), depth.attach(key(5)));
        assert_eq!(a, b);
        depth.add(a, 3);
        depth.add(b, 2);
        let cheap = depth.attach(key(4));
        depth.add(cheap, 1);
        let levels = depth.snapshot().levels;
        // Each protocol of the set counts the IPs, cheapest first within a protocol.
        let seen: Vec<(Protocol, Amount, u64)> = levels
            .iter()
            .map(|l| (l.protocol, l.price, l.ips))
            .collect();
        assert_eq!(
            seen,
            [
                (Protocol::Http, 4, 1),
                (Protocol::Http, 5, 5),
                (Protocol::Socks5, 4, 1),
                (Protocol::Socks5, 5, 5),
            ]
        );
        // A level whose IPs are all leased is not listed, but stays for its offers.
        depth.add(cheap, -1);
        assert_eq!(depth.snapshot().levels.len(), 2);
        depth.add(a, -3);
        depth.detach(a);
        assert_eq!(depth.snapshot().ips(key(5).country, Protocol::Http), 2);
        depth.add(b, -2);
        depth.detach(b);
        // The last offer gone, the level's index serves the next new price.
        let other = depth.attach(key(7));
        assert_eq!(other, a);
        assert_eq!(depth.attach(key(4)), cheap);
    }
}
