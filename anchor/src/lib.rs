//! Deal anchoring, sans I/O: what the node commits on chain so that nobody has to take its
//! word for the deal book.
//!
//! Every change of the deal book — a deal made with its terms, a provider ready, a deal ended
//! with the seconds served and what they cost, a rating — is a [`DealEntry`]. The node feeds
//! them to [`Epochs`], which closes an epoch every few minutes or every so many entries and
//! builds a [`MerkleTree`] over their [`leaf`]s; the node anchors each root in the
//! `DealAnchor` contract, in order, one transaction per epoch whatever the number of deals. A party asks the node for its entries
//! with their [`Proof`]s and checks them against the anchored root: offline with
//! [`Proof::verify`], or on chain with the contract's `verify` view. The hashing is the
//! contract's own (the [`DealEntry`] type is generated from its ABI), so a proof that passes
//! here passes there.
//!
//! ```text
//! deal book changes ──► DealEntry ──► leaf ──► MerkleTree (one epoch) ──► root ──► DealAnchor.anchor
//!                                                   │
//!                                                   └──► Proof (siblings) ──► verify (offline / on chain)
//! ```
//!
//! ```
//! use ipsx_anchor::{DealEntry, EntryKind, MerkleTree, leaf};
//!
//! let entries: Vec<DealEntry> = (1..=5)
//!     .map(|deal| DealEntry { deal, kind: EntryKind::Made.into(), ..Default::default() })
//!     .collect();
//! let tree = MerkleTree::new(entries.iter().map(leaf).collect());
//! let proof = tree.proof(3).expect("five leaves");
//! assert!(proof.verify(tree.root(), leaf(&entries[3])));
//! assert!(!proof.verify(tree.root(), leaf(&entries[2])));
//! ```

mod entry;
mod epochs;
mod tree;

pub use entry::{DealAnchor, DealEntry, EntryKind, leaf};
pub use epochs::{EntryProof, Epoch, EpochConfig, Epochs};
pub use tree::{MerkleTree, Proof};
