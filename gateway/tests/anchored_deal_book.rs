//! The deal book on chain, as a party checks it: a node with payments anchors every change of
//! its deals (made, ready, ended, rated) in the real `DealAnchor` on anvil, epoch by epoch;
//! each party reads its deals' entries with their proofs and proves them against the roots on
//! chain — and a node that shows a party another history than the one it anchored is caught,
//! whether it alters an entry, fabricates a whole tree, tells other terms than it anchored, or
//! passes one deal's proof off for another. A restarted node goes on from its log: the same
//! proofs, and new epochs after the old ones.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use ipsx_anchor::{DealEntry, EpochConfig, MerkleTree, leaf};
use ipsx_api::{AnchorEntryKind, AnchorEntryView, AnchoredEntry, DealProofs, DealStatus};
use ipsx_channels::SigningKey;
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, Deployment, deploy_local, spawn_anvil};
use ipsx_gateway::anchoring::AnchorConfig;
use ipsx_gateway::{GatewayConfig, PaymentsConfig};
use ipsx_sdk::anchor::{DealCheck, Verdict, check};
use ipsx_sdk::{Client, LeaseBody, OfferBody, TokenAmount, Wallet};

const TOKEN: u128 = 1_000_000_000_000_000_000;
const PRICE: u128 = 1_000_000_000;

fn anvil_key(anvil: &alloy::node_bindings::AnvilInstance, index: usize) -> SigningKey {
    let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
    SigningKey::from_bytes(&bytes).expect("key")
}

fn wallet_of(key: &SigningKey) -> Wallet {
    Wallet::from_bytes(&key.to_bytes().into()).expect("wallet")
}

/// Payments and anchoring on; small epochs (16 entries or a second) so a run spans several,
/// and two kept in memory so older ones are read back from disk.
fn configure(config: &mut GatewayConfig, rpc: &str, deployment: &Deployment, node: &SigningKey) {
    let mut payments = PaymentsConfig::new(rpc, deployment.centralizer, node.clone());
    payments.provider_deposit = 10 * TOKEN;
    // Nobody pays in this story: leases must end as the test ends them, not by cut-off.
    payments.hub.grace = 3_600;
    config.payments = Some(payments);
    config.anchor = Some(AnchorConfig {
        contract: deployment.anchor,
        epochs: EpochConfig {
            max_seconds: 1,
            max_entries: 16,
            keep_epochs: 2,
        },
        check_every: Duration::from_millis(100),
    });
}

async fn signed_in(base: &str, wallet: &Wallet) -> Client {
    let mut client = Client::new(base);
    client.sign_in(wallet).await.expect("sign in");
    client
}

/// Polls `deal`'s proofs as `client` until every entry is anchored and `kinds` are there.
async fn anchored(client: &Client, deal: u64, kinds: &[AnchorEntryKind]) -> DealProofs {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let proofs = client.deal_proofs(deal).await.ok();
        if let Some(proofs) = proofs.filter(|proofs| {
            proofs.pending.is_empty()
                && proofs.entries.iter().all(|entry| entry.anchored)
                && kinds
                    .iter()
                    .all(|kind| proofs.entries.iter().any(|e| e.entry.kind == *kind))
        }) {
            return proofs;
        }
        assert!(
            Instant::now() < deadline,
            "deal {deal} not anchored with {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn checked(client: &Client, proofs: &DealProofs, rpc: &str, anchor: Address) -> DealCheck {
    let told = client.deal(proofs.deal).await.expect("deal");
    check(proofs, told.as_ref(), rpc, anchor)
        .await
        .expect("check")
}

fn entry_of(proofs: &DealProofs, kind: AnchorEntryKind) -> &AnchoredEntry {
    proofs
        .entries
        .iter()
        .find(|anchored| anchored.entry.kind == kind)
        .expect("entry of that kind")
}

/// anvil with the real contracts: wallet 0 is the node (the treasury and anchorer), with 100
/// IPSX deposited for provider channels; wallet 1, the fleet, holds 10 IPSX.
struct Chain {
    anvil: alloy::node_bindings::AnvilInstance,
    rpc: String,
    node_key: SigningKey,
    deployment: Deployment,
}

impl Chain {
    async fn start() -> Chain {
        let anvil = spawn_anvil().expect("anvil (run `npm ci` in contracts/)");
        let rpc = anvil.endpoint();
        let node_key = anvil_key(&anvil, 0);
        let deployment = deploy_local(
            &rpc,
            &node_key,
            DeploySettings {
                commission_bps: 250,
                challenge_period: 3_600,
                treasury: node_key.address(),
            },
        )
        .await
        .expect("deploy");
        let node_chain = ChainClient::connect(&rpc, deployment.centralizer, node_key.clone())
            .await
            .expect("client");
        node_chain
            .deposit_with_permit(100 * TOKEN)
            .await
            .expect("node deposit");
        node_chain
            .transfer_tokens(anvil_key(&anvil, 1).address(), 10 * TOKEN)
            .await
            .expect("fund the fleet");
        Chain {
            anvil,
            rpc,
            node_key,
            deployment,
        }
    }

    fn key(&self, index: usize) -> SigningKey {
        anvil_key(&self.anvil, index)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deal_is_anchored_and_a_node_showing_another_history_is_caught() {
    let chain = Chain::start().await;
    let (rpc, node_key, deployment) = (&chain.rpc, &chain.node_key, chain.deployment);
    let (fleet_key, provider_key, stranger_key) = (chain.key(1), chain.key(2), chain.key(3));

    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::node_in(dir.path(), |config| {
        configure(config, rpc, &deployment, node_key);
    })
    .await;
    let base = format!("http://{}", node.addr);

    let provider = signed_in(&base, &wallet_of(&provider_key)).await;
    provider.register_provider(1080).await.expect("register");
    let ips: Vec<IpAddr> = (2..=7)
        .map(|last| format!("127.0.0.{last}").parse().expect("ip"))
        .collect();
    provider
        .place_offer(&OfferBody::new(
            ips,
            "DE",
            ipsx_sdk::IpKind::Residential,
            [ipsx_sdk::Protocol::Socks5],
            common::now() + 3_600,
            TokenAmount(PRICE),
        ))
        .await
        .expect("offer");
    let fleet_wallet = wallet_of(&fleet_key);
    let fleet = signed_in(&base, &fleet_wallet).await;
    ipsx_sdk::ensure_channel(&fleet, &fleet_wallet, rpc, TOKEN)
        .await
        .expect("channel");
    let mut deals = Vec::new();
    let (mut start, mut last_start) = (u64::MAX, 0);
    for _ in 0..6 {
        let leased = fleet
            .lease(&LeaseBody::new(1, 60, TokenAmount(PRICE)))
            .await
            .expect("lease");
        let deal = &leased.deals[0].deal;
        deals.push(deal.deal);
        start = start.min(deal.start);
        last_start = last_start.max(deal.start);
    }

    // Five served, one never (voided at its ready deadline); one cancelled after ten seconds,
    // four run to their end; one rating each way.
    for deal in &deals[..5] {
        provider.ready(*deal).await.expect("ready");
    }
    node.advance_engine_clock(start + 10).await.expect("clock");
    fleet.cancel_deal(deals[0]).await.expect("cancel");
    node.advance_engine_clock(last_start + 61)
        .await
        .expect("clock");
    fleet.rate(deals[1], 5).await.expect("rate the provider");
    provider.rate(deals[2], 4).await.expect("rate the fleet");

    use AnchorEntryKind::{Ended, Made, Rated, Ready};
    let expected: Vec<(u64, Vec<AnchorEntryKind>, DealStatus)> = vec![
        (deals[0], vec![Made, Ready, Ended], DealStatus::Cancelled),
        (
            deals[1],
            vec![Made, Ready, Ended, Rated],
            DealStatus::Completed,
        ),
        (
            deals[2],
            vec![Made, Ready, Ended, Rated],
            DealStatus::Completed,
        ),
        (deals[3], vec![Made, Ready, Ended], DealStatus::Completed),
        (deals[4], vec![Made, Ready, Ended], DealStatus::Completed),
        (deals[5], vec![Made, Ended], DealStatus::Voided),
    ];
    let mut honest = Vec::new();
    for (deal, kinds, status) in &expected {
        let proofs = anchored(&fleet, *deal, kinds).await;
        assert_eq!(proofs.anchor, deployment.anchor);
        assert_eq!(
            proofs.entries.len(),
            kinds.len(),
            "deal {deal}: each change once"
        );
        let ended = &entry_of(&proofs, Ended).entry;
        assert_eq!(ended.outcome, status.anchor_outcome(), "deal {deal}");
        assert_eq!(
            ended.amount.0,
            PRICE * u128::from(ended.served_seconds),
            "deal {deal}: what the seconds served cost"
        );
        // Both parties prove every entry against the chain, and it says what they were told.
        for party in [&fleet, &provider] {
            let proofs = party.deal_proofs(*deal).await.expect("proofs");
            let report = checked(party, &proofs, rpc, deployment.anchor).await;
            assert!(report.proven(), "deal {deal}: {report:?}");
            assert!(!report.caught());
        }
        honest.push(proofs);
    }
    // Cancelled at start + 10, served from its start or its ready report, whichever came later.
    let (made, ready, ended) = (
        &entry_of(&honest[0], Made).entry,
        &entry_of(&honest[0], Ready).entry,
        &entry_of(&honest[0], Ended).entry,
    );
    assert_eq!(ended.at, start + 10);
    assert_eq!(ended.served_seconds, ended.at - ready.at.max(made.start));
    assert_eq!(
        entry_of(&honest[1], Rated).entry.outcome,
        1,
        "provider rated"
    );
    assert_eq!(entry_of(&honest[2], Rated).entry.stars, 4);
    let epochs: std::collections::BTreeSet<u64> = honest
        .iter()
        .flat_map(|proofs| proofs.entries.iter().map(|e| e.epoch))
        .collect();
    assert!(epochs.len() >= 2, "a 16-entry epoch cannot hold them all");
    // The operator sees it too.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(value("ipsx_anchor_entries_total"), 19, "each change once");
    assert!(value("ipsx_anchored_epoch") >= *epochs.last().expect("epochs"));

    // A stranger learns nothing, not even that the deal exists.
    let stranger = signed_in(&base, &wallet_of(&stranger_key)).await;
    let refused = stranger
        .deal_proofs(deals[1])
        .await
        .expect_err("not theirs");
    assert_eq!(refused.code(), Some(ipsx_sdk::ErrorCode::UnknownDeal));

    // A node that shows the provider another history is caught:
    let shown = honest[1].clone();
    let caught = |report: &DealCheck, why: &str| {
        assert!(report.caught() && !report.proven(), "{why}: {report:?}");
    };
    // … an ended entry with more paid than anchored, on the honest proof;
    let mut more_paid = shown.clone();
    for anchored in &mut more_paid.entries {
        if anchored.entry.kind == Ended {
            anchored.entry.amount.0 *= 2;
        }
    }
    let report = checked(&provider, &more_paid, rpc, deployment.anchor).await;
    assert!(
        report
            .entries
            .iter()
            .any(|e| e.verdict == Verdict::BadProof)
    );
    caught(&report, "an altered entry");
    // … a whole tree of its own over an altered history, every proof consistent with its root;
    let altered: Vec<DealEntry> = shown
        .entries
        .iter()
        .map(|anchored| {
            let mut entry = anchored.entry.clone();
            entry.price = TokenAmount(PRICE / 2);
            DealEntry::from(&entry)
        })
        .collect();
    let tree = MerkleTree::new(altered.iter().map(leaf).collect());
    let mut fabricated = shown.clone();
    for (index, anchored) in fabricated.entries.iter_mut().enumerate() {
        anchored.entry = AnchorEntryView::from(&altered[index]);
        anchored.proof = tree.proof(index).expect("proof").siblings;
        anchored.root = tree.root();
    }
    let report = check(&fabricated, None, rpc, deployment.anchor)
        .await
        .expect("check");
    assert!(
        report
            .entries
            .iter()
            .all(|e| matches!(e.verdict, Verdict::RootMismatch { .. }))
    );
    caught(&report, "a fabricated tree");
    // … honest proofs, but other terms told on `/v1/deals`;
    let mut told = provider
        .deal(shown.deal)
        .await
        .expect("deal")
        .expect("the provider's deal");
    told.price = TokenAmount(PRICE * 3);
    let report = check(&shown, Some(&told), rpc, deployment.anchor)
        .await
        .expect("check");
    assert!(!report.disagreements.is_empty());
    caught(&report, "other terms told");
    // … a deal it never anchored, shown with another deal's proof;
    let mut never = shown.clone();
    never.deal = 999_999;
    for anchored in &mut never.entries {
        anchored.entry.deal = 999_999;
    }
    let report = check(&never, None, rpc, deployment.anchor)
        .await
        .expect("check");
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.verdict == Verdict::BadProof)
    );
    caught(&report, "a deal never anchored");
    // … and one deal's (valid) proofs passed off for another's.
    let mut passed_off = honest[3].clone();
    passed_off.deal = shown.deal;
    let report = check(&passed_off, None, rpc, deployment.anchor)
        .await
        .expect("check");
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.verdict == Verdict::OtherDeal)
    );
    caught(&report, "another deal's proofs");

    // Restarted, the node answers the same proofs and anchors new deals in later epochs.
    let last_epoch = *epochs.last().expect("epochs");
    node.shutdown().await.expect("shutdown");
    let node = common::node_in(dir.path(), |config| {
        configure(config, rpc, &deployment, node_key);
    })
    .await;
    let base = format!("http://{}", node.addr);
    let fleet = signed_in(&base, &fleet_wallet).await;
    let provider = signed_in(&base, &wallet_of(&provider_key)).await;
    for proofs in &honest {
        assert_eq!(
            &fleet.deal_proofs(proofs.deal).await.expect("proofs"),
            proofs,
            "deal {} after the restart",
            proofs.deal
        );
    }
    let again = fleet
        .lease(&LeaseBody::new(1, 60, TokenAmount(PRICE)))
        .await
        .expect("lease after the restart");
    let deal = again.deals[0].deal.deal;
    provider.ready(deal).await.expect("ready");
    let proofs = anchored(&fleet, deal, &[Made, Ready]).await;
    assert!(proofs.entries.iter().all(|e| e.epoch > last_epoch));
    let report = checked(&provider, &proofs, rpc, deployment.anchor).await;
    assert!(report.proven(), "{report:?}");
    node.shutdown().await.expect("shutdown");
}

/// A 10,000-deal run through the node: 10,000 single-IP offers, leased 100 at a time, every
/// deal voided at its ready deadline (made and ended: 20,000 entries over several epochs); the
/// requester then reads each deal's proofs from the API and every entry proves on chain — the
/// root `rootOf` holds, the proof offline and the contract's `verify` view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_deals_each_prove_on_chain() {
    use futures_util::StreamExt;
    const DEALS: usize = 10_000;
    let chain = Chain::start().await;
    let (rpc, node_key, deployment) = (&chain.rpc, &chain.node_key, chain.deployment);
    let (fleet_key, provider_key) = (chain.key(1), chain.key(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::node_in(dir.path(), |config| {
        configure(config, rpc, &deployment, node_key);
        if let Some(anchor) = config.anchor.as_mut() {
            anchor.epochs.max_entries = 4_096;
            anchor.epochs.keep_epochs = 8;
        }
        config.session_rate = ipsx_gateway::rate::Rate {
            per_second: 1e6,
            burst: 1e6,
        };
    })
    .await;
    let base = format!("http://{}", node.addr);

    let provider = signed_in(&base, &wallet_of(&provider_key)).await;
    provider.register_provider(1080).await.expect("register");
    let until = common::now() + 3_600;
    let placed: Vec<_> = futures_util::stream::iter(0..DEALS)
        .map(|i| {
            let ip: IpAddr = format!("127.1.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .expect("ip");
            let offer = OfferBody::new(
                vec![ip],
                "DE",
                ipsx_sdk::IpKind::Datacenter,
                [ipsx_sdk::Protocol::Socks5],
                until,
                TokenAmount(PRICE),
            );
            let provider = &provider;
            async move { provider.place_offer(&offer).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(placed.iter().all(Result::is_ok), "every offer placed");
    let fleet_wallet = wallet_of(&fleet_key);
    let fleet = signed_in(&base, &fleet_wallet).await;
    ipsx_sdk::ensure_channel(&fleet, &fleet_wallet, rpc, TOKEN)
        .await
        .expect("channel");
    let mut deals = Vec::with_capacity(DEALS);
    let mut last_start = 0;
    while deals.len() < DEALS {
        let leased = fleet
            .lease(&LeaseBody::new(100, 60, TokenAmount(PRICE)))
            .await
            .expect("lease");
        assert_eq!(leased.deals.len(), 100, "one deal per single-IP offer");
        for lease in &leased.deals {
            deals.push(lease.deal.deal);
            last_start = last_start.max(lease.deal.start);
        }
    }
    // Nobody reports ready: every deal is voided at its deadline.
    node.advance_engine_clock(last_start + 61)
        .await
        .expect("clock");

    let mut roots = std::collections::HashMap::new();
    let mut entries = 0;
    for deal in &deals {
        let proofs = anchored(
            &fleet,
            *deal,
            &[AnchorEntryKind::Made, AnchorEntryKind::Ended],
        )
        .await;
        for anchored in &proofs.entries {
            if let std::collections::hash_map::Entry::Vacant(vacant) = roots.entry(anchored.epoch) {
                let report = check(&proofs, None, rpc, deployment.anchor)
                    .await
                    .expect("check");
                assert!(report.proven(), "deal {deal}: {report:?}");
                vacant.insert(anchored.root);
            }
            assert_eq!(roots[&anchored.epoch], anchored.root, "one root per epoch");
            let proof = ipsx_anchor::Proof {
                siblings: anchored.proof.clone(),
            };
            assert!(
                proof.verify(anchored.root, leaf(&DealEntry::from(&anchored.entry))),
                "deal {deal}"
            );
            entries += 1;
        }
    }
    assert_eq!(entries, 2 * DEALS);
    // Every root checked above is the one on chain; the contract's own `verify` agrees for a
    // deal in each epoch, and for every 10th deal.
    let sampled: Vec<_> = futures_util::stream::iter(deals.iter().step_by(10))
        .map(|deal| {
            let (fleet, rpc) = (&fleet, rpc);
            async move {
                let proofs = fleet.deal_proofs(*deal).await.expect("proofs");
                check(&proofs, None, rpc, deployment.anchor)
                    .await
                    .expect("check")
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(sampled.iter().all(DealCheck::proven));
    assert!(roots.len() >= 5, "20,000 entries in 4,096-entry epochs");
    node.shutdown().await.expect("shutdown");
}
