//! The watcher: follows the Centralizer's events from the last processed block and answers a
//! unilateral close that admits less than the latest proof we hold.
//!
//! The cursor (last processed block) lives in the proof store and only moves once every event
//! up to it has been handled, so a restart resumes where it stopped and a failed challenge is
//! retried on the next poll. Handling is idempotent: before challenging, the watcher reads the
//! channel and does nothing if it is no longer closing or already owes as much.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEventInterface;
use ipsx_channels::ChannelId;

use crate::chain::{ChainClient, ChainError, to_u128};
use crate::contracts::Centralizer::CentralizerEvents;
use crate::store::{ProofStore, StoreError};

/// Blocks asked for in one `eth_getLogs`.
const LOG_RANGE: u64 = 5_000;
/// Channel status "closing" in the contract's enum.
const CLOSING: u8 = 2;

/// A watcher that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The chain.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the watcher saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A channel opened.
    Opened {
        /// The channel.
        channel: ChannelId,
        /// Payer.
        sender: Address,
        /// Payee.
        receiver: Address,
        /// Its deposit.
        deposit: u128,
    },
    /// A channel's deposit grew.
    ToppedUp {
        /// The channel.
        channel: ChannelId,
        /// The new deposit.
        deposit: u128,
    },
    /// A checkpoint paid out.
    Checkpointed {
        /// The channel.
        channel: ChannelId,
        /// Claimed in all.
        amount: u128,
    },
    /// A unilateral close started.
    CloseStarted {
        /// The channel.
        channel: ChannelId,
        /// What the sender admits.
        amount: u128,
        /// End of the challenge period.
        deadline: u64,
    },
    /// The watcher answered a close with our latest proof.
    Challenged {
        /// The channel.
        channel: ChannelId,
        /// What the sender admitted.
        admitted: u128,
        /// What our proof proves.
        proven: u128,
    },
    /// A channel was paid out and closed.
    Settled {
        /// The channel.
        channel: ChannelId,
        /// Paid in all.
        total_paid: u128,
    },
}

/// Follows the chain for one account's channels.
#[derive(Debug)]
pub struct Watcher {
    client: ChainClient,
    store: Arc<ProofStore>,
    cursor: String,
    start_block: u64,
}

impl Watcher {
    /// A watcher whose cursor is stored under `name`; with no cursor yet it starts at
    /// `start_block` (the deployment's block).
    pub fn new(client: ChainClient, store: Arc<ProofStore>, name: &str, start_block: u64) -> Self {
        Self {
            client,
            store,
            cursor: format!("watcher:{name}"),
            start_block,
        }
    }

    /// The last block fully handled.
    pub fn cursor(&self) -> Result<Option<u64>, WatchError> {
        Ok(self.store.cursor(&self.cursor)?)
    }

    /// Handles every event up to the latest block.
    pub async fn poll(&self) -> Result<Vec<WatchEvent>, WatchError> {
        let mut seen = Vec::new();
        let latest = self
            .client
            .provider()
            .get_block_number()
            .await
            .map_err(ChainError::from)?;
        let mut from = self
            .store
            .cursor(&self.cursor)?
            .map_or(self.start_block, |block| block + 1);
        while from <= latest {
            let to = latest.min(from + LOG_RANGE - 1);
            let filter = Filter::new()
                .address(self.client.centralizer_address())
                .from_block(from)
                .to_block(to);
            let logs = self
                .client
                .provider()
                .get_logs(&filter)
                .await
                .map_err(ChainError::from)?;
            for log in logs {
                let Ok(event) = CentralizerEvents::decode_log(&log.inner) else {
                    continue;
                };
                self.handle(event.data, &mut seen).await?;
            }
            self.store.set_cursor(&self.cursor, to)?;
            from = to + 1;
        }
        Ok(seen)
    }

    /// Polls every `interval` until `stop` turns true.
    pub async fn run(
        self,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        events: tokio::sync::mpsc::UnboundedSender<WatchEvent>,
    ) -> Result<(), WatchError> {
        loop {
            match self.poll().await {
                Ok(seen) => {
                    for event in seen {
                        let _ = events.send(event);
                    }
                }
                // The chain being unreachable for a while is expected; the cursor did not move,
                // so nothing is skipped.
                Err(WatchError::Chain(error)) => tracing::warn!(%error, "watcher poll failed"),
                Err(error) => return Err(error),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    async fn handle(
        &self,
        event: CentralizerEvents,
        seen: &mut Vec<WatchEvent>,
    ) -> Result<(), WatchError> {
        let channel = |id: alloy::primitives::U256| {
            u64::try_from(id)
                .map(ChannelId)
                .map_err(|_| ChainError::OutOfRange("channel id"))
        };
        match event {
            CentralizerEvents::ChannelOpened(e) => seen.push(WatchEvent::Opened {
                channel: channel(e.channelId)?,
                sender: e.sender,
                receiver: e.receiver,
                deposit: to_u128(e.deposit, "deposit")?,
            }),
            CentralizerEvents::ChannelToppedUp(e) => seen.push(WatchEvent::ToppedUp {
                channel: channel(e.channelId)?,
                deposit: to_u128(e.deposit, "deposit")?,
            }),
            CentralizerEvents::Checkpointed(e) => seen.push(WatchEvent::Checkpointed {
                channel: channel(e.channelId)?,
                amount: to_u128(e.amount, "amount")?,
            }),
            CentralizerEvents::ChannelSettled(e) => seen.push(WatchEvent::Settled {
                channel: channel(e.channelId)?,
                total_paid: to_u128(e.totalPaid, "total paid")?,
            }),
            CentralizerEvents::CloseStarted(e) => {
                let id = channel(e.channelId)?;
                let admitted = to_u128(e.amount, "amount")?;
                seen.push(WatchEvent::CloseStarted {
                    channel: id,
                    amount: admitted,
                    deadline: e.deadline,
                });
                self.answer_close(id, seen).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn answer_close(
        &self,
        channel: ChannelId,
        seen: &mut Vec<WatchEvent>,
    ) -> Result<(), WatchError> {
        let Some(proof) = self.store.latest_received(channel)? else {
            return Ok(());
        };
        let state = self.client.channel(channel).await?;
        if state.receiver != self.client.address()
            || state.status != CLOSING
            || state.closing_amount >= proof.amount
        {
            return Ok(());
        }
        tracing::info!(%channel, admitted = state.closing_amount, proven = proof.amount, "challenging a stale close");
        self.client.challenge(&proof).await?;
        seen.push(WatchEvent::Challenged {
            channel,
            admitted: state.closing_amount,
            proven: proof.amount,
        });
        Ok(())
    }
}
