//! What the payment side of the node must find again after a restart, in one redb file
//! (`data_dir/payments.redb`): which channel each requester pays on and each provider is paid
//! on, the terms of every lease the hub meters, and per party the sum of the leases the hub
//! folded away (ended, paid in full, the provider told). The hub's totals are cumulative: a
//! restarted hub starts from those sums and re-adds only the leases not folded, so the book
//! and a restart stay as small as what is running.
//!
//! Proofs themselves live in the channels' `ProofStore` (`data_dir/proofs.redb`).

use std::path::Path;

use alloy_primitives::Address;
use ipsx_channels::{ChannelId, HubLease, LeaseTerms};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const REQUESTER_CHANNELS: TableDefinition<&[u8; 20], u64> =
    TableDefinition::new("requester_channels");
const PROVIDER_CHANNELS: TableDefinition<&[u8; 20], u64> =
    TableDefinition::new("provider_channels");
const LEASES: TableDefinition<u64, &[u8; LEASE_LEN]> = TableDefinition::new("leases");
/// Per party: what its folded leases came to as requester (paid) and as provider (earned).
const FOLDED: TableDefinition<&[u8; 20], &[u8; 32]> = TableDefinition::new("folded");
/// Per requester: the last end among its folded leases. A lease folds only once its requester
/// is paid through its end, so every second before this one is settled: a restarted hub starts
/// the requester there, and a folded lease read again from the engine is not billed twice.
const FOLDED_THROUGH: TableDefinition<&[u8; 20], u64> = TableDefinition::new("folded_through");

/// Where a cluster node is in the payments log (`ledger`): the last entry applied.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

pub(crate) const LEASE_LEN: usize = 8 + 8 + 16 + 20 + 20 + 1;

/// The payment book failed on disk.
#[derive(Debug, thiserror::Error)]
#[error("payment book: {0}")]
pub struct BookError(#[from] redb::Error);

fn db_error(error: impl Into<redb::Error>) -> BookError {
    BookError(error.into())
}

/// One metered lease as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookedLease {
    /// Id, rate and charged window.
    pub terms: LeaseTerms,
    /// Who pays.
    pub requester: Address,
    /// Who serves.
    pub provider: Address,
    /// The lease has ended and `terms.end` is final.
    pub ended: bool,
}

impl BookedLease {
    pub(crate) fn encode(&self) -> [u8; LEASE_LEN] {
        let mut out = [0u8; LEASE_LEN];
        out[..8].copy_from_slice(&self.terms.start.to_be_bytes());
        out[8..16].copy_from_slice(&self.terms.end.to_be_bytes());
        out[16..32].copy_from_slice(&self.terms.rate.to_be_bytes());
        out[32..52].copy_from_slice(self.requester.as_slice());
        out[52..72].copy_from_slice(self.provider.as_slice());
        out[72] = u8::from(self.ended);
        out
    }

    pub(crate) fn decode(id: u64, bytes: &[u8; LEASE_LEN]) -> Self {
        let word = |range: std::ops::Range<usize>| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[range]);
            u64::from_be_bytes(eight)
        };
        let mut rate = [0u8; 16];
        rate.copy_from_slice(&bytes[16..32]);
        Self {
            terms: LeaseTerms {
                id,
                rate: u128::from_be_bytes(rate),
                start: word(0..8),
                end: word(8..16),
            },
            requester: Address::from_slice(&bytes[32..52]),
            provider: Address::from_slice(&bytes[52..72]),
            ended: bytes[72] != 0,
        }
    }
}

/// The node's payment book.
#[derive(Debug)]
pub struct PaymentBook {
    db: Database,
}

impl PaymentBook {
    /// Opens (or creates) the book at `path`.
    pub fn open(path: &Path) -> Result<Self, BookError> {
        // redb's default cache is 1 GiB, which a node left running would fill: rows of running
        // leases and per-party sums.
        let db = Database::builder()
            .set_cache_size(2 << 20)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(REQUESTER_CHANNELS).map_err(db_error)?;
        txn.open_table(PROVIDER_CHANNELS).map_err(db_error)?;
        txn.open_table(LEASES).map_err(db_error)?;
        txn.open_table(FOLDED).map_err(db_error)?;
        txn.open_table(FOLDED_THROUGH).map_err(db_error)?;
        txn.open_table(CURSORS).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self { db })
    }

    /// The last entry of the cluster's payments log applied to this book (0: none).
    pub fn applied(&self) -> Result<u64, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(CURSORS).map_err(db_error)?;
        Ok(table
            .get("applied")
            .map_err(db_error)?
            .map_or(0, |g| g.value()))
    }

    /// Records that the payments log's entries up to `seq` are applied.
    pub fn set_applied(&self, seq: u64) -> Result<(), BookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(CURSORS).map_err(db_error)?;
            table.insert("applied", seq).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    fn put_channel(
        &self,
        table: TableDefinition<&[u8; 20], u64>,
        party: Address,
        channel: ChannelId,
    ) -> Result<(), BookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        txn.open_table(table)
            .map_err(db_error)?
            .insert(&party.0.0, channel.0)
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    fn channels(
        &self,
        table: TableDefinition<&[u8; 20], u64>,
    ) -> Result<Vec<(Address, ChannelId)>, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(table).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (party, channel) = entry.map_err(db_error)?;
            out.push((Address::from(*party.value()), ChannelId(channel.value())));
        }
        Ok(out)
    }

    /// Records the channel a requester pays the node on. Durable when it returns.
    pub fn set_requester_channel(
        &self,
        requester: Address,
        channel: ChannelId,
    ) -> Result<(), BookError> {
        self.put_channel(REQUESTER_CHANNELS, requester, channel)
    }

    /// Records the channel the node pays a provider on. Durable when it returns.
    pub fn set_provider_channel(
        &self,
        provider: Address,
        channel: ChannelId,
    ) -> Result<(), BookError> {
        self.put_channel(PROVIDER_CHANNELS, provider, channel)
    }

    /// Every requester's channel.
    pub fn requester_channels(&self) -> Result<Vec<(Address, ChannelId)>, BookError> {
        self.channels(REQUESTER_CHANNELS)
    }

    /// Every provider's channel.
    pub fn provider_channels(&self) -> Result<Vec<(Address, ChannelId)>, BookError> {
        self.channels(PROVIDER_CHANNELS)
    }

    /// Records (or updates) a lease's terms. Durable when it returns.
    pub fn put_lease(&self, lease: &BookedLease) -> Result<(), BookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        txn.open_table(LEASES)
            .map_err(db_error)?
            .insert(lease.terms.id, &lease.encode())
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    /// A lease's terms, if booked.
    pub fn lease(&self, deal: u64) -> Result<Option<BookedLease>, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(LEASES).map_err(db_error)?;
        Ok(table
            .get(deal)
            .map_err(db_error)?
            .map(|stored| BookedLease::decode(deal, stored.value())))
    }

    /// Folds `leases` away in one transaction: their rows go, their totals join their
    /// requester's paid sum and their provider's earned sum, and their ends move their
    /// requester's folded-through second. Durable when it returns.
    pub fn fold(&self, leases: &[HubLease]) -> Result<(), BookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut rows = txn.open_table(LEASES).map_err(db_error)?;
            let mut folded = txn.open_table(FOLDED).map_err(db_error)?;
            let mut through = txn.open_table(FOLDED_THROUGH).map_err(db_error)?;
            for lease in leases {
                if rows.remove(lease.terms.id).map_err(db_error)?.is_none() {
                    continue;
                }
                let requester = &lease.requester.0.0;
                let before = through
                    .get(requester)
                    .map_err(db_error)?
                    .map_or(0, |second| second.value());
                if lease.terms.end > before {
                    through
                        .insert(requester, lease.terms.end)
                        .map_err(db_error)?;
                }
                let total = lease.terms.total();
                for (party, paid, earned) in
                    [(lease.requester, total, 0), (lease.provider, 0, total)]
                {
                    let (before_paid, before_earned) = folded
                        .get(&party.0.0)
                        .map_err(db_error)?
                        .map_or((0, 0), |sums| split_sums(sums.value()));
                    let sums = join_sums(
                        before_paid.saturating_add(paid),
                        before_earned.saturating_add(earned),
                    );
                    folded.insert(&party.0.0, &sums).map_err(db_error)?;
                }
            }
        }
        txn.commit().map_err(db_error)
    }

    /// What a party's folded leases came to: (paid as requester, earned as provider).
    pub fn folded(&self, party: Address) -> Result<(u128, u128), BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(FOLDED).map_err(db_error)?;
        Ok(table
            .get(&party.0.0)
            .map_err(db_error)?
            .map_or((0, 0), |sums| split_sums(sums.value())))
    }

    /// Every party's folded sums.
    pub fn all_folded(&self) -> Result<Vec<(Address, u128, u128)>, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(FOLDED).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (party, sums) = entry.map_err(db_error)?;
            let (paid, earned) = split_sums(sums.value());
            out.push((Address::from(*party.value()), paid, earned));
        }
        Ok(out)
    }

    /// Every requester's folded-through second (see [`FOLDED_THROUGH`]).
    pub fn all_folded_through(&self) -> Result<Vec<(Address, u64)>, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(FOLDED_THROUGH).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (party, second) = entry.map_err(db_error)?;
            out.push((Address::from(*party.value()), second.value()));
        }
        Ok(out)
    }

    /// A party's folded sums and its leases not folded, read together.
    pub fn position_of(
        &self,
        party: Address,
    ) -> Result<((u128, u128), Vec<BookedLease>), BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let folded = txn
            .open_table(FOLDED)
            .map_err(db_error)?
            .get(&party.0.0)
            .map_err(db_error)?
            .map_or((0, 0), |sums| split_sums(sums.value()));
        let table = txn.open_table(LEASES).map_err(db_error)?;
        let mut leases = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (deal, bytes) = entry.map_err(db_error)?;
            let lease = BookedLease::decode(deal.value(), bytes.value());
            if lease.requester == party || lease.provider == party {
                leases.push(lease);
            }
        }
        Ok((folded, leases))
    }

    /// Every booked lease, by deal id.
    pub fn leases(&self) -> Result<Vec<BookedLease>, BookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(LEASES).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (deal, bytes) = entry.map_err(db_error)?;
            out.push(BookedLease::decode(deal.value(), bytes.value()));
        }
        Ok(out)
    }
}

fn join_sums(paid: u128, earned: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&paid.to_be_bytes());
    out[16..].copy_from_slice(&earned.to_be_bytes());
    out
}

fn split_sums(bytes: &[u8; 32]) -> (u128, u128) {
    let mut paid = [0u8; 16];
    let mut earned = [0u8; 16];
    paid.copy_from_slice(&bytes[..16]);
    earned.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(paid), u128::from_be_bytes(earned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_leases_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("payments.redb");
        let lease = BookedLease {
            terms: LeaseTerms {
                id: 7,
                rate: u128::MAX - 3,
                start: 1_000,
                end: 1_060,
            },
            requester: Address::repeat_byte(1),
            provider: Address::repeat_byte(2),
            ended: false,
        };
        {
            let book = PaymentBook::open(&path).expect("open");
            book.set_requester_channel(lease.requester, ChannelId(3))
                .expect("put");
            book.set_provider_channel(lease.provider, ChannelId(4))
                .expect("put");
            book.put_lease(&lease).expect("put");
            book.put_lease(&BookedLease {
                ended: true,
                terms: LeaseTerms {
                    end: 1_030,
                    ..lease.terms
                },
                ..lease
            })
            .expect("update");
        }
        let book = PaymentBook::open(&path).expect("reopen");
        assert_eq!(
            book.requester_channels().expect("read"),
            vec![(lease.requester, ChannelId(3))]
        );
        assert_eq!(
            book.provider_channels().expect("read"),
            vec![(lease.provider, ChannelId(4))]
        );
        let stored = book.lease(7).expect("read").expect("booked");
        assert!(stored.ended);
        assert_eq!(stored.terms.end, 1_030);
        assert_eq!(stored.terms.rate, u128::MAX - 3);
        assert_eq!(book.leases().expect("read").len(), 1);
        assert_eq!(book.lease(8).expect("read"), None);

        // Folded (twice, as after a crash between the hub and the book): counted once.
        let hub_lease = HubLease {
            terms: LeaseTerms {
                id: 7,
                rate: 1_000,
                start: 1_000,
                end: 1_030,
            },
            requester: lease.requester,
            provider: lease.provider,
        };
        book.fold(&[hub_lease]).expect("fold");
        book.fold(&[hub_lease]).expect("fold again");
        let total = 30_000;
        assert!(book.leases().expect("read").is_empty());
        assert_eq!(book.folded(lease.requester).expect("read"), (total, 0));
        assert_eq!(book.folded(lease.provider).expect("read"), (0, total));
        assert_eq!(
            book.position_of(lease.requester).expect("read"),
            ((total, 0), Vec::new())
        );
        assert_eq!(
            book.all_folded_through().expect("read"),
            [(lease.requester, 1_030)],
            "the requester is settled through the folded lease's end"
        );
    }
}
