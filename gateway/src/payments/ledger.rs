//! Every write of the payment side — to the book and to the proof store — as one [`Entry`],
//! so that a cluster can carry them to every node before they count.
//!
//! ```text
//!  one node:  record(entry) ─► apply: book / proof store (fsync)
//!  a cluster: record(entry) ─► payments log (JetStream, fenced, acked) ─► apply locally
//!             every other node: OpLog::follow ─► apply_at(seq, entry) ─► its own book and store
//! ```
//!
//! The entries are cumulative or idempotent (a proof replaces a lower one, a signed amount
//! never goes down, a channel or lease row is set to a value, a fold removes the leases it
//! names and adds their sums only if they were still there), so an entry applied twice — a
//! node that crashed between applying and moving its cursor — changes nothing more. The
//! leader that takes over has applied every entry of the old one: the log's claim is fenced
//! on the end it read (`ipsx_engine_cluster::oplog`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use alloy_primitives::Address;
use bytes::Bytes;
use ipsx_channels::{ChannelId, HubLease, SignedProof};
use ipsx_channels_runtime::store::{ProofStore, StoreError};
use ipsx_engine_cluster::{ClusterError, OpWriter};

use super::book::{BookError, BookedLease, LEASE_LEN, PaymentBook};

/// One write of the payment side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A requester registered the channel it pays the node on.
    RequesterChannel(Address, ChannelId),
    /// The node opened its channel to a provider.
    ProviderChannel(Address, ChannelId),
    /// A requester's proof, checked, before it counts.
    Received(SignedProof),
    /// Amounts the hub is about to sign to providers, before the proofs leave.
    Signed(Vec<(ChannelId, u128)>),
    /// A lease's terms as fixed (or as ended).
    Lease(BookedLease),
    /// Leases ended and paid in full: gone from the book, added to per-party sums.
    Fold(Vec<HubLease>),
}

/// A write of the payment side that failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The payment book.
    #[error(transparent)]
    Book(#[from] BookError),
    /// The proof store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster's payments log refused or could not be reached.
    #[error("the payments log: {0}")]
    Log(#[from] ClusterError),
    /// The thread writing to disk panicked.
    #[error("the write to the book or the proof store was interrupted")]
    Interrupted,
    /// An entry read from the log does not decode.
    #[error("a payments log entry is malformed: {0}")]
    Malformed(&'static str),
}

const TAG_REQUESTER: u8 = 1;
const TAG_PROVIDER: u8 = 2;
const TAG_RECEIVED: u8 = 3;
const TAG_SIGNED: u8 = 4;
const TAG_LEASE: u8 = 5;
const TAG_FOLD: u8 = 6;

/// A lease on the wire: its id, then the book's row.
const LEASE_WIRE: usize = 8 + LEASE_LEN;

impl Entry {
    /// The entry's bytes in the log: a tag, then fixed-size fields.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Entry::RequesterChannel(party, channel) | Entry::ProviderChannel(party, channel) => {
                let tag = if matches!(self, Entry::RequesterChannel(..)) {
                    TAG_REQUESTER
                } else {
                    TAG_PROVIDER
                };
                out.push(tag);
                out.extend_from_slice(party.as_slice());
                out.extend_from_slice(&channel.0.to_be_bytes());
            }
            Entry::Received(proof) => {
                out.push(TAG_RECEIVED);
                out.extend_from_slice(&proof.encode());
            }
            Entry::Signed(amounts) => {
                out.push(TAG_SIGNED);
                for (channel, amount) in amounts {
                    out.extend_from_slice(&channel.0.to_be_bytes());
                    out.extend_from_slice(&amount.to_be_bytes());
                }
            }
            Entry::Lease(lease) => {
                out.push(TAG_LEASE);
                encode_lease(&mut out, lease);
            }
            Entry::Fold(leases) => {
                out.push(TAG_FOLD);
                for lease in leases {
                    encode_lease(
                        &mut out,
                        &BookedLease {
                            terms: lease.terms,
                            requester: lease.requester,
                            provider: lease.provider,
                            ended: true,
                        },
                    );
                }
            }
        }
        out
    }

    /// Reads an entry back; anything malformed is refused.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, LedgerError> {
        let (&tag, body) = bytes.split_first().ok_or(LedgerError::Malformed("empty"))?;
        let party_channel = |body: &[u8]| {
            if body.len() != 28 {
                return Err(LedgerError::Malformed("a channel entry is 28 bytes"));
            }
            let channel = u64::from_be_bytes(body[20..].try_into().unwrap_or_default());
            Ok((Address::from_slice(&body[..20]), ChannelId(channel)))
        };
        match tag {
            TAG_REQUESTER => party_channel(body).map(|(p, c)| Entry::RequesterChannel(p, c)),
            TAG_PROVIDER => party_channel(body).map(|(p, c)| Entry::ProviderChannel(p, c)),
            TAG_RECEIVED => SignedProof::decode(body)
                .map(Entry::Received)
                .map_err(|_| LedgerError::Malformed("a proof does not decode")),
            TAG_SIGNED => {
                if body.is_empty() || body.len() % 24 != 0 {
                    return Err(LedgerError::Malformed("signed amounts are 24 bytes each"));
                }
                Ok(Entry::Signed(
                    body.chunks_exact(24)
                        .map(|chunk| {
                            let channel =
                                u64::from_be_bytes(chunk[..8].try_into().unwrap_or_default());
                            let amount =
                                u128::from_be_bytes(chunk[8..].try_into().unwrap_or_default());
                            (ChannelId(channel), amount)
                        })
                        .collect(),
                ))
            }
            TAG_LEASE if body.len() == LEASE_WIRE => Ok(Entry::Lease(decode_lease(body))),
            TAG_FOLD if !body.is_empty() && body.len() % LEASE_WIRE == 0 => Ok(Entry::Fold(
                body.chunks_exact(LEASE_WIRE)
                    .map(|chunk| {
                        let lease = decode_lease(chunk);
                        HubLease {
                            terms: lease.terms,
                            requester: lease.requester,
                            provider: lease.provider,
                        }
                    })
                    .collect(),
            )),
            TAG_LEASE | TAG_FOLD => Err(LedgerError::Malformed("a lease is 81 bytes")),
            _ => Err(LedgerError::Malformed("unknown tag")),
        }
    }
}

fn encode_lease(out: &mut Vec<u8>, lease: &BookedLease) {
    out.extend_from_slice(&lease.terms.id.to_be_bytes());
    out.extend_from_slice(&lease.encode());
}

/// `bytes` is [`LEASE_WIRE`] long (checked by the caller).
fn decode_lease(bytes: &[u8]) -> BookedLease {
    let id = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
    let mut row = [0u8; LEASE_LEN];
    row.copy_from_slice(&bytes[8..LEASE_WIRE]);
    BookedLease::decode(id, &row)
}

/// The payment side's book and proof store, and — on a cluster's leader — the log every
/// write goes through first.
pub(crate) struct Ledger {
    pub(crate) book: PaymentBook,
    pub(crate) store: Arc<ProofStore>,
    writer: OnceLock<tokio::sync::Mutex<OpWriter>>,
    /// Why the log took no more writes (fenced off, or out of reach past the writer's
    /// patience): the hub cannot go on here, and the node must give way.
    broken: tokio::sync::watch::Sender<Option<String>>,
}

impl Ledger {
    /// Opens the book and the proof store in `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            book: PaymentBook::open(&data_dir.join("payments.redb"))?,
            store: Arc::new(ProofStore::open(&data_dir.join("proofs.redb"))?),
            writer: OnceLock::new(),
            broken: tokio::sync::watch::channel(None).0,
        })
    }

    /// From now on every write goes through the cluster's payments log first.
    pub(crate) fn lead(&self, writer: OpWriter) {
        let _ = self.writer.set(tokio::sync::Mutex::new(writer));
    }

    /// Waits until the cluster's log takes no more of this node's writes; why.
    pub(crate) async fn broken(&self) -> String {
        let mut broken = self.broken.subscribe();
        let why = broken.wait_for(Option::is_some).await;
        why.map_or_else(
            |_| "the ledger is gone".to_owned(),
            |why| why.clone().unwrap_or_default(),
        )
    }

    /// Applies one entry to the book or the store.
    pub(crate) fn apply(&self, entry: &Entry) -> Result<(), LedgerError> {
        match entry {
            Entry::RequesterChannel(requester, channel) => {
                self.book.set_requester_channel(*requester, *channel)?;
            }
            Entry::ProviderChannel(provider, channel) => {
                self.book.set_provider_channel(*provider, *channel)?;
            }
            Entry::Received(proof) => {
                self.store.persist_received(&[*proof])?;
            }
            Entry::Signed(amounts) => self.store.persist_signed(amounts)?,
            Entry::Lease(lease) => self.book.put_lease(lease)?,
            Entry::Fold(leases) => self.book.fold(leases)?,
        }
        Ok(())
    }

    /// Applies entry `seq` of the cluster's payments log (a follower, or a node catching up).
    pub(crate) fn apply_at(&self, seq: u64, bytes: &[u8]) -> Result<(), LedgerError> {
        self.apply_as(&Entry::decode(bytes)?, Some(seq))
    }

    /// Applies `entry`, and moves the cursor to `seq` when it came through the log.
    fn apply_as(&self, entry: &Entry, seq: Option<u64>) -> Result<(), LedgerError> {
        self.apply(entry)?;
        if let Some(seq) = seq {
            self.book.set_applied(seq)?;
        }
        Ok(())
    }

    /// Appends `entry` to the cluster's log when this node leads one: its sequence there.
    async fn append(&self, entry: &Entry) -> Result<Option<u64>, LedgerError> {
        let Some(writer) = self.writer.get() else {
            return Ok(None);
        };
        let bytes = Bytes::from(entry.encode());
        let seq = writer
            .lock()
            .await
            .append(bytes)
            .await
            .inspect_err(|error| {
                self.broken.send_replace(Some(error.to_string()));
            })?;
        Ok(Some(seq))
    }

    /// Writes `entry`: through the cluster's log first when this node leads one, then here.
    /// From a blocking thread (the book and the store are on disk).
    pub(crate) fn record(&self, entry: &Entry) -> Result<(), LedgerError> {
        let seq = match self.writer.get() {
            Some(_) => tokio::runtime::Handle::current().block_on(self.append(entry))?,
            None => None,
        };
        self.apply_as(entry, seq)
    }

    /// [`Ledger::record`] from async code: the log's round trip on the async workers, the
    /// disk write on a blocking thread.
    pub(crate) async fn record_async(self: &Arc<Self>, entry: Entry) -> Result<(), LedgerError> {
        let seq = self.append(&entry).await?;
        let ledger = Arc::clone(self);
        tokio::task::spawn_blocking(move || ledger.apply_as(&entry, seq))
            .await
            .map_err(|_| LedgerError::Interrupted)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsx_channels::{ChannelDomain, LeaseTerms, SigningKey};

    fn lease(id: u64) -> BookedLease {
        BookedLease {
            terms: LeaseTerms {
                id,
                rate: 7,
                start: 100,
                end: 160,
            },
            requester: Address::repeat_byte(1),
            provider: Address::repeat_byte(2),
            ended: false,
        }
    }

    #[test]
    fn entries_read_back_and_malformed_ones_are_refused() {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(9));
        let key = SigningKey::from_bytes(&[3; 32]).expect("key");
        let entries = [
            Entry::RequesterChannel(Address::repeat_byte(1), ChannelId(4)),
            Entry::ProviderChannel(Address::repeat_byte(2), ChannelId(5)),
            Entry::Received(domain.sign_balance_proof(&key, ChannelId(4), 99)),
            Entry::Signed(vec![(ChannelId(5), 40), (ChannelId(6), u128::MAX)]),
            Entry::Lease(lease(8)),
            Entry::Fold(vec![HubLease {
                terms: lease(8).terms,
                requester: Address::repeat_byte(1),
                provider: Address::repeat_byte(2),
            }]),
        ];
        for entry in entries {
            let bytes = entry.encode();
            assert_eq!(Entry::decode(&bytes).expect("decodes"), entry);
            assert!(
                Entry::decode(&bytes[..bytes.len() - 1]).is_err(),
                "{entry:?} cut short"
            );
        }
        assert!(Entry::decode(&[]).is_err());
        assert!(Entry::decode(&[99, 1, 2]).is_err());
        assert!(Entry::decode(&[TAG_SIGNED]).is_err(), "nothing signed");
    }

    /// A leader that was replaced writes nothing more: its entry is refused by the log's
    /// fence, nothing changes in its book, and it is told to give way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replaced_leaders_writes_are_refused_and_change_nothing() {
        use ipsx_engine_cluster::local::LocalNats;
        use ipsx_engine_cluster::{ClusterConfig, OpLog};
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = LocalNats::start(&dir.path().join("nats"), 1).expect("nats-server runs");
        let mut config = ClusterConfig::new(nats.urls(), "ledger", "n1", "");
        config.replicas = 1;
        let log = OpLog::open(&config, "PAYMENTS").await.expect("log");
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::create_dir_all(&old).expect("dir");
        std::fs::create_dir_all(&new).expect("dir");
        let old = Arc::new(Ledger::open(&old).expect("open"));
        let new = Arc::new(Ledger::open(&new).expect("open"));

        let (writer, _) = log.claim(0, |_, _| Ok(())).await.expect("claim");
        old.lead(writer);
        old.record_async(Entry::Lease(lease(1)))
            .await
            .expect("written");
        assert!(old.book.lease(1).expect("read").is_some());

        // Another node takes over: it reads what the old leader wrote, then claims.
        let applied = {
            let new = Arc::clone(&new);
            move |seq, entry: Bytes| new.apply_at(seq, &entry).map_err(|e| e.to_string())
        };
        let (writer, claim) = log.claim(0, applied).await.expect("claim");
        assert!(new.book.lease(1).expect("read").is_some(), "taken over");
        new.lead(writer);

        let refused = old.record_async(Entry::Lease(lease(2))).await;
        assert!(
            matches!(refused, Err(LedgerError::Log(ClusterError::Fenced { .. }))),
            "{refused:?}"
        );
        assert!(
            old.book.lease(2).expect("read").is_none(),
            "nothing applied"
        );
        let why = tokio::time::timeout(std::time::Duration::from_secs(5), old.broken())
            .await
            .expect("the old leader is told to give way");
        assert!(why.contains("no longer leads"), "{why}");
        new.record_async(Entry::Lease(lease(2)))
            .await
            .expect("the new leader writes");
        assert_eq!(new.book.applied().expect("cursor"), claim + 1);
    }

    #[test]
    fn an_entry_applied_twice_changes_nothing_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let booked = lease(8);
        let fold = Entry::Fold(vec![HubLease {
            terms: booked.terms,
            requester: booked.requester,
            provider: booked.provider,
        }]);
        for (seq, entry) in [Entry::Lease(booked), fold.clone(), fold]
            .iter()
            .enumerate()
        {
            ledger
                .apply_at(seq as u64 + 1, &entry.encode())
                .expect("applied");
        }
        assert_eq!(ledger.book.applied().expect("cursor"), 3);
        assert_eq!(
            ledger.book.folded(booked.requester).expect("sums"),
            (booked.terms.total(), 0),
            "folded once"
        );
        assert!(ledger.book.lease(8).expect("read").is_none());
        assert!(ledger.apply_at(4, &[TAG_LEASE, 1]).is_err());
        assert_eq!(
            ledger.book.applied().expect("cursor"),
            3,
            "a bad entry moves nothing"
        );
    }
}
