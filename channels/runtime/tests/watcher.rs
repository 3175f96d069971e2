//! A sender tries to close its channel admitting less than it signed; the receiver's watcher,
//! running on its own, answers with the latest stored proof inside the challenge period, and
//! the receiver is paid what it was owed. A watcher restarted on the same store resumes after
//! the last block it handled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::ext::AnvilApi;
use common::{CHALLENGE_PERIOD, COMMISSION_BPS, TOKEN, assert_conserved, chain};
use ipsx_channels::PayerChannel;
use ipsx_channels_runtime::store::ProofStore;
use ipsx_channels_runtime::watcher::{WatchEvent, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_unilateral_close_is_answered_by_the_watcher() {
    let chain = chain().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("provider.redb");
    let store = Arc::new(ProofStore::open(&store_path).expect("store"));
    let domain = chain.node.domain().clone();
    let node_key = common::key(&chain.anvil, 0);

    let deposit = 100 * TOKEN;
    let channel = chain
        .node
        .open_channel(chain.provider.address(), deposit)
        .await
        .expect("open");
    // The node pays 5 IPSX over five proofs; the provider stores each one.
    let mut payer = PayerChannel::new(channel, chain.provider.address(), deposit, 0);
    for step in 1..=5u128 {
        let proof = payer.sign(&domain, &node_key, step * TOKEN).expect("sign");
        store.persist_received(&[proof]).expect("persist");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::new(chain.provider.clone(), store.clone(), "provider", 0);
    let running = tokio::spawn(watcher.run(Duration::from_millis(100), stop_rx, events_tx));

    // The node starts closing, admitting only 1 IPSX.
    chain
        .node
        .start_close(channel, TOKEN)
        .await
        .expect("start close");
    let challenged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            if let WatchEvent::Challenged { .. } = event {
                return event;
            }
        }
        panic!("watcher stopped");
    })
    .await
    .expect("the watcher challenges within 30 s");
    assert_eq!(
        challenged,
        WatchEvent::Challenged {
            channel,
            admitted: TOKEN,
            proven: 5 * TOKEN
        }
    );
    let _ = stop_tx.send(true);
    running.await.expect("join").expect("watcher ran cleanly");
    assert_eq!(
        chain
            .node
            .channel(channel)
            .await
            .expect("state")
            .closing_amount,
        5 * TOKEN
    );

    // After the challenge period anyone settles; the provider gets 5 IPSX less commission.
    chain
        .node
        .provider()
        .anvil_increase_time(CHALLENGE_PERIOD + 1)
        .await
        .expect("time");
    chain.node.provider().evm_mine(None).await.expect("mine");
    chain.provider.settle(channel).await.expect("settle");
    let commission = 5 * TOKEN * u128::from(COMMISSION_BPS) / 10_000;
    assert_eq!(
        chain
            .provider
            .balance_of(chain.provider.address())
            .await
            .expect("balance"),
        5 * TOKEN - commission
    );
    assert_conserved(&chain).await;

    // A watcher restarted on the same store resumes after the last handled block: it sees the
    // settlement, not the old close again.
    drop(store);
    let store = Arc::new(ProofStore::open(&store_path).expect("reopen"));
    let resumed = Watcher::new(chain.provider.clone(), store, "provider", 0);
    let seen = resumed.poll().await.expect("poll");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, WatchEvent::CloseStarted { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(
            |e| matches!(e, WatchEvent::Settled { total_paid, .. } if *total_paid == 5 * TOKEN)
        ),
        "{seen:?}"
    );
    assert!(resumed.poll().await.expect("poll").is_empty());
}
