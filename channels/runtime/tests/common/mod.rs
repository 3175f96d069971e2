//! A local exchange's chain side for the tests: anvil with the real contracts, a node (also the
//! treasury), a requester and a provider with tokens in their Centralizer balances.

#![allow(dead_code, unreachable_pub)]

use alloy::node_bindings::AnvilInstance;
use ipsx_channels::SigningKey;
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, Deployment, deploy_local, spawn_anvil};

pub const TOKEN: u128 = 1_000_000_000_000_000_000;
pub const COMMISSION_BPS: u16 = 250;
pub const CHALLENGE_PERIOD: u64 = 3_600;

pub struct Chain {
    pub anvil: AnvilInstance,
    pub deployment: Deployment,
    pub node: ChainClient,
    pub requester: ChainClient,
    pub provider: ChainClient,
}

pub fn key(anvil: &AnvilInstance, index: usize) -> SigningKey {
    let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
    SigningKey::from_bytes(&bytes).expect("anvil key")
}

/// anvil, the contracts, and three funded parties: the node deposits 10,000 IPSX, the
/// requester 5,000, the provider nothing.
pub async fn chain() -> Chain {
    let anvil = spawn_anvil().expect("anvil (run `npm ci` in contracts/)");
    let url = anvil.endpoint();
    let node_key = key(&anvil, 0);
    let deployment = deploy_local(
        &url,
        &node_key,
        DeploySettings {
            commission_bps: COMMISSION_BPS,
            challenge_period: CHALLENGE_PERIOD,
            treasury: node_key.address(),
        },
    )
    .await
    .expect("deploy");
    let node = ChainClient::connect(&url, deployment.centralizer, node_key)
        .await
        .expect("node client");
    let requester = ChainClient::connect(&url, deployment.centralizer, key(&anvil, 1))
        .await
        .expect("requester client");
    let provider = ChainClient::connect(&url, deployment.centralizer, key(&anvil, 2))
        .await
        .expect("provider client");
    node.transfer_tokens(requester.address(), 5_000 * TOKEN)
        .await
        .expect("fund requester");
    requester
        .deposit_with_permit(5_000 * TOKEN)
        .await
        .expect("requester deposit");
    node.deposit_with_permit(10_000 * TOKEN)
        .await
        .expect("node deposit");
    Chain {
        anvil,
        deployment,
        node,
        requester,
        provider,
    }
}

/// Tokens the Centralizer holds equal what it owes its users: their free balances and what their
/// unsettled channels would return to them.
pub async fn assert_conserved(chain: &Chain) {
    let held = chain
        .node
        .token_balance(chain.deployment.centralizer)
        .await
        .expect("held");
    let mut owed = 0;
    for who in [
        chain.node.address(),
        chain.requester.address(),
        chain.provider.address(),
    ] {
        owed += chain.node.balance_of(who).await.expect("balance");
        owed += chain.node.held_in_channels(who).await.expect("held");
    }
    assert_eq!(
        held, owed,
        "tokens held by the Centralizer = balances + what channels hold"
    );
}
