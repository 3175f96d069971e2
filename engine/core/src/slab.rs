//! Records addressed by sequential ids (deals, requests, offers), kept in a ring of chunks
//! instead of a hash map.
//!
//! Ids are handed out in order and records mostly leave in about the order they came, so the
//! record of id `n` sits at `n - base` in a ring: a look-up is an index, an insert a write at
//! the back, and the working set is the recent end of the ring rather than a whole hash table.
//! The ring is a queue of fixed-size chunks: it grows by adding a chunk, never by copying what
//! it holds (a doubling vector of a million deals would copy 200 MB in one insert, a stall),
//! and a chunk emptied at the front is kept to be reused at the back, so a steady stream of
//! records allocates nothing. A record that outlives those after it (a month-long lease among
//! 5-second ones) would pin the front chunk and every chunk behind it: once the ring is mostly
//! holes, front records move to a small spill map and their chunks go.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// Slots per chunk (small under test, so tests cross chunk edges).
const CHUNK: usize = if cfg!(test) { 8 } else { 1_024 };
/// Holes a ring may hold beyond this many per live record before its front spills.
const SPARSE_FACTOR: usize = 2;
/// Chunks a ring keeps before it is ever compacted.
const MIN_CHUNKS: usize = 4;
/// Emptied chunks kept for reuse, at the least.
const SPARE_CHUNKS: usize = 4;

#[derive(Clone, Debug)]
struct Chunk<T> {
    /// A fixed-size array, not a slice: a slot index below `CHUNK` needs no bounds check on
    /// the hot path.
    slots: Box<[Option<T>; CHUNK]>,
    /// Records held (not holes).
    live: usize,
}

impl<T> Chunk<T> {
    fn new() -> Chunk<T> {
        // Built on the heap: an array of a thousand records would not fit a small stack.
        let slots: Box<[Option<T>]> = (0..CHUNK).map(|_| None).collect();
        Chunk {
            slots: slots
                .try_into()
                .unwrap_or_else(|_| unreachable!("CHUNK slots")),
            live: 0,
        }
    }
}

/// Records by sequential id: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct IdSlab<T> {
    /// The id of the first slot of the first chunk.
    base: u64,
    chunks: VecDeque<Chunk<T>>,
    /// Records in the chunks.
    in_ring: usize,
    spill: FxHashMap<u64, T>,
    spare: Vec<Chunk<T>>,
}

impl<T> Default for IdSlab<T> {
    fn default() -> Self {
        IdSlab {
            base: 0,
            chunks: VecDeque::new(),
            in_ring: 0,
            spill: FxHashMap::default(),
            spare: Vec::new(),
        }
    }
}

impl<T> IdSlab<T> {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.in_ring + self.spill.len()
    }

    fn end(&self) -> u64 {
        self.base + (self.chunks.len() * CHUNK) as u64
    }

    /// The chunk and slot of `id`, if the ring covers it.
    fn index(&self, id: u64) -> Option<(usize, usize)> {
        if id < self.base || id >= self.end() {
            return None;
        }
        let offset = (id - self.base) as usize;
        Some((offset / CHUNK, offset % CHUNK))
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        match self.index(id) {
            Some((chunk, slot)) => self.chunks[chunk].slots[slot].as_ref(),
            None => self.spill.get(&id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.index(id) {
            Some((chunk, slot)) => self.chunks[chunk].slots[slot].as_mut(),
            None => self.spill.get_mut(&id),
        }
    }

    /// Asks for the record of `id` before it is read (see [`crate::prefetch`]); reads nothing.
    pub(crate) fn prefetch(&self, id: u64) {
        if let Some((chunk, slot)) = self.index(id) {
            crate::prefetch::prefetch(&self.chunks[chunk].slots[slot]);
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Adds the record of `id`, replacing any record of that id. Ids past the ring's end
    /// extend it; older ones go to the spill map.
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        // The base only moves forward: every spilled id stays below it, so an id the ring
        // covers is never also in the spill map.
        if self.in_ring == 0 && id >= self.base && self.index(id).is_none() {
            self.recycle_all();
            self.base = id;
        }
        if id < self.base {
            self.spill.insert(id, value);
            return;
        }
        let far = (MIN_CHUNKS * CHUNK) as u64;
        if id >= self.end() + far {
            // Far past the end (a restore after a long gap): start the ring over there.
            self.spill_ring();
            self.base = id;
        }
        while id >= self.end() {
            let chunk = self.spare.pop().unwrap_or_else(Chunk::new);
            self.chunks.push_back(chunk);
        }
        let (chunk, slot) = self.index(id).expect("the ring covers the id now");
        let chunk = &mut self.chunks[chunk];
        let slot = &mut chunk.slots[slot];
        let new = slot.is_none();
        // Written in place: a `replace` would also move the (empty) old record out, a copy of
        // a few hundred bytes per insert.
        *slot = Some(value);
        if new {
            chunk.live += 1;
            self.in_ring += 1;
        }
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let Some((chunk, slot)) = self.index(id) else {
            return self.spill.remove(&id);
        };
        let chunk = &mut self.chunks[chunk];
        let value = chunk.slots[slot].take()?;
        chunk.live -= 1;
        self.in_ring -= 1;
        self.trim();
        Some(value)
    }

    /// Drops the record of `id` where it lies (no move out, unlike [`IdSlab::remove`]);
    /// whether there was one.
    pub(crate) fn delete(&mut self, id: u64) -> bool {
        let Some((chunk, slot)) = self.index(id) else {
            return self.spill.remove(&id).is_some();
        };
        let chunk = &mut self.chunks[chunk];
        if chunk.slots[slot].is_none() {
            return false;
        }
        chunk.slots[slot] = None;
        chunk.live -= 1;
        self.in_ring -= 1;
        self.trim();
        true
    }

    /// Drops empty chunks from the front (never the last: ids keep coming there); spills the
    /// front chunk's records while the ring is mostly holes.
    fn trim(&mut self) {
        while self.chunks.len() > 1 {
            let front = &self.chunks[0];
            if front.live > 0 && !self.sparse() {
                return;
            }
            let mut chunk = self.chunks.pop_front().expect("more than one chunk");
            for (slot, value) in chunk.slots.iter_mut().enumerate() {
                if let Some(value) = value.take() {
                    self.spill.insert(self.base + slot as u64, value);
                    self.in_ring -= 1;
                }
            }
            chunk.live = 0;
            self.base += CHUNK as u64;
            self.keep_spare(chunk);
        }
    }

    fn sparse(&self) -> bool {
        self.chunks.len() > MIN_CHUNKS
            && self.chunks.len() * CHUNK > SPARSE_FACTOR * (self.in_ring + CHUNK)
    }

    /// Keeps an emptied chunk for the back of the ring: as many as the ring holds, since a
    /// second's worth of records can leave at once and arrive again over the next second.
    fn keep_spare(&mut self, chunk: Chunk<T>) {
        if self.spare.len() < self.chunks.len().max(SPARE_CHUNKS) {
            self.spare.push(chunk);
        }
    }

    /// Returns every (empty) chunk to the spares.
    fn recycle_all(&mut self) {
        while let Some(chunk) = self.chunks.pop_front() {
            self.keep_spare(chunk);
        }
    }

    fn spill_ring(&mut self) {
        let base = self.base;
        for (index, mut chunk) in self.chunks.drain(..).enumerate() {
            for (slot, value) in chunk.slots.iter_mut().enumerate() {
                if let Some(value) = value.take() {
                    self.spill
                        .insert(base + (index * CHUNK + slot) as u64, value);
                }
            }
        }
        self.in_ring = 0;
    }

    /// Every record, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.slots.iter().flatten())
            .chain(self.spill.values())
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
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(index, chunk)| {
                chunk
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, value)| {
                        Some((base + (index * CHUNK + slot) as u64, value.as_ref()?))
                    })
            })
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
        assert!(slab.chunks.len() <= MIN_CHUNKS + 1, "{}", slab.chunks.len());
        assert!(slab.spare.len() <= slab.chunks.len().max(SPARE_CHUNKS));
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
                    2 if arg % 2 == 0 => {
                        prop_assert_eq!(slab.remove(arg), model.remove(&arg));
                    }
                    2 => {
                        prop_assert_eq!(slab.delete(arg), model.remove(&arg).is_some());
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
