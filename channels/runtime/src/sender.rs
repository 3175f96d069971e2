//! One sender per account: every transaction a wallet sends goes through its own task, which
//! hands out nonces, prices them (EIP-1559) and replaces a transaction that is stuck.
//!
//! Asking the node for the next nonce on every send is fine for one caller, but a node that
//! settles, opens channels and anchors at once sends concurrently, and two sends that ask at
//! the same moment get the same nonce: one of them fails ("nonce too low"). Here the task
//! sends one transaction at a time and counts nonces itself, asking the node only at start and
//! after a send the node refused for its nonce. A call is estimated (and a revert refused)
//! before it reaches the task, so a refused call never takes a nonce.
//!
//! Fees are the node's EIP-1559 estimate at the time of sending. A transaction not mined within
//! [`SenderConfig::stuck_after`] (the base fee rose past its cap, or the mempool is full) is
//! sent again at the same nonce with fees raised by at least [`SenderConfig::bump_percent`]
//! (nodes require 10 % to replace), or to the current estimate if that is higher; whichever of
//! the versions is mined answers the caller.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::chain::ChainError;

/// How the sender prices and replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// A transaction not mined after this long is replaced.
    pub stuck_after: Duration,
    /// How often receipts are looked for while waiting.
    pub poll_every: Duration,
    /// The least a replacement raises both fee caps by, in percent.
    pub bump_percent: u128,
    /// Replacements before the sender gives up on a transaction (its nonce stays taken: the
    /// last version may still be mined, and later transactions queue behind it).
    pub max_replacements: u32,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            stuck_after: Duration::from_secs(60),
            poll_every: Duration::from_millis(500),
            bump_percent: 20,
            max_replacements: 10,
        }
    }
}

struct Job {
    tx: TransactionRequest,
    reply: oneshot::Sender<Result<TransactionReceipt, ChainError>>,
}

/// The handle of an account's sender task (cheap to clone; the task ends with the last one).
#[derive(Debug, Clone)]
pub struct Sender {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Sender {
    /// Starts the task for `from`, sending through `provider` (which signs as `from` and fills
    /// nothing else).
    pub fn spawn(provider: DynProvider, from: Address, config: SenderConfig) -> Sender {
        let (jobs, inbox) = mpsc::unbounded_channel();
        tokio::spawn(run(provider, from, config, inbox));
        Sender { jobs }
    }

    /// Sends `tx` (its gas limit set by the caller) and waits for it, or a replacement, to be
    /// mined.
    pub async fn send(&self, tx: TransactionRequest) -> Result<TransactionReceipt, ChainError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { tx, reply })
            .map_err(|_| ChainError::Rpc("the account's sender has stopped".into()))?;
        answer
            .await
            .map_err(|_| ChainError::Rpc("the account's sender has stopped".into()))?
    }
}

async fn run(
    provider: DynProvider,
    from: Address,
    config: SenderConfig,
    mut inbox: mpsc::UnboundedReceiver<Job>,
) {
    let mut next_nonce = None;
    while let Some(job) = inbox.recv().await {
        let outcome = send_one(&provider, from, &config, &mut next_nonce, job.tx).await;
        let _ = job.reply.send(outcome);
    }
}

/// Whether the node refused a send for its nonce (another sender used it, or it was mined).
fn nonce_refused(error: &ChainError) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("nonce too low")
        || text.contains("already known")
        || text.contains("already imported")
}

/// Whether the node refused a send for a fee cap below the base fee (it rose since the
/// estimate).
fn below_base_fee(error: &ChainError) -> bool {
    error
        .to_string()
        .to_lowercase()
        .contains("less than block base fee")
}

/// `value` raised by `percent`, and by one at least.
fn bumped(value: u128, percent: u128) -> u128 {
    value
        .saturating_mul(100 + percent)
        .div_ceil(100)
        .max(value.saturating_add(1))
}

async fn send_one(
    provider: &DynProvider,
    from: Address,
    config: &SenderConfig,
    next_nonce: &mut Option<u64>,
    tx: TransactionRequest,
) -> Result<TransactionReceipt, ChainError> {
    let fees = provider.estimate_eip1559_fees().await?;
    let (mut max_fee, mut tip) = (fees.max_fee_per_gas, fees.max_priority_fee_per_gas);
    // The first send, resynchronising the nonce once if the node says it is used, and
    // repricing (as a replacement would) if the base fee moved past the estimate meanwhile.
    let mut resynced = false;
    let mut repriced = 0;
    let (nonce, first) = loop {
        let nonce = match *next_nonce {
            Some(nonce) => nonce,
            None => provider.get_transaction_count(from).pending().await?,
        };
        let priced = tx
            .clone()
            .with_from(from)
            .with_nonce(nonce)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        match provider.send_transaction(priced).await {
            Ok(pending) => break (nonce, *pending.tx_hash()),
            Err(error) => {
                let error = ChainError::from(error);
                if below_base_fee(&error) && repriced < config.max_replacements {
                    repriced += 1;
                    (max_fee, tip) = raised(provider, (max_fee, tip), config).await?;
                    continue;
                }
                *next_nonce = None;
                if resynced || !nonce_refused(&error) {
                    return Err(error);
                }
                resynced = true;
            }
        }
    };
    *next_nonce = Some(nonce + 1);
    let mut sent: Vec<B256> = vec![first];
    let mut replacements = 0;
    loop {
        if let Some(receipt) = wait_for_any(provider, &sent, config).await? {
            return Ok(receipt);
        }
        if replacements == config.max_replacements {
            return Err(ChainError::Rpc(format!(
                "transaction with nonce {nonce} not mined after {replacements} replacements"
            )));
        }
        replacements += 1;
        (max_fee, tip) = raised(provider, (max_fee, tip), config).await?;
        let replacement = tx
            .clone()
            .with_from(from)
            .with_nonce(nonce)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        tracing::info!(%from, nonce, max_fee, tip, "replacing a stuck transaction");
        match provider
            .send_transaction(replacement)
            .await
            .map_err(ChainError::from)
        {
            Ok(pending) => sent.push(*pending.tx_hash()),
            // Mined meanwhile (or the node kept the old one): the receipt will show which.
            Err(error) if nonce_refused(&error) => {}
            Err(error) => tracing::warn!(%from, nonce, %error, "a replacement was refused"),
        }
    }
}

/// Fee caps `(max fee, tip)` raised for a replacement: by `bump_percent` at least, and to the
/// node's current estimate if that is higher.
async fn raised(
    provider: &DynProvider,
    (max_fee, tip): (u128, u128),
    config: &SenderConfig,
) -> Result<(u128, u128), ChainError> {
    let now = provider.estimate_eip1559_fees().await?;
    let tip = bumped(tip, config.bump_percent).max(now.max_priority_fee_per_gas);
    let max_fee = bumped(max_fee, config.bump_percent)
        .max(now.max_fee_per_gas)
        .max(tip);
    Ok((max_fee, tip))
}

/// Waits up to `stuck_after` for a receipt of any of `sent` (versions of one transaction).
async fn wait_for_any(
    provider: &DynProvider,
    sent: &[B256],
    config: &SenderConfig,
) -> Result<Option<TransactionReceipt>, ChainError> {
    let deadline = Instant::now() + config.stuck_after;
    loop {
        for hash in sent {
            if let Some(receipt) = provider.get_transaction_receipt(*hash).await? {
                return Ok(Some(receipt));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(config.poll_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_raises_by_the_percentage_and_by_one_at_least() {
        assert_eq!(bumped(100, 20), 120);
        assert_eq!(bumped(1, 20), 2);
        assert_eq!(bumped(0, 20), 1);
        assert_eq!(bumped(u128::MAX, 20), u128::MAX);
    }

    #[test]
    fn refusals_for_the_nonce_are_told_apart() {
        for said in [
            "nonce too low",
            "already known",
            "transaction already imported",
        ] {
            assert!(nonce_refused(&ChainError::Rpc(format!(
                "error code -32003: {said}"
            ))));
        }
        assert!(!nonce_refused(&ChainError::Rpc(
            "insufficient funds".into()
        )));
        assert!(below_base_fee(&ChainError::Rpc(
            "error code -32003: max fee per gas less than block base fee".into()
        )));
    }
}
