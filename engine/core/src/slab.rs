//! Records addressed by sequential ids (deals, requests), kept in a ring instead of a hash map.
//!
//! Ids are handed out in order and records mostly leave in about the order they came, so the
//! record of id `n` sits at `n - base` in a ring: a look-up is an index, an insert a push at
//! the back, and the working set is the recent end of the ring rather than a whole hash
//! table. A record that outlives the ones after it (a month-long lease among 5-second ones)
//! would pin the ring's front and keep every slot behind it: once the ring is mostly holes,
//! front records move to a small spill map and the ring shrinks to what is live.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// Holes a ring may hold beyond this many per live record before its front spills.
const SPARSE_FACTOR: usize = 2;
/// A ring this short is never compacted.
const MIN_COMPACT: usize = 1_024;

/// Records by sequential id: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct IdSlab<T> {
    /// The id of `ring[0]`.
    base: u64,
    ring: VecDeque<Option<T>>,
    /// Records in the ring (not holes).
    in_ring: usize,
    spill: FxHashMap<u64, T>,
}

impl<T> Default for IdSlab<T> {
    fn default() -> Self {
        IdSlab {
            base: 0,
            ring: VecDeque::new(),
            in_ring: 0,
            spill: FxHashMap::default(),
        }
    }
}

impl<T> IdSlab<T> {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.in_ring + self.spill.len()
    }

    fn index(&self, id: u64) -> Option<usize> {
        let offset = id.checked_sub(self.base)?;
        usize::try_from(offset)
            .ok()
            .filter(|offset| *offset < self.ring.len())
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        match self.index(id) {
            Some(at) => self.ring[at].as_ref(),
            None => self.spill.get(&id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.index(id) {
            Some(at) => self.ring[at].as_mut(),
            None => self.spill.get_mut(&id),
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Adds the record of `id`, replacing any record of that id. Ids past the ring's end
    /// extend it; older ones go to the spill map.
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        if let Some(at) = self.index(id) {
            if self.ring[at].replace(value).is_none() {
                self.in_ring += 1;
            }
            return;
        }
        // The base only moves forward: every spilled id stays below it, so an id inside the
        // ring's range is never also in the spill map.
        if self.in_ring == 0 && id >= self.base {
            self.ring.clear();
            self.base = id;
        }
        let end = self.base + self.ring.len() as u64;
        if id < end || id - end > (MIN_COMPACT + self.ring.len()) as u64 {
            if id < self.base {
                self.spill.insert(id, value);
                return;
            }
            // Far past the end (a restore after a long gap): start the ring over there.
            self.spill_ring();
            self.base = id;
        }
        while self.base + (self.ring.len() as u64) < id {
            self.ring.push_back(None);
        }
        self.ring.push_back(Some(value));
        self.in_ring += 1;
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let Some(at) = self.index(id) else {
            return self.spill.remove(&id);
        };
        let value = self.ring[at].take()?;
        self.in_ring -= 1;
        self.trim();
        Some(value)
    }

    /// Drops holes from the front; spills front records while the ring is mostly holes.
    fn trim(&mut self) {
        loop {
            match self.ring.front() {
                Some(None) => {}
                Some(Some(_)) if self.sparse() => {
                    let Some(Some(value)) = self.ring.pop_front() else {
                        unreachable!("the front was just seen holding a record");
                    };
                    self.spill.insert(self.base, value);
                    self.in_ring -= 1;
                    self.base += 1;
                    continue;
                }
                _ => return,
            }
            self.ring.pop_front();
            self.base += 1;
        }
    }

    fn sparse(&self) -> bool {
        self.ring.len() > MIN_COMPACT && self.ring.len() > SPARSE_FACTOR * (self.in_ring + 1)
    }

    fn spill_ring(&mut self) {
        let base = self.base;
        for (offset, value) in self.ring.drain(..).enumerate() {
            if let Some(value) = value {
                self.spill.insert(base + offset as u64, value);
            }
        }
        self.in_ring = 0;
    }

    /// Every record, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.ring.iter().flatten().chain(self.spill.values())
    }

    /// Every record, by id (collects and sorts: for snapshots and tools, not the hot path).
    pub(crate) fn sorted(&self) -> Vec<&T> {
        let mut all: Vec<(u64, &T)> = self.iter().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, value)| value).collect()
    }

    /// Every id with its record, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.ring
            .iter()
            .enumerate()
            .filter_map(move |(offset, value)| Some((base + offset as u64, value.as_ref()?)))
            .chain(self.spill.iter().map(|(id, value)| (*id, value)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_long_lived_record_does_not_pin_the_ring() {
        let mut slab = IdSlab::default();
        slab.insert(1, "month-long");
        for id in 2..100_000u64 {
            slab.insert(id, "short");
            if id > 2 {
                slab.remove(id - 1);
            }
        }
        assert_eq!(slab.get(1), Some(&"month-long"));
        assert_eq!(slab.len(), 2);
        assert!(slab.ring.len() <= MIN_COMPACT + 1, "{}", slab.ring.len());
    }

    proptest! {
        /// The slab answers like a map, whatever the order of inserts and removes.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..4, 0u64..3_000), 1..2_000)) {
            let mut slab = IdSlab::default();
            let mut model = BTreeMap::new();
            let mut next = 1u64;
            for (op, arg) in ops {
                match op {
                    0 | 1 => {
                        slab.insert(next, next);
                        model.insert(next, next);
                        next += 1 + u64::from(op) * (arg % 5);
                    }
                    2 => {
                        prop_assert_eq!(slab.remove(arg), model.remove(&arg));
                    }
                    _ => {
                        slab.insert(arg, arg * 7);
                        model.insert(arg, arg * 7);
                    }
                }
                prop_assert_eq!(slab.len(), model.len());
                prop_assert_eq!(slab.get(arg), model.get(&arg));
            }
            let mut all: Vec<(u64, u64)> = slab.iter().map(|(id, v)| (id, *v)).collect();
            all.sort_unstable();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }
}
