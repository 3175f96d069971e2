//! # ipsx-sdk — lease and serve IPs on an IPSX node from Rust
//!
//! A [`Client`] talks to a node's HTTP API (types in [`ipsx_api`]). It signs in with a wallet
//! that stays in your process: the node sends an EIP-4361 message, the SDK signs it with
//! `personal_sign` locally, and keeps the session token it gets back.
//!
//! ```no_run
//! # async fn crawl() -> Result<(), ipsx_sdk::SdkError> {
//! use ipsx_sdk::{Client, LeaseBody, TokenAmount, Wallet};
//!
//! let wallet: Wallet = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
//!     .parse()
//!     .expect("a private key");
//! let mut node = Client::new("http://127.0.0.1:7700");
//! node.sign_in(&wallet).await?;
//! let leased = node
//!     .lease(&LeaseBody::new(10, 60, TokenAmount(5)).countries(["DE", "FR"]).protocols([ipsx_sdk::Protocol::Socks5]))
//!     .await?;
//! for endpoint in leased.deals.iter().flat_map(|deal| &deal.endpoints) {
//!     println!("{}", endpoint.socks5h.as_deref().unwrap_or("-"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! On a node that settles on a chain, [`ensure_channel`] deposits and opens the wallet's
//! payment channel once, and a [`Payer`] pays for the wallet's leases every second over the
//! node's event stream ([`Client::stream`]); see [`pay`] for an example. On the other side,
//! [`Serving`] is a provider's serving state machine: what to report ready, cut and forget as
//! the node's events come (see [`serve`]).
//!
//! Errors keep the node's machine-readable code ([`SdkError::Api`]), so callers can branch on
//! `unknown_country`, `rate_limited` and the like.
//!
//! ## A cluster of nodes
//!
//! [`Client::with_nodes`] (or [`Client::new`] with comma-separated URLs) talks to a cluster:
//! any node serves reads and sign-in, the leader takes writes. A call that a follower refuses
//! with `not_leader` goes to the leader it names; a node that cannot be reached, or that is
//! stopping, is passed over for the next one in the list, for up to
//! [`Client::failover_within`]. A write is sent again only when the node surely did not
//! apply it (refused, or never connected); a write whose answer was lost on the way
//! (connection cut mid-call, `engine_down`) comes back as an error, since it may have been
//! applied: look at [`Client::deals`] before leasing again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_signer::SignerSync;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod anchor;
pub mod pay;
pub mod serve;
mod stream;

pub use alloy_primitives::Address;
pub use alloy_signer_local::PrivateKeySigner as Wallet;
pub use ipsx_api::*;
pub use pay::{Next, Payer, ensure_channel, signing_key};
pub use serve::Serving;
pub use stream::EventStream;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The node answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The node's code (`bad_signature`, `unknown_country`, `rate_limited`…); `unknown`
        /// when the node answered without one.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// With `not_leader`: the node that takes writes, when the refusing node knew it.
        leader: Option<String>,
    },
    /// The node could not be reached, or answered something that is not the API.
    #[error("talking to the node: {0}")]
    Transport(#[from] reqwest::Error),
    /// Signing the sign-in message failed.
    #[error("signing in: {0}")]
    Signing(String),
    /// A call that needs a session was made before [`Client::sign_in`].
    #[error("sign in first")]
    NotSignedIn,
    /// The event stream failed or said something unreadable.
    #[error("event stream: {0}")]
    Stream(String),
    /// The node runs without a chain, so there is nothing to pay.
    #[error("the node runs without payments")]
    PaymentsDisabled,
    /// The wallet has no channel to the node yet (see [`ensure_channel`]).
    #[error("no payment channel to the node yet: deposit and open one first")]
    NoChannel,
    /// A chain call failed (deposit, open, withdraw).
    #[error(transparent)]
    Chain(#[from] ipsx_channels_runtime::chain::ChainError),
}

impl SdkError {
    /// The node's error code, if the node refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How long a call keeps looking for a node that takes it, by default.
const FAILOVER_WITHIN: Duration = Duration::from_secs(20);

/// How long a call waits after every node of the list failed it once, before the next round.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// A connection to a node (or to a cluster's nodes), signed in or not.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    nodes: Arc<Nodes>,
    session: Option<SessionResponse>,
    failover_within: Duration,
}

/// The nodes a client knows, and the one it talks to now (shared by its clones).
#[derive(Debug)]
struct Nodes {
    list: Vec<String>,
    current: Mutex<String>,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7700`); several nodes of a
    /// cluster may be given, separated by commas (see [`Client::with_nodes`]).
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_nodes(base.into().split(','))
    }

    /// A client for a cluster's nodes: calls go to the first, and move to the leader or the
    /// next node when one refuses or cannot be reached (see the crate docs).
    pub fn with_nodes<I>(nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let list: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().trim().trim_end_matches('/').to_owned())
            .filter(|node| !node.is_empty())
            .collect();
        let first = list.first().cloned().unwrap_or_default();
        Self {
            http: reqwest::Client::new(),
            nodes: Arc::new(Nodes {
                list,
                current: Mutex::new(first),
            }),
            session: None,
            failover_within: FAILOVER_WITHIN,
        }
    }

    /// How long a call keeps looking for a node that takes it [default: 20 s].
    pub fn failover_within(mut self, within: Duration) -> Self {
        self.failover_within = within;
        self
    }

    /// The node calls go to now.
    pub fn node(&self) -> String {
        self.nodes.current()
    }

    /// This client (and its session) talking to `node` only, with no failover: to read what
    /// one node of a cluster holds.
    pub fn at(&self, node: &str) -> Client {
        Client {
            session: self.session.clone(),
            // Not even to a leader a refusal names: the answer is this node's.
            failover_within: Duration::ZERO,
            ..Client::with_nodes([node])
        }
    }

    /// The session, once signed in.
    pub fn session(&self) -> Option<&SessionResponse> {
        self.session.as_ref()
    }

    /// Signs in with `wallet` (the key never leaves this process). The challenge and its
    /// answer go to the same node; a session is good on every node of a cluster.
    pub async fn sign_in(&mut self, wallet: &Wallet) -> Result<&SessionResponse, SdkError> {
        let http = &self.http;
        let session = self
            .failing_over(true, |base| async move {
                let challenge: ChallengeResponse = answer(
                    http.post(format!("{base}/v1/auth/challenge"))
                        .json(&ChallengeRequest {
                            address: wallet.address().to_string(),
                        }),
                )
                .await?;
                let signature = wallet
                    .sign_message_sync(challenge.message.as_bytes())
                    .map_err(|e| SdkError::Signing(e.to_string()))?;
                answer::<SessionResponse>(http.post(format!("{base}/v1/auth/session")).json(
                    &SessionRequest {
                        nonce: challenge.nonce,
                        signature: format!(
                            "0x{}",
                            alloy_primitives::hex::encode(signature.as_bytes())
                        ),
                    },
                ))
                .await
            })
            .await?;
        Ok(self.session.insert(session))
    }

    /// Registers this wallet as a provider whose proxy listens on `port`; the answer holds the
    /// key to give the proxy (the same on every call).
    pub async fn register_provider(&self, port: u16) -> Result<ProviderRegistered, SdkError> {
        self.send(
            Method::POST,
            "/v1/providers",
            Some(&ProviderBody {
                port,
                relayed: false,
            }),
            true,
        )
        .await
    }

    /// Registers this wallet as a provider behind NAT, serving through the node's relay; the
    /// answer holds the key to give the proxy.
    pub async fn register_relayed_provider(&self) -> Result<ProviderRegistered, SdkError> {
        self.send(
            Method::POST,
            "/v1/providers",
            Some(&ProviderBody {
                port: 0,
                relayed: true,
            }),
            true,
        )
        .await
    }

    /// Where the node's relay is and a fresh ticket for it (relayed providers).
    pub async fn relay_access(&self) -> Result<RelayAccess, SdkError> {
        self.send::<(), _>(Method::POST, "/v1/relay/access", None, true)
            .await
    }

    /// Offers IPs.
    pub async fn place_offer(&self, offer: &OfferBody) -> Result<OfferPlaced, SdkError> {
        self.send(Method::POST, "/v1/offers", Some(offer), true)
            .await
    }

    /// Withdraws an offer's unleased IPs.
    pub async fn cancel_offer(&self, offer: u64) -> Result<OfferCancelled, SdkError> {
        self.send::<(), _>(Method::DELETE, &format!("/v1/offers/{offer}"), None, true)
            .await
    }

    /// Leases IPs by filter, in one call; the deals carry the endpoints.
    pub async fn lease(&self, lease: &LeaseBody) -> Result<Leased, SdkError> {
        self.send(Method::POST, "/v1/leases", Some(lease), true)
            .await
    }

    /// This wallet's deals, as provider or requester.
    pub async fn deals(&self) -> Result<Vec<LeaseView>, SdkError> {
        self.all_deals(DealsQuery::default()).await
    }

    /// Every deal `query` selects (its `cursor` is where to start), following the pages.
    pub async fn all_deals(&self, mut query: DealsQuery) -> Result<Vec<LeaseView>, SdkError> {
        let mut deals = Vec::new();
        loop {
            let page = self.deals_page(&query).await?;
            deals.extend(page.deals);
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => return Ok(deals),
            }
        }
    }

    /// One page of the wallet's deals (`GET /v1/deals`); pass its `next` as the next query's
    /// `cursor`.
    pub async fn deals_page(&self, query: &DealsQuery) -> Result<Deals, SdkError> {
        self.failing_over(true, |base| async move {
            answer(
                self.request(&base, Method::GET, "/v1/deals", true)?
                    .query(query),
            )
            .await
        })
        .await
    }

    /// A one-time login link that opens the node's dashboard signed in as this wallet.
    pub async fn login_link(&self) -> Result<LoginLink, SdkError> {
        self.send::<(), _>(Method::POST, "/v1/auth/link", None, true)
            .await
    }

    /// This wallet's offers still in the book.
    pub async fn offers(&self) -> Result<Offers, SdkError> {
        self.send::<(), _>(Method::GET, "/v1/offers", None, true)
            .await
    }

    /// One of this wallet's deals as the node tells it (`None`: not the caller's, or unknown).
    pub async fn deal(&self, deal: u64) -> Result<Option<DealView>, SdkError> {
        let query = DealsQuery {
            cursor: Some(deal.saturating_sub(1).to_string()),
            limit: Some(1),
            ..DealsQuery::default()
        };
        let page = self.deals_page(&query).await?;
        Ok(page
            .deals
            .into_iter()
            .map(|lease| lease.deal)
            .find(|view| view.deal == deal))
    }

    /// The deal's entries in the node's anchored deal book, with their Merkle proofs; check
    /// them with [`anchor::check`] before believing them.
    pub async fn deal_proofs(&self, deal: u64) -> Result<DealProofs, SdkError> {
        self.send::<(), _>(Method::GET, &format!("/v1/deals/{deal}/proofs"), None, true)
            .await
    }

    /// As provider: the deal's IPs are served.
    pub async fn ready(&self, deal: u64) -> Result<LeaseView, SdkError> {
        self.deal_action(deal, "ready").await
    }

    /// As provider: the deal cannot be served (its IPs are re-matched).
    pub async fn failed(&self, deal: u64) -> Result<LeaseView, SdkError> {
        self.deal_action(deal, "failed").await
    }

    /// As requester: ends the lease early.
    pub async fn cancel_deal(&self, deal: u64) -> Result<LeaseView, SdkError> {
        self.deal_action(deal, "cancel").await
    }

    /// Rates the other party of a finished deal, 1 to 5 stars.
    pub async fn rate(&self, deal: u64, score: u8) -> Result<LeaseView, SdkError> {
        self.send(
            Method::POST,
            &format!("/v1/deals/{deal}/rating"),
            Some(&RatingBody { score }),
            true,
        )
        .await
    }

    /// A wallet's record in the market.
    pub async fn profile(&self, wallet: Address) -> Result<ProfileView, SdkError> {
        self.send::<(), _>(Method::GET, &format!("/v1/profiles/{wallet}"), None, false)
            .await
    }

    /// This wallet's payment state on the node.
    pub async fn wallet(&self) -> Result<WalletView, SdkError> {
        self.send::<(), _>(Method::GET, "/v1/wallet", None, true)
            .await
    }

    /// Registers the channel this wallet opened to the node (see [`ensure_channel`]).
    pub async fn register_channel(&self, channel: u64) -> Result<ChannelView, SdkError> {
        self.send(
            Method::POST,
            "/v1/wallet/channel",
            Some(&ChannelBody { channel }),
            true,
        )
        .await
    }

    /// Opens this wallet's event stream (deals, lease terms, payments, cut-offs).
    pub async fn stream(&self) -> Result<EventStream, SdkError> {
        let session = self.session.as_ref().ok_or(SdkError::NotSignedIn)?;
        // In a paying cluster only the leader serves streams (it runs the payment hub): a
        // follower's refusal names it, and a node that is down is passed over.
        self.failing_over(true, |base| async move {
            EventStream::connect(&base, &session.token).await
        })
        .await
    }

    async fn deal_action(&self, deal: u64, action: &str) -> Result<LeaseView, SdkError> {
        self.send::<(), _>(
            Method::POST,
            &format!("/v1/deals/{deal}/{action}"),
            None,
            true,
        )
        .await
    }

    async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        signed: bool,
    ) -> Result<R, SdkError> {
        let idempotent = method == Method::GET;
        let method = &method;
        self.failing_over(idempotent, |base| async move {
            let mut request = self.request(&base, method.clone(), path, signed)?;
            if let Some(body) = body {
                request = request.json(body);
            }
            answer(request).await
        })
        .await
    }

    /// Runs `call` against the current node and, while it fails in a way another node can
    /// take (see [`failover`]), against the leader named or the next node, until
    /// `failover_within` passes.
    async fn failing_over<R, F>(
        &self,
        idempotent: bool,
        call: impl Fn(String) -> F,
    ) -> Result<R, SdkError>
    where
        F: std::future::Future<Output = Result<R, SdkError>>,
    {
        let deadline = tokio::time::Instant::now() + self.failover_within;
        let mut tried = 0;
        loop {
            let base = self.nodes.current();
            let error = match call(base.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(leader) = failover(&error, idempotent) else {
                return Err(error);
            };
            let named = leader.is_some();
            if (self.nodes.list.len() < 2 && !named) || tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tried += 1;
            if tried >= self.nodes.list.len().max(1) && !named {
                // Every node failed once: give the cluster a moment to elect a leader.
                tried = 0;
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            self.nodes.move_on(&base, leader);
        }
    }

    /// A call to `path` at `base`, with the session when `signed`.
    fn request(
        &self,
        base: &str,
        method: Method,
        path: &str,
        signed: bool,
    ) -> Result<reqwest::RequestBuilder, SdkError> {
        let mut request = self.http.request(method, format!("{base}{path}"));
        if signed {
            let session = self.session.as_ref().ok_or(SdkError::NotSignedIn)?;
            request = request.bearer_auth(&session.token);
        }
        Ok(request)
    }
}

impl Nodes {
    fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// After `failed` failed a call: the leader it named, or the node after it in the list.
    /// Another call that moved on already wins.
    fn move_on(&self, failed: &str, leader: Option<String>) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current != failed {
            return;
        }
        *current = match leader {
            Some(leader) => leader.trim_end_matches('/').to_owned(),
            None => {
                let at = self.list.iter().position(|node| node == failed);
                let next = at.map_or(0, |at| (at + 1) % self.list.len().max(1));
                self.list.get(next).cloned().unwrap_or_default()
            }
        };
    }
}

/// Whether another node may take a call that failed with `error`: `Some(leader)` when it may
/// (the leader named, if any), `None` when the error is the answer. A call that may have been
/// applied is tried again only if it is `idempotent`.
fn failover(error: &SdkError, idempotent: bool) -> Option<Option<String>> {
    match error {
        SdkError::Api {
            code: ErrorCode::NotLeader,
            leader,
            ..
        } => Some(leader.clone()),
        SdkError::Api {
            code: ErrorCode::Stopping | ErrorCode::ClusterUnreachable,
            ..
        } => Some(None),
        SdkError::Api {
            code: ErrorCode::EngineDown,
            ..
        } if idempotent => Some(None),
        SdkError::Transport(error) if error.is_connect() || idempotent => Some(None),
        // Only opening a stream fails over (`Client::stream`), and it changes nothing.
        SdkError::Stream(_) if idempotent => Some(None),
        _ => None,
    }
}

/// Sends a call and reads its answer, or the node's error.
async fn answer<R: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<R, SdkError> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(response.json().await?);
    }
    Err(api_error(status, response.json::<ErrorBody>().await.ok()))
}

pub(crate) fn api_error(status: StatusCode, body: Option<ErrorBody>) -> SdkError {
    let (code, message, leader) = match body {
        Some(body) => (body.error.code, body.error.message, body.error.leader),
        None => (
            ErrorCode::Unknown,
            format!("the node answered {status} without an error body"),
            None,
        ),
    };
    SdkError::Api {
        status: status.as_u16(),
        code,
        message,
        leader,
    }
}
