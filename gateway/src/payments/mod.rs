//! The node's payment side: the hub (`ipsx-channels`), its durable proof store and book, and
//! the chain client that opens providers' channels and claims requesters' proofs.
//!
//! ```text
//!  requester ──proof (WebSocket)──► receive_proof: hub.check ─► ProofStore (fsync) ─► hub.accept
//!  feed, every second: deal Active ─► start_lease (book, then hub) ─► LeaseReady to both
//!                      deal ended  ─► end_lease   (book, then hub) ─► LeaseEnded to both
//!                      tick: hub.tick ─► persist signed amounts ─► Payment to each provider
//!                                              └─► cuts ─► engine PaymentLapsed, CutOff to both
//!  settle (every `settle_every`, and forced at shutdown): requesters' proofs ─► batchCheckpoint
//! ```
//!
//! A requester must register the channel it opened to the node (`POST /v1/wallet/channel`)
//! before leasing; a provider gets its channel from the node when it registers its proxy.
//! Lease terms are fixed by the node when the provider reports ready (`start` = that second,
//! never before the deal's start) and sent to both parties, so all three meter the same
//! seconds. After a restart the hub is rebuilt from the book, the stores and the chain, and
//! nobody is cut before `grace` seconds more have passed.
//!
//! Every write to the book and the proof store is a `ledger` entry. In a cluster the leader
//! runs the hub and appends each entry to the cluster's payments log before it applies it; the
//! followers apply the log to their own copies, and the node that comes to lead next starts
//! the hub from its copy as after a restart (`crate::cluster::run_payments`).

mod book;
mod ledger;

use crate::error::ErrorCode;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::Address;
use axum::http::StatusCode;
use ipsx_api::{ChannelView, PaymentsInfo, TokenAmount};
use ipsx_channels::{
    ChannelId, CheckpointPolicy, Hub, HubConfig, HubLease, HubTick, LeaseTerms, PayerChannel,
    ReceiverChannel, SignedProof, SigningKey,
};
use ipsx_channels_runtime::chain::{ChainClient, ChainError, Checkpointed};
use ipsx_channels_runtime::settle::Settler;
use ipsx_channels_runtime::store::StoreError;
use ipsx_channels_runtime::watcher::{WatchEvent, Watcher};

pub use book::{BookError, BookedLease, PaymentBook};
pub(crate) use ledger::Ledger;
pub use ledger::LedgerError;

use crate::error::ApiError;
use crate::server::lock;

/// How the node pays and gets paid.
#[derive(Clone)]
pub struct PaymentsConfig {
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The Centralizer contract.
    pub centralizer: Address,
    /// The node's key: it signs proofs to providers and transactions, and must be the
    /// contract's treasury.
    pub key: SigningKey,
    /// What the node reserves for each provider's channel when it opens it. Default 1,000 IPSX.
    pub provider_deposit: u128,
    /// Grace and signing interval of the hub.
    pub hub: HubConfig,
    /// When claiming requesters' proofs is worth the gas.
    pub policy: CheckpointPolicy,
    /// How often the node considers claiming. Default 30 s.
    pub settle_every: Duration,
}

impl std::fmt::Debug for PaymentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsConfig")
            .field("rpc_url", &self.rpc_url)
            .field("centralizer", &self.centralizer)
            .field("node", &self.key.address())
            .field("provider_deposit", &self.provider_deposit)
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl PaymentsConfig {
    /// Defaults for a node keyed `key` settling on `centralizer` through `rpc_url`.
    pub fn new(rpc_url: impl Into<String>, centralizer: Address, key: SigningKey) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            centralizer,
            key,
            provider_deposit: 1_000 * 10u128.pow(18),
            hub: HubConfig::default(),
            policy: CheckpointPolicy::default(),
            settle_every: Duration::from_secs(30),
        }
    }
}

/// Why payments could not start.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// The chain refused or could not be reached.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The node is not the contract's treasury, so it would pay commissions it never gets back.
    #[error("the node's address {node} is not the Centralizer's treasury {treasury}")]
    NotTreasury {
        /// The node.
        node: Address,
        /// The contract's treasury.
        treasury: Address,
    },
    /// The proof store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The payment book failed.
    #[error(transparent)]
    Book(#[from] BookError),
    /// The book or the store could not be written (or, in a cluster, the payments log).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A booked lease no longer fits the hub (a corrupt book).
    #[error("rebuilding the hub: {0}")]
    Rebuild(String),
}

/// The payment side as a node holds it: what it was started with, and the hub once it runs
/// it — from the start on a node alone; in a cluster, once it leads.
pub(crate) struct PaymentsSlot {
    /// What the node was started with (`None`: a market without payments).
    pub(crate) config: Option<PaymentsConfig>,
    /// The book and the proof store, opened with `config`.
    pub(crate) ledger: Option<Arc<Ledger>>,
    running: std::sync::OnceLock<Arc<Payments>>,
}

impl PaymentsSlot {
    /// A node's payment side before the hub runs.
    pub(crate) fn new(config: Option<PaymentsConfig>, ledger: Option<Arc<Ledger>>) -> Self {
        Self {
            config,
            ledger,
            running: std::sync::OnceLock::new(),
        }
    }

    /// The hub, when this node runs it.
    pub(crate) fn running(&self) -> Option<&Arc<Payments>> {
        self.running.get()
    }

    /// Whether another node runs the hub: a follower of a paying cluster.
    pub(crate) fn elsewhere(&self) -> bool {
        self.config.is_some() && self.running.get().is_none()
    }

    /// This node runs the hub from now on (once: a cluster node that stops leading exits).
    pub(crate) fn run(&self, payments: Arc<Payments>) {
        let _ = self.running.set(payments);
    }
}

/// What one second of the hub produced, persisted and ready to send.
#[derive(Debug, Default)]
pub(crate) struct TickOutcome {
    /// The hub's output (its payments' amounts are already in the proof store).
    pub(crate) tick: HubTick,
    /// Requesters behind on payment: (requester, owed, paid, cut at).
    pub(crate) due: Vec<(Address, u128, u128, u64)>,
}

/// Whether a requester may lease ([`Payments::standing`]).
pub(crate) enum Standing {
    /// It has no channel to the node.
    NoChannel,
    /// It owes more than it paid and is behind by more than the grace.
    Overdue(ipsx_channels::RequesterPosition),
    /// It may.
    Good,
}

/// The node's payments.
pub(crate) struct Payments {
    chain: ChainClient,
    /// The book and the proof store (and, on a cluster's leader, the payments log).
    ledger: Arc<Ledger>,
    /// Held across a ledger write (an fsync; in a cluster, a round trip to the payments log
    /// that the async workers drive), so it is an async lock: a handler waiting for it yields
    /// its worker instead of blocking it. With a std mutex, two handlers waiting on a held hub
    /// left no worker to finish the log's round trip, and the leader stopped for good. The
    /// feed's blocking threads take it with [`Payments::hub_from_blocking`].
    hub: tokio::sync::Mutex<Hub>,
    requesters: Mutex<Vec<Address>>,
    /// Proofs are checked, stored and accepted one at a time, so a lower one cannot overtake.
    proof_gate: tokio::sync::Mutex<()>,
    /// Channel registrations and openings, one at a time.
    channel_gate: tokio::sync::Mutex<()>,
    topping_up: Mutex<HashSet<Address>>,
    settler: Settler,
    config: PaymentsConfig,
    /// Provider channels as last read on chain: channel -> (read at, state).
    claims:
        Mutex<std::collections::HashMap<u64, (u64, ipsx_channels_runtime::chain::ChannelState)>>,
}

/// Blocks a cluster node that takes over the hub re-reads the contract's events over: about a
/// day at 12 s a block, far more than a failover takes.
pub(crate) const TAKEOVER_LOOKBACK: u64 = 7_200;

/// Seconds a chain read of a provider's channel answers `GET /v1/wallet/claims`.
pub(crate) const CLAIMS_FRESH_FOR: u64 = 5;

fn chain_error(error: ChainError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::ChainError,
        error.to_string(),
    )
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        error.to_string(),
    )
}

impl Payments {
    /// Connects to the chain, checks the node is the treasury, and rebuilds the hub from the
    /// book and the proof store.
    pub(crate) async fn start(
        config: PaymentsConfig,
        ledger: Arc<Ledger>,
        now: u64,
    ) -> Result<Self, PaymentsError> {
        let chain =
            ChainClient::connect(&config.rpc_url, config.centralizer, config.key.clone()).await?;
        let treasury = chain.treasury().await?;
        if treasury != chain.address() {
            return Err(PaymentsError::NotTreasury {
                node: chain.address(),
                treasury,
            });
        }
        let (store, book) = (&ledger.store, &ledger.book);
        let leases = book.leases()?;
        // The hub's clock starts where the oldest booked lease starts, so every lease fits
        // again and each requester's paid-through is recomputed from its latest proof.
        let epoch = leases.iter().map(|l| l.terms.start).min().unwrap_or(now);
        let mut hub = Hub::new(
            chain.domain().clone(),
            config.key.clone(),
            config.hub,
            epoch,
        );
        let mut requesters = Vec::new();
        for (requester, channel) in book.requester_channels()? {
            let state = chain.channel(channel).await?;
            hub.add_requester(ReceiverChannel::new(
                channel,
                requester,
                state.deposit,
                store.latest_received(channel)?,
            ));
            requesters.push(requester);
        }
        for (provider, channel) in book.provider_channels()? {
            let state = chain.channel(channel).await?;
            hub.add_provider(PayerChannel::new(
                channel,
                provider,
                state.deposit,
                store.highest_signed(channel)?,
            ));
        }
        for (party, paid, earned) in book.all_folded()? {
            hub.restore_folded(party, paid, earned);
        }
        for lease in &leases {
            hub.add_lease(HubLease {
                terms: lease.terms,
                requester: lease.requester,
                provider: lease.provider,
            })
            .map_err(|e| PaymentsError::Rebuild(e.to_string()))?;
        }
        // After the leases (some start before it): a lease folded before the restart, read
        // again from the engine's deal book, ends by its requester's settled second and is
        // not billed twice.
        for (requester, through) in book.all_folded_through()? {
            hub.restore_settled(requester, through);
        }
        if !leases.is_empty() {
            hub.hold_cuts_until(now + config.hub.grace + 2);
        }
        let settler = Settler::new(chain.clone(), Arc::clone(store), config.policy);
        Ok(Self {
            chain,
            ledger,
            hub: tokio::sync::Mutex::new(hub),
            requesters: Mutex::new(requesters),
            proof_gate: tokio::sync::Mutex::new(()),
            channel_gate: tokio::sync::Mutex::new(()),
            topping_up: Mutex::new(HashSet::new()),
            settler,
            config,
            claims: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The node's address.
    /// The node's chain client (its one sender for every contract).
    pub(crate) fn chain(&self) -> &ChainClient {
        &self.chain
    }

    pub(crate) fn node(&self) -> Address {
        self.chain.address()
    }

    /// What `GET /v1/wallet` shows `caller`.
    pub(crate) async fn info(&self, caller: Address) -> PaymentsInfo {
        let hub = self.hub.lock().await;
        let inbound = hub.requester_position(caller).map(|p| ChannelView {
            channel: p.channel.0,
            deposit: TokenAmount(p.deposit),
            amount: TokenAmount(p.received),
            owed: TokenAmount(p.owed),
            paid_through: Some(p.paid_through),
        });
        let outbound = hub.provider_channel(caller).map(|channel| {
            let (owed, signed) = hub.provider_position(caller).unwrap_or((0, 0));
            ChannelView {
                channel: channel.id.0,
                deposit: TokenAmount(channel.deposit),
                amount: TokenAmount(signed),
                owed: TokenAmount(owed),
                paid_through: None,
            }
        });
        PaymentsInfo {
            chain_id: self.chain.domain().chain_id(),
            centralizer: self.chain.centralizer_address(),
            token: self.chain.token_address(),
            node: self.chain.address(),
            grace: self.config.hub.grace,
            inbound,
            outbound,
        }
    }

    /// `provider`'s channel from the node as the chain holds it; `None` without one. A read
    /// is shared for [`CLAIMS_FRESH_FOR`], so a dashboard left open (or a caller hammering the
    /// endpoint) costs the chain one call per channel every few seconds at most.
    pub(crate) async fn claims_of(
        &self,
        provider: Address,
        now: u64,
    ) -> Result<Option<ipsx_api::ClaimsView>, ApiError> {
        let Some(channel) = self
            .hub
            .lock()
            .await
            .provider_channel(provider)
            .map(|c| c.id)
        else {
            return Ok(None);
        };
        let cached = lock(&self.claims)
            .get(&channel.0)
            .filter(|(read_at, _)| now < read_at + CLAIMS_FRESH_FOR)
            .copied();
        let (read_at, state) = match cached {
            Some(cached) => cached,
            None => {
                let state = self.chain.channel(channel).await.map_err(chain_error)?;
                let mut claims = lock(&self.claims);
                if claims.len() >= 100_000 {
                    claims.retain(|_, (read_at, _)| now < *read_at + CLAIMS_FRESH_FOR);
                }
                claims.insert(channel.0, (now, state));
                (now, state)
            }
        };
        let status = match state.status {
            1 => "open",
            2 => "closing",
            3 => "settled",
            _ => "none",
        };
        Ok(Some(ipsx_api::ClaimsView {
            channel: channel.0,
            deposit: TokenAmount(state.deposit),
            claimed: TokenAmount(state.claimed),
            status: status.to_owned(),
            read_at,
        }))
    }

    /// Where `party` stands, for a stream that just connected: what its folded leases came to
    /// (paid, earned) and its leases not folded. With them a payer that restarted meters the
    /// same cumulative total as the hub.
    pub(crate) fn position_of(
        &self,
        party: Address,
    ) -> Result<((u128, u128), Vec<BookedLease>), ApiError> {
        self.ledger.book.position_of(party).map_err(internal)
    }

    /// Whether `requester` may lease: it needs a channel to the node, and no debt the hub
    /// would cut it for. A requester that stopped paying gets no new lease until it pays:
    /// otherwise each lease would be served free for the grace, again and again, at its
    /// providers' cost.
    pub(crate) async fn standing(&self, requester: Address) -> Standing {
        let hub = self.hub.lock().await;
        match hub.overdue(requester) {
            Some(position) => Standing::Overdue(position),
            None if hub.requester_position(requester).is_some() => Standing::Good,
            None => Standing::NoChannel,
        }
    }

    /// Whether the node pays `provider` on a channel.
    pub(crate) async fn has_provider(&self, provider: Address) -> bool {
        self.hub.lock().await.provider_channel(provider).is_some()
    }

    /// Registers the channel `requester` opened to the node, after checking it on chain.
    pub(crate) async fn register_requester(
        &self,
        requester: Address,
        channel: ChannelId,
    ) -> Result<ChannelView, ApiError> {
        let _gate = self.channel_gate.lock().await;
        if let Some(existing) = self.hub.lock().await.requester_position(requester)
            && existing.channel != channel
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ChannelAlreadyRegistered,
                format!(
                    "{requester} already pays on channel {}; top it up instead",
                    existing.channel.0
                ),
            ));
        }
        let state = self.chain.channel(channel).await.map_err(chain_error)?;
        let refuse = |message: String| ApiError::bad_request(ErrorCode::BadChannel, message);
        if state.status != 1 {
            return Err(refuse(format!("channel {} is not open", channel.0)));
        }
        if state.sender != requester {
            return Err(refuse(format!(
                "channel {} is paid by {}, not by {requester}",
                channel.0, state.sender
            )));
        }
        if state.receiver != self.node() {
            return Err(refuse(format!(
                "channel {} pays {}, not this node ({})",
                channel.0,
                state.receiver,
                self.node()
            )));
        }
        self.ledger
            .record_async(ledger::Entry::RequesterChannel(requester, channel))
            .await
            .map_err(internal)?;
        let latest = self
            .ledger
            .store
            .latest_received(channel)
            .map_err(internal)?;
        let received = latest.map_or(0, |p| p.amount);
        self.hub.lock().await.add_requester(ReceiverChannel::new(
            channel,
            requester,
            state.deposit,
            latest,
        ));
        let mut requesters = lock(&self.requesters);
        if !requesters.contains(&requester) {
            requesters.push(requester);
        }
        Ok(ChannelView {
            channel: channel.0,
            deposit: TokenAmount(state.deposit),
            amount: TokenAmount(received),
            owed: TokenAmount(0),
            paid_through: None,
        })
    }

    /// Opens the node's channel to `provider` unless it has one.
    pub(crate) async fn ensure_provider_channel(
        &self,
        provider: Address,
    ) -> Result<ChannelId, ApiError> {
        let _gate = self.channel_gate.lock().await;
        if let Some(channel) = self.hub.lock().await.provider_channel(provider) {
            return Ok(channel.id);
        }
        let deposit = self.config.provider_deposit;
        let free = self
            .chain
            .balance_of(self.node())
            .await
            .map_err(chain_error)?;
        if free < deposit {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NodeUnderfunded,
                format!(
                    "the node has {free} free in the Centralizer and reserves {deposit} per \
                     provider channel"
                ),
            ));
        }
        let channel = self
            .chain
            .open_channel(provider, deposit)
            .await
            .map_err(chain_error)?;
        self.ledger
            .record_async(ledger::Entry::ProviderChannel(provider, channel))
            .await
            .map_err(internal)?;
        self.hub
            .lock()
            .await
            .add_provider(PayerChannel::new(channel, provider, deposit, 0));
        tracing::info!(%provider, channel = channel.0, deposit, "opened a provider channel");
        Ok(channel)
    }

    /// Checks, stores, then counts a requester's proof. Returns the amount accepted and how
    /// far the requester's leases are paid.
    pub(crate) async fn receive_proof(
        self: &Arc<Self>,
        requester: Address,
        wire: &str,
    ) -> Result<(u128, Option<u64>), ApiError> {
        let bytes = alloy_primitives::hex::decode(wire.trim()).map_err(|_| {
            ApiError::bad_request(
                ErrorCode::BadProof,
                "a proof is 129 bytes of hex (0x + 258 digits)",
            )
        })?;
        let proof = SignedProof::decode(&bytes)
            .map_err(|e| ApiError::bad_request(ErrorCode::BadProof, e.to_string()))?;
        let _gate = self.proof_gate.lock().await;
        self.hub
            .lock()
            .await
            .check(requester, &proof)
            .map_err(|e| {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::ProofRefused, e.to_string())
            })?;
        self.ledger
            .record_async(ledger::Entry::Received(proof))
            .await
            .map_err(internal)?;
        let mut hub = self.hub.lock().await;
        hub.accept(requester, proof);
        let paid_through = hub.requester_position(requester).map(|p| p.paid_through);
        Ok((proof.amount, paid_through))
    }

    /// Starts metering a deal the provider now serves from `start` (the second its ready
    /// report was stamped, or its start if later): terms booked, then added to the hub. A deal
    /// booked before (a restart) keeps its terms.
    pub(crate) fn start_lease(
        &self,
        deal: u64,
        requester: Address,
        provider: Address,
        rate: u128,
        start: u64,
        end: u64,
    ) -> Result<LeaseTerms, ApiError> {
        if let Some(booked) = self.ledger.book.lease(deal).map_err(internal)? {
            return Ok(booked.terms);
        }
        let mut hub = self.hub_from_blocking();
        // The hub never ticks past the engine time the feed has followed, so a ready report
        // is never older than what its requester has settled. After a restart it can be: a
        // lease that ended, was paid and folded (its row left the book) is read again, and
        // its requester has settled past its end; settled seconds are never billed again.
        let billable = hub.billable_from(requester, start);
        if end <= billable {
            // Over before it could be billed (or billed and folded already): nothing to book.
            return Ok(LeaseTerms {
                id: deal,
                rate,
                start: billable,
                end: billable,
            });
        }
        if billable > start {
            // A report journaled but not metered before a crash, read after the requester
            // settled seconds it covers.
            tracing::warn!(
                deal,
                ready = start,
                billable,
                "lease metered from the requester's settled second, after its ready report"
            );
        }
        let start = billable;
        if hub.requester_position(requester).is_none() || hub.provider_channel(provider).is_none() {
            // Deals made before this node took payments: never metered (and never booked,
            // so a restart can always rebuild the hub from the book).
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LeaseRefused,
                format!("no payment channel for requester {requester} or provider {provider}"),
            ));
        }
        let terms = LeaseTerms {
            id: deal,
            rate,
            start,
            end,
        };
        let lease = BookedLease {
            terms,
            requester,
            provider,
            ended: false,
        };
        self.ledger
            .record(&ledger::Entry::Lease(lease))
            .map_err(internal)?;
        hub.add_lease(HubLease {
            terms,
            requester,
            provider,
        })
        .map_err(internal)?;
        Ok(terms)
    }

    /// Ends a lease at `at` (no earlier than what its requester already paid through); the
    /// final terms, booked. `None` if it was never metered.
    pub(crate) fn end_lease(&self, deal: u64, at: u64) -> Result<Option<LeaseTerms>, ApiError> {
        let Some(mut booked) = self.ledger.book.lease(deal).map_err(internal)? else {
            return Ok(None);
        };
        if booked.ended {
            return Ok(Some(booked.terms));
        }
        let mut hub = self.hub_from_blocking();
        // Unknown to the hub means already folded (ended and paid): its terms stand.
        let _ = hub.end_lease(deal, at);
        let terms = hub.lease_terms(deal).unwrap_or(LeaseTerms {
            end: booked.terms.end.min(at.max(booked.terms.start)),
            ..booked.terms
        });
        booked.terms = terms;
        booked.ended = true;
        self.ledger
            .record(&ledger::Entry::Lease(booked))
            .map_err(internal)?;
        Ok(Some(terms))
    }

    /// One second of the hub: sign what is owed to providers and store it before it is sent;
    /// find requesters that are behind.
    pub(crate) fn tick(&self, now: u64) -> Result<TickOutcome, LedgerError> {
        let mut hub = self.hub_from_blocking();
        let tick = hub.tick(now);
        if !tick.folded.is_empty() {
            // Lost in a crash before this write, they are folded again after the restart.
            if let Err(error) = self
                .ledger
                .record(&ledger::Entry::Fold(tick.folded.clone()))
            {
                tracing::warn!(%error, "folding settled leases in the book failed");
            }
        }
        let signed: Vec<_> = tick
            .payments
            .iter()
            .map(|p| (p.proof.channel, p.proof.amount))
            .collect();
        if !signed.is_empty() {
            self.ledger.record(&ledger::Entry::Signed(signed))?;
        }
        let grace = self.config.hub.grace;
        let due = lock(&self.requesters)
            .iter()
            .filter_map(|&requester| {
                let position = hub.requester_position(requester)?;
                (position.owed > position.received && now >= position.paid_through + 2).then(|| {
                    (
                        requester,
                        position.owed,
                        position.received,
                        position.paid_through + grace,
                    )
                })
            })
            .collect();
        Ok(TickOutcome { tick, due })
    }

    /// The hub, from one of the feed's blocking threads, which may hold it across a ledger
    /// write. Never from async code: it would block a worker.
    fn hub_from_blocking(&self) -> tokio::sync::MutexGuard<'_, Hub> {
        self.hub.blocking_lock()
    }

    /// Tops up a provider's channel the hub owes more than its deposit (in the background).
    pub(crate) fn top_up(self: &Arc<Self>, provider: Address, channel: ChannelId, owed: u128) {
        if !lock(&self.topping_up).insert(provider) {
            return;
        }
        let payments = Arc::clone(self);
        tokio::spawn(async move {
            let deposit = payments
                .hub
                .lock()
                .await
                .provider_channel(provider)
                .map_or(0, |c| c.deposit);
            let add = owed
                .saturating_sub(deposit)
                .max(payments.config.provider_deposit);
            match payments.chain.top_up(channel, add).await {
                Ok(()) => {
                    payments
                        .hub
                        .lock()
                        .await
                        .set_deposit(provider, deposit + add);
                    tracing::info!(%provider, channel = channel.0, add, "topped up");
                }
                Err(error) => tracing::warn!(%provider, %error, "top-up failed"),
            }
            lock(&payments.topping_up).remove(&provider);
        });
    }

    /// Claims requesters' proofs that are due under the policy (all of them if `force`).
    pub(crate) async fn settle(&self, now: u64, force: bool) -> Vec<Checkpointed> {
        match self.settler.run_once(now, force).await {
            Ok(paid) => {
                for checkpoint in &paid {
                    tracing::info!(
                        channel = checkpoint.channel.0,
                        amount = checkpoint.amount,
                        "claimed"
                    );
                }
                paid
            }
            Err(error) => {
                tracing::warn!(%error, "claiming requesters' proofs failed; will retry");
                Vec::new()
            }
        }
    }

    /// How often to consider claiming.
    pub(crate) fn settle_every(&self) -> Duration {
        self.config.settle_every
    }

    /// Follows the contract until `stop`: challenges a requester's unilateral close that admits
    /// less than the node's latest stored proof, and takes deposits topped up on chain into
    /// the hub. The watcher's cursor is in the proof store, so a restart resumes where it was.
    ///
    /// A watcher with no cursor yet starts `lookback` blocks before the chain's height: a
    /// cluster node that takes over the hub looks back over what the previous leader may not
    /// have seen (handling an event twice does nothing more).
    pub(crate) async fn watch(
        self: Arc<Self>,
        lookback: u64,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use alloy::providers::Provider as _;
        let start_block = match self.chain.provider().get_block_number().await {
            Ok(block) => block.saturating_sub(lookback),
            Err(error) => {
                tracing::warn!(%error, "the watcher cannot read the chain's height; not watching");
                return;
            }
        };
        let watcher = Watcher::new(
            self.chain.clone(),
            Arc::clone(&self.ledger.store),
            "node",
            start_block,
        );
        let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let watching = tokio::spawn(watcher.run(Duration::from_secs(2), stop, events));
        while let Some(event) = seen.recv().await {
            match event {
                WatchEvent::ToppedUp { channel, deposit } => {
                    self.deposit_changed(channel, deposit).await
                }
                WatchEvent::Challenged {
                    channel,
                    admitted,
                    proven,
                } => tracing::warn!(
                    channel = channel.0,
                    admitted,
                    proven,
                    "challenged a close that admitted less than our latest proof"
                ),
                _ => {}
            }
        }
        match watching.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the watcher stopped"),
            Err(error) => tracing::error!(%error, "the watcher panicked"),
        }
    }

    async fn deposit_changed(&self, channel: ChannelId, deposit: u128) {
        let parties = self
            .ledger
            .book
            .requester_channels()
            .into_iter()
            .flatten()
            .chain(self.ledger.book.provider_channels().into_iter().flatten());
        for (party, known) in parties {
            if known == channel {
                self.hub.lock().await.set_deposit(party, deposit);
                tracing::info!(%party, channel = channel.0, deposit, "deposit changed");
            }
        }
    }
}
