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

/// A connection to one node, signed in or not.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<SessionResponse>,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_owned(),
            session: None,
        }
    }

    /// The session, once signed in.
    pub fn session(&self) -> Option<&SessionResponse> {
        self.session.as_ref()
    }

    /// Signs in with `wallet` (the key never leaves this process).
    pub async fn sign_in(&mut self, wallet: &Wallet) -> Result<&SessionResponse, SdkError> {
        let challenge: ChallengeResponse = self
            .send(
                Method::POST,
                "/v1/auth/challenge",
                Some(&ChallengeRequest {
                    address: wallet.address().to_string(),
                }),
                false,
            )
            .await?;
        let signature = wallet
            .sign_message_sync(challenge.message.as_bytes())
            .map_err(|e| SdkError::Signing(e.to_string()))?;
        let session: SessionResponse = self
            .send(
                Method::POST,
                "/v1/auth/session",
                Some(&SessionRequest {
                    nonce: challenge.nonce,
                    signature: format!("0x{}", alloy_primitives::hex::encode(signature.as_bytes())),
                }),
                false,
            )
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
        let request = self.request(Method::GET, "/v1/deals", true)?.query(query);
        answer(request).await
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
        EventStream::connect(&self.base, &session.token).await
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
        let mut request = self.request(method, path, signed)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request).await
    }

    /// A call to `path`, with the session when `signed`.
    fn request(
        &self,
        method: Method,
        path: &str,
        signed: bool,
    ) -> Result<reqwest::RequestBuilder, SdkError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if signed {
            let session = self.session.as_ref().ok_or(SdkError::NotSignedIn)?;
            request = request.bearer_auth(&session.token);
        }
        Ok(request)
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

fn api_error(status: StatusCode, body: Option<ErrorBody>) -> SdkError {
    let (code, message) = match body {
        Some(body) => (body.error.code, body.error.message),
        None => (
            ErrorCode::Unknown,
            format!("the node answered {status} without an error body"),
        ),
    };
    SdkError::Api {
        status: status.as_u16(),
        code,
        message,
    }
}
