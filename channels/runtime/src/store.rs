//! The durable proof store: the latest proof received on each channel, the highest amount signed
//! on each channel we pay on, and the watcher's cursor.
//!
//! Built on redb (an embedded ACID key-value store, copy-on-write B-trees, a commit is durable
//! once `commit` returns — fsync included). A receiver persists a batch of checked proofs in one
//! transaction before they count; a payer persists the amounts it is about to sign before the
//! proofs leave. Writes never lower a stored amount, so replays and races cannot move money
//! backwards.

use std::path::Path;

use ipsx_channels::{ChannelId, SignedProof};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECEIVED: TableDefinition<u64, &[u8]> = TableDefinition::new("received");
const SIGNED: TableDefinition<u64, u128> = TableDefinition::new("signed");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// A store that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, another process holding it).
    #[error("proof store: {0}")]
    Db(#[from] redb::Error),
    /// A stored proof does not decode (the file was altered).
    #[error("proof store holds a malformed proof for channel {channel}: {source}")]
    Corrupt {
        /// The channel.
        channel: u64,
        /// Why.
        source: ipsx_channels::DecodeError,
    },
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(error.into())
}

/// The durable proof store.
#[derive(Debug)]
pub struct ProofStore {
    db: Database,
}

impl ProofStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // redb's default cache is 1 GiB, which a node left running would fill: the latest proofs
        // per channel.
        let db = Database::builder()
            .set_cache_size(2 << 20)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(RECEIVED).map_err(db_error)?;
        txn.open_table(SIGNED).map_err(db_error)?;
        txn.open_table(CURSORS).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self { db })
    }

    /// Persists received proofs in one durable transaction; a proof at or under the stored
    /// amount for its channel is skipped. Returns how many were written.
    pub fn persist_received(&self, proofs: &[SignedProof]) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut written = 0;
        {
            let mut table = txn.open_table(RECEIVED).map_err(db_error)?;
            for proof in proofs {
                let stored = table
                    .get(proof.channel.0)
                    .map_err(db_error)?
                    .map(|guard| decode(proof.channel.0, guard.value()))
                    .transpose()?;
                if stored.is_some_and(|s| s.amount >= proof.amount) {
                    continue;
                }
                table
                    .insert(proof.channel.0, proof.encode().as_slice())
                    .map_err(db_error)?;
                written += 1;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(written)
    }

    /// Persists the highest amounts signed (or about to be) in one durable transaction; never
    /// lowers a stored amount.
    pub fn persist_signed(&self, amounts: &[(ChannelId, u128)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(SIGNED).map_err(db_error)?;
            for &(channel, amount) in amounts {
                let stored = table.get(channel.0).map_err(db_error)?.map(|g| g.value());
                if stored.is_none_or(|s| s < amount) {
                    table.insert(channel.0, amount).map_err(db_error)?;
                }
            }
        }
        txn.commit().map_err(db_error)
    }

    /// The latest proof received on a channel.
    pub fn latest_received(&self, channel: ChannelId) -> Result<Option<SignedProof>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(RECEIVED).map_err(db_error)?;
        table
            .get(channel.0)
            .map_err(db_error)?
            .map(|guard| decode(channel.0, guard.value()))
            .transpose()
    }

    /// Every channel's latest received proof, by channel id.
    pub fn all_received(&self) -> Result<Vec<SignedProof>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(RECEIVED).map_err(db_error)?;
        let mut proofs = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            proofs.push(decode(key.value(), value.value())?);
        }
        Ok(proofs)
    }

    /// The highest amount signed on a channel (0 if none).
    pub fn highest_signed(&self, channel: ChannelId) -> Result<u128, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SIGNED).map_err(db_error)?;
        Ok(table
            .get(channel.0)
            .map_err(db_error)?
            .map_or(0, |g| g.value()))
    }

    /// A named cursor (the watcher's last processed block).
    pub fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(CURSORS).map_err(db_error)?;
        Ok(table.get(name).map_err(db_error)?.map(|g| g.value()))
    }

    /// Moves a named cursor (durably).
    pub fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(CURSORS).map_err(db_error)?;
            table.insert(name, value).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }
}

fn decode(channel: u64, bytes: &[u8]) -> Result<SignedProof, StoreError> {
    SignedProof::decode(bytes).map_err(|source| StoreError::Corrupt { channel, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::Address;
    use ipsx_channels::{ChannelDomain, SigningKey};

    #[test]
    fn amounts_only_move_forward_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proofs.redb");
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let key = SigningKey::from_bytes(&[9u8; 32]).expect("key");
        let p = |channel, amount| domain.sign_balance_proof(&key, ChannelId(channel), amount);
        {
            let store = ProofStore::open(&path).expect("open");
            assert_eq!(
                store
                    .persist_received(&[p(1, 10), p(2, 5)])
                    .expect("persist"),
                2
            );
            assert_eq!(
                store
                    .persist_received(&[p(1, 9), p(1, 10)])
                    .expect("persist"),
                0
            );
            assert_eq!(store.persist_received(&[p(1, 11)]).expect("persist"), 1);
            store
                .persist_signed(&[(ChannelId(7), 100), (ChannelId(7), 50)])
                .expect("signed");
            store.set_cursor("watcher", 42).expect("cursor");
        }
        let store = ProofStore::open(&path).expect("reopen");
        assert_eq!(
            store.latest_received(ChannelId(1)).expect("read"),
            Some(p(1, 11))
        );
        assert_eq!(store.all_received().expect("all"), vec![p(1, 11), p(2, 5)]);
        assert_eq!(store.highest_signed(ChannelId(7)).expect("read"), 100);
        assert_eq!(store.highest_signed(ChannelId(8)).expect("read"), 0);
        assert_eq!(store.cursor("watcher").expect("cursor"), Some(42));
    }
}
