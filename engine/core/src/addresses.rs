//! Every IP the book knows, by address: which slot holds it.
//!
//! The book looks an address up when an offer arrives (is it offered already? by whom?) and
//! files it when the offer goes in. Keyed by address in one hash map, that was a probe of a
//! random line per IP, plus the map's growth: placing a million IPs in 10,000 offers of 100
//! took 250 ms, two thirds of it in the map, and a journal replay starts with exactly that.
//!
//! Offers list addresses that sit together (a data centre's /24s, a CIDR), so the map is
//! keyed by block: the address without its last 8 bits (a /24 of IPv4, a /120 of IPv6). An
//! offer's hundred IPs are then one probe and a hundred writes to the same few lines. A block
//! holds its IPs in a short sorted list while it has few (a home user's one address costs
//! about what it did), and in a table of 256 once it has many, so a block costs at most
//! ~16 bytes per IP in either form.

use std::net::IpAddr;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

/// A block whose list grows past this many IPs becomes a table.
const TABLE_FROM: usize = 64;

/// A table that shrinks to this many IPs becomes a list again (below [`TABLE_FROM`], so a
/// block going back and forth around one size does not convert every time).
const LIST_AT: usize = 32;

/// An empty cell of a table.
const EMPTY: u32 = u32::MAX;

/// Slot ids by address.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressMap {
    blocks: FxHashMap<u128, Block>,
}

#[derive(Clone, Debug)]
enum Block {
    /// `(last byte, slot)`, sorted by last byte.
    List(SmallVec<[(u8, u32); 2]>),
    /// Slots by last byte ([`EMPTY`] where none), and how many there are.
    Table(Box<([u32; 256], u16)>),
}

/// The block an address is in, and its place there. IPv4 blocks have the top bit set: an
/// IPv6 block, an address shifted right by 8, never does.
fn split(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            ((1 << 127) | u128::from(bits >> 8), bits as u8)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (bits >> 8, bits as u8)
        }
    }
}

impl AddressMap {
    /// The slot holding `addr`.
    pub(crate) fn get(&self, addr: IpAddr) -> Option<u32> {
        let (block, low) = split(addr);
        match self.blocks.get(&block)? {
            Block::List(list) => list
                .binary_search_by_key(&low, |&(l, _)| l)
                .ok()
                .map(|at| list[at].1),
            Block::Table(table) => Some(table.0[usize::from(low)]).filter(|&s| s != EMPTY),
        }
    }

    /// Files `addr` under `slot`, replacing the slot it had.
    ///
    /// # Panics
    /// If `slot` is `u32::MAX` (the book hands out fewer slot ids than that).
    pub(crate) fn insert(&mut self, addr: IpAddr, slot: u32) {
        assert_ne!(slot, EMPTY, "slot ids stay below u32::MAX");
        let (block, low) = split(addr);
        let entry = self
            .blocks
            .entry(block)
            .or_insert_with(|| Block::List(SmallVec::new()));
        match entry {
            Block::List(list) => match list.binary_search_by_key(&low, |&(l, _)| l) {
                Ok(at) => list[at].1 = slot,
                Err(at) if list.len() < TABLE_FROM => list.insert(at, (low, slot)),
                Err(_) => {
                    let mut table = Box::new(([EMPTY; 256], 0u16));
                    for &(l, s) in list.iter() {
                        table.0[usize::from(l)] = s;
                    }
                    table.0[usize::from(low)] = slot;
                    table.1 = list.len() as u16 + 1;
                    *entry = Block::Table(table);
                }
            },
            Block::Table(table) => {
                let cell = &mut table.0[usize::from(low)];
                if *cell == EMPTY {
                    table.1 += 1;
                }
                *cell = slot;
            }
        }
    }

    /// Forgets `addr`; the slot it had.
    pub(crate) fn remove(&mut self, addr: IpAddr) -> Option<u32> {
        let (block, low) = split(addr);
        let entry = self.blocks.get_mut(&block)?;
        let removed = match entry {
            Block::List(list) => {
                let at = list.binary_search_by_key(&low, |&(l, _)| l).ok()?;
                list.remove(at).1
            }
            Block::Table(table) => {
                let cell = &mut table.0[usize::from(low)];
                let removed = std::mem::replace(cell, EMPTY);
                if removed == EMPTY {
                    return None;
                }
                table.1 -= 1;
                if usize::from(table.1) <= LIST_AT {
                    let list = (0..=255u8)
                        .zip(table.0)
                        .filter(|&(_, s)| s != EMPTY)
                        .collect();
                    *entry = Block::List(list);
                }
                removed
            }
        };
        if matches!(entry, Block::List(list) if list.is_empty()) {
            self.blocks.remove(&block);
        }
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// Addresses from a few blocks of each family, whose last bytes cover every value, and
    /// v4/v6 pairs with the same low bits (they must never meet).
    fn address() -> impl Strategy<Value = IpAddr> {
        (0u32..3, any::<u8>(), any::<bool>()).prop_map(|(block, low, v4)| {
            let bits = (block << 8) | u32::from(low);
            if v4 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | bits))
            } else {
                IpAddr::V6(Ipv6Addr::from(0x0a00_0000 | u128::from(bits)))
            }
        })
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(
            ops in proptest::collection::vec((any::<bool>(), address(), 0u32..1_000), 0..2_000)
        ) {
            let mut map = AddressMap::default();
            let mut model = HashMap::new();
            for (insert, addr, slot) in ops {
                if insert {
                    map.insert(addr, slot);
                    model.insert(addr, slot);
                } else {
                    prop_assert_eq!(map.remove(addr), model.remove(&addr));
                }
                prop_assert_eq!(map.get(addr), model.get(&addr).copied());
            }
            for (addr, slot) in &model {
                prop_assert_eq!(map.get(*addr), Some(*slot));
            }
            prop_assert_eq!(map.blocks.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn a_full_block_becomes_a_table_and_a_thinned_one_a_list_again() {
        let mut map = AddressMap::default();
        let addr = |low: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, low));
        for low in 0..=255u8 {
            map.insert(addr(low), u32::from(low) * 3);
        }
        assert!(matches!(map.blocks.values().next(), Some(Block::Table(_))));
        for low in 0..=255u8 {
            assert_eq!(map.get(addr(low)), Some(u32::from(low) * 3));
        }
        for low in 0..=222u8 {
            assert_eq!(map.remove(addr(low)), Some(u32::from(low) * 3));
        }
        assert!(
            matches!(map.blocks.values().next(), Some(Block::Table(_))),
            "33 left"
        );
        map.remove(addr(223));
        assert!(matches!(map.blocks.values().next(), Some(Block::List(l)) if l.len() == 32));
        assert_eq!(map.get(addr(240)), Some(720));
        assert_eq!(map.remove(addr(7)), None);
        for low in 224..=255u8 {
            map.remove(addr(low));
        }
        assert!(map.blocks.is_empty(), "an emptied block leaves the map");
    }

    #[test]
    fn an_ipv4_address_and_the_ipv6_one_with_its_bits_are_different_ips() {
        let mut map = AddressMap::default();
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let v6 = IpAddr::V6(Ipv6Addr::from(u128::from(u32::from(Ipv4Addr::new(
            192, 0, 2, 1,
        )))));
        map.insert(v4, 1);
        assert_eq!(map.get(v6), None);
        map.insert(v6, 2);
        assert_eq!((map.get(v4), map.get(v6)), (Some(1), Some(2)));
    }
}
