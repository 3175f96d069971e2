//! The anchoring log on disk (`data_dir/anchor.redb`): which entries each deal has had
//! recorded, the open epoch's entries, every closed epoch's entries and root, and whether it is
//! on chain. One write transaction per batch of entries, so a crash leaves either all of a
//! batch (marks and entries together) or none of it, and the feed derives what is missing
//! again from the engine's deal book.
//!
//! ```text
//!  marks      deal ─► kinds recorded (bits)        what not to record twice
//!  pending    seq ─► entry                          the open epoch, in order
//!  epochs     number ─► root, opened_at, count, anchored
//!  entries    (epoch, index) ─► entry               closed epochs, leaf i = entry i
//!  by_deal    (deal, epoch, index)                  a deal's entries, for proofs
//!  meta       next_epoch, opened_at, pending_base
//! ```

use std::path::Path;

use alloy_primitives::B256;
use alloy_sol_types::SolValue;
use ipsx_anchor::{DealEntry, Epoch};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

const MARKS: TableDefinition<u64, u8> = TableDefinition::new("marks");
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// number → root (32) | opened_at (8) | count (4) | anchored (1).
const EPOCHS: TableDefinition<u64, &[u8]> = TableDefinition::new("epochs");
const ENTRIES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("entries");
const BY_DEAL: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("by_deal");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The anchoring log failed on disk, or holds something it never wrote.
#[derive(Debug, thiserror::Error)]
pub enum AnchorStoreError {
    /// redb failed.
    #[error("anchoring log: {0}")]
    Db(#[from] redb::Error),
    /// A stored entry or epoch does not decode.
    #[error("anchoring log: corrupt {0}")]
    Corrupt(&'static str),
}

fn db_err(error: impl Into<redb::Error>) -> AnchorStoreError {
    AnchorStoreError::Db(error.into())
}

/// An epoch's header as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochHeader {
    pub(crate) root: B256,
    pub(crate) opened_at: u64,
    pub(crate) count: u32,
    pub(crate) anchored: bool,
}

impl EpochHeader {
    fn encode(&self) -> [u8; 45] {
        let mut bytes = [0u8; 45];
        bytes[..32].copy_from_slice(self.root.as_slice());
        bytes[32..40].copy_from_slice(&self.opened_at.to_be_bytes());
        bytes[40..44].copy_from_slice(&self.count.to_be_bytes());
        bytes[44] = u8::from(self.anchored);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<EpochHeader, AnchorStoreError> {
        let bytes: &[u8; 45] = bytes.try_into().map_err(|_| corrupt("epoch"))?;
        Ok(EpochHeader {
            root: B256::from_slice(&bytes[..32]),
            opened_at: u64::from_be_bytes(bytes[32..40].try_into().expect("8 bytes")),
            count: u32::from_be_bytes(bytes[40..44].try_into().expect("4 bytes")),
            anchored: bytes[44] == 1,
        })
    }
}

fn corrupt(what: &'static str) -> AnchorStoreError {
    AnchorStoreError::Corrupt(what)
}

fn decode_entry(bytes: &[u8]) -> Result<DealEntry, AnchorStoreError> {
    DealEntry::abi_decode(bytes).map_err(|_| corrupt("entry"))
}

/// What the log held at open: enough to rebuild [`ipsx_anchor::Epochs`].
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// The number the next epoch to close takes (0: a new log).
    pub(crate) next_epoch: u64,
    /// The open epoch's entries, in order, and when it opened.
    pub(crate) open: Vec<DealEntry>,
    pub(crate) opened_at: u64,
    /// Closed epochs not on chain yet, and the latest `keep` anchored ones.
    pub(crate) closed: Vec<Epoch>,
}

/// A batch to write in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch<'a> {
    /// New marks of deals (all bits, old and new).
    pub(crate) marks: Vec<(u64, u8)>,
    /// Entries appended to the open epoch, in order.
    pub(crate) appended: Vec<DealEntry>,
    /// Epochs that closed (each took the oldest pending entries).
    pub(crate) closed: Vec<&'a Epoch>,
    /// When the open epoch (after the batch) opened, and the next epoch's number.
    pub(crate) opened_at: u64,
    pub(crate) next_epoch: u64,
}

/// The log.
#[derive(Debug)]
pub(crate) struct AnchorStore {
    db: Database,
}

impl AnchorStore {
    /// Opens (or creates) the log at `path`.
    pub(crate) fn open(path: &Path) -> Result<AnchorStore, AnchorStoreError> {
        let db = Database::builder()
            .set_cache_size(8 << 20)
            .create(path)
            .map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(MARKS).map_err(db_err)?;
        txn.open_table(PENDING).map_err(db_err)?;
        txn.open_table(EPOCHS).map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.open_table(BY_DEAL).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(AnchorStore { db })
    }

    /// What the log holds, with the latest `keep` anchored epochs loaded beside the
    /// unanchored ones.
    pub(crate) fn restore(&self, keep: usize) -> Result<Restored, AnchorStoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let get = |key: &str| -> Result<u64, AnchorStoreError> {
            Ok(meta
                .get(key)
                .map_err(db_err)?
                .map_or(0, |value| value.value()))
        };
        let mut restored = Restored {
            next_epoch: get("next_epoch")?,
            opened_at: get("opened_at")?,
            ..Restored::default()
        };
        for row in txn
            .open_table(PENDING)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (_, bytes) = row.map_err(db_err)?;
            restored.open.push(decode_entry(bytes.value())?);
        }
        let epochs = txn.open_table(EPOCHS).map_err(db_err)?;
        let mut anchored_kept = 0;
        for row in epochs.iter().map_err(db_err)?.rev() {
            let (number, header) = row.map_err(db_err)?;
            let header = EpochHeader::decode(header.value())?;
            if header.anchored {
                if anchored_kept == keep {
                    // Older anchored epochs are read from disk when asked for.
                    continue;
                }
                anchored_kept += 1;
            }
            restored
                .closed
                .push(self.load(&txn, number.value(), header)?);
        }
        Ok(restored)
    }

    fn load(
        &self,
        txn: &redb::ReadTransaction,
        number: u64,
        header: EpochHeader,
    ) -> Result<Epoch, AnchorStoreError> {
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut entries = Vec::with_capacity(header.count as usize);
        for row in table
            .range((number, 0)..=(number, u32::MAX))
            .map_err(db_err)?
        {
            let (_, bytes) = row.map_err(db_err)?;
            entries.push(decode_entry(bytes.value())?);
        }
        let epoch = Epoch::new(number, header.opened_at, entries, header.anchored);
        if epoch.tree.root() != header.root {
            return Err(corrupt("epoch root"));
        }
        Ok(epoch)
    }

    /// Epoch `number` read from disk, if the log has it.
    pub(crate) fn epoch(&self, number: u64) -> Result<Option<Epoch>, AnchorStoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let header = txn
            .open_table(EPOCHS)
            .map_err(db_err)?
            .get(number)
            .map_err(db_err)?
            .map(|header| EpochHeader::decode(header.value()))
            .transpose()?;
        header
            .map(|header| self.load(&txn, number, header))
            .transpose()
    }

    /// Where `deal`'s entries are in closed epochs: (epoch, index), oldest first.
    pub(crate) fn places_of(&self, deal: u64) -> Result<Vec<(u64, u32)>, AnchorStoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BY_DEAL).map_err(db_err)?;
        let mut places = Vec::new();
        for row in table
            .range((deal, 0, 0)..=(deal, u64::MAX, u32::MAX))
            .map_err(db_err)?
        {
            let (key, _) = row.map_err(db_err)?;
            let (_, epoch, index) = key.value();
            places.push((epoch, index));
        }
        Ok(places)
    }

    /// The kinds recorded for each of `deals` (bits; 0 for none).
    pub(crate) fn marks(&self, deals: &[u64]) -> Result<Vec<u8>, AnchorStoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(MARKS).map_err(db_err)?;
        deals
            .iter()
            .map(|deal| {
                Ok(table
                    .get(deal)
                    .map_err(db_err)?
                    .map_or(0, |mark| mark.value()))
            })
            .collect()
    }

    /// Writes a batch in one transaction.
    pub(crate) fn write(&self, batch: &Batch<'_>) -> Result<(), AnchorStoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        write_batch(&txn, batch)?;
        txn.commit().map_err(db_err)
    }

    /// Epoch `number` is on chain.
    pub(crate) fn mark_anchored(&self, number: u64) -> Result<(), AnchorStoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut epochs = txn.open_table(EPOCHS).map_err(db_err)?;
            let header = epochs
                .get(number)
                .map_err(db_err)?
                .map(|header| EpochHeader::decode(header.value()))
                .transpose()?;
            if let Some(header) = header {
                let header = EpochHeader {
                    anchored: true,
                    ..header
                };
                epochs
                    .insert(number, header.encode().as_slice())
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }
}

fn write_batch(txn: &WriteTransaction, batch: &Batch<'_>) -> Result<(), AnchorStoreError> {
    let mut marks = txn.open_table(MARKS).map_err(db_err)?;
    for (deal, mark) in &batch.marks {
        marks.insert(deal, mark).map_err(db_err)?;
    }
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let mut pending = txn.open_table(PENDING).map_err(db_err)?;
    let mut next_seq = match pending.last().map_err(db_err)? {
        Some((seq, _)) => seq.value() + 1,
        None => meta
            .get("pending_base")
            .map_err(db_err)?
            .map_or(0, |v| v.value()),
    };
    for entry in &batch.appended {
        pending
            .insert(next_seq, entry.abi_encode().as_slice())
            .map_err(db_err)?;
        next_seq += 1;
    }
    let mut epochs = txn.open_table(EPOCHS).map_err(db_err)?;
    let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
    let mut by_deal = txn.open_table(BY_DEAL).map_err(db_err)?;
    for epoch in &batch.closed {
        // The epoch took the oldest pending entries, as many as it holds.
        for _ in 0..epoch.entries.len() {
            pending.pop_first().map_err(db_err)?;
        }
        for (index, entry) in epoch.entries.iter().enumerate() {
            let index = index as u32;
            entries
                .insert((epoch.number, index), entry.abi_encode().as_slice())
                .map_err(db_err)?;
            by_deal
                .insert((entry.deal, epoch.number, index), ())
                .map_err(db_err)?;
        }
        let header = EpochHeader {
            root: epoch.tree.root(),
            opened_at: epoch.opened_at,
            count: epoch.entries.len() as u32,
            anchored: epoch.anchored,
        };
        epochs
            .insert(epoch.number, header.encode().as_slice())
            .map_err(db_err)?;
    }
    meta.insert("pending_base", next_seq).map_err(db_err)?;
    meta.insert("opened_at", batch.opened_at).map_err(db_err)?;
    meta.insert("next_epoch", batch.next_epoch)
        .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsx_anchor::{EntryKind, Epochs};

    fn entry(deal: u64) -> DealEntry {
        DealEntry {
            deal,
            kind: EntryKind::Made.into(),
            ips: 1,
            ..Default::default()
        }
    }

    #[test]
    fn what_was_written_comes_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("anchor.redb");
        let store = AnchorStore::open(&path).expect("open");
        let epoch = Epoch::new(1, 100, vec![entry(1), entry(2)], false);
        store
            .write(&Batch {
                marks: vec![(1, 1), (2, 1), (3, 1)],
                appended: vec![entry(1), entry(2), entry(3)],
                closed: vec![&epoch],
                opened_at: 105,
                next_epoch: 2,
            })
            .expect("write");
        store.mark_anchored(1).expect("anchored");
        drop(store);
        let store = AnchorStore::open(&path).expect("reopen");
        let restored = store.restore(0).expect("restore");
        assert_eq!(restored.next_epoch, 2);
        assert_eq!(
            (restored.open.clone(), restored.opened_at),
            (vec![entry(3)], 105)
        );
        assert!(restored.closed.is_empty(), "anchored, and none kept");
        let again = store.epoch(1).expect("read").expect("epoch 1");
        assert!(again.anchored);
        assert_eq!(again.tree.root(), epoch.tree.root());
        assert_eq!(store.places_of(2).expect("places"), [(1, 1)]);
        assert_eq!(store.marks(&[1, 3, 9]).expect("marks"), [1, 1, 0]);
        // And the epochs rebuilt from it go on where they stopped.
        let epochs = Epochs::restore(
            ipsx_anchor::EpochConfig::default(),
            restored.next_epoch,
            restored.closed,
            restored.open,
            restored.opened_at,
        );
        assert_eq!(epochs.pending(), 1);
        assert_eq!(epochs.next_number(), 2);
    }
}
