//! An ordered set for an offer's busy-IP indexes and a market's offer indexes: a sorted ring
//! while it is small, sorted blocks ([`SortedBlocks`]) once it is large.
//!
//! A lease moves one entry in and, when it ends, out again. In a sorted ring that is a binary
//! search and a shift of the shorter side, and leases of similar length touch the ends, so the
//! shift is short; nothing is allocated once the ring has grown. Blocks bound the work for a
//! data centre's offer of 65,536 busy IPs, where a ring's shift could move half a megabyte,
//! and likewise allocate nothing at a steady size (a B-tree there allocated and freed a node
//! every few hundred leases). The set switches at [`LARGE`] entries and back at a quarter of
//! that, so it does not flap.
//!
//! A country's market of a few dozen offers is likewise a few contiguous lines to
//! binary-search, where a tree walks nodes of several lines each (cold: the matcher meets one
//! country's market every few hundred requests).

use std::collections::{VecDeque, vec_deque};
use std::ops::{Bound, RangeBounds};

use crate::blocks::{BlockRange, SortedBlocks};

/// Entries above which the set is in blocks.
const LARGE: usize = 2_048;

#[derive(Clone, Debug)]
pub(crate) enum OrderedSet<T> {
    Small(VecDeque<T>),
    Large(SortedBlocks<T>),
}

impl<T> Default for OrderedSet<T> {
    fn default() -> Self {
        OrderedSet::Small(VecDeque::new())
    }
}

impl<T: Ord + Copy> OrderedSet<T> {
    /// Adds `value`; whether it was absent.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        let added = match self {
            OrderedSet::Small(items) => {
                // Leases of one length end in the order they start: most entries go last,
                // with no search over the ring.
                if items.back().is_none_or(|last| *last < value) {
                    items.push_back(value);
                    true
                } else {
                    let at = items.partition_point(|held| *held < value);
                    if items.get(at) == Some(&value) {
                        false
                    } else {
                        items.insert(at, value);
                        true
                    }
                }
            }
            OrderedSet::Large(blocks) => blocks.insert(value),
        };
        if let OrderedSet::Small(items) = self
            && items.len() > LARGE
        {
            *self = OrderedSet::Large(SortedBlocks::from_sorted(items.drain(..)));
        }
        added
    }

    /// Takes `value` out; whether it was there.
    pub(crate) fn remove(&mut self, value: &T) -> bool {
        let removed = match self {
            OrderedSet::Small(items) => {
                // ... and most leave first.
                if items.front() == Some(value) {
                    items.pop_front().is_some()
                } else {
                    let at = items.partition_point(|held| held < value);
                    items.get(at) == Some(value) && items.remove(at).is_some()
                }
            }
            OrderedSet::Large(blocks) => blocks.remove(value),
        };
        if let OrderedSet::Large(blocks) = self
            && blocks.len() < LARGE / 4
        {
            *self = OrderedSet::Small(blocks.drain().collect());
        }
        removed
    }

    pub(crate) fn first(&self) -> Option<&T> {
        match self {
            OrderedSet::Small(items) => items.front(),
            OrderedSet::Large(blocks) => blocks.first(),
        }
    }

    pub(crate) fn last(&self) -> Option<&T> {
        match self {
            OrderedSet::Small(items) => items.back(),
            OrderedSet::Large(blocks) => blocks.last(),
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = OrderedSet::default();
    }

    /// Entries within `range`, ascending.
    pub(crate) fn range(&self, range: impl RangeBounds<T>) -> Range<'_, T> {
        match self {
            OrderedSet::Small(items) => {
                let start = match range.start_bound() {
                    Bound::Included(low) => cut(items, |held| held < low),
                    Bound::Excluded(low) => cut(items, |held| held <= low),
                    Bound::Unbounded => 0,
                };
                let end = match range.end_bound() {
                    Bound::Included(high) => cut(items, |held| held <= high),
                    Bound::Excluded(high) => cut(items, |held| held < high),
                    Bound::Unbounded => items.len(),
                };
                Range::Small(items.range(start..end.max(start)))
            }
            OrderedSet::Large(blocks) => Range::Large(blocks.range(range)),
        }
    }

    /// Entries up to and including `bound`, ascending.
    pub(crate) fn up_to(&self, bound: T) -> Range<'_, T> {
        self.range(..=bound)
    }

    /// Entries from `bound` on, ascending.
    pub(crate) fn from(&self, bound: T) -> Range<'_, T> {
        self.range(bound..)
    }
}

/// Where a sorted ring splits between the entries `before` holds for and the rest. Leases
/// touch the ends, so the ends are looked at before a binary search.
fn cut<T>(items: &VecDeque<T>, before: impl Fn(&T) -> bool) -> usize {
    match (items.front(), items.back()) {
        (Some(first), _) if !before(first) => 0,
        (_, Some(last)) if before(last) => items.len(),
        _ => items.partition_point(before),
    }
}

/// A range of an [`OrderedSet`], ascending.
pub(crate) enum Range<'a, T> {
    Small(vec_deque::Iter<'a, T>),
    Large(BlockRange<'a, T>),
}

impl<T: Copy> Iterator for Range<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            Range::Small(items) => items.next().copied(),
            Range::Large(items) => items.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Each case runs thousands of operations to cross the switch both ways.
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Small or large, the set answers like a B-tree set, across the switch both ways.
        #[test]
        fn behaves_like_a_btree_set(
            ops in proptest::collection::vec((0u8..4, 0u32..6_000), 1..6_000)
        ) {
            let mut set = OrderedSet::default();
            let mut model = BTreeSet::new();
            for (op, value) in ops {
                match op {
                    0 | 1 => prop_assert_eq!(set.insert(value), model.insert(value)),
                    2 => prop_assert_eq!(set.remove(&value), model.remove(&value)),
                    _ => {
                        prop_assert_eq!(
                            set.up_to(value).collect::<Vec<_>>(),
                            model.range(..=value).copied().collect::<Vec<_>>()
                        );
                        prop_assert_eq!(
                            set.from(value).collect::<Vec<_>>(),
                            model.range(value..).copied().collect::<Vec<_>>()
                        );
                        let high = value.saturating_add(value % 700);
                        prop_assert_eq!(
                            set.range(value..=high).collect::<Vec<_>>(),
                            model.range(value..=high).copied().collect::<Vec<_>>()
                        );
                        prop_assert_eq!(
                            set.range(value..high).collect::<Vec<_>>(),
                            model.range(value..high).copied().collect::<Vec<_>>()
                        );
                        prop_assert_eq!(
                            set.range(..).collect::<Vec<_>>(),
                            model.iter().copied().collect::<Vec<_>>()
                        );
                    }
                }
                prop_assert_eq!(set.first(), model.first());
                prop_assert_eq!(set.last(), model.last());
            }
        }
    }
}
