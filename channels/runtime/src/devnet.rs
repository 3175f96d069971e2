//! A local chain for tests, demos and the one-command exchange: anvil from the pinned npm
//! package, the real contracts deployed from their committed bytecode.

use std::path::PathBuf;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use ipsx_channels::SigningKey;

use crate::chain::{ChainError, confirm, wallet_provider};
use crate::contracts::{Centralizer, DealAnchor, FundingSale};

/// Where `npm ci` in `contracts/` puts anvil; `IPSX_ANVIL` overrides.
pub fn anvil_path() -> PathBuf {
    if let Some(path) = std::env::var_os("IPSX_ANVIL") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// A running anvil on a free loopback port; stops when dropped.
pub fn spawn_anvil() -> Result<AnvilInstance, ChainError> {
    let path = anvil_path();
    if !path.exists() {
        return Err(ChainError::Config(format!(
            "anvil not found at {} (run `npm ci` in contracts/, or set IPSX_ANVIL)",
            path.display()
        )));
    }
    Anvil::at(path)
        .arg("--host")
        .arg("127.0.0.1")
        .try_spawn()
        .map_err(|e| ChainError::Config(format!("anvil: {e}")))
}

/// What was deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// The IPSX token.
    pub token: Address,
    /// The funding sale (finalized: transfers enabled).
    pub sale: Address,
    /// The Centralizer.
    pub centralizer: Address,
    /// Commission receiver.
    pub treasury: Address,
    /// The deal anchor (the treasury anchors).
    pub anchor: Address,
}

/// Settings of a local deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploySettings {
    /// Commission in basis points.
    pub commission_bps: u16,
    /// Challenge period in seconds.
    pub challenge_period: u64,
    /// Commission receiver (the node).
    pub treasury: Address,
}

/// Deploys like `contracts/script/Deploy.s.sol` with a sale that has already ended: the
/// deployer holds every allocation and tokens can move at once.
pub async fn deploy_local(
    rpc_url: &str,
    deployer: &SigningKey,
    settings: DeploySettings,
) -> Result<Deployment, ChainError> {
    let provider = wallet_provider(rpc_url, deployer)?;
    let me = deployer.address();
    let now = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await?
        .map_or(2, |b| b.header.timestamp);
    let sale = FundingSale::deploy(
        provider.clone(),
        settings.treasury,
        me,
        me,
        me,
        U256::from(now.saturating_sub(2)),
        U256::from(now.saturating_sub(1)),
        U256::from(1_000u128 * 10u128.pow(18)),
    )
    .await?;
    confirm(sale.finalize()).await?;
    let token = sale.token().call().await?;
    let centralizer = Centralizer::deploy(
        provider.clone(),
        token,
        settings.treasury,
        settings.commission_bps,
        settings.challenge_period,
    )
    .await?;
    let anchor = DealAnchor::deploy(provider.clone(), settings.treasury).await?;
    Ok(Deployment {
        token,
        sale: *sale.address(),
        centralizer: *centralizer.address(),
        treasury: settings.treasury,
        anchor: *anchor.address(),
    })
}
