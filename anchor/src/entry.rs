//! A deal-book entry and its leaf, as the `DealAnchor` contract defines them.

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

use alloy_primitives::{B256, keccak256};
use alloy_sol_types::SolValue;

alloy_sol_types::sol!(
    #[derive(Debug, Default, PartialEq, Eq)]
    DealAnchor,
    "../contracts/abi/DealAnchor.json"
);

/// One change of one deal (fields a kind does not use are zero).
pub type DealEntry = DealAnchor::DealEntry;

/// What changed, as the contract numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A deal was made: its parties, IPs, span and price.
    Made,
    /// The provider reported ready.
    Ready,
    /// The deal ended: seconds served, what they cost, and how it ended.
    Ended,
    /// A party rated the other.
    Rated,
}

impl From<EntryKind> for u8 {
    fn from(kind: EntryKind) -> u8 {
        match kind {
            EntryKind::Made => 0,
            EntryKind::Ready => 1,
            EntryKind::Ended => 2,
            EntryKind::Rated => 3,
        }
    }
}

impl TryFrom<u8> for EntryKind {
    type Error = u8;

    fn try_from(value: u8) -> Result<EntryKind, u8> {
        Ok(match value {
            0 => EntryKind::Made,
            1 => EntryKind::Ready,
            2 => EntryKind::Ended,
            3 => EntryKind::Rated,
            other => return Err(other),
        })
    }
}

/// The leaf of `entry` in an epoch's tree: `keccak256(keccak256(abi.encode(entry)))`, hashed
/// twice so that no inner node of a tree (64 bytes of child hashes) can pass for an entry.
pub fn leaf(entry: &DealEntry) -> B256 {
    keccak256(keccak256(entry.abi_encode()))
}
