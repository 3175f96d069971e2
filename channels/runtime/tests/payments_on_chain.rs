//! Payments end to end on a real chain (anvil, the real contracts): a requester pays the node by
//! the second for three leases, the node pays the provider, both persist before counting, the
//! node restarts in the middle, and checkpoints pay the provider exactly the metered usage less
//! the contract's commission, to the wei.

mod common;

use std::sync::Arc;

use alloy::primitives::U256;
use common::{COMMISSION_BPS, TOKEN, assert_conserved, chain};
use ipsx_channels::{
    ChannelDomain, ChannelId, CheckpointPolicy, Hub, HubConfig, HubLease, LeaseTerms, MeteredPayer,
    PayerChannel, ProviderLedger, ReceiverChannel, SignedProof, SigningKey,
};
use ipsx_channels_runtime::chain::ChainError;
use ipsx_channels_runtime::contracts::Centralizer;
use ipsx_channels_runtime::settle::Settler;
use ipsx_channels_runtime::store::ProofStore;

const T0: u64 = 1_000_000;
const REQUESTER_DEPOSIT: u128 = 1_000 * TOKEN;
const PROVIDER_DEPOSIT: u128 = 2_000 * TOKEN;

fn leases() -> Vec<LeaseTerms> {
    // 10 IPs at 0.001 IPSX per IP-second for 40 s; 1 IP at 0.0037 for 25 s from T0 + 5; 3 IPs
    // at 0.0005 for 60 s, cut short by a cancel at T0 + 33.
    vec![
        LeaseTerms {
            id: 1,
            rate: 10 * TOKEN / 1_000,
            start: T0,
            end: T0 + 40,
        },
        LeaseTerms {
            id: 2,
            rate: 37 * TOKEN / 10_000,
            start: T0 + 5,
            end: T0 + 30,
        },
        LeaseTerms {
            id: 3,
            rate: 15 * TOKEN / 10_000,
            start: T0 + 2,
            end: T0 + 62,
        },
    ]
}

fn hub_from_store(
    domain: &ChannelDomain,
    node: &SigningKey,
    store: &ProofStore,
    requester: &SigningKey,
    provider: alloy::primitives::Address,
    inbound: ChannelId,
    outbound: ChannelId,
) -> Hub {
    // What a restarted node rebuilds: channels from the chain, the latest proof received and the
    // highest amount signed from the store, leases from the engine's deal book.
    let mut hub = Hub::new(domain.clone(), node.clone(), HubConfig::default(), T0);
    let latest = store.latest_received(inbound).expect("store");
    hub.add_requester(ReceiverChannel::new(
        inbound,
        requester.address(),
        REQUESTER_DEPOSIT,
        latest,
    ));
    let signed = store.highest_signed(outbound).expect("store");
    hub.add_provider(PayerChannel::new(
        outbound,
        provider,
        PROVIDER_DEPOSIT,
        signed,
    ));
    for terms in leases() {
        hub.add_lease(HubLease {
            terms,
            requester: requester.address(),
            provider,
        })
        .expect("lease");
    }
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_paid_by_the_second_and_settled_on_chain_to_the_wei() {
    let chain = chain().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node_store = Arc::new(ProofStore::open(&dir.path().join("node.redb")).expect("store"));
    let provider_store =
        Arc::new(ProofStore::open(&dir.path().join("provider.redb")).expect("store"));
    let requester_store = ProofStore::open(&dir.path().join("requester.redb")).expect("store");

    let domain = chain.node.domain().clone();
    let node_key = common::key(&chain.anvil, 0);
    let requester_key = common::key(&chain.anvil, 1);
    let provider = chain.provider.address();

    // Two channels, no more: requester -> node, node -> provider.
    let inbound = chain
        .requester
        .open_channel(chain.node.address(), REQUESTER_DEPOSIT)
        .await
        .expect("open inbound");
    let outbound = chain
        .node
        .open_channel(provider, PROVIDER_DEPOSIT)
        .await
        .expect("open outbound");

    let mut payer = MeteredPayer::new(PayerChannel::new(
        inbound,
        chain.node.address(),
        REQUESTER_DEPOSIT,
        0,
    ));
    let mut ledger = ProviderLedger::new(ReceiverChannel::new(
        outbound,
        node_key.address(),
        PROVIDER_DEPOSIT,
        None,
    ));
    for terms in leases() {
        payer.meter.add(terms).expect("payer lease");
        ledger.add_lease(terms).expect("provider lease");
    }
    let mut hub = hub_from_store(
        &domain,
        &node_key,
        &node_store,
        &requester_key,
        provider,
        inbound,
        outbound,
    );
    let settler = Settler::new(
        chain.provider.clone(),
        provider_store.clone(),
        CheckpointPolicy::default(),
    );
    let mut checkpoints = Vec::new();

    for now in T0..=T0 + 70 {
        if now == T0 + 33 {
            // The requester cancels lease 3: it stops accruing on both sides.
            payer.meter.end_at(3, now).expect("cancel");
            hub.end_lease(3, now).expect("cancel");
        }
        if now == T0 + 20 {
            // The node is killed and comes back from its store.
            hub = hub_from_store(
                &domain,
                &node_key,
                &node_store,
                &requester_key,
                provider,
                inbound,
                outbound,
            );
        }
        // Requester: one proof for all its leases, persisted as signed before it leaves.
        let tick = payer.tick(&domain, &requester_key, now, 60);
        assert_eq!(tick.top_up, None, "deposit covers the next minute");
        if let Some(proof) = tick.proof {
            requester_store
                .persist_signed(&[(proof.channel, proof.amount)])
                .expect("persist");
            let wire = proof.encode();
            let received = SignedProof::decode(&wire).expect("decode");
            hub.check(requester_key.address(), &received)
                .expect("node accepts");
            node_store.persist_received(&[received]).expect("persist");
            hub.accept(requester_key.address(), received);
        }
        // Node: one proof per provider.
        let out = hub.tick(now);
        assert!(out.cuts.is_empty(), "a paying requester is never cut");
        let signed: Vec<_> = out
            .payments
            .iter()
            .map(|p| (p.proof.channel, p.proof.amount))
            .collect();
        node_store.persist_signed(&signed).expect("persist");
        for payment in out.payments {
            ledger
                .check(&domain, &payment.proof, &payment.paid_through)
                .expect("provider accepts");
            provider_store
                .persist_received(&[payment.proof])
                .expect("persist");
            ledger.accept(payment.proof, &payment.paid_through);
        }
        let books = hub.books();
        assert!(books.balance(), "books balance at {now}: {books:?}");
        assert_eq!(books.unallocated, 0);
        for id in [1, 2] {
            assert!(
                !ledger.should_cut(id, now.min(T0 + 29), 3),
                "lease {id} is paid at {now}"
            );
        }
        if now == T0 + 10 {
            // Policy: well under 20x its gas and not yet 6 h old — not worth a transaction.
            assert!(
                settler
                    .run_once(now, false)
                    .await
                    .expect("policy")
                    .is_empty()
            );
        }
        if now == T0 + 25 {
            checkpoints.extend(settler.run_once(now, true).await.expect("checkpoint"));
        }
    }

    // Metered usage: 10 IPs x 40 s, 1 IP x 25 s, 3 IPs x 31 s.
    let usage = 40 * (10 * TOKEN / 1_000) + 25 * (37 * TOKEN / 10_000) + 31 * (15 * TOKEN / 10_000);
    assert_eq!(
        payer.channel.signed(),
        usage,
        "the requester paid its usage"
    );
    let books = hub.books();
    assert_eq!(books.received, usage);
    assert_eq!(books.owed_to_providers, usage);
    assert_eq!(books.signed_to_providers, usage);
    assert_eq!(ledger.covered(), usage);

    // Provider and node checkpoint; the provider's payout is usage less the commission on the
    // cumulative amount (each checkpoint takes the commission on all claimed, less what the
    // ones before took).
    let provider_before = chain.node.balance_of(provider).await.expect("balance");
    assert_eq!(provider_before, checkpoints[0].paid_to_receiver);
    // Six hours after the last checkpoint the policy claims what is left, however small.
    assert!(
        settler
            .run_once(T0 + 71, false)
            .await
            .expect("policy")
            .is_empty()
    );
    checkpoints.extend(
        settler
            .run_once(T0 + 25 + CheckpointPolicy::default().max_interval, false)
            .await
            .expect("checkpoint"),
    );
    assert_eq!(checkpoints.len(), 2);
    let commission: u128 = checkpoints.iter().map(|c| c.commission).sum();
    let on = |amount: u128| amount * u128::from(COMMISSION_BPS) / 10_000;
    let mut claimed = 0u128;
    for checkpoint in &checkpoints {
        assert_eq!(
            checkpoint.commission,
            on(checkpoint.amount) - on(claimed),
            "commission on the cumulative amount"
        );
        claimed = checkpoint.amount;
    }
    assert_eq!(commission, on(usage));
    let provider_after = chain.node.balance_of(provider).await.expect("balance");
    assert_eq!(
        provider_after,
        usage - commission,
        "provider payout = usage - commission"
    );

    let node_before = chain
        .node
        .balance_of(chain.node.address())
        .await
        .expect("balance");
    let latest = node_store
        .latest_received(inbound)
        .expect("store")
        .expect("proof");
    let inbound_paid = chain
        .node
        .checkpoint(&latest)
        .await
        .expect("node checkpoint");
    assert_eq!(inbound_paid.amount, usage);
    let node_after = chain
        .node
        .balance_of(chain.node.address())
        .await
        .expect("balance");
    assert_eq!(
        node_after - node_before,
        usage,
        "the node is the treasury: the commission on its own claim returns to it"
    );

    // Both channels close cooperatively at what was paid; deposits' rest goes back.
    let requester_free = chain
        .requester
        .balance_of(chain.requester.address())
        .await
        .expect("b");
    let sender_sig = chain.requester.sign_cooperative_close(inbound, usage);
    let receiver_sig = chain.node.sign_cooperative_close(inbound, usage);
    chain
        .node
        .cooperative_close(inbound, usage, &sender_sig, &receiver_sig)
        .await
        .expect("close inbound");
    assert_eq!(
        chain
            .requester
            .balance_of(chain.requester.address())
            .await
            .expect("b"),
        requester_free + REQUESTER_DEPOSIT - usage
    );
    let sender_sig = chain.node.sign_cooperative_close(outbound, usage);
    let receiver_sig = chain.provider.sign_cooperative_close(outbound, usage);
    chain
        .provider
        .cooperative_close(outbound, usage, &sender_sig, &receiver_sig)
        .await
        .expect("close outbound");
    assert_eq!(chain.node.channel(outbound).await.expect("state").status, 3);
    assert_eq!(
        chain
            .node
            .held_in_channels(chain.node.address())
            .await
            .expect("r"),
        0
    );
    assert_conserved(&chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_agrees_on_digests_and_refuses_what_the_receiver_refuses() {
    let chain = chain().await;
    let domain = chain.node.domain().clone();
    let centralizer = Centralizer::new(chain.deployment.centralizer, chain.node.provider().clone());
    assert_eq!(
        centralizer.domainSeparator().call().await.expect("call"),
        domain.separator()
    );
    for (id, amount) in [(1u64, 1u128), (42, 10u128.pow(18)), (u64::MAX, u128::MAX)] {
        let ours = domain.balance_proof_digest(ChannelId(id), amount);
        let theirs = centralizer
            .hashBalanceProof(Centralizer::BalanceProof {
                channelId: U256::from(id),
                amount: U256::from(amount),
            })
            .call()
            .await
            .expect("call");
        assert_eq!(ours, theirs);
        let close = centralizer
            .cooperativeCloseDigest(U256::from(id), U256::from(amount))
            .call()
            .await
            .expect("call");
        assert_eq!(
            domain.cooperative_close_digest(ChannelId(id), amount),
            close
        );
    }

    // anvil's own eth_signTypedData_v4 for its first account gives our bytes.
    let node_key = common::key(&chain.anvil, 0);
    let typed = serde_json::json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}
            ],
            "BalanceProof": [{"name": "channelId", "type": "uint256"}, {"name": "amount", "type": "uint256"}]
        },
        "primaryType": "BalanceProof",
        "domain": {
            "name": "IPSX Centralizer", "version": "1", "chainId": 31337,
            "verifyingContract": chain.deployment.centralizer.to_string()
        },
        "message": {"channelId": "7", "amount": "123456789"}
    });
    let from_anvil: alloy::primitives::Bytes = alloy::providers::Provider::raw_request(
        chain.node.provider(),
        "eth_signTypedData_v4".into(),
        (node_key.address(), typed),
    )
    .await
    .expect("anvil signs");
    let ours = domain.sign_balance_proof(&node_key, ChannelId(7), 123_456_789);
    assert_eq!(from_anvil.as_ref(), ours.signature.as_bytes().as_slice());

    // On chain: a proof the receiver would refuse is refused by the contract too, typed.
    let requester_key = common::key(&chain.anvil, 1);
    let channel = chain
        .requester
        .open_channel(chain.node.address(), 100)
        .await
        .expect("open");
    let forged = domain.sign_balance_proof(&node_key, channel, 50);
    let refused = chain.node.checkpoint(&forged).await.expect_err("forged");
    assert!(
        matches!(&refused, ChainError::Reverted(r) if r.contains("BadSignature")),
        "{refused}"
    );
    let too_much = domain.sign_balance_proof(&requester_key, channel, 101);
    let refused = chain
        .node
        .checkpoint(&too_much)
        .await
        .expect_err("above deposit");
    assert!(
        matches!(&refused, ChainError::Reverted(r) if r.contains("AmountAboveDeposit")),
        "{refused}"
    );
    let good = domain.sign_balance_proof(&requester_key, channel, 60);
    chain.node.checkpoint(&good).await.expect("good proof");
    let lower = domain.sign_balance_proof(&requester_key, channel, 40);
    let refused = chain.node.checkpoint(&lower).await.expect_err("lower");
    assert!(
        matches!(&refused, ChainError::Reverted(r) if r.contains("AmountNotIncreasing")),
        "{refused}"
    );
    let other_chain = ChannelDomain::new(1, chain.deployment.centralizer);
    let foreign = other_chain.sign_balance_proof(&requester_key, channel, 80);
    let refused = chain
        .node
        .checkpoint(&foreign)
        .await
        .expect_err("other chain");
    assert!(
        matches!(&refused, ChainError::Reverted(r) if r.contains("BadSignature")),
        "{refused}"
    );
    assert_eq!(
        chain.node.channel(channel).await.expect("state").claimed,
        60
    );

    // Top up, then the receiver closes at once with a newer proof: paid to it, the rest back.
    chain.requester.top_up(channel, 50).await.expect("top up");
    assert_eq!(
        chain.node.channel(channel).await.expect("state").deposit,
        150
    );
    let free_before = chain
        .requester
        .balance_of(chain.requester.address())
        .await
        .expect("b");
    let last = domain.sign_balance_proof(&requester_key, channel, 120);
    let refused = chain
        .requester
        .receiver_close(&last)
        .await
        .expect_err("only the receiver");
    assert!(
        matches!(&refused, ChainError::Reverted(r) if r.contains("NotReceiver")),
        "{refused}"
    );
    chain
        .node
        .receiver_close(&last)
        .await
        .expect("receiver close");
    let state = chain.node.channel(channel).await.expect("state");
    assert_eq!((state.claimed, state.status), (120, 3));
    assert_eq!(
        chain
            .requester
            .balance_of(chain.requester.address())
            .await
            .expect("b"),
        free_before + 30
    );
    assert_conserved(&chain).await;
}
