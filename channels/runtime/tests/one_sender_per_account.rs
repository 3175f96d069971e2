//! Every transaction of an account goes through one sender: many calls at once from the same
//! wallet all land (no two take the same nonce), and a transaction stuck under a rising base
//! fee is replaced with higher fees at the same nonce instead of waiting for ever.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use alloy::eips::BlockNumberOrTag;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use common::{TOKEN, chain};
use ipsx_channels_runtime::chain::{ChainClient, ChainError};
use ipsx_channels_runtime::sender::SenderConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_at_once_from_one_wallet_all_land() {
    let chain = chain().await;
    let node = chain.node.clone();
    let before = node.balance_of(node.address()).await.expect("balance");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let node = node.clone();
        calls.spawn(async move { node.withdraw(TOKEN).await });
    }
    let mut failed = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Err(error) = done.expect("a task") {
            failed.push(error.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 24 failed: {failed:?}",
        failed.len()
    );
    assert_eq!(
        node.balance_of(node.address()).await.expect("balance"),
        before - 24 * TOKEN,
        "every withdrawal landed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_contract_refuses_takes_no_nonce() {
    let chain = chain().await;
    let free = chain
        .requester
        .balance_of(chain.requester.address())
        .await
        .expect("balance");
    let refused = chain.requester.withdraw(free + 1).await;
    assert!(
        matches!(&refused, Err(ChainError::Reverted(why)) if why.contains("InsufficientBalance")),
        "{refused:?}"
    );
    // Had the refusal taken a nonce, this would wait behind a gap for ever.
    chain
        .requester
        .withdraw(TOKEN)
        .await
        .expect("the next call goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_stuck_under_a_rising_base_fee_is_replaced_at_the_same_nonce() {
    let chain = chain().await;
    let url = chain.anvil.endpoint();
    let node = ChainClient::connect_with(
        &url,
        chain.deployment.centralizer,
        common::key(&chain.anvil, 0),
        SenderConfig {
            stuck_after: Duration::from_secs(2),
            poll_every: Duration::from_millis(100),
            ..SenderConfig::default()
        },
    )
    .await
    .expect("client");
    let before = node.balance_of(node.address()).await.expect("balance");
    let rpc = node.provider().clone();
    let nonce = rpc
        .get_transaction_count(node.address())
        .await
        .expect("nonce");
    let base = latest_base_fee(&rpc).await;
    // Blocks only when asked: the withdrawal waits in the pool, priced on today's base fee.
    rpc.anvil_set_auto_mine(false).await.expect("automine off");
    let sent = {
        let node = node.clone();
        tokio::spawn(async move { node.withdraw(TOKEN).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while rpc
        .get_transaction_count(node.address())
        .pending()
        .await
        .expect("pending nonce")
        == nonce
    {
        assert!(
            Instant::now() < deadline,
            "the withdrawal never reached the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The base fee jumps a thousandfold: the waiting version cannot be included for dozens of
    // blocks (it falls 12.5 % a block). Blocks come every second from now on.
    rpc.anvil_set_next_block_base_fee_per_gas(u128::from(base) * 1_000)
        .await
        .expect("base fee");
    rpc.anvil_mine(Some(1), None)
        .await
        .expect("a block without it");
    rpc.anvil_set_interval_mining(1)
        .await
        .expect("interval mining");

    sent.await
        .expect("the task")
        .expect("mined after a replacement");

    assert_eq!(
        node.balance_of(node.address()).await.expect("balance"),
        before - TOKEN,
        "one withdrawal, whichever version was mined"
    );
    assert_eq!(
        rpc.get_transaction_count(node.address())
            .await
            .expect("nonce"),
        nonce + 1,
        "one nonce used"
    );
    // Mined while the base fee was still high: the replacement, not the first version.
    let mined_at = latest_base_fee(&rpc).await;
    assert!(
        u128::from(mined_at) > u128::from(base) * 10,
        "mined while the base fee was still high ({mined_at} vs {base} before)"
    );
}

async fn latest_base_fee(rpc: &alloy::providers::DynProvider) -> u64 {
    rpc.get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .expect("block")
        .expect("latest")
        .header
        .base_fee_per_gas
        .expect("an EIP-1559 chain")
}
