//! What anyone may read of the market, signed in or not: its depth, a tick a second of its
//! flow, and recent deals with nothing that names a party or an IP. The node's dashboard draws
//! these; so can anybody else.

use serde::{Deserialize, Serialize};

use crate::{IpKind, Protocol, TokenAmount};

/// Unleased IPs at one price in one country, of one kind, serving one protocol (an IP serving
/// three protocols counts under each).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct DepthLevelView {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// A protocol they serve.
    pub protocol: Protocol,
    /// Their kind.
    pub kind: IpKind,
    /// Price per IP-second.
    pub price: TokenAmount,
    /// Unleased IPs.
    pub ips: u64,
}

/// `GET /v1/market/depth`: the book's depth, by country, protocol, kind, then price.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct MarketDepthView {
    /// The levels, cheapest first within each country, protocol and kind.
    pub levels: Vec<DepthLevelView>,
}

/// One second of `GET /v1/market/live` (server-sent events): the node's counters since it
/// started; the difference of two ticks is the flow in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct MarketTick {
    /// Unix seconds.
    pub at: u64,
    /// Deals made.
    pub deals_made: u64,
    /// IPs leased.
    pub ips_leased: u64,
    /// Lease requests answered.
    pub lease_requests: u64,
    /// Deals made and not over yet.
    pub open_deals: i64,
}

/// A deal as the public sees it: no party, no IP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RecentDeal {
    /// When the lease starts (unix seconds).
    pub start: u64,
    /// IPs leased.
    pub ips: u32,
    /// Seconds leased.
    pub seconds: u64,
    /// Price per IP-second.
    pub price: TokenAmount,
}

/// `GET /v1/market/recent`: the latest deals made, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RecentDeals {
    /// At most 50.
    pub deals: Vec<RecentDeal>,
}

/// `POST /v1/auth/link`: a one-time login link for the signed-in caller (`ipsx dashboard`
/// prints it): whoever opens it gets a session of the caller, once, before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LoginLink {
    /// The code: trade it with `POST /v1/auth/link/session`.
    pub code: String,
    /// The page that trades it (the code rides in the fragment, which browsers never send).
    pub url: String,
    /// First second it is no longer valid (unix).
    pub expires_at: u64,
}

/// `POST /v1/auth/link/session`: a login link's code, for a session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSessionRequest {
    /// The code from the link.
    pub code: String,
}

/// One of the caller's offers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OfferView {
    /// The offer.
    pub offer: u64,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The kind of its IPs.
    pub kind: IpKind,
    /// What they serve.
    pub protocols: Vec<Protocol>,
    /// Price per IP-second.
    pub price: TokenAmount,
    /// IPs listed.
    pub ips: u32,
    /// IPs no lease holds now.
    pub idle: u32,
    /// First second no longer available (unix).
    pub until: u64,
}

/// `GET /v1/offers`: the caller's offers still in the book.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Offers {
    /// By id.
    pub offers: Vec<OfferView>,
}

/// `GET /v1/wallet/claims`: the caller's channel from the node (as a provider) as the chain
/// holds it — what the provider has claimed on chain of what the node signed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ClaimsView {
    /// The channel.
    pub channel: u64,
    /// What the node reserved for it, on chain.
    pub deposit: TokenAmount,
    /// Claimed on chain so far (checkpoints and closes).
    pub claimed: TokenAmount,
    /// `open`, `closing` or `settled`.
    pub status: String,
    /// When the chain was read (unix seconds); reads are shared for a few seconds.
    pub read_at: u64,
}
