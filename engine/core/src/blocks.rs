//! A large sorted set that allocates nothing once it has grown: sorted blocks of a fixed
//! capacity, found by binary search over each block's first entry.
//!
//! [`crate::ordered::OrderedSet`] turns into this past a few thousand entries: the market of
//! all countries (every offer moves between its open and saturated indexes as its IPs are
//! leased and freed), a data centre's offer with tens of thousands of busy IPs. A B-tree there
//! allocated a node whenever a leaf split and freed one whenever two merged, a few times per
//! thousand leases in a steady market. Here a block that empties or merges into its neighbour
//! keeps its capacity in a pool, and a split takes its new block from there, so churn at a
//! steady size touches the allocator only while the set reaches a new peak of blocks.
//!
//! An insertion or removal is a binary search over the firsts (one line per few entries), a
//! binary search in one block, and a shift of at most one block: a few kilobytes.

use std::ops::{Bound, RangeBounds};

/// Entries a block holds at most. A full block splits in two halves; two neighbours that fit
/// in half a block merge, so blocks stay at least a quarter full on average and a set of `n`
/// entries spans about `4n / BLOCK` blocks at worst.
const BLOCK: usize = 128;

#[derive(Clone, Debug, Default)]
pub(crate) struct SortedBlocks<T> {
    /// Non-empty sorted blocks, every entry of one below every entry of the next.
    blocks: Vec<Vec<T>>,
    /// Each block's first entry: the binary search over blocks reads only these.
    firsts: Vec<T>,
    /// Emptied blocks with their capacity, for the next split.
    spare: Vec<Vec<T>>,
    len: usize,
}

/// A place in the set: a block and an index inside it (the index may equal the block's length
/// only for the place after the last entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    block: usize,
    at: usize,
}

impl<T: Ord + Copy> SortedBlocks<T> {
    /// The set of `sorted`, which must be ascending without repeats.
    pub(crate) fn from_sorted(sorted: impl IntoIterator<Item = T>) -> SortedBlocks<T> {
        let mut set = SortedBlocks {
            blocks: Vec::new(),
            firsts: Vec::new(),
            spare: Vec::new(),
            len: 0,
        };
        for value in sorted {
            // Half-full blocks: the next insertions in the middle do not split at once.
            if set
                .blocks
                .last()
                .is_none_or(|block| block.len() >= BLOCK / 2)
            {
                set.blocks.push(Vec::with_capacity(BLOCK));
                set.firsts.push(value);
            }
            set.blocks.last_mut().expect("pushed above").push(value);
            set.len += 1;
        }
        set
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn first(&self) -> Option<&T> {
        self.blocks.first().and_then(|block| block.first())
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.blocks.last().and_then(|block| block.last())
    }

    /// The block `value` belongs in: the last whose first entry is at most `value` (the first
    /// block for a value below every entry).
    fn block_of(&self, value: &T) -> usize {
        self.firsts
            .partition_point(|first| first <= value)
            .saturating_sub(1)
    }

    /// Adds `value`; whether it was absent.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        if self.blocks.is_empty() {
            let mut block = self.new_block();
            block.push(value);
            self.blocks.push(block);
            self.firsts.push(value);
            self.len = 1;
            return true;
        }
        let mut index = self.block_of(&value);
        let mut at = match self.blocks[index].binary_search(&value) {
            Ok(_) => return false,
            Err(at) => at,
        };
        if self.blocks[index].len() == BLOCK {
            self.split(index);
            if at > BLOCK / 2 {
                index += 1;
                at -= BLOCK / 2;
            }
        }
        self.blocks[index].insert(at, value);
        if at == 0 {
            self.firsts[index] = value;
        }
        self.len += 1;
        true
    }

    /// Takes `value` out; whether it was there.
    pub(crate) fn remove(&mut self, value: &T) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let index = self.block_of(value);
        let Ok(at) = self.blocks[index].binary_search(value) else {
            return false;
        };
        self.blocks[index].remove(at);
        self.len -= 1;
        if self.blocks[index].is_empty() {
            self.drop_block(index);
            return true;
        }
        if at == 0 {
            self.firsts[index] = self.blocks[index][0];
        }
        // Merge with a neighbour once both fit in half a block, into the lower of the two.
        if index + 1 < self.blocks.len() {
            self.merge_if_small(index);
        }
        if index > 0 {
            self.merge_if_small(index - 1);
        }
        true
    }

    /// Entries within `range`, ascending.
    pub(crate) fn range(&self, range: impl RangeBounds<T>) -> BlockRange<'_, T> {
        let start = match range.start_bound() {
            Bound::Included(low) => self.place(|held| held < low),
            Bound::Excluded(low) => self.place(|held| held <= low),
            Bound::Unbounded => Place { block: 0, at: 0 },
        };
        let end = match range.end_bound() {
            Bound::Included(high) => self.place(|held| held <= high),
            Bound::Excluded(high) => self.place(|held| held < high),
            Bound::Unbounded => self.end(),
        };
        BlockRange {
            blocks: &self.blocks,
            next: start,
            end: end.max(start),
        }
    }

    /// The place of the first entry `before` does not hold for (entries `before` holds for
    /// come first), or the end.
    fn place(&self, before: impl Fn(&T) -> bool) -> Place {
        let after = self.firsts.partition_point(&before);
        if after == 0 {
            return Place { block: 0, at: 0 };
        }
        let block = after - 1;
        let at = self.blocks[block].partition_point(&before);
        if at == self.blocks[block].len() && after < self.blocks.len() {
            Place {
                block: after,
                at: 0,
            }
        } else {
            Place { block, at }
        }
    }

    /// The place after the last entry.
    fn end(&self) -> Place {
        match self.blocks.len() {
            0 => Place { block: 0, at: 0 },
            count => Place {
                block: count - 1,
                at: self.blocks[count - 1].len(),
            },
        }
    }

    /// Moves the upper half of the full block `index` into a new block after it.
    fn split(&mut self, index: usize) {
        let mut upper = self.new_block();
        upper.extend_from_slice(&self.blocks[index][BLOCK / 2..]);
        self.blocks[index].truncate(BLOCK / 2);
        self.firsts.insert(index + 1, upper[0]);
        self.blocks.insert(index + 1, upper);
    }

    /// Moves block `index + 1` into block `index` if both fit in half a block.
    fn merge_if_small(&mut self, index: usize) {
        if self.blocks[index].len() + self.blocks[index + 1].len() > BLOCK / 2 {
            return;
        }
        let (lower, upper) = self.blocks.split_at_mut(index + 1);
        lower[index].extend_from_slice(&upper[0]);
        self.drop_block(index + 1);
    }

    /// Takes block `index` out, keeping its capacity for a later split.
    fn drop_block(&mut self, index: usize) {
        let mut block = self.blocks.remove(index);
        self.firsts.remove(index);
        block.clear();
        self.spare.push(block);
    }

    fn new_block(&mut self) -> Vec<T> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK))
    }

    /// Every entry, ascending, taking the set apart.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.len = 0;
        self.firsts.clear();
        self.blocks.drain(..).flatten()
    }
}

/// A range of a [`SortedBlocks`], ascending.
pub(crate) struct BlockRange<'a, T> {
    blocks: &'a [Vec<T>],
    next: Place,
    end: Place,
}

impl<T: Copy> Iterator for BlockRange<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        while self.next < self.end {
            let block = &self.blocks[self.next.block];
            if let Some(value) = block.get(self.next.at) {
                self.next.at += 1;
                return Some(*value);
            }
            self.next = Place {
                block: self.next.block + 1,
                at: 0,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Blocks split, merge and empty as a B-tree set's answers say they should: every
        /// range, first and last agree after each change.
        #[test]
        fn answers_like_a_btree_set(
            start in proptest::collection::btree_set(0u32..2_000, 0..400),
            ops in proptest::collection::vec((0u8..3, 0u32..2_000), 1..2_000)
        ) {
            let mut set = SortedBlocks::from_sorted(start.iter().copied());
            let mut model = start;
            for (op, value) in ops {
                match op {
                    0 => prop_assert_eq!(set.insert(value), model.insert(value)),
                    1 => prop_assert_eq!(set.remove(&value), model.remove(&value)),
                    _ => {
                        let high = value.saturating_add(value % 300);
                        prop_assert_eq!(
                            set.range(value..high).collect::<Vec<_>>(),
                            model.range(value..high).copied().collect::<Vec<_>>()
                        );
                        prop_assert_eq!(
                            set.range((Bound::Excluded(value), Bound::Included(high)))
                                .collect::<Vec<_>>(),
                            model
                                .range((Bound::Excluded(value), Bound::Included(high)))
                                .copied()
                                .collect::<Vec<_>>()
                        );
                    }
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.first(), model.first());
                prop_assert_eq!(set.last(), model.last());
            }
            prop_assert_eq!(set.range(..).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(set.drain().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }

    /// Blocks a stretch of removals empties wait in the pool, and the insertions that fill the
    /// stretch again split blocks into them rather than into new ones.
    #[test]
    fn emptied_blocks_serve_the_next_splits() {
        let mut set = SortedBlocks::from_sorted(0u32..10_000);
        for value in 4_000..6_000 {
            assert!(set.remove(&value));
        }
        let pooled: Vec<*const u32> = set.spare.iter().map(|block| block.as_ptr()).collect();
        assert!(pooled.len() > 8, "emptied blocks are kept");
        for value in 4_000..6_000 {
            assert!(set.insert(value));
        }
        let reused = set
            .blocks
            .iter()
            .filter(|block| pooled.contains(&block.as_ptr()))
            .count();
        assert_eq!(reused, pooled.len() - set.spare.len());
        assert!(
            set.spare.len() < pooled.len(),
            "splits took blocks from the pool"
        );
        assert_eq!(
            set.range(..).collect::<Vec<_>>(),
            (0..10_000).collect::<Vec<_>>()
        );
    }
}
