//! Deal anchoring, the node's side: every change of the deal book goes into an epoch, each
//! closed epoch's Merkle root goes on chain in the `DealAnchor` contract (one transaction per
//! epoch), and a party reads its deal's entries with their proofs
//! (`GET /v1/deals/{deal}/proofs`) to check them against the root on chain.
//!
//! ```text
//!  feed reads deals ─► entries_of (Made, Ready, Ended, Rated; from the engine's deal) ─► record
//!      record: new kinds only (marks) ─► Epochs::push ─► anchor.redb (one transaction a batch)
//!  every check: Epochs::tick ─► next_to_anchor ─► DealAnchor.anchor(epoch, root, count)
//!      through the node's one sender ─► anchored (disk, then memory)
//!  GET /v1/deals/{deal}/proofs ─► the deal's entries, proofs, roots (parties only)
//! ```
//!
//! Entries come from the engine's deal book, not from what the feed was told, so they are the
//! same whoever reads them and whenever: after a restart the feed reads every deal the engine
//! still holds, and the marks on disk say which entries each already has. A batch that could
//! not be written is derived again (the feed re-reads); the log on disk and the epochs in
//! memory never disagree, because after a failed write the memory is rebuilt from the disk.

mod store;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256};
use alloy_sol_types::{SolCall, SolValue};
use ipsx_anchor::{DealAnchor, DealEntry, EntryKind, EpochConfig, Epochs};
use ipsx_api::{AnchorEntryView, AnchoredEntry, DealProofs};
use ipsx_engine::Deal;
use tokio::sync::watch;

use crate::server::lock;
pub use store::AnchorStoreError;
use store::{AnchorStore, Batch};

/// How the node anchors its deal book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorConfig {
    /// The `DealAnchor` contract (its anchorer must be the node's key).
    pub contract: Address,
    /// When epochs close. Default: five minutes or 100,000 entries; an hour of epochs kept in
    /// memory for proofs (older ones are read from disk).
    pub epochs: EpochConfig,
    /// How often the node closes a due epoch and sends what waits. Default every second.
    pub check_every: Duration,
}

impl AnchorConfig {
    /// Defaults for the contract at `contract`.
    pub fn new(contract: Address) -> AnchorConfig {
        AnchorConfig {
            contract,
            epochs: EpochConfig {
                keep_epochs: 12,
                ..EpochConfig::default()
            },
            check_every: Duration::from_secs(1),
        }
    }
}

/// The mark of a kind of entry: one bit each, and one per side for ratings.
const fn bit(kind: EntryKind, outcome: u8) -> u8 {
    match kind {
        EntryKind::Made => 1,
        EntryKind::Ready => 2,
        EntryKind::Ended => 4,
        EntryKind::Rated if outcome == 1 => 8,
        EntryKind::Rated => 16,
    }
}

/// Every entry `deal`'s state calls for, each with its mark. `now` is the engine's clock,
/// stamped on ratings (the engine keeps no time for them).
pub(crate) fn entries_of(deal: &Deal, now: u64) -> Vec<(u8, DealEntry)> {
    let made = DealEntry {
        deal: deal.id.0,
        kind: EntryKind::Made.into(),
        provider: crate::market::to_alloy(deal.provider),
        requester: crate::market::to_alloy(deal.requester),
        ips: deal.ips.len() as u32,
        start: deal.start.0,
        end: deal.end.0,
        price: deal.price,
        at: deal.made_at.0,
        ..DealEntry::default()
    };
    let mut entries = Vec::with_capacity(3);
    let with = |kind: EntryKind, at: u64| DealEntry {
        kind: kind.into(),
        at,
        ..made.clone()
    };
    if let Some(ready) = deal.ready_at {
        entries.push((bit(EntryKind::Ready, 0), with(EntryKind::Ready, ready.0)));
    }
    let status = deal.status();
    if status.is_terminal() {
        let amount = deal.served_value();
        let per_second = deal.price.saturating_mul(deal.ips.len() as u128);
        let closed = deal.closed_at.map_or(deal.end.0, |at| at.0);
        entries.push((
            bit(EntryKind::Ended, 0),
            DealEntry {
                servedSeconds: amount.checked_div(per_second).map_or(0, |s| s as u64),
                amount,
                outcome: crate::market::api_status(status).anchor_outcome(),
                ..with(EntryKind::Ended, closed)
            },
        ));
    }
    for (side, stars) in [(1, deal.provider_rating), (2, deal.requester_rating)] {
        if let Some(stars) = stars {
            entries.push((
                bit(EntryKind::Rated, side),
                DealEntry {
                    outcome: side,
                    stars,
                    ..with(EntryKind::Rated, now)
                },
            ));
        }
    }
    entries.insert(0, (bit(EntryKind::Made, 0), made));
    entries
}

/// The epochs in memory, and whether they may be behind the disk.
struct Inner {
    epochs: Epochs,
    /// A write failed after the memory moved: rebuild from the disk before going on.
    stale: bool,
}

/// The node's anchoring: the log on disk and the epochs in memory.
pub(crate) struct Anchoring {
    config: AnchorConfig,
    chain_id: u64,
    store: AnchorStore,
    inner: Mutex<Inner>,
    /// The last epoch read back from disk for a proof: a party walking its old deals asks for
    /// the same epoch many times, and rebuilding its tree is the costly part.
    from_disk: Mutex<Option<Arc<ipsx_anchor::Epoch>>>,
}

impl Anchoring {
    /// Opens the log in `data_dir`. A new log starts at the epoch after `anchored_on_chain`
    /// (the contract's count), so a node given a fresh data directory goes on where the
    /// contract is.
    pub(crate) fn open(
        data_dir: &Path,
        config: AnchorConfig,
        chain_id: u64,
        anchored_on_chain: u64,
    ) -> Result<Anchoring, AnchorStoreError> {
        let store = AnchorStore::open(&data_dir.join("anchor.redb"))?;
        let epochs = restore(&store, config.epochs, anchored_on_chain + 1)?;
        Ok(Anchoring {
            config,
            chain_id,
            store,
            inner: Mutex::new(Inner {
                epochs,
                stale: false,
            }),
            from_disk: Mutex::new(None),
        })
    }

    pub(crate) fn contract(&self) -> Address {
        self.config.contract
    }

    pub(crate) fn check_every(&self) -> Duration {
        self.config.check_every
    }

    /// Locks the epochs, rebuilt from the disk first if a write failed.
    fn inner(&self) -> Result<std::sync::MutexGuard<'_, Inner>, AnchorStoreError> {
        let mut inner = lock(&self.inner);
        if inner.stale {
            inner.epochs = restore(&self.store, self.config.epochs, inner.epochs.next_number())?;
            inner.stale = false;
        }
        Ok(inner)
    }

    /// Records the entries in `candidates` (deal, mark, entry) that are new, at `now`, in one
    /// write. On an error nothing of it counts, and the same candidates may come again.
    pub(crate) fn record(
        &self,
        now: u64,
        candidates: Vec<(u8, DealEntry)>,
    ) -> Result<usize, AnchorStoreError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut inner = self.inner()?;
        let mut deals: Vec<u64> = candidates.iter().map(|(_, entry)| entry.deal).collect();
        deals.sort_unstable();
        deals.dedup();
        // (deal, kinds recorded, whether this batch adds one)
        let mut marks: Vec<(u64, u8, bool)> = deals
            .iter()
            .zip(self.store.marks(&deals)?)
            .map(|(deal, mark)| (*deal, mark, false))
            .collect();
        let mut appended = Vec::new();
        let mut closed = Vec::new();
        for (mark, entry) in candidates {
            let at = marks
                .binary_search_by_key(&entry.deal, |(deal, _, _)| *deal)
                .expect("every candidate's deal was looked up");
            if marks[at].1 & mark != 0 {
                continue;
            }
            marks[at].1 |= mark;
            marks[at].2 = true;
            appended.push(entry.clone());
            closed.extend(inner.epochs.push(now, entry));
        }
        if appended.is_empty() {
            return Ok(0);
        }
        let marks = marks
            .into_iter()
            .filter(|(_, _, changed)| *changed)
            .map(|(deal, mark, _)| (deal, mark))
            .collect();
        let written = appended.len();
        self.write(&mut inner, marks, appended, &closed)?;
        Ok(written)
    }

    /// Closes the open epoch if it is due at `now`.
    pub(crate) fn tick(&self, now: u64) -> Result<(), AnchorStoreError> {
        let mut inner = self.inner()?;
        if let Some(number) = inner.epochs.tick(now) {
            self.write(&mut inner, Vec::new(), Vec::new(), &[number])?;
        }
        Ok(())
    }

    fn write(
        &self,
        inner: &mut Inner,
        marks: Vec<(u64, u8)>,
        appended: Vec<DealEntry>,
        closed: &[u64],
    ) -> Result<(), AnchorStoreError> {
        let batch = Batch {
            marks,
            appended,
            closed: closed
                .iter()
                .filter_map(|number| inner.epochs.epoch(*number))
                .collect(),
            opened_at: inner.epochs.opened_at(),
            next_epoch: inner.epochs.next_number(),
        };
        let written = self.store.write(&batch);
        if written.is_err() {
            inner.stale = true;
        }
        written
    }

    /// The oldest closed epoch not on chain: (number, root, entries).
    pub(crate) fn next_to_anchor(&self) -> Result<Option<(u64, B256, u32)>, AnchorStoreError> {
        Ok(self
            .inner()?
            .epochs
            .next_to_anchor()
            .map(|epoch| (epoch.number, epoch.tree.root(), epoch.entries.len() as u32)))
    }

    /// Epoch `number` is on chain: on disk first, then in memory.
    pub(crate) fn anchored(&self, number: u64) -> Result<(), AnchorStoreError> {
        let mut inner = self.inner()?;
        self.store.mark_anchored(number)?;
        inner.epochs.anchored(number);
        Ok(())
    }

    /// `deal`'s entries with their proofs, and those still in the open epoch.
    pub(crate) fn proofs(&self, deal: u64) -> Result<DealProofs, AnchorStoreError> {
        let places = self.store.places_of(deal)?;
        let mut entries = Vec::with_capacity(places.len());
        let inner = self.inner()?;
        let mut from_disk = lock(&self.from_disk);
        for (number, index) in places {
            let epoch = match inner.epochs.epoch(number) {
                Some(epoch) => epoch,
                None => {
                    // Epochs no longer in memory are read from disk, once each.
                    if from_disk
                        .as_ref()
                        .is_none_or(|epoch| epoch.number != number)
                    {
                        *from_disk = self.store.epoch(number)?.map(Arc::new);
                    }
                    match from_disk.as_deref() {
                        Some(epoch) => epoch,
                        None => continue,
                    }
                }
            };
            let (Some(entry), Some(proof)) = (
                epoch.entries.get(index as usize),
                epoch.tree.proof(index as usize),
            ) else {
                continue;
            };
            entries.push(AnchoredEntry {
                epoch: number,
                entry: AnchorEntryView::from(entry),
                proof: proof.siblings,
                root: epoch.tree.root(),
                anchored: epoch.anchored,
            });
        }
        let pending = inner
            .epochs
            .open_entries()
            .iter()
            .filter(|entry| entry.deal == deal)
            .map(AnchorEntryView::from)
            .collect();
        Ok(DealProofs {
            deal,
            chain_id: self.chain_id,
            anchor: self.config.contract,
            entries,
            pending,
        })
    }
}

fn restore(
    store: &AnchorStore,
    config: EpochConfig,
    first_if_new: u64,
) -> Result<Epochs, AnchorStoreError> {
    let restored = store.restore(config.keep_epochs)?;
    let next = if restored.next_epoch == 0 {
        first_if_new
    } else {
        restored.next_epoch
    };
    Ok(Epochs::restore(
        config,
        next,
        restored.closed,
        restored.open,
        restored.opened_at,
    ))
}

/// What sending one epoch came to.
enum Sent {
    /// On chain (sent now, or found there with the same root).
    Anchored,
    /// Not yet: try again at the next check.
    Later(String),
    /// The chain holds another root for this epoch: anchoring stops, loudly.
    Conflict(String),
}

/// Closes due epochs and anchors them in order, until `stop` turns true.
pub(crate) async fn run(
    anchoring: Arc<Anchoring>,
    chain: ipsx_channels_runtime::chain::ChainClient,
    metrics: Arc<crate::metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(anchoring.check_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning = String::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = async { drop(stop.wait_for(|stop| *stop).await) } => break,
        }
        let now = crate::feed::unix_now();
        let next = {
            let anchoring = Arc::clone(&anchoring);
            tokio::task::spawn_blocking(move || {
                anchoring.tick(now)?;
                anchoring.next_to_anchor()
            })
            .await
        };
        let Ok(Ok(Some((number, root, count)))) = next else {
            if let Ok(Err(error)) = next {
                tracing::warn!(%error, "the anchoring log failed; trying again");
            }
            continue;
        };
        match send(&anchoring, &chain, number, root, count).await {
            Sent::Anchored => {
                last_warning.clear();
                let anchoring = Arc::clone(&anchoring);
                let marked = tokio::task::spawn_blocking(move || anchoring.anchored(number)).await;
                if let Ok(Err(error)) = marked {
                    tracing::warn!(%error, number, "noting an anchored epoch failed");
                }
                metrics
                    .anchored_epoch
                    .set(i64::try_from(number).unwrap_or(i64::MAX));
                tracing::info!(epoch = number, entries = count, %root, "epoch anchored");
                // What else waits goes out now, not a check later.
                every.reset_immediately();
            }
            Sent::Later(why) => {
                metrics.anchor_failures.inc();
                if why != last_warning {
                    tracing::warn!(epoch = number, %why, "anchoring failed; trying again");
                    last_warning = why;
                }
            }
            Sent::Conflict(why) => {
                tracing::error!(epoch = number, %why, "anchoring stopped");
                return;
            }
        }
    }
}

/// Sends epoch `number`; if the chain refuses, finds out whether it is there already (a
/// restart after the transaction was mined but before the log noted it).
async fn send(
    anchoring: &Anchoring,
    chain: &ipsx_channels_runtime::chain::ChainClient,
    number: u64,
    root: B256,
    count: u32,
) -> Sent {
    let call = DealAnchor::anchorCall {
        epoch: number,
        root,
        entries: count,
    };
    let sent = chain
        .send_call(anchoring.contract(), call.abi_encode().into())
        .await;
    let Err(error) = sent else {
        return Sent::Anchored;
    };
    match anchored_root(chain, anchoring.contract(), number).await {
        Ok(Some(on_chain)) if on_chain == root => Sent::Anchored,
        Ok(Some(on_chain)) => Sent::Conflict(format!(
            "the contract holds root {on_chain} for this epoch, the node's is {root}: another \
             node anchors with the same key, or the data directory was replaced"
        )),
        Ok(None) => Sent::Later(error.to_string()),
        Err(read) => Sent::Later(format!("{error}; reading the contract: {read}")),
    }
}

/// The root anchored for `epoch`, if any.
pub(crate) async fn anchored_root(
    chain: &ipsx_channels_runtime::chain::ChainClient,
    contract: Address,
    epoch: u64,
) -> Result<Option<B256>, ipsx_channels_runtime::chain::ChainError> {
    let call = DealAnchor::rootOfCall(epoch);
    let answer = chain.call_view(contract, call.abi_encode().into()).await?;
    let root = B256::abi_decode(&answer).map_err(|e| {
        ipsx_channels_runtime::chain::ChainError::Rpc(format!("rootOf answered {answer}: {e}"))
    })?;
    Ok((root != B256::ZERO).then_some(root))
}

/// How many epochs the contract holds.
pub(crate) async fn anchored_epochs(
    chain: &ipsx_channels_runtime::chain::ChainClient,
    contract: Address,
) -> Result<u64, ipsx_channels_runtime::chain::ChainError> {
    let answer = chain
        .call_view(contract, DealAnchor::epochsCall {}.abi_encode().into())
        .await?;
    u64::abi_decode(&answer).map_err(|e| {
        ipsx_channels_runtime::chain::ChainError::Rpc(format!(
            "{contract} is not a DealAnchor (epochs() answered {answer}: {e})"
        ))
    })
}

/// The account a `DealAnchor` takes roots from.
pub(crate) async fn anchorer(
    chain: &ipsx_channels_runtime::chain::ChainClient,
    contract: Address,
) -> Result<Address, ipsx_channels_runtime::chain::ChainError> {
    let answer = chain
        .call_view(contract, DealAnchor::anchorerCall {}.abi_encode().into())
        .await?;
    Address::abi_decode(&answer).map_err(|e| {
        ipsx_channels_runtime::chain::ChainError::Config(format!(
            "{contract} is not a DealAnchor (anchorer() answered {answer}: {e})"
        ))
    })
}
