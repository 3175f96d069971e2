//! The node's deal history on disk (`data_dir/history.redb`): every finished deal, as its
//! parties last saw it, by party and id. The engine keeps finished deals in memory only for
//! its retention; `GET /v1/deals` reads older ones here, so memory follows what runs while
//! history stays queryable.
//!
//! ```text
//!  feed: deal over ─► History::record (one transaction per batch) ─► (party, deal) → view
//!  GET /v1/deals ─► engine page (live, recent) ∪ History::page (finished) ─► one page
//! ```

use std::path::Path;

use alloy_primitives::Address;
use ipsx_api::DealView;
use redb::{Database, ReadableDatabase, TableDefinition};

/// (party, deal id big-endian) → the deal's JSON.
const DEALS: TableDefinition<&[u8; 28], &[u8]> = TableDefinition::new("deals");

/// The history failed on disk.
#[derive(Debug, thiserror::Error)]
#[error("deal history: {0}")]
pub struct HistoryError(#[from] redb::Error);

fn db_error(error: impl Into<redb::Error>) -> HistoryError {
    HistoryError(error.into())
}

fn key(party: Address, deal: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(party.as_slice());
    key[20..].copy_from_slice(&deal.to_be_bytes());
    key
}

/// Part of a list: deals in id order, and how far the list was read.
#[derive(Debug)]
pub(crate) struct Slice<T = DealView> {
    /// The deals that passed the filter.
    pub(crate) deals: Vec<T>,
    /// `Some(id)`: reading stopped after deal `id` (the page is full, or the scan's budget is
    /// spent) and more may follow; `None`: everything after the cursor was read.
    pub(crate) stopped_at: Option<u64>,
}

impl<T> Slice<T> {
    /// The same slice with each deal turned into another form.
    pub(crate) fn map<U>(self, each: impl FnMut(T) -> U) -> Slice<U> {
        Slice {
            deals: self.deals.into_iter().map(each).collect(),
            stopped_at: self.stopped_at,
        }
    }
}

/// Reads a list of deals in id order (`id` of each) into a [`Slice`]: at most `limit` that
/// pass `keep`, looking at no more than `budget` of them — a page's cost is bounded however
/// few deals its filter keeps.
pub(crate) fn slice<T>(
    deals: impl Iterator<Item = T>,
    id: impl Fn(&T) -> u64,
    keep: impl Fn(&T) -> bool,
    limit: usize,
    budget: usize,
) -> Slice<T> {
    let mut slice = Slice {
        deals: Vec::new(),
        stopped_at: None,
    };
    for (seen, deal) in deals.enumerate() {
        if slice.deals.len() == limit || seen == budget {
            // The next page starts at this deal, not looked at yet.
            slice.stopped_at = Some(id(&deal) - 1);
            return slice;
        }
        if keep(&deal) {
            slice.deals.push(deal);
        }
    }
    slice
}

/// The history.
#[derive(Debug)]
pub struct History {
    db: Database,
}

impl History {
    /// Opens (or creates) the history at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        // redb's default cache is 1 GiB, which a node left running would fill: the history grows
        // for ever and pages are read back rarely.
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(DEALS).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self { db })
    }

    /// Records finished deals under both their parties, in one transaction.
    pub fn record(&self, deals: &[DealView]) -> Result<(), HistoryError> {
        if deals.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(DEALS).map_err(db_error)?;
            for deal in deals {
                let json = serde_json::to_vec(deal)
                    .map_err(|e| db_error(redb::StorageError::Io(std::io::Error::other(e))))?;
                for party in [deal.provider, deal.requester] {
                    table
                        .insert(&key(party, deal.deal), json.as_slice())
                        .map_err(db_error)?;
                }
            }
        }
        txn.commit().map_err(db_error)
    }

    /// `party`'s finished deals after `after`, filtered (see [`slice`]).
    pub(crate) fn page(
        &self,
        party: Address,
        after: u64,
        keep: impl Fn(&DealView) -> bool,
        limit: usize,
        budget: usize,
    ) -> Result<Slice, HistoryError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(DEALS).map_err(db_error)?;
        let from = key(party, after.saturating_add(1));
        let to = key(party, u64::MAX);
        let range = table.range::<&[u8; 28]>(&from..=&to).map_err(db_error)?;
        let deals = range.filter_map(|entry| {
            let (_, json) = entry.ok()?;
            serde_json::from_slice::<DealView>(json.value()).ok()
        });
        Ok(slice(deals, |deal| deal.deal, keep, limit, budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsx_api::{DealStatus, TokenAmount};

    fn deal(id: u64, provider: u8, requester: u8, status: DealStatus) -> DealView {
        DealView {
            deal: id,
            request: id,
            offer: 1,
            provider: Address::repeat_byte(provider),
            requester: Address::repeat_byte(requester),
            ips: vec!["192.0.2.1".parse().expect("ip")],
            start: 100 + id,
            end: 200 + id,
            price: TokenAmount(1),
            protocols: Vec::new(),
            status,
            closed_at: Some(200 + id),
        }
    }

    #[test]
    fn a_party_reads_its_own_finished_deals_page_by_page() {
        let dir = tempfile::tempdir().expect("dir");
        let history = History::open(&dir.path().join("history.redb")).expect("open");
        let mut deals: Vec<DealView> = (1..=25)
            .map(|id| deal(id, 1, 2, DealStatus::Completed))
            .collect();
        deals.push(deal(26, 3, 4, DealStatus::Completed));
        deals[4].status = DealStatus::Cancelled;
        history.record(&deals).expect("record");
        let everything = |_: &DealView| true;
        let first = history
            .page(Address::repeat_byte(2), 0, everything, 10, 1_000)
            .expect("page");
        assert_eq!(first.deals.len(), 10);
        assert_eq!(first.stopped_at, Some(10));
        let rest = history
            .page(Address::repeat_byte(2), 20, everything, 10, 1_000)
            .expect("page");
        assert_eq!(
            rest.deals.iter().map(|d| d.deal).collect::<Vec<_>>(),
            (21..=25).collect::<Vec<_>>()
        );
        assert_eq!(rest.stopped_at, None, "the last page");
        let cancelled = history
            .page(
                Address::repeat_byte(1),
                0,
                |d: &DealView| d.status == DealStatus::Cancelled,
                10,
                1_000,
            )
            .expect("page");
        assert_eq!(
            cancelled.deals.iter().map(|d| d.deal).collect::<Vec<_>>(),
            [5]
        );
        let stranger = history
            .page(Address::repeat_byte(9), 0, everything, 10, 1_000)
            .expect("page");
        assert!(stranger.deals.is_empty(), "nobody reads another's deals");
    }

    #[test]
    fn a_scan_that_spends_its_budget_says_where_to_go_on() {
        let deals = (1..=100).map(|id| deal(id, 1, 2, DealStatus::Completed));
        let only_90s = |d: &DealView| d.deal > 90;
        let slice = slice(deals, |deal| deal.deal, only_90s, 10, 50);
        assert!(slice.deals.is_empty());
        assert_eq!(slice.stopped_at, Some(50), "go on after the 50 looked at");
    }
}
