//! Paying for leases by the second, from the requester's side.
//!
//! A requester opens one channel to the node (a deposit in the Centralizer, reserved for the
//! node) and registers it ([`ensure_channel`]). A [`Payer`] then holds the node's stream open:
//! it learns each lease's terms from the node (`lease_ready`, `lease_ended`), checks them
//! against the deals it leased, meters them with the same arithmetic as the node's hub, and
//! every second signs one cumulative EIP-712 proof for everything owed so far. Only a proof
//! leaves this process; the key stays here.
//!
//! ```no_run
//! # async fn run() -> Result<(), ipsx_sdk::SdkError> {
//! use ipsx_sdk::{Client, LeaseBody, Payer, TokenAmount, Wallet, ensure_channel};
//!
//! let wallet: Wallet = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
//!     .parse()
//!     .expect("a key");
//! let mut node = Client::new("http://127.0.0.1:7700");
//! node.sign_in(&wallet).await?;
//! ensure_channel(&node, &wallet, "http://127.0.0.1:8545", 100 * 10u128.pow(18)).await?;
//! let mut payer = Payer::connect(&node, &wallet).await?;
//! let leased = node.lease(&LeaseBody::new(5, 30, TokenAmount(10u128.pow(15)))).await?;
//! for deal in &leased.deals {
//!     payer.expect(&deal.deal);
//! }
//! // Pays every second while events come in; stop when every lease has ended.
//! while let Some(_event) = payer.next().await? {
//!     if payer.all_ended() {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use ipsx_api::{ChannelView, DealView, LeaseTermsView, StreamEvent, StreamRequest};
use ipsx_channels::{ChannelDomain, ChannelId, LeaseTerms, MeteredPayer, PayerChannel, SigningKey};
use ipsx_channels_runtime::chain::ChainClient;

use crate::stream::EventStream;
use crate::{Client, SdkError, Wallet};

/// The wallet's key in the form the channel code signs with.
pub fn signing_key(wallet: &Wallet) -> Result<SigningKey, SdkError> {
    SigningKey::from_bytes(&wallet.to_bytes().0).map_err(|e| SdkError::Signing(e.to_string()))
}

/// Makes sure `wallet` pays the node on a registered channel: if it has none, deposits
/// `deposit` tokens into the Centralizer (ERC-2612 permit, one transaction), opens a channel
/// to the node with them and registers it. Returns the channel.
pub async fn ensure_channel(
    client: &Client,
    wallet: &Wallet,
    rpc_url: &str,
    deposit: u128,
) -> Result<ChannelView, SdkError> {
    let info = client
        .wallet()
        .await?
        .payments
        .ok_or(SdkError::PaymentsDisabled)?;
    if let Some(inbound) = info.inbound {
        return Ok(inbound);
    }
    let chain = ChainClient::connect(rpc_url, info.centralizer, signing_key(wallet)?).await?;
    if chain.domain().chain_id() != info.chain_id {
        return Err(SdkError::Stream(format!(
            "the RPC at {rpc_url} is chain {}, the node settles on chain {}",
            chain.domain().chain_id(),
            info.chain_id
        )));
    }
    let free = chain.balance_of(wallet.address()).await?;
    if free < deposit {
        chain.deposit_with_permit(deposit - free).await?;
    }
    let channel = chain.open_channel(info.node, deposit).await?;
    client.register_channel(channel.0).await
}

/// What [`Payer::next_or`] returns.
#[derive(Debug)]
pub enum Next<T> {
    /// An event from the node (already applied).
    Event(StreamEvent),
    /// A command (`None`: every sender is gone).
    Command(Option<T>),
    /// The node closed the stream.
    Closed,
}

/// Pays the node every second for the wallet's leases (see the [module docs](self)).
#[derive(Debug)]
pub struct Payer {
    stream: EventStream,
    payer: MeteredPayer,
    domain: ChannelDomain,
    key: SigningKey,
    me: Address,
    /// Deals leased and not ended yet.
    expected: HashMap<u64, DealView>,
    refused: HashSet<u64>,
    /// Leases metered, and whether the node said they ended; a lease leaves once it ended and
    /// the meter folded it (so memory stays as large as what runs, not what ran).
    known: HashMap<u64, bool>,
    /// Leases this payer ended itself, and the second they stopped accruing.
    closed: HashMap<u64, u64>,
    /// What the node said the leases it folded came to (`settled` on connect).
    settled: u128,
    /// Until then nothing is forgotten: an event the node sent both in its greeting and live
    /// comes within the first moments of the stream.
    forget_after: tokio::time::Instant,
    accepted: u128,
    paid_through: Option<u64>,
    ticker: tokio::time::Interval,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn terms(view: LeaseTermsView) -> LeaseTerms {
    LeaseTerms {
        id: view.deal,
        rate: view.rate.0,
        start: view.start,
        end: view.end,
    }
}

impl Payer {
    /// Opens the stream for the signed-in `client`, whose wallet has a registered channel.
    pub async fn connect(client: &Client, wallet: &Wallet) -> Result<Self, SdkError> {
        let info = client
            .wallet()
            .await?
            .payments
            .ok_or(SdkError::PaymentsDisabled)?;
        let inbound = info.inbound.ok_or(SdkError::NoChannel)?;
        let channel = PayerChannel::new(
            ChannelId(inbound.channel),
            info.node,
            inbound.deposit.0,
            inbound.amount.0,
        );
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self {
            stream: client.stream().await?,
            payer: MeteredPayer::new(channel),
            domain: ChannelDomain::new(info.chain_id, info.centralizer),
            key: signing_key(wallet)?,
            me: wallet.address(),
            expected: HashMap::new(),
            refused: HashSet::new(),
            known: HashMap::new(),
            closed: HashMap::new(),
            settled: 0,
            forget_after: tokio::time::Instant::now() + Duration::from_secs(10),
            accepted: inbound.amount.0,
            paid_through: inbound.paid_through,
            ticker,
        })
    }

    /// A deal this payer leased: the node's terms for it must match it (rate = price × IPs,
    /// inside the deal's window) or the payer refuses to pay for it.
    pub fn expect(&mut self, deal: &DealView) {
        self.expected.insert(deal.deal, deal.clone());
    }

    /// The next event from the node, paying every second meanwhile. `None` when the node
    /// closed the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, SdkError> {
        loop {
            tokio::select! {
                _ = self.ticker.tick() => self.pay().await?,
                event = self.stream.next() => {
                    let Some(event) = event else { return Ok(None) };
                    let event = event?;
                    self.apply(&event).await?;
                    return Ok(Some(event));
                }
            }
        }
    }

    /// Like [`next`](Self::next), but also returns when `commands` yields one: a task that
    /// pays and does other work in turn (cancels, new leases) waits on both at once, and a
    /// payment is never interrupted half-sent.
    pub async fn next_or<T>(
        &mut self,
        commands: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> Result<Next<T>, SdkError> {
        loop {
            tokio::select! {
                _ = self.ticker.tick() => self.pay().await?,
                command = commands.recv() => return Ok(Next::Command(command)),
                event = self.stream.next() => {
                    let Some(event) = event else { return Ok(Next::Closed) };
                    let event = event?;
                    self.apply(&event).await?;
                    return Ok(Next::Event(event));
                }
            }
        }
    }

    /// A lease this payer's wallet ended early (a cancel answered with `closed_at`): it stops
    /// accruing at `at` from now on, before the node's `lease_ended` comes. Call it between
    /// payments (in the task that pays), so no proof counts a second past the end.
    pub fn closed(&mut self, deal: u64, at: u64) {
        self.closed.insert(deal, at);
        if self.known.contains_key(&deal) {
            let _ = self.payer.meter.end_at(deal, at);
        }
    }

    /// Signs and sends what is owed now, if it grew.
    pub async fn pay(&mut self) -> Result<(), SdkError> {
        let tick = self.payer.tick(&self.domain, &self.key, unix_now(), 60);
        if let Some(top_up) = tick.top_up {
            tracing::warn!(
                lacking = top_up,
                "the channel's deposit does not cover the next minute of leases"
            );
        }
        if tokio::time::Instant::now() >= self.forget_after {
            let meter = &self.payer.meter;
            self.known
                .retain(|id, ended| !*ended || meter.get(*id).is_some());
        }
        if let Some(proof) = tick.proof {
            self.stream
                .send(&StreamRequest::Proof {
                    proof: alloy_primitives::hex::encode_prefixed(proof.encode()),
                })
                .await?;
        }
        Ok(())
    }

    async fn apply(&mut self, event: &StreamEvent) -> Result<(), SdkError> {
        match event {
            StreamEvent::LeaseReady {
                terms: view,
                requester,
                ..
            } if *requester == self.me => {
                let terms = terms(*view);
                if let Some(deal) = self.expected.get(&terms.id) {
                    let rate = deal.price.0.saturating_mul(deal.ips.len() as u128);
                    if terms.rate != rate || terms.start < deal.start || terms.end > deal.end {
                        tracing::warn!(
                            deal = terms.id,
                            ?terms,
                            "the node's terms do not match the deal; not paying for it"
                        );
                        self.refused.insert(terms.id);
                        return Ok(());
                    }
                }
                if self.known.insert(terms.id, false).is_none() {
                    let _ = self.payer.meter.add(terms);
                    if let Some(&at) = self.closed.get(&terms.id) {
                        let _ = self.payer.meter.end_at(terms.id, at);
                    }
                }
            }
            StreamEvent::LeaseEnded {
                terms: view,
                requester,
                ..
            } if *requester == self.me && !self.refused.contains(&view.deal) => {
                let terms = terms(*view);
                self.expected.remove(&terms.id);
                self.closed.remove(&terms.id);
                if self.known.insert(terms.id, true).is_some() {
                    // Folded leases are gone from the meter and ended already: nothing to do.
                    let _ = self.payer.meter.end_at(terms.id, terms.end);
                } else if terms.end > terms.start {
                    // Replayed on connect: an older lease, part of the cumulative total.
                    let _ = self.payer.meter.add(terms);
                }
            }
            StreamEvent::LeaseEnded {
                terms, requester, ..
            } if *requester == self.me => {
                // Refused, never paid: it is over.
                self.refused.remove(&terms.deal);
                self.expected.remove(&terms.deal);
            }
            StreamEvent::Settled { paid, .. } => {
                // Sent once, first; a larger figure (a node that folded more) adds the rest.
                self.payer
                    .meter
                    .add_base(paid.0.saturating_sub(self.settled));
                self.settled = self.settled.max(paid.0);
            }
            StreamEvent::ProofAccepted {
                amount,
                paid_through,
            } => {
                self.accepted = amount.0;
                self.paid_through = *paid_through;
            }
            StreamEvent::PaymentDue { .. } => self.pay().await?,
            _ => {}
        }
        Ok(())
    }

    /// The latest amount the node accepted.
    pub fn accepted(&self) -> u128 {
        self.accepted
    }

    /// What the leases have accrued by now.
    pub fn owed(&self) -> u128 {
        self.payer.meter.owed_at(unix_now())
    }

    /// How far the node counts the leases as paid.
    pub fn paid_through(&self) -> Option<u64> {
        self.paid_through
    }

    /// Whether every expected deal has ended (the node said so).
    pub fn all_ended(&self) -> bool {
        self.expected.keys().all(|deal| self.refused.contains(deal))
    }

    /// Pays up to now one last time, then closes the stream.
    pub async fn finish(mut self) -> Result<u128, SdkError> {
        self.pay().await?;
        // Let the node answer the last proof before closing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.accepted < self.payer.channel.signed() {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(event))) => self.apply(&event).await?,
                _ => break,
            }
        }
        self.stream.close().await;
        Ok(self.accepted)
    }
}
