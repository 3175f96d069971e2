//! Merkle trees over an epoch's leaves, and inclusion proofs, as OpenZeppelin's `MerkleProof`
//! checks them: pairs hashed in sorted order, so a proof is the list of siblings from the leaf
//! up, with no left/right flags.

use alloy_primitives::{B256, keccak256};

/// The hash of two nodes, in sorted order.
fn pair(a: B256, b: B256) -> B256 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(low.as_slice());
    both[32..].copy_from_slice(high.as_slice());
    keccak256(both)
}

/// A tree over leaves in the order given. Each level pairs neighbours; an odd last node goes up
/// unpaired, so a tree of any size needs no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// Level 0 is the leaves; the last level holds the root alone.
    levels: Vec<Vec<B256>>,
}

impl MerkleTree {
    /// The tree over `leaves` (at least one; an empty epoch is never anchored, and its root is
    /// zero, which the contract refuses).
    pub fn new(leaves: Vec<B256>) -> MerkleTree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().expect("a level");
            let up = below
                .chunks(2)
                .map(|two| match two {
                    [a, b] => pair(*a, *b),
                    [a] => *a,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// The root (zero for no leaves).
    pub fn root(&self) -> B256 {
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or_default()
    }

    /// How many leaves it holds.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether it holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The proof of leaf `index`, if there is one.
    pub fn proof(&self, mut index: usize) -> Option<Proof> {
        if index >= self.len() {
            return None;
        }
        let mut siblings = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(index ^ 1) {
                siblings.push(*sibling);
            }
            index /= 2;
        }
        Some(Proof { siblings })
    }
}

/// That a leaf is in a tree: its siblings from the leaf up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proof {
    /// The siblings, leaf level first (what the contract's `verify` takes).
    pub siblings: Vec<B256>,
}

impl Proof {
    /// The root this proof leads to from `leaf`.
    pub fn root_from(&self, leaf: B256) -> B256 {
        self.siblings
            .iter()
            .fold(leaf, |node, sibling| pair(node, *sibling))
    }

    /// Whether `leaf` is in the tree of `root` by this proof.
    pub fn verify(&self, root: B256, leaf: B256) -> bool {
        root != B256::ZERO && self.root_from(leaf) == root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(count: usize, seed: u64) -> Vec<B256> {
        (0..count as u64)
            .map(|i| keccak256([seed.to_be_bytes(), i.to_be_bytes()].concat()))
            .collect()
    }

    #[test]
    fn one_leaf_is_its_own_root_and_needs_no_sibling() {
        let tree = MerkleTree::new(leaves(1, 7));
        assert_eq!(tree.root(), tree.levels[0][0]);
        assert_eq!(tree.proof(0), Some(Proof::default()));
        assert_eq!(tree.proof(1), None);
    }

    #[test]
    fn no_leaf_has_a_zero_root_that_verifies_nothing() {
        let tree = MerkleTree::new(Vec::new());
        assert!(tree.is_empty());
        assert_eq!(tree.root(), B256::ZERO);
        assert!(!Proof::default().verify(tree.root(), B256::ZERO));
    }

    proptest! {
        #[test]
        fn every_leaf_verifies_and_nothing_else_does(count in 1usize..300, seed: u64, pick: usize, bit in 0usize..256) {
            let all = leaves(count, seed);
            let tree = MerkleTree::new(all.clone());
            let index = pick % count;
            let proof = tree.proof(index).expect("in range");
            prop_assert!(proof.verify(tree.root(), all[index]));
            // A leaf with one bit changed is not in the tree.
            let mut changed = all[index];
            changed.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!proof.verify(tree.root(), changed));
            // Nor does a proof with one sibling changed lead to the root.
            if !proof.siblings.is_empty() {
                let mut tampered = proof.clone();
                let at = bit % tampered.siblings.len();
                tampered.siblings[at].0[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(!tampered.verify(tree.root(), all[index]));
            }
            // A proof is as long as the tree is deep, at most.
            prop_assert!(proof.siblings.len() <= usize::BITS as usize - count.leading_zeros() as usize);
        }
    }
}
