//! What a party reads of the node's anchored deal book: its deal's entries, each with the
//! epoch it is in, the epoch's root and the Merkle proof (`GET /v1/deals/{deal}/proofs`).
//!
//! An entry converts back to the exact struct the `DealAnchor` contract hashes
//! ([`ipsx_anchor::DealEntry`]), so a client checks it without trusting the node: against the
//! root anchored on chain, offline or with the contract's `verify` view.

use alloy_primitives::{Address, B256};
use ipsx_anchor::{DealEntry, EntryKind};
use serde::{Deserialize, Serialize};

use crate::TokenAmount;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnchorEntryKind {
    /// The deal was made: parties, IPs, span and price.
    Made,
    /// The provider reported ready.
    Ready,
    /// The deal ended: seconds served, their cost, how it ended.
    Ended,
    /// A party rated the other.
    Rated,
}

impl From<AnchorEntryKind> for EntryKind {
    fn from(kind: AnchorEntryKind) -> EntryKind {
        match kind {
            AnchorEntryKind::Made => EntryKind::Made,
            AnchorEntryKind::Ready => EntryKind::Ready,
            AnchorEntryKind::Ended => EntryKind::Ended,
            AnchorEntryKind::Rated => EntryKind::Rated,
        }
    }
}

impl From<EntryKind> for AnchorEntryKind {
    fn from(kind: EntryKind) -> AnchorEntryKind {
        match kind {
            EntryKind::Made => AnchorEntryKind::Made,
            EntryKind::Ready => AnchorEntryKind::Ready,
            EntryKind::Ended => AnchorEntryKind::Ended,
            EntryKind::Rated => AnchorEntryKind::Rated,
        }
    }
}

/// One entry of the deal book, field for field the contract's `DealEntry` (fields a kind does
/// not use are zero).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AnchorEntryView {
    /// The deal.
    pub deal: u64,
    /// What changed.
    pub kind: AnchorEntryKind,
    /// The provider.
    #[schema(value_type = String)]
    pub provider: Address,
    /// The requester.
    #[schema(value_type = String)]
    pub requester: Address,
    /// IPs leased.
    pub ips: u32,
    /// The leased span, `[start, end)`, unix seconds.
    pub start: u64,
    /// End of the span.
    pub end: u64,
    /// Price per IP-second.
    pub price: TokenAmount,
    /// When the change happened (unix seconds).
    pub at: u64,
    /// Ended: seconds served.
    pub served_seconds: u64,
    /// Ended: what they cost (IPs x seconds x price).
    pub amount: TokenAmount,
    /// Ended: the terminal status (2 completed, 3 voided, 4 cancelled, 5 payment lapsed, 6
    /// provider dropped); Rated: 1 when the provider was rated, 2 when the requester was.
    pub outcome: u8,
    /// Rated: the stars given.
    pub stars: u8,
}

impl From<&DealEntry> for AnchorEntryView {
    fn from(entry: &DealEntry) -> AnchorEntryView {
        AnchorEntryView {
            deal: entry.deal,
            // Entries the node builds always carry a known kind; an unknown one reads as made.
            kind: EntryKind::try_from(entry.kind).map_or(AnchorEntryKind::Made, Into::into),
            provider: entry.provider,
            requester: entry.requester,
            ips: entry.ips,
            start: entry.start,
            end: entry.end,
            price: TokenAmount(entry.price),
            at: entry.at,
            served_seconds: entry.servedSeconds,
            amount: TokenAmount(entry.amount),
            outcome: entry.outcome,
            stars: entry.stars,
        }
    }
}

impl From<&AnchorEntryView> for DealEntry {
    fn from(view: &AnchorEntryView) -> DealEntry {
        DealEntry {
            deal: view.deal,
            kind: EntryKind::from(view.kind).into(),
            provider: view.provider,
            requester: view.requester,
            ips: view.ips,
            start: view.start,
            end: view.end,
            price: view.price.0,
            at: view.at,
            servedSeconds: view.served_seconds,
            amount: view.amount.0,
            outcome: view.outcome,
            stars: view.stars,
        }
    }
}

/// An entry in a closed epoch, with what proves it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AnchoredEntry {
    /// The epoch it is in.
    pub epoch: u64,
    /// The entry.
    pub entry: AnchorEntryView,
    /// The sibling hashes from its leaf up to the root.
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<B256>,
    /// The epoch's root as the node computed it: check it against the contract's
    /// `rootOf(epoch)`, never take it on the node's word.
    #[schema(value_type = String)]
    pub root: B256,
    /// Whether the node has seen the root anchored on chain.
    pub anchored: bool,
}

/// A deal's entries in the node's anchored deal book.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct DealProofs {
    /// The deal.
    pub deal: u64,
    /// The chain the anchor contract is on.
    pub chain_id: u64,
    /// The `DealAnchor` contract the node anchors in.
    #[schema(value_type = String)]
    pub anchor: Address,
    /// Entries in closed epochs, oldest first.
    pub entries: Vec<AnchoredEntry>,
    /// Entries in the epoch still open: they get proofs once it closes (within the node's
    /// epoch length).
    pub pending: Vec<AnchorEntryView>,
}
