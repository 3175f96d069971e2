//! A set of IP positions inside one offer, as bits: the matcher finds the first idle IP by
//! scanning words, and taking or freeing one flips a bit, with no tree node to allocate.

use smallvec::{SmallVec, smallvec};

/// Positions `0..capacity` of one offer; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PositionSet {
    words: SmallVec<[u64; 1]>,
    len: u32,
}

impl PositionSet {
    /// An empty set able to hold positions below `capacity` without growing.
    pub(crate) fn with_capacity(capacity: usize) -> PositionSet {
        PositionSet {
            words: smallvec![0; capacity.div_ceil(64)],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `position`; whether it was absent.
    pub(crate) fn insert(&mut self, position: u32) -> bool {
        let (word, bit) = split(position);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let absent = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u32::from(absent);
        absent
    }

    /// Takes `position` out; whether it was there.
    pub(crate) fn remove(&mut self, position: u32) -> bool {
        let (word, bit) = split(position);
        let Some(held) = self.words.get_mut(word) else {
            return false;
        };
        let present = *held & bit != 0;
        *held &= !bit;
        self.len -= u32::from(present);
        present
    }

    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
        self.len = 0;
    }

    /// Positions in ascending order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(index, word)| Bits(*word).map(move |bit| (index as u32) * 64 + bit))
    }
}

fn split(position: u32) -> (usize, u64) {
    ((position / 64) as usize, 1u64 << (position % 64))
}

/// The set bits of one word, lowest first (and highest first from the back).
struct Bits(u64);

impl Iterator for Bits {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

impl DoubleEndedIterator for Bits {
    fn next_back(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = 63 - self.0.leading_zeros();
        self.0 &= !(1u64 << bit);
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The bits answer like an ordered set of positions.
        #[test]
        fn behaves_like_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0u32..300), 0..400)) {
            let mut bits = PositionSet::with_capacity(100);
            let mut model = BTreeSet::new();
            for (insert, position) in ops {
                if insert {
                    prop_assert_eq!(bits.insert(position), model.insert(position));
                } else {
                    prop_assert_eq!(bits.remove(position), model.remove(&position));
                }
                prop_assert_eq!(bits.len(), model.len());
            }
            prop_assert_eq!(bits.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(
                bits.iter().rev().collect::<Vec<_>>(),
                model.iter().rev().copied().collect::<Vec<_>>()
            );
            bits.clear();
            prop_assert!(bits.is_empty());
        }
    }
}
