//! The node's side of anchoring, sans I/O: entries come in as the deal book changes, epochs
//! close by age or size, each closed epoch waits to be anchored, and a party's entries can be
//! looked up with their proofs.
//!
//! Time is an argument (unix seconds), so tests drive it by hand. The node feeds
//! [`Epochs::push`] from the engine's event stream, calls [`Epochs::tick`] on its timer, sends
//! [`Epochs::next_to_anchor`] to the contract and reports [`Epochs::anchored`]; epochs are
//! anchored in order, as the contract requires.

use std::collections::{BTreeMap, HashMap, VecDeque};

use alloy_primitives::B256;

use crate::entry::{DealEntry, leaf};
use crate::tree::{MerkleTree, Proof};

/// When an epoch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochConfig {
    /// Seconds after its first entry (a quiet market still anchors what it did).
    pub max_seconds: u64,
    /// Entries it may hold (a busy market anchors often, and proofs stay short).
    pub max_entries: usize,
    /// Closed epochs kept in memory for look-ups; older ones are dropped once anchored.
    pub keep_epochs: usize,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig {
            max_seconds: 300,
            max_entries: 100_000,
            keep_epochs: 288,
        }
    }
}

/// A closed epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// Its number (1, 2, …; the contract's).
    pub number: u64,
    /// When its first entry came.
    pub opened_at: u64,
    /// Its entries, in the order they came (leaf `i` is entry `i`).
    pub entries: Vec<DealEntry>,
    /// The tree over them.
    pub tree: MerkleTree,
    /// Whether its root is on chain.
    pub anchored: bool,
}

impl Epoch {
    /// Epoch `number` over `entries` (its tree built here).
    pub fn new(number: u64, opened_at: u64, entries: Vec<DealEntry>, anchored: bool) -> Epoch {
        let tree = MerkleTree::new(entries.iter().map(leaf).collect());
        Epoch {
            number,
            opened_at,
            entries,
            tree,
            anchored,
        }
    }
}

/// One entry of a deal with what proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProof {
    /// The epoch it is in.
    pub epoch: u64,
    /// The entry.
    pub entry: DealEntry,
    /// Its siblings up to the root.
    pub proof: Proof,
    /// The epoch's root.
    pub root: B256,
    /// Whether that root is on chain yet.
    pub anchored: bool,
}

/// Entries in, epochs out: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Epochs {
    config: EpochConfig,
    open: Vec<DealEntry>,
    opened_at: u64,
    closed: BTreeMap<u64, Epoch>,
    /// Where each deal's entries are: (epoch, index), oldest first. The open epoch's entries
    /// are not in it (they have no proof yet).
    by_deal: HashMap<u64, VecDeque<(u64, u32)>>,
    next_number: u64,
}

impl Epochs {
    /// No epoch yet; the first to close is `first_number` (1 on a fresh contract, or the one
    /// after the last anchored, after a restart).
    pub fn new(config: EpochConfig, first_number: u64) -> Epochs {
        Epochs {
            config: EpochConfig {
                max_entries: config.max_entries.max(1),
                ..config
            },
            next_number: first_number.max(1),
            ..Epochs::default()
        }
    }

    /// Epochs as a store kept them: `closed` (every one not anchored yet, and any anchored
    /// ones worth keeping for look-ups, in any order), the open epoch's entries and when it
    /// opened, and the number the next epoch to close takes.
    pub fn restore(
        config: EpochConfig,
        next_number: u64,
        closed: Vec<Epoch>,
        open: Vec<DealEntry>,
        opened_at: u64,
    ) -> Epochs {
        let mut epochs = Epochs::new(config, next_number);
        epochs.open = open;
        epochs.opened_at = opened_at;
        for epoch in closed {
            epochs.file(epoch);
        }
        epochs
    }

    /// Puts a closed epoch in memory, its entries indexed by deal.
    fn file(&mut self, epoch: Epoch) {
        for (index, entry) in epoch.entries.iter().enumerate() {
            let places = self.by_deal.entry(entry.deal).or_default();
            // Kept oldest first whatever order epochs come back in.
            let at = places.partition_point(|place| *place < (epoch.number, index as u32));
            places.insert(at, (epoch.number, index as u32));
        }
        self.closed.insert(epoch.number, epoch);
    }

    /// Adds an entry at `now`; closes the epoch if it is full. Returns the number of an epoch
    /// that closed.
    pub fn push(&mut self, now: u64, entry: DealEntry) -> Option<u64> {
        if self.open.is_empty() {
            self.opened_at = now;
        }
        self.open.push(entry);
        (self.open.len() >= self.config.max_entries).then(|| self.close())
    }

    /// Closes the open epoch if it is old enough at `now`. Returns its number if it closed.
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        let due =
            !self.open.is_empty() && now.saturating_sub(self.opened_at) >= self.config.max_seconds;
        due.then(|| self.close())
    }

    fn close(&mut self) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        let entries = std::mem::take(&mut self.open);
        self.file(Epoch::new(number, self.opened_at, entries, false));
        number
    }

    /// The oldest closed epoch not yet anchored: what to send next.
    pub fn next_to_anchor(&self) -> Option<&Epoch> {
        self.closed.values().find(|epoch| !epoch.anchored)
    }

    /// Epoch `number` is on chain. Drops anchored epochs beyond what is kept.
    pub fn anchored(&mut self, number: u64) {
        if let Some(epoch) = self.closed.get_mut(&number) {
            epoch.anchored = true;
        }
        while self.closed.len() > self.config.keep_epochs {
            let Some((&oldest, epoch)) = self.closed.first_key_value() else {
                break;
            };
            if !epoch.anchored {
                break;
            }
            let epoch = self.closed.remove(&oldest).expect("the first epoch");
            for entry in &epoch.entries {
                if let Some(places) = self.by_deal.get_mut(&entry.deal) {
                    while places.front().is_some_and(|(at, _)| *at == oldest) {
                        places.pop_front();
                    }
                    if places.is_empty() {
                        self.by_deal.remove(&entry.deal);
                    }
                }
            }
        }
    }

    /// A closed epoch still in memory.
    pub fn epoch(&self, number: u64) -> Option<&Epoch> {
        self.closed.get(&number)
    }

    /// Every entry of `deal` in a closed epoch still in memory, oldest first, with its proof.
    pub fn proofs_of(&self, deal: u64) -> Vec<EntryProof> {
        self.by_deal
            .get(&deal)
            .into_iter()
            .flatten()
            .filter_map(|(number, index)| {
                let epoch = self.closed.get(number)?;
                Some(EntryProof {
                    epoch: *number,
                    entry: epoch.entries.get(*index as usize)?.clone(),
                    proof: epoch.tree.proof(*index as usize)?,
                    root: epoch.tree.root(),
                    anchored: epoch.anchored,
                })
            })
            .collect()
    }

    /// Entries waiting in the open epoch.
    pub fn pending(&self) -> usize {
        self.open.len()
    }

    /// The open epoch's entries (no proof yet), oldest first.
    pub fn open_entries(&self) -> &[DealEntry] {
        &self.open
    }

    /// When the open epoch took its first entry.
    pub fn opened_at(&self) -> u64 {
        self.opened_at
    }

    /// The number the next epoch to close takes.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// How epochs close.
    pub fn config(&self) -> EpochConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;

    fn entry(deal: u64, kind: EntryKind) -> DealEntry {
        DealEntry {
            deal,
            kind: kind.into(),
            ips: 1,
            price: 10,
            ..Default::default()
        }
    }

    fn config(max_seconds: u64, max_entries: usize, keep_epochs: usize) -> EpochConfig {
        EpochConfig {
            max_seconds,
            max_entries,
            keep_epochs,
        }
    }

    #[test]
    fn an_epoch_closes_when_full_or_old_and_numbers_follow() {
        let mut epochs = Epochs::new(config(60, 3, 10), 1);
        assert_eq!(epochs.push(100, entry(1, EntryKind::Made)), None);
        assert_eq!(epochs.push(101, entry(2, EntryKind::Made)), None);
        assert_eq!(epochs.push(102, entry(1, EntryKind::Ended)), Some(1));
        assert_eq!(epochs.tick(1_000), None, "nothing open, nothing to close");
        assert_eq!(epochs.push(200, entry(3, EntryKind::Made)), None);
        assert_eq!(epochs.tick(259), None, "59 s old");
        assert_eq!(epochs.tick(260), Some(2), "60 s old");
        assert_eq!(epochs.epoch(2).map(|e| e.entries.len()), Some(1));
        assert_eq!(epochs.pending(), 0);
    }

    #[test]
    fn epochs_are_anchored_in_order() {
        let mut epochs = Epochs::new(config(60, 1, 10), 7);
        epochs.push(0, entry(1, EntryKind::Made));
        epochs.push(0, entry(2, EntryKind::Made));
        assert_eq!(epochs.next_to_anchor().map(|e| e.number), Some(7));
        epochs.anchored(7);
        assert_eq!(epochs.next_to_anchor().map(|e| e.number), Some(8));
        epochs.anchored(8);
        assert_eq!(epochs.next_to_anchor(), None);
    }

    #[test]
    fn a_deals_entries_come_with_proofs_that_verify() {
        let mut epochs = Epochs::new(config(60, 4, 10), 1);
        for deal in 1..=6 {
            epochs.push(deal, entry(deal, EntryKind::Made));
        }
        epochs.push(10, entry(2, EntryKind::Ended));
        epochs.tick(100);
        let proofs = epochs.proofs_of(2);
        assert_eq!(proofs.len(), 2, "made in epoch 1, ended in epoch 2");
        assert_eq!((proofs[0].epoch, proofs[1].epoch), (1, 2));
        for found in &proofs {
            assert_eq!(found.entry.deal, 2);
            assert!(found.proof.verify(found.root, leaf(&found.entry)));
            assert!(!found.anchored);
        }
        assert!(epochs.proofs_of(99).is_empty());
    }

    #[test]
    fn restored_epochs_answer_as_the_ones_they_were_saved_from() {
        let mut epochs = Epochs::new(config(60, 2, 10), 1);
        for deal in 1..=5 {
            epochs.push(deal, entry(deal % 3, EntryKind::Made));
        }
        epochs.anchored(1);
        let saved: Vec<Epoch> = [2, 1]
            .iter()
            .filter_map(|n| epochs.epoch(*n).cloned())
            .collect();
        let restored = Epochs::restore(
            epochs.config(),
            epochs.next_number(),
            saved,
            epochs.open_entries().to_vec(),
            epochs.opened_at(),
        );
        for deal in 0..3 {
            assert_eq!(
                restored.proofs_of(deal),
                epochs.proofs_of(deal),
                "deal {deal}"
            );
        }
        assert_eq!(restored.next_to_anchor().map(|e| e.number), Some(2));
        assert_eq!(restored.open_entries(), epochs.open_entries());
        assert_eq!(restored.next_number(), 3);
    }

    #[test]
    fn old_anchored_epochs_leave_memory_and_unanchored_ones_stay() {
        let mut epochs = Epochs::new(config(60, 1, 2), 1);
        for deal in 1..=4 {
            epochs.push(deal, entry(deal, EntryKind::Made));
        }
        // Nothing anchored: all four stay, whatever the limit.
        epochs.anchored(99);
        assert!(epochs.epoch(1).is_some());
        epochs.anchored(1);
        epochs.anchored(2);
        assert!(epochs.epoch(1).is_none() && epochs.epoch(2).is_none());
        assert!(epochs.proofs_of(1).is_empty());
        assert_eq!(epochs.proofs_of(3).len(), 1, "unanchored epochs stay");
    }
}
