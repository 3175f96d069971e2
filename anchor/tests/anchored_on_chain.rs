//! The node's side and the contract's agree: a 10,000-deal run's entries, anchored on a real
//! anvil in the real `DealAnchor`, each verify through the contract's `verify` view with the
//! proof the tree gives; a tampered proof, a changed entry and an entry never anchored do not.

use alloy::primitives::{Address, B256};
use alloy::providers::DynProvider;
use ipsx_anchor::{DealEntry, EntryKind, MerkleTree, Proof, leaf};
use ipsx_channels::SigningKey;
use ipsx_channels_runtime::chain::wallet_provider;
use ipsx_channels_runtime::devnet::spawn_anvil;

mod contract {
    #![allow(missing_docs)]
    alloy::sol!(
        #[sol(rpc)]
        DealAnchorContract,
        "../contracts/abi/DealAnchor.json"
    );
}
use contract::{DealAnchor, DealAnchorContract};

type Anchor = DealAnchorContract::DealAnchorContractInstance<DynProvider>;

const DEALS: u64 = 10_000;
const T0: u64 = 1_767_225_600;

/// A deal's entries in a run where every deal is made, served for a while and ended.
fn made_and_ended(deal: u64) -> [DealEntry; 2] {
    let provider = Address::with_last_byte((deal % 200) as u8);
    let requester = Address::repeat_byte(0xF1);
    let (start, end) = (T0 + deal / 100, T0 + deal / 100 + 60);
    let price = 1_000_000_000_000_000u128 + u128::from(deal % 50);
    let made = DealEntry {
        deal,
        kind: EntryKind::Made.into(),
        provider,
        requester,
        ips: 1,
        start,
        end,
        price,
        at: start,
        ..Default::default()
    };
    let served = 30 + deal % 30;
    let ended = DealEntry {
        kind: EntryKind::Ended.into(),
        at: start + served,
        servedSeconds: served,
        amount: price * u128::from(served),
        outcome: 4,
        ..made.clone()
    };
    [made, ended]
}

/// The contract's type for an entry (the same ABI, generated twice).
fn on_chain(entry: &DealEntry) -> DealAnchor::DealEntry {
    DealAnchor::DealEntry {
        deal: entry.deal,
        kind: entry.kind,
        provider: entry.provider,
        requester: entry.requester,
        ips: entry.ips,
        start: entry.start,
        end: entry.end,
        price: entry.price,
        at: entry.at,
        servedSeconds: entry.servedSeconds,
        amount: entry.amount,
        outcome: entry.outcome,
        stars: entry.stars,
    }
}

async fn verifies(anchor: &Anchor, epoch: u64, entry: &DealEntry, proof: &Proof) -> bool {
    anchor
        .verify(epoch, on_chain(entry), proof.siblings.clone())
        .call()
        .await
        .expect("verify is a view")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_of_a_10000_deal_run_verifies_on_chain_and_nothing_else_does() {
    let anvil = spawn_anvil().expect("anvil");
    let key = SigningKey::from_bytes(&anvil.keys()[0].to_bytes().into()).expect("anvil key");
    let node = wallet_provider(&anvil.endpoint(), &key).expect("provider");
    let anchor = DealAnchorContract::deploy(node.clone(), key.address())
        .await
        .expect("deploy the anchor");

    // Two epochs: the deals made in the first, their ends in the second.
    let epochs: Vec<Vec<DealEntry>> = {
        let (made, ended): (Vec<_>, Vec<_>) = (1..=DEALS)
            .map(made_and_ended)
            .map(|[made, ended]| (made, ended))
            .unzip();
        vec![made, ended]
    };
    let trees: Vec<MerkleTree> = epochs
        .iter()
        .map(|entries| MerkleTree::new(entries.iter().map(leaf).collect()))
        .collect();
    for (number, (tree, entries)) in trees.iter().zip(&epochs).enumerate() {
        let receipt = anchor
            .anchor(number as u64 + 1, tree.root(), entries.len() as u32)
            .send()
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("anchored");
        assert!(receipt.status(), "epoch {} anchored", number + 1);
        assert!(
            receipt.gas_used <= 70_000,
            "one transaction per epoch, whatever its size: {} gas",
            receipt.gas_used
        );
    }

    // The contract hashes an entry as this crate does.
    let first = &epochs[0][0];
    let on_chain_leaf: B256 = anchor.leafOf(on_chain(first)).call().await.expect("leafOf");
    assert_eq!(on_chain_leaf, leaf(first));

    // Every entry verifies on chain, in its own epoch; workers split the 20,000 calls.
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8usize {
        let (anchor, epochs, trees) = (anchor.clone(), epochs.clone(), trees.clone());
        workers.spawn(async move {
            for (number, (entries, tree)) in epochs.iter().zip(&trees).enumerate() {
                for (index, entry) in entries.iter().enumerate().skip(worker).step_by(8) {
                    let proof = tree.proof(index).expect("in the tree");
                    assert!(proof.verify(tree.root(), leaf(entry)), "offline");
                    assert!(
                        verifies(&anchor, number as u64 + 1, entry, &proof).await,
                        "deal {} entry {} of epoch {}",
                        entry.deal,
                        index,
                        number + 1
                    );
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a worker");
    }

    // A node showing a provider another history is caught: a changed amount, a proof with one
    // sibling changed, the right entry in another epoch, a deal never anchored.
    let entry = &epochs[1][4_321];
    let proof = trees[1].proof(4_321).expect("in the tree");
    let lied = DealEntry {
        amount: entry.amount + 1,
        ..entry.clone()
    };
    assert!(!verifies(&anchor, 2, &lied, &proof).await, "another amount");
    assert!(!proof.verify(trees[1].root(), leaf(&lied)), "offline too");
    let mut tampered = proof.clone();
    tampered.siblings[3].0[31] ^= 1;
    assert!(
        !verifies(&anchor, 2, entry, &tampered).await,
        "a tampered proof"
    );
    assert!(!verifies(&anchor, 1, entry, &proof).await, "another epoch");
    assert!(
        !verifies(&anchor, 3, entry, &proof).await,
        "an epoch never anchored"
    );
    let [never, _] = made_and_ended(DEALS + 1);
    let closest = trees[0].proof(0).expect("a proof");
    assert!(
        !verifies(&anchor, 1, &never, &closest).await,
        "a deal never anchored"
    );

    // An anchored root cannot be replaced, and only the node anchors.
    let rewrite = anchor.anchor(2, B256::repeat_byte(7), 1).send().await;
    assert!(rewrite.is_err(), "epoch 2 is anchored already");
    let other_key = SigningKey::from_bytes(&anvil.keys()[1].to_bytes().into()).expect("key");
    let stranger = DealAnchorContract::new(
        *anchor.address(),
        wallet_provider(&anvil.endpoint(), &other_key).expect("provider"),
    );
    assert!(
        stranger
            .anchor(3, B256::repeat_byte(7), 1)
            .send()
            .await
            .is_err(),
        "only the node anchors"
    );
    assert_eq!(
        anchor.rootOf(2).call().await.expect("rootOf"),
        trees[1].root()
    );
}
