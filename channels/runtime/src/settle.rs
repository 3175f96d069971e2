//! Turning received proofs into tokens: applies the checkpoint policy to every channel in the
//! store and claims the ones that are due in one batch transaction.

use std::sync::Arc;

use ipsx_channels::{CheckpointPolicy, SignedProof, Unclaimed};

use crate::chain::{ChainClient, ChainError, Checkpointed};
use crate::store::{ProofStore, StoreError};

/// Channel status "open" and "closing" in the contract's enum.
const OPEN: u8 = 1;
const CLOSING: u8 = 2;

/// A settlement round that failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The chain.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checkpoints the receiver's channels when the policy says so.
#[derive(Debug)]
pub struct Settler {
    client: ChainClient,
    store: Arc<ProofStore>,
    policy: CheckpointPolicy,
}

impl Settler {
    /// A settler for the channels `client`'s account receives on.
    pub fn new(client: ChainClient, store: Arc<ProofStore>, policy: CheckpointPolicy) -> Self {
        Self {
            client,
            store,
            policy,
        }
    }

    /// Checkpoints every due channel at `now` (unix seconds) in one transaction; `force`
    /// claims everything unclaimed regardless of the policy (shutdown, tests).
    pub async fn run_once(&self, now: u64, force: bool) -> Result<Vec<Checkpointed>, SettleError> {
        let mut due: Vec<SignedProof> = Vec::new();
        for proof in self.store.all_received()? {
            let state = self.client.channel(proof.channel).await?;
            if state.receiver != self.client.address()
                || !(state.status == OPEN || state.status == CLOSING)
                || proof.amount <= state.claimed
            {
                continue;
            }
            let key = format!("checkpointed:{}", proof.channel.0);
            let since = match self.store.cursor(&key)? {
                Some(at) => at,
                None => {
                    // First sight of the channel: its clock starts now.
                    self.store.set_cursor(&key, now)?;
                    now
                }
            };
            let unclaimed = Unclaimed {
                amount: proof.amount - state.claimed,
                since,
            };
            if force || self.policy.due(unclaimed, now) {
                due.push(proof);
            }
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let paid = self.client.batch_checkpoint(&due).await?;
        for proof in &due {
            self.store
                .set_cursor(&format!("checkpointed:{}", proof.channel.0), now)?;
        }
        Ok(paid)
    }
}
