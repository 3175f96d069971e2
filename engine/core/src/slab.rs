//! Records addressed by sequential ids (deals, requests, offers), kept in a ring of chunks
//! instead of a hash map; and IP slots, whose ids are reused, in a plain table of the same
//! chunks ([`CowTable`]).
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
//!
//! Chunks are shared, copy-on-write: [`IdSlab::freeze`] hands out a [`FrozenSlab`], a view of
//! the records as they stand, for the price of a reference count per chunk. The slab copies a
//! chunk the first time it writes to it while a view still holds it, so a snapshot of a million
//! deals costs the writer ~2 ms, and each chunk at most one copy afterwards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use rustc_hash::FxHashMap;

/// Slots per chunk unless a slab says otherwise (small under test, so tests cross chunk
/// edges). A chunk is also what a write after a freeze copies: 256 deals are ~50 KB, a copy of
/// a few microseconds. Records with heap parts of their own (an offer's indexes) take smaller
/// chunks, so that copy stays as short.
pub(crate) const CHUNK: usize = if cfg!(test) { 8 } else { 256 };
/// Holes a ring may hold beyond this many per live record before its front spills.
const SPARSE_FACTOR: usize = 2;
/// Chunks a ring keeps before it is ever compacted.
const MIN_CHUNKS: usize = 16;
/// Emptied chunks kept for reuse, at the least.
const SPARE_CHUNKS: usize = 16;

/// A chunk's slots, shared with frozen views until written. An array, not a slice: a slot
/// index below `N` needs no bounds check on the hot path.
type Slots<T, const N: usize> = Arc<[Option<T>; N]>;

#[derive(Debug)]
pub(crate) struct Chunk<T, const N: usize> {
    slots: Slots<T, N>,
    /// Whether `slots` is known to be this chunk's alone: set by the first write after a
    /// freeze (which copies the slots if a view still holds them), cleared by each freeze.
    /// Writes check this flag instead of the reference count: checking the count is an atomic
    /// read-modify-write, and a lease writes a dozen records.
    owned: bool,
    /// Records held (not holes).
    live: u32,
}

impl<T: Clone, const N: usize> Chunk<T, N> {
    fn new() -> Chunk<T, N> {
        Chunk {
            slots: empty_slots(),
            owned: true,
            live: 0,
        }
    }

    /// The slots, to write: copied first if a frozen view shares them.
    #[inline]
    fn slots_mut(&mut self) -> &mut [Option<T>; N] {
        if !self.owned {
            if Arc::strong_count(&self.slots) > 1 {
                // A frozen view holds them: write to a copy of our own. (Not `make_mut`: it
                // would build the copy on the stack first, tens of kilobytes.)
                self.slots = copied_slots(&self.slots);
            } else {
                // The last view has let go (its count went down with release ordering): what
                // it read happens before what this chunk writes next.
                fence(Ordering::Acquire);
            }
            self.owned = true;
        }
        let slots = Arc::as_ptr(&self.slots).cast_mut();
        // SAFETY: the slots are this chunk's alone. `owned` is set only just above, once this
        // `Arc` is the only one: its count said so (views only ever let go meanwhile, since
        // sharing needs `&mut self`, and the fence orders their reads before these writes), or
        // the slots were just copied. The only ways to share the `Arc` again, `freeze` and
        // `Clone`, clear `owned` on this chunk or deep-copy the slots, and no weak references
        // are ever made. So no other reference to the slots exists, and `&mut self` keeps any
        // from being made while the returned borrow lives: what `Arc::get_mut` checks at run
        // time holds by construction.
        #[allow(unsafe_code)]
        unsafe {
            &mut *slots
        }
    }

    /// Shares the slots with a frozen view: the next write copies them.
    fn share(&mut self) -> HeldSlots<'static, T, N> {
        self.owned = false;
        HeldSlots::Shared(self.slots.clone())
    }

    /// Lends the slots to a view that lives no longer than this borrow of the chunk.
    fn lend(&self) -> HeldSlots<'_, T, N> {
        HeldSlots::Borrowed(&self.slots)
    }
}

/// `count` empty chunks, built on whichever thread calls this: the first touch of their pages
/// (the kernel zeroing and mapping them) is paid there (see [`crate::Stock`]).
pub(crate) fn empty_chunks<T: Clone, const N: usize>(count: usize) -> Vec<Chunk<T, N>> {
    (0..count).map(|_| Chunk::new()).collect()
}

/// Slots all empty, built on the heap (hundreds of records would not fit a small stack).
fn empty_slots<T, const N: usize>() -> Slots<T, N> {
    let slots: Arc<[Option<T>]> = (0..N).map(|_| None).collect();
    slots.try_into().unwrap_or_else(|_| unreachable!("N slots"))
}

/// A copy of `slots` in an allocation of its own (built on the heap, as [`empty_slots`]).
fn copied_slots<T: Clone, const N: usize>(slots: &Slots<T, N>) -> Slots<T, N> {
    let slots: Arc<[Option<T>]> = slots.iter().cloned().collect();
    slots.try_into().unwrap_or_else(|_| unreachable!("N slots"))
}

impl<T: Clone, const N: usize> Clone for Chunk<T, N> {
    /// A deep copy: a clone shares nothing with the original, so both may write in place.
    fn clone(&self) -> Chunk<T, N> {
        Chunk {
            slots: copied_slots(&self.slots),
            owned: true,
            live: self.live,
        }
    }
}

/// Records by sequential id: see the module docs.
#[derive(Debug)]
pub(crate) struct IdSlab<T, const N: usize = CHUNK> {
    /// The id of the first slot of the first chunk.
    base: u64,
    chunks: VecDeque<Chunk<T, N>>,
    /// Records in the chunks.
    in_ring: usize,
    spill: FxHashMap<u64, T>,
    spare: Vec<Chunk<T, N>>,
}

impl<T: Clone, const N: usize> Clone for IdSlab<T, N> {
    /// A deep copy (see [`Chunk`]'s): an engine and its clone go their own ways at full speed.
    fn clone(&self) -> IdSlab<T, N> {
        IdSlab {
            base: self.base,
            chunks: self.chunks.clone(),
            in_ring: self.in_ring,
            spill: self.spill.clone(),
            spare: self.spare.clone(),
        }
    }
}

impl<T, const N: usize> Default for IdSlab<T, N> {
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

impl<T, const N: usize> IdSlab<T, N> {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.in_ring + self.spill.len()
    }

    fn end(&self) -> u64 {
        self.base + (self.chunks.len() * N) as u64
    }

    /// The chunk and slot of `id`, if the ring covers it.
    fn index(&self, id: u64) -> Option<(usize, usize)> {
        if id < self.base || id >= self.end() {
            return None;
        }
        let offset = (id - self.base) as usize;
        Some((offset / N, offset % N))
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        match self.index(id) {
            Some((chunk, slot)) => self.chunks[chunk].slots[slot].as_ref(),
            None => self.spill.get(&id),
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

    /// Every record, by id (collects and sorts: for snapshots and tools, not the hot path).
    pub(crate) fn sorted(&self) -> Vec<&T> {
        let mut all: Vec<(u64, &T)> = self.iter().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, value)| value).collect()
    }

    /// Every id with its record, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        ring_records::<T, N>(self.base, self.chunks.iter().map(|chunk| &*chunk.slots))
            .chain(self.spill.iter().map(|(id, value)| (*id, value)))
    }
}

impl<T: Clone, const N: usize> IdSlab<T, N> {
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.index(id) {
            Some((chunk, slot)) => self.chunks[chunk].slots_mut()[slot].as_mut(),
            None => self.spill.get_mut(&id),
        }
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
        let far = (MIN_CHUNKS * N) as u64;
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
        let slot = &mut chunk.slots_mut()[slot];
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
        // Looked at before writing: removing nothing copies no shared chunk.
        chunk.slots[slot].as_ref()?;
        let value = chunk.slots_mut()[slot].take()?;
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
        chunk.slots_mut()[slot] = None;
        chunk.live -= 1;
        self.in_ring -= 1;
        self.trim();
        true
    }

    /// A view of every record as it stands now, sharing the chunks (see the module docs).
    pub(crate) fn freeze(&mut self) -> FrozenSlab<'static, T, N> {
        FrozenSlab {
            base: self.base,
            chunks: self.chunks.iter_mut().map(Chunk::share).collect(),
            spill: self.sorted_spill(),
            len: self.len(),
        }
    }

    /// The same view as [`IdSlab::freeze`], borrowing the chunks instead: for a reader that
    /// holds the slab still meanwhile.
    pub(crate) fn view(&self) -> FrozenSlab<'_, T, N> {
        FrozenSlab {
            base: self.base,
            chunks: self.chunks.iter().map(Chunk::lend).collect(),
            spill: self.sorted_spill(),
            len: self.len(),
        }
    }

    fn sorted_spill(&self) -> Vec<(u64, T)> {
        let mut spill: Vec<(u64, T)> = self
            .spill
            .iter()
            .map(|(id, value)| (*id, value.clone()))
            .collect();
        spill.sort_unstable_by_key(|(id, _)| *id);
        spill
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
            if chunk.live > 0 {
                for (slot, value) in chunk.slots_mut().iter_mut().enumerate() {
                    if let Some(value) = value.take() {
                        self.spill.insert(self.base + slot as u64, value);
                        self.in_ring -= 1;
                    }
                }
            }
            chunk.live = 0;
            self.base += N as u64;
            self.keep_spare(chunk);
        }
    }

    fn sparse(&self) -> bool {
        self.chunks.len() > MIN_CHUNKS && self.chunks.len() * N > SPARSE_FACTOR * (self.in_ring + N)
    }

    /// Keeps an emptied chunk for the back of the ring: as many as the ring holds, since a
    /// second's worth of records can leave at once and arrive again over the next second. A
    /// chunk a frozen view still shares is left to the view: reusing it would copy it anyway.
    fn keep_spare(&mut self, chunk: Chunk<T, N>) {
        if self.spare.len() < self.chunks.len().max(SPARE_CHUNKS) && chunk.owned {
            self.spare.push(chunk);
        }
    }

    /// Empty chunks kept for the ring to grow into.
    pub(crate) fn spare_len(&self) -> usize {
        self.spare.len()
    }

    /// Adds empty chunks built elsewhere to the spares (beyond what [`IdSlab::keep_spare`]
    /// keeps: the caller orders only as many as growth will use).
    pub(crate) fn stock(&mut self, chunks: Vec<Chunk<T, N>>) {
        debug_assert!(chunks.iter().all(|chunk| chunk.live == 0 && chunk.owned));
        self.spare.extend(chunks);
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
            if chunk.live == 0 {
                continue;
            }
            for (slot, value) in chunk.slots_mut().iter_mut().enumerate() {
                if let Some(value) = value.take() {
                    self.spill.insert(base + (index * N + slot) as u64, value);
                }
            }
        }
        self.in_ring = 0;
    }
}

/// Records by small dense index (IP slots, whose ids are reused): chunks shared copy-on-write
/// like [`IdSlab`]'s, without its ring. An index finds its chunk by a shift, where the ring
/// also checks its base and wraps around its queue: an IP's slot is read for every candidate
/// the matcher looks at, a hundred times for a 100-IP request.
#[derive(Clone, Debug)]
pub(crate) struct CowTable<T, const N: usize = CHUNK> {
    chunks: Vec<Chunk<T, N>>,
    /// Empty chunks stocked ahead of growth (see [`crate::Stock`]).
    spare: Vec<Chunk<T, N>>,
}

impl<T, const N: usize> Default for CowTable<T, N> {
    fn default() -> Self {
        CowTable {
            chunks: Vec::new(),
            spare: Vec::new(),
        }
    }
}

impl<T, const N: usize> CowTable<T, N> {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.live as usize).sum()
    }

    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        let index = index as usize;
        self.chunks.get(index / N)?.slots[index % N].as_ref()
    }

    /// Asks for the record at `index` before it is read (see [`crate::prefetch`]).
    pub(crate) fn prefetch(&self, index: u32) {
        let index = index as usize;
        if let Some(chunk) = self.chunks.get(index / N) {
            crate::prefetch::prefetch(&chunk.slots[index % N]);
        }
    }
}

impl<T: Clone, const N: usize> CowTable<T, N> {
    /// Empty chunks kept for the table to grow into.
    pub(crate) fn spare_len(&self) -> usize {
        self.spare.len()
    }

    /// Adds empty chunks built elsewhere for the table to grow into.
    pub(crate) fn stock(&mut self, chunks: Vec<Chunk<T, N>>) {
        self.spare.extend(chunks);
    }

    pub(crate) fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        let index = index as usize;
        self.chunks.get_mut(index / N)?.slots_mut()[index % N].as_mut()
    }

    /// Puts `value` at `index`, replacing what was there.
    pub(crate) fn insert(&mut self, index: u32, value: T) {
        let index = index as usize;
        while self.chunks.len() <= index / N {
            let chunk = self.spare.pop().unwrap_or_else(Chunk::new);
            self.chunks.push(chunk);
        }
        let chunk = &mut self.chunks[index / N];
        chunk.live += u32::from(chunk.slots[index % N].is_none());
        chunk.slots_mut()[index % N] = Some(value);
    }

    /// Empties `index`.
    pub(crate) fn delete(&mut self, index: u32) {
        let index = index as usize;
        if let Some(chunk) = self.chunks.get_mut(index / N)
            && chunk.slots[index % N].is_some()
        {
            chunk.slots_mut()[index % N] = None;
            chunk.live -= 1;
        }
    }

    /// A view of every record as it stands now, sharing the chunks (see [`IdSlab::freeze`]).
    pub(crate) fn freeze(&mut self) -> FrozenSlab<'static, T, N> {
        FrozenSlab {
            base: 0,
            chunks: self.chunks.iter_mut().map(Chunk::share).collect(),
            spill: Vec::new(),
            len: self.len(),
        }
    }

    /// The same view, borrowing the chunks (see [`IdSlab::view`]).
    pub(crate) fn view(&self) -> FrozenSlab<'_, T, N> {
        FrozenSlab {
            base: 0,
            chunks: self.chunks.iter().map(Chunk::lend).collect(),
            spill: Vec::new(),
            len: self.len(),
        }
    }
}

/// The records of chunks laid end to end from `base`, with their ids, in id order.
fn ring_records<'a, T: 'a, const N: usize>(
    base: u64,
    chunks: impl Iterator<Item = &'a [Option<T>; N]>,
) -> impl Iterator<Item = (u64, &'a T)> {
    chunks.enumerate().flat_map(move |(index, chunk)| {
        chunk.iter().enumerate().filter_map(move |(slot, value)| {
            Some((base + (index * N + slot) as u64, value.as_ref()?))
        })
    })
}

/// A chunk's slots as a view holds them.
#[derive(Debug)]
enum HeldSlots<'a, T, const N: usize> {
    /// Shared with the slab: the slab copies them before it writes.
    Shared(Slots<T, N>),
    /// Borrowed from a slab that cannot change while the view lives.
    Borrowed(&'a [Option<T>; N]),
}

impl<T, const N: usize> std::ops::Deref for HeldSlots<'_, T, N> {
    type Target = [Option<T>; N];

    fn deref(&self) -> &[Option<T>; N] {
        match self {
            HeldSlots::Shared(slots) => slots,
            HeldSlots::Borrowed(slots) => slots,
        }
    }
}

/// An [`IdSlab`] or a [`CowTable`] as it stood when frozen, whatever it does after. Holding a
/// frozen one (`'static`) costs the slab a copy of each chunk it writes while the view lives;
/// dropping it ends that. A borrowed one ([`IdSlab::view`]) costs nothing.
#[derive(Debug)]
pub(crate) struct FrozenSlab<'a, T, const N: usize = CHUNK> {
    base: u64,
    chunks: Vec<HeldSlots<'a, T, N>>,
    /// The spilled records (ids all below `base`), by id.
    spill: Vec<(u64, T)>,
    /// Records held, counted by the slab.
    len: usize,
}

impl<T, const N: usize> FrozenSlab<'_, T, N> {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        if id < self.base {
            let at = self.spill.binary_search_by_key(&id, |(id, _)| *id).ok()?;
            return Some(&self.spill[at].1);
        }
        let offset = usize::try_from(id - self.base).ok()?;
        self.chunks.get(offset / N)?[offset % N].as_ref()
    }

    /// Every record, by id.
    pub(crate) fn sorted(&self) -> impl Iterator<Item = &T> {
        // Spilled ids are all below the ring's base.
        self.spill.iter().map(|(_, value)| value).chain(
            ring_records::<T, N>(self.base, self.chunks.iter().map(|held| &**held))
                .map(|(_, value)| value),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_long_lived_record_does_not_pin_the_ring() {
        let mut slab: IdSlab<_> = IdSlab::default();
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

    #[test]
    fn a_frozen_view_keeps_what_the_slab_held_and_the_slab_copies_only_what_it_writes() {
        let mut slab: IdSlab<_> = IdSlab::default();
        for id in 0..(4 * CHUNK) as u64 {
            slab.insert(id, id);
        }
        let frozen = slab.freeze();
        *slab.get_mut(1).expect("held") = 100;
        slab.remove(2);
        slab.insert((4 * CHUNK) as u64, 7);
        assert_eq!(frozen.get(1), Some(&1));
        assert_eq!(frozen.get(2), Some(&2));
        assert_eq!(frozen.get((4 * CHUNK) as u64), None);
        assert_eq!(slab.get(1), Some(&100));
        // The first chunk was written (copied); the next three are still shared.
        let shared: Vec<bool> = slab
            .chunks
            .iter()
            .zip(&frozen.chunks)
            .map(|(chunk, frozen)| std::ptr::eq(&*chunk.slots, &**frozen))
            .collect();
        assert_eq!(shared, [false, true, true, true]);
        drop(frozen);
        // Alone again: writes go in place.
        let before = Arc::as_ptr(&slab.chunks[1].slots);
        *slab.get_mut(CHUNK as u64).expect("held") = 5;
        assert_eq!(Arc::as_ptr(&slab.chunks[1].slots), before);
    }

    #[test]
    fn a_table_reuses_indexes_and_its_frozen_view_keeps_what_it_held() {
        let mut table: CowTable<u32> = CowTable::default();
        for index in 0..(3 * CHUNK) as u32 {
            table.insert(index, index);
        }
        let frozen = table.freeze();
        table.delete(1);
        table.insert(1, 100);
        table.delete(2);
        table.insert((5 * CHUNK) as u32, 7);
        assert_eq!((table.get(1), table.get(2)), (Some(&100), None));
        assert_eq!(table.get((5 * CHUNK) as u32), Some(&7));
        assert_eq!(table.get((4 * CHUNK) as u32), None);
        assert_eq!((frozen.get(1), frozen.get(2)), (Some(&1), Some(&2)));
        assert_eq!(frozen.get((5 * CHUNK) as u64), None);
        assert_eq!(frozen.len(), 3 * CHUNK);
        assert!(frozen.sorted().copied().eq(0..(3 * CHUNK) as u32));
        // Only the written chunk was copied.
        assert!(!std::ptr::eq(&*table.chunks[0].slots, &*frozen.chunks[0]));
        assert!(std::ptr::eq(&*table.chunks[1].slots, &*frozen.chunks[1]));
    }

    proptest! {
        /// The slab answers like a map, whatever the order of inserts and removes, and a
        /// frozen view answers like the map did when it was frozen.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..5, 0u64..3_000), 1..2_000)) {
            let mut slab: IdSlab<_> = IdSlab::default();
            let mut model = BTreeMap::new();
            let mut frozen = Vec::new();
            let mut next = 1u64;
            for (op, arg) in ops {
                match op {
                    4 if arg % 50 == 0 => frozen.push((slab.freeze(), model.clone())),
                    4 => {
                        if let Some(value) = slab.get_mut(arg) {
                            *value += 1;
                        }
                        if let Some(value) = model.get_mut(&arg) {
                            *value += 1;
                        }
                    }
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
            for (view, then) in frozen {
                prop_assert_eq!(view.len(), then.len());
                prop_assert_eq!(view.sorted().copied().collect::<Vec<_>>(), then.values().copied().collect::<Vec<_>>());
                for (id, value) in &then {
                    prop_assert_eq!(view.get(*id), Some(value));
                }
            }
        }
    }
}
