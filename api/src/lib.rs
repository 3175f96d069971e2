//! # ipsx-api — the IPSX node's HTTP API, as types
//!
//! The JSON bodies the node (`ipsx-gateway`) accepts and answers, shared with the SDK
//! (`ipsx-sdk`) and anyone writing a client: serde types only, no I/O, no engine. Field docs are
//! the API reference; errors come as [`ErrorBody`] with a stable `code`.
//!
//! ```
//! use ipsx_api::{LeaseBody, TokenAmount};
//!
//! let body: LeaseBody = serde_json::from_str(
//!     r#"{"count": 10, "countries": ["DE"], "protocols": ["socks5"], "duration": 60, "max_price": "5"}"#,
//! ).unwrap();
//! assert_eq!(body.max_price, TokenAmount(5));
//! ```

use std::net::{IpAddr, SocketAddr};

use alloy_primitives::Address;
use serde::{Deserialize, Deserializer, Serialize};

/// Every refusal: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`bad_signature`, `unknown_country`, `rate_limited`…).
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// With `not_leader`: the URL of the node that takes writes now, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// Every machine-readable error code the node answers with (in [`ErrorDetail::code`] and in
/// the stream's `error` event). Branch on these; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 409: the caller rated this deal already.
    AlreadyRated,
    /// 404: this node does not anchor its deal book.
    AnchoringDisabled,
    /// 400: not a 20-byte hex Ethereum address.
    BadAddress,
    /// 400: the channel is not open, not the caller's, or not to this node.
    BadChannel,
    /// 400: a cursor this node did not give.
    BadCursor,
    /// 400/422: the body is not JSON of the expected shape.
    BadJson,
    /// 400: a path parameter of the wrong shape.
    BadPath,
    /// 400: a balance proof that does not decode.
    BadProof,
    /// 400: a query string of the wrong shape.
    BadQuery,
    /// 401: a relay report not tagged with the relay key.
    BadRelayTag,
    /// 401: the signature does not verify.
    BadSignature,
    /// 413: the body is over the limit.
    BodyTooLarge,
    /// 502: the chain refused or could not be reached.
    ChainError,
    /// 400: the sign-in challenge expired.
    ChallengeExpired,
    /// 503: the cluster's shared values (NATS JetStream) cannot be reached for now.
    ClusterUnreachable,
    /// 409: the caller pays on another channel already.
    ChannelAlreadyRegistered,
    /// 402: register a payment channel first.
    ChannelRequired,
    /// 400/500: a time before the engine's clock.
    ClockWentBackwards,
    /// 503: the engine's writer stopped; the node is restarting.
    EngineDown,
    /// 500: the node failed (a disk error).
    Internal,
    /// 400: a field out of range or inconsistent.
    InvalidInput,
    /// 401: the session token does not verify.
    InvalidSession,
    /// 409: a relayed provider offered an IP the relay did not see it come from.
    IpNotObserved,
    /// 409: the offered IP did not prove itself through the provider's proxy.
    IpNotProven,
    /// 409: another provider offers or owns this IP.
    IpTaken,
    /// 415: send `Content-Type: application/json`.
    JsonRequired,
    /// 409: the lease cannot be metered (no payment channel).
    LeaseRefused,
    /// 500: the caller's address is unknown.
    NoPeer,
    /// 500: the node could not draw randomness.
    NoRandomness,
    /// 404: this node runs no relay.
    NoRelay,
    /// 503: the node cannot fund a provider channel.
    NodeUnderfunded,
    /// 409: the deal is not over yet.
    NotFinished,
    /// 404: no such endpoint.
    NotFound,
    /// 503: this node of a cluster follows another and takes no writes; `leader` names the
    /// node that does (retry there).
    NotLeader,
    /// 403: the caller is not a party allowed to do this.
    NotOwner,
    /// 409: the provider did not register as relayed.
    NotRelayed,
    /// 409: the deal was never served.
    NothingServed,
    /// 402: the caller owes the node for seconds it was served and is behind by more than the
    /// grace: pay what is owed (a proof on the event stream) before leasing again.
    PaymentOverdue,
    /// 400: this node runs without a chain.
    PaymentsDisabled,
    /// 409: the proof is lower than the last, over the deposit, or not signed by the caller.
    ProofRefused,
    /// 409: register the provider's proxy first.
    ProviderNotRegistered,
    /// 429: too many calls (see `Retry-After`).
    RateLimited,
    /// 409: the engine refused the command.
    Refused,
    /// 409: the relayed provider is not connected to the relay.
    RelayNotConnected,
    /// 409: a relay report seen before.
    ReplayedReport,
    /// 409: a party cannot rate itself.
    SelfRating,
    /// 401: the session expired; sign in again.
    SessionExpired,
    /// 401: `Authorization: Bearer <session>` is missing.
    SessionRequired,
    /// 409: a relay report too far from the node's clock.
    StaleReport,
    /// 503: the node is shutting down.
    Stopping,
    /// stream: send JSON text messages.
    TextRequired,
    /// 400: not an ISO 3166-1 alpha-2 country code.
    UnknownCountry,
    /// 404: no such deal (or it left the engine's memory).
    UnknownDeal,
    /// 400: no such sign-in challenge (or it was used).
    UnknownNonce,
    /// 404: no such offer.
    UnknownOffer,
    /// 404: no such request.
    UnknownRequest,
    /// 401: signed by another wallet than the one named.
    WrongSigner,
    /// A code this version does not know (a newer node).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name (`unknown_country`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyRated => "already_rated",
            Self::AnchoringDisabled => "anchoring_disabled",
            Self::BadAddress => "bad_address",
            Self::BadChannel => "bad_channel",
            Self::BadCursor => "bad_cursor",
            Self::BadJson => "bad_json",
            Self::BadPath => "bad_path",
            Self::BadProof => "bad_proof",
            Self::BadQuery => "bad_query",
            Self::BadRelayTag => "bad_relay_tag",
            Self::BadSignature => "bad_signature",
            Self::BodyTooLarge => "body_too_large",
            Self::ChainError => "chain_error",
            Self::ChallengeExpired => "challenge_expired",
            Self::ChannelAlreadyRegistered => "channel_already_registered",
            Self::ChannelRequired => "channel_required",
            Self::ClockWentBackwards => "clock_went_backwards",
            Self::EngineDown => "engine_down",
            Self::Internal => "internal",
            Self::InvalidInput => "invalid_input",
            Self::InvalidSession => "invalid_session",
            Self::IpNotObserved => "ip_not_observed",
            Self::IpNotProven => "ip_not_proven",
            Self::IpTaken => "ip_taken",
            Self::JsonRequired => "json_required",
            Self::LeaseRefused => "lease_refused",
            Self::NoPeer => "no_peer",
            Self::NoRandomness => "no_randomness",
            Self::NoRelay => "no_relay",
            Self::NodeUnderfunded => "node_underfunded",
            Self::NotFinished => "not_finished",
            Self::NotFound => "not_found",
            Self::NotOwner => "not_owner",
            Self::NotRelayed => "not_relayed",
            Self::NothingServed => "nothing_served",
            Self::PaymentOverdue => "payment_overdue",
            Self::PaymentsDisabled => "payments_disabled",
            Self::ProofRefused => "proof_refused",
            Self::ProviderNotRegistered => "provider_not_registered",
            Self::RateLimited => "rate_limited",
            Self::Refused => "refused",
            Self::RelayNotConnected => "relay_not_connected",
            Self::ReplayedReport => "replayed_report",
            Self::SelfRating => "self_rating",
            Self::SessionExpired => "session_expired",
            Self::SessionRequired => "session_required",
            Self::StaleReport => "stale_report",
            Self::Stopping => "stopping",
            Self::NotLeader => "not_leader",
            Self::ClusterUnreachable => "cluster_unreachable",
            Self::TextRequired => "text_required",
            Self::UnknownCountry => "unknown_country",
            Self::UnknownDeal => "unknown_deal",
            Self::UnknownNonce => "unknown_nonce",
            Self::UnknownOffer => "unknown_offer",
            Self::UnknownRequest => "unknown_request",
            Self::WrongSigner => "wrong_signer",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token amount in base units: a JSON number or a decimal string (amounts can exceed what
/// JavaScript numbers hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct TokenAmount(pub u128);

impl From<TokenAmount> for String {
    fn from(amount: TokenAmount) -> Self {
        amount.0.to_string()
    }
}

impl utoipa::PartialSchema for TokenAmount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "Token base units (10^-18 IPSX), as a decimal string; a JSON number is accepted",
            ))
            .examples(["1000000000000000"])
            .into()
    }
}

impl utoipa::ToSchema for TokenAmount {}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Number(n) => Ok(Self(u128::from(n))),
            Either::Text(text) => text.trim().parse().map(Self).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a whole number of base units"))
            }),
        }
    }
}

/// `POST /v1/offers`: IPs to lend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferBody {
    /// The IPs, listed (give this or `cidr`).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    /// A CIDR block, e.g. `203.0.113.0/28` (give this or `ips`).
    #[serde(default)]
    pub cidr: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Region, if said.
    #[serde(default)]
    pub region: Option<String>,
    /// City, if said.
    #[serde(default)]
    pub city: Option<String>,
    /// The announcing autonomous system.
    pub asn: u32,
    /// `residential`, `datacenter` or `mobile`.
    pub kind: IpKind,
    /// Protocols served: `http`, `https`, `socks5`, `smtp`, `vpn`.
    pub protocols: Vec<Protocol>,
    /// First available second (unix); default now.
    #[serde(default)]
    pub from: Option<u64>,
    /// First second no longer available (unix).
    pub until: u64,
    /// Shortest lease, seconds. Default 5.
    #[serde(default = "default_min_lease")]
    pub min_lease: u64,
    /// Longest lease, seconds. Default 30 days.
    #[serde(default = "default_max_lease")]
    pub max_lease: u64,
    /// Price per IP-second, base units.
    pub price: TokenAmount,
    /// Leases one IP may hold at once. Default 1 (exclusive).
    #[serde(default = "default_tenants")]
    pub tenants: u16,
}

/// `POST /v1/leases`: N IPs wanted now or later.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// How many IPs.
    pub count: u32,
    /// Countries accepted (ISO codes); empty = any.
    #[serde(default)]
    pub countries: Vec<String>,
    /// City required.
    #[serde(default)]
    pub city: Option<String>,
    /// Kinds accepted; empty = any.
    #[serde(default)]
    pub kinds: Vec<IpKind>,
    /// Protocols every IP must serve.
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    /// ASNs accepted; empty = any.
    #[serde(default)]
    pub asn_include: Vec<u32>,
    /// ASNs refused.
    #[serde(default)]
    pub asn_exclude: Vec<u32>,
    /// Minimum provider rating in hundredths of a star (450 = 4.5).
    #[serde(default)]
    pub min_rating: Option<u16>,
    /// Minimum uptime of the provider's relay connection, in basis points (9,900 = 99 %), as
    /// the node's relay measures it; providers never relayed do not pass a minimum.
    #[serde(default)]
    pub min_uptime: Option<u16>,
    /// At most one IP per /24 (v4) or /48 (v6).
    #[serde(default)]
    pub distinct_subnets: bool,
    /// Start (unix); default at the match.
    #[serde(default)]
    pub start: Option<u64>,
    /// Seconds each lease lasts (5 s … 30 days).
    pub duration: u64,
    /// Highest price per IP-second accepted.
    pub max_price: TokenAmount,
    /// `ioc` (default: take what is there), `fok` (all or nothing) or `gtc` (rest waits).
    #[serde(default)]
    pub mode: Option<LeaseMode>,
    /// For `gtc`: when the rest leaves the book (unix).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// A deal as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct DealView {
    /// The deal id (also the lease id in credentials).
    pub deal: u64,
    /// The request it fills.
    pub request: u64,
    /// The offer it takes from.
    pub offer: u64,
    /// Who serves.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub provider: Address,
    /// Who pays.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub requester: Address,
    /// The leased IPs.
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    /// First leased second (unix).
    pub start: u64,
    /// First second after the lease.
    pub end: u64,
    /// Price per IP-second.
    pub price: TokenAmount,
    /// What the leased IPs carry (the offer's protocols when the deal was made).
    pub protocols: Vec<Protocol>,
    /// Where the deal stands.
    pub status: DealStatus,
    /// The second a deal that ended early stopped accruing (a cancel, a cut, a void).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
}

/// Where a deal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealStatus {
    /// Matched; the provider has not reported ready yet.
    Pending,
    /// The provider serves, the requester pays.
    Active,
    /// Ran to its end.
    Completed,
    /// The provider never served; its IPs were matched again.
    Voided,
    /// The requester ended it early.
    Cancelled,
    /// The requester stopped paying and was cut off.
    PaymentLapsed,
    /// The provider stopped serving mid-lease.
    ProviderDropped,
}

impl DealStatus {
    /// The status's code in the deal anchor's `Ended` entries (`outcome`).
    pub fn anchor_outcome(self) -> u8 {
        match self {
            DealStatus::Pending => 0,
            DealStatus::Active => 1,
            DealStatus::Completed => 2,
            DealStatus::Voided => 3,
            DealStatus::Cancelled => 4,
            DealStatus::PaymentLapsed => 5,
            DealStatus::ProviderDropped => 6,
        }
    }

    /// Whether the deal is over (nothing moves it any more).
    pub fn is_over(self) -> bool {
        !matches!(self, Self::Pending | Self::Active)
    }

    /// The wire name (`payment_lapsed`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Voided => "voided",
            Self::Cancelled => "cancelled",
            Self::PaymentLapsed => "payment_lapsed",
            Self::ProviderDropped => "provider_dropped",
        }
    }
}

impl std::fmt::Display for DealStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a lease stopped accruing, as the event stream says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEnd {
    /// Ran to its end.
    Completed,
    /// The provider never served.
    Voided,
    /// The requester ended it early.
    Cancelled,
    /// The requester stopped paying.
    PaymentLapsed,
    /// The provider stopped serving.
    ProviderDropped,
    /// Replayed to a stream that just connected: over, for a reason told earlier.
    Ended,
}

impl LeaseEnd {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Voided => "voided",
            Self::Cancelled => "cancelled",
            Self::PaymentLapsed => "payment_lapsed",
            Self::ProviderDropped => "provider_dropped",
            Self::Ended => "ended",
        }
    }
}

impl From<DealStatus> for LeaseEnd {
    /// A finished deal's reason (a deal still pending or active has none: `Ended`).
    fn from(status: DealStatus) -> Self {
        match status {
            DealStatus::Completed => Self::Completed,
            DealStatus::Voided => Self::Voided,
            DealStatus::Cancelled => Self::Cancelled,
            DealStatus::PaymentLapsed => Self::PaymentLapsed,
            DealStatus::ProviderDropped => Self::ProviderDropped,
            DealStatus::Pending | DealStatus::Active => Self::Ended,
        }
    }
}

impl std::fmt::Display for LeaseEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol a leased IP carries (read in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP forwarding through the proxy.
    Http,
    /// HTTPS through `CONNECT` tunnels.
    Https,
    /// SOCKS5 (TCP `CONNECT`).
    Socks5,
    /// Outbound mail ports (25, 465, 587).
    Smtp,
    /// UDP (SOCKS5 `UDP ASSOCIATE`) for VPN-like use.
    Vpn,
}

/// What kind of IP an offer holds (read in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpKind {
    /// A home connection's IP.
    Residential,
    /// A data centre's IP.
    Datacenter,
    /// A mobile carrier's IP.
    Mobile,
}

/// How a lease request takes what the book holds (read in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeaseMode {
    /// Immediate or cancel: what is there now, the rest dropped.
    Ioc,
    /// Fill or kill: all `count` IPs or none.
    Fok,
    /// Good till cancelled: what is there now, the rest rests in the book until `expires_at`.
    Gtc,
}

/// Enums named by lowercase words on the wire.
trait Named: Sized + Copy + 'static {
    const ALL: &'static [Self];
    const WHAT: &'static str;
    fn name(self) -> &'static str;
}

macro_rules! named {
    ($type:ty, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl Named for $type {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            const WHAT: &'static str = $what;
            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl $type {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                self.name()
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;

            /// Any case; the error lists the names there are.
            fn from_str(word: &str) -> Result<Self, String> {
                parse_named(word)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = String::deserialize(deserializer)?;
                parse_named(&word).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn parse_named<T: Named>(word: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .copied()
        .find(|value| value.name().eq_ignore_ascii_case(word.trim()))
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|value| value.name()).collect();
            format!("unknown {} {word:?} ({})", T::WHAT, names.join(", "))
        })
}

named!(Protocol, "protocol", [Http => "http", Https => "https", Socks5 => "socks5", Smtp => "smtp", Vpn => "vpn"]);
named!(IpKind, "IP kind", [Residential => "residential", Datacenter => "datacenter", Mobile => "mobile"]);
named!(LeaseMode, "mode", [Ioc => "ioc", Fok => "fok", Gtc => "gtc"]);

fn default_min_lease() -> u64 {
    5
}

fn default_max_lease() -> u64 {
    30 * 24 * 3600
}

fn default_tenants() -> u16 {
    1
}

/// How a requester's connections reach a provider's proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Straight to the proxy listening on the leased IP.
    Direct,
    /// Through the node's relay, to a provider behind NAT that dialled out to it.
    Relay,
}

/// One leased IP's endpoint, as a requester points a client at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// The leased IP: what destinations see.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// Where to connect: the provider's proxy on the leased IP, or a relay.
    #[schema(value_type = String, example = "203.0.113.7:1080")]
    pub proxy: SocketAddr,
    /// The port of `proxy`.
    pub port: u16,
    /// Direct, or through a relay.
    pub via: Via,
    /// Lease id (the deal's).
    pub username: String,
    /// The lease secret.
    pub password: String,
    /// `socks5h://user:pass@ip:port`, when the lease includes SOCKS5.
    pub socks5h: Option<String>,
    /// `http://user:pass@ip:port`, when the lease includes HTTP or HTTPS.
    pub http: Option<String>,
}

/// `POST /v1/auth/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The wallet address that will sign (`0x…`, any case).
    pub address: String,
}

/// The answer to [`ChallengeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ChallengeResponse {
    /// Names the challenge in [`SessionRequest`].
    pub nonce: String,
    /// The exact EIP-4361 text to sign with `personal_sign`.
    pub message: String,
    /// Last second it may be answered (unix).
    pub expires_at: u64,
}

/// `POST /v1/auth/session`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// From [`ChallengeResponse`].
    pub nonce: String,
    /// The 65-byte `personal_sign` signature, hex (`0x…`).
    pub signature: String,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Whose session it is.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub address: Address,
    /// First second it is no longer valid (unix).
    pub expires_at: u64,
}

/// `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    /// The signed-in address.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub address: Address,
}

/// The answer to `POST /v1/offers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OfferPlaced {
    /// The new offer's id.
    pub offer: u64,
    /// How many IPs it holds.
    pub ips: u32,
}

/// The answer to `DELETE /v1/offers/{offer}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OfferCancelled {
    /// The offer.
    pub offer: u64,
}

/// A deal with, for its requester, the endpoints to point clients at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LeaseView {
    /// The deal.
    #[serde(flatten)]
    pub deal: DealView,
    /// One per leased IP (empty for the provider's view, or if the provider has not
    /// registered its proxy).
    pub endpoints: Vec<Endpoint>,
}

/// The answer to `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Leased {
    /// The request's id.
    pub request: u64,
    /// IPs leased now.
    pub leased: u32,
    /// The deals made, with their IPs and endpoints.
    pub deals: Vec<LeaseView>,
}

/// The answer to `GET /v1/deals`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Deals {
    /// The caller's deals, as provider or requester, oldest first.
    pub deals: Vec<LeaseView>,
    /// Pass as `cursor` for the next page; absent on the last one. A page may hold fewer
    /// than `limit` deals and still have a next one (a filter skipped many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which side of its deals a caller lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Deals it serves.
    Provider,
    /// Deals it pays for.
    Requester,
}

/// The query of `GET /v1/deals`: a page of the caller's deals, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DealsQuery {
    /// Where the previous page stopped (its `next`).
    pub cursor: Option<String>,
    /// Most deals in the page, 1 to 1,000 [default: 100].
    pub limit: Option<u32>,
    /// Only deals in these statuses, comma-separated (`pending,active`).
    pub status: Option<String>,
    /// Only deals the caller is this side of.
    pub role: Option<Role>,
    /// Only leases starting at or after this second (unix).
    pub since: Option<u64>,
    /// Only leases starting before this second (unix).
    pub until: Option<u64>,
}

impl DealsQuery {
    /// Most deals a page may hold.
    pub const MAX_LIMIT: u32 = 1_000;
    /// Deals in a page unless `limit` says otherwise.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// The statuses asked for (empty: any), or the first word that is not one.
    pub fn statuses(&self) -> Result<Vec<DealStatus>, String> {
        let Some(list) = &self.status else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(str::trim)
            .filter(|word| !word.is_empty())
            .map(|word| {
                use serde::de::IntoDeserializer;
                let word: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                    word.into_deserializer();
                DealStatus::deserialize(word).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// The deal id the page starts after (0: the first page), or `None` if the cursor is not
    /// one this node gave.
    pub fn after(&self) -> Option<u64> {
        self.cursor.as_deref().map_or(Some(0), |c| c.parse().ok())
    }
}

/// `POST /v1/providers`: a provider registers its proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// The port its proxy listens on, on every IP it offers (0 when `relayed`: requesters
    /// then reach it through the relay).
    pub port: u16,
    /// Behind NAT: it serves through the node's relay and may offer only the public IP the
    /// relay sees it connect from.
    #[serde(default)]
    pub relayed: bool,
}

/// `GET /v1/echo`: where a request came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Echo {
    /// The caller's address as the node sees it.
    #[schema(value_type = String)]
    pub ip: IpAddr,
}

/// A relay as providers and requesters reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RelayView {
    /// Where providers dial (QUIC).
    #[schema(value_type = String, example = "203.0.113.1:4433")]
    pub providers: SocketAddr,
    /// Where requesters connect (SOCKS5 / HTTP).
    #[schema(value_type = String, example = "203.0.113.1:1081")]
    pub requesters: SocketAddr,
    /// Its certificate (DER, hex), which providers pin.
    pub certificate: String,
}

/// A relayed provider arrived at or left a public IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PresenceChange {
    /// The provider.
    #[schema(value_type = String)]
    pub provider: Address,
    /// Its public IP, as the relay sees it.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// True: connected from `ip`; false: gone from it (past its grace, or moved).
    pub present: bool,
}

/// One provider's measures in a relay's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ProviderQuality {
    /// The provider.
    #[schema(value_type = String)]
    pub provider: Address,
    /// What the relay measures of it.
    pub quality: RelayQuality,
}

/// `POST /v1/relays/report`: what a relay run apart from the node tells it, tagged with the
/// relay key (header `x-ipsx-relay-tag`). Also its heartbeat (every 10 s).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayReport {
    /// The relay.
    pub relay: RelayView,
    /// Grows with every report of this relay (a replay is refused).
    pub seq: u64,
    /// When it was sent (unix seconds; more than 30 s off is refused).
    pub sent_at: u64,
    /// Presence changes, in order.
    pub changes: Vec<PresenceChange>,
    /// Measures of the providers it has seen.
    pub quality: Vec<ProviderQuality>,
}

/// The answer to a [`RelayReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ReportTaken {
    /// Changes applied.
    pub changes: u32,
}

/// `POST /v1/relay/access`: what a relayed provider's daemon needs to dial the relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RelayAccess {
    /// The relay's QUIC address.
    #[schema(value_type = String, example = "203.0.113.1:4433")]
    pub relay: SocketAddr,
    /// The relay's certificate (DER, hex): the only one to trust.
    pub certificate: String,
    /// Names this provider to the relay; present it in the hello.
    pub ticket: String,
    /// First second the ticket is no longer valid (unix).
    pub expires_at: u64,
}

/// The answer: the key the provider's proxy verifies lease credentials with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ProviderRegistered {
    /// The provider.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub provider: Address,
    /// Its proxy port.
    pub port: u16,
    /// Whether it serves through the relay.
    #[serde(default)]
    pub relayed: bool,
    /// 64 hex digits; give it to `ipsx-proxy serve --key-file`. The same on every call.
    pub proxy_key: String,
}

/// `POST /v1/deals/{deal}/rating`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatingBody {
    /// 1 to 5 stars for the other party.
    pub score: u8,
}

/// `GET /v1/profiles/{address}`: a wallet's record in the market.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    /// The wallet.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub address: Address,
    /// Deals made as a provider.
    pub deals_as_provider: u64,
    /// Deals made as a requester.
    pub deals_as_requester: u64,
    /// Deals that ran to their end.
    pub completed: u64,
    /// Deals voided because, as provider, it never served.
    pub no_shows: u64,
    /// Deals it dropped as provider.
    pub dropped: u64,
    /// Deals where it stopped paying.
    pub lapsed: u64,
    /// Deals it ended early.
    pub cancelled: u64,
    /// Ratings received (only served deals can be rated).
    pub ratings_received: u64,
    /// What the rated deals' served parts cost in all: each rating weighs that much.
    pub rated_value: TokenAmount,
    /// Average stars received in hundredths (450 = 4.5), if rated: weighted by what each rated
    /// deal cost and starting from 3 stars worth the node's rating prior — what `min_rating`
    /// filters compare with.
    pub average_rating: Option<u16>,
    /// As a relayed provider: the uptime `min_uptime` filters compare with (basis points, as
    /// last noted by the node).
    #[serde(default)]
    pub uptime: Option<u16>,
    /// As a relayed provider: what the node's relay measures now.
    #[serde(default)]
    pub relay: Option<RelayQuality>,
}

/// What the node's relay measures of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RelayQuality {
    /// Share of time connected since the relay first saw it, basis points.
    pub uptime: u16,
    /// Whether it is connected now.
    pub connected: bool,
    /// Seconds the current connection has been up.
    pub connected_secs: Option<u64>,
    /// The current connection's smoothed round-trip time, milliseconds.
    pub rtt_ms: Option<u64>,
    /// Requester streams opened to the current connection.
    pub streams: u64,
    /// Of those, the ones it did not take.
    pub failed_streams: u64,
}

impl LeaseBody {
    /// `count` IPs for `duration` seconds at most `max_price` per IP-second, anywhere, taking
    /// what is there now (`ioc`). Narrow it with the methods below.
    pub fn new(count: u32, duration: u64, max_price: TokenAmount) -> Self {
        Self {
            count,
            countries: Vec::new(),
            city: None,
            kinds: Vec::new(),
            protocols: Vec::new(),
            asn_include: Vec::new(),
            asn_exclude: Vec::new(),
            min_rating: None,
            min_uptime: None,
            distinct_subnets: false,
            start: None,
            duration,
            max_price,
            mode: None,
            expires_at: None,
        }
    }

    /// Only these countries (ISO codes).
    pub fn countries<S: Into<String>>(mut self, codes: impl IntoIterator<Item = S>) -> Self {
        self.countries = codes.into_iter().map(Into::into).collect();
        self
    }

    /// Every IP must serve these protocols.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = Protocol>) -> Self {
        self.protocols = protocols.into_iter().collect();
        self
    }

    /// Only these kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = IpKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Only providers whose relay connection was up at least `basis_points` of the time.
    pub fn min_uptime(mut self, basis_points: u16) -> Self {
        self.min_uptime = Some(basis_points);
        self
    }

    /// All `count` IPs or none.
    pub fn all_or_nothing(mut self) -> Self {
        self.mode = Some(LeaseMode::Fok);
        self
    }
}

impl OfferBody {
    /// `ips` in `country` (ISO code), of `kind`, serving `protocols`, available from now until
    /// `until` (unix) at `price` per IP-second; leases of 5 s to 30 days, one tenant per IP.
    pub fn new(
        ips: Vec<IpAddr>,
        country: &str,
        kind: IpKind,
        protocols: impl IntoIterator<Item = Protocol>,
        until: u64,
        price: TokenAmount,
    ) -> Self {
        Self {
            ips,
            cidr: None,
            country: country.to_owned(),
            region: None,
            city: None,
            asn: 0,
            kind,
            protocols: protocols.into_iter().collect(),
            from: None,
            until,
            min_lease: default_min_lease(),
            max_lease: default_max_lease(),
            price,
            tenants: default_tenants(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payments: wallet state and the event / proof stream

/// `GET /v1/wallet`: the caller's payment state on this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct WalletView {
    /// The signed-in wallet.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub address: Address,
    /// Where and how this node settles; `None` when it runs without a chain.
    pub payments: Option<PaymentsInfo>,
}

/// How a node settles, and the caller's channels with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PaymentsInfo {
    /// The chain the contract is on.
    pub chain_id: u64,
    /// The Centralizer contract (proofs are EIP-712 in its domain).
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub centralizer: Address,
    /// The IPSX token.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub token: Address,
    /// The node's address: requesters open their channel to it; it pays providers.
    #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
    pub node: Address,
    /// Seconds a requester may fall behind before its leases are cut.
    pub grace: u64,
    /// The caller's channel to the node (as a requester), once registered.
    pub inbound: Option<ChannelView>,
    /// The node's channel to the caller (as a provider), once opened.
    pub outbound: Option<ChannelView>,
}

/// One payment channel as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    /// The channel id on the contract.
    pub channel: u64,
    /// What the sender reserved for it.
    pub deposit: TokenAmount,
    /// The latest cumulative proof (received from a requester, or signed to a provider).
    pub amount: TokenAmount,
    /// What the leases on it have accrued by now.
    pub owed: TokenAmount,
    /// A requester's leases are paid through this second.
    pub paid_through: Option<u64>,
}

/// `POST /v1/wallet/channel`: a requester registers the channel it opened to the node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelBody {
    /// The channel id (`ChannelOpened` on the contract), sender = caller, receiver = node.
    pub channel: u64,
}

/// The payment terms of one lease: both ends meter exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LeaseTermsView {
    /// The deal (= lease id).
    pub deal: u64,
    /// First charged second (unix).
    pub start: u64,
    /// First second no longer charged.
    pub end: u64,
    /// Tokens per second for the whole lease (price per IP-second × IPs).
    pub rate: TokenAmount,
}

/// What the node pushes on `GET /v1/stream` (a WebSocket; JSON text messages tagged `type`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A deal of the caller was made (both parties); the provider reports ready next.
    DealMade {
        /// The deal.
        deal: DealView,
    },
    /// The provider is serving; payment runs on these terms (both parties).
    LeaseReady {
        /// The terms.
        terms: LeaseTermsView,
        /// Who serves.
        #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
        provider: Address,
        /// Who pays.
        #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
        requester: Address,
    },
    /// A lease stopped accruing at `terms.end` (both parties).
    LeaseEnded {
        /// The final terms.
        terms: LeaseTermsView,
        /// Why it ended (`ended` when replayed to a stream that just connected).
        status: LeaseEnd,
        /// Who served.
        #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
        provider: Address,
        /// Who paid.
        #[schema(value_type = String, example = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")]
        requester: Address,
    },
    /// First on a stream that just connected: what the caller's leases the node no longer
    /// lists one by one came to (ended, paid in full, the provider told). The `lease_ready` and
    /// `lease_ended` events that follow are the rest; cumulative totals start from these sums.
    Settled {
        /// As requester: what those leases cost.
        paid: TokenAmount,
        /// As provider: what they earned.
        earned: TokenAmount,
    },
    /// To a provider: the node's cumulative proof on its channel, and how far each lease is
    /// paid. Store it before counting it.
    Payment {
        /// 129-byte wire form of the signed proof, hex.
        proof: String,
        /// `(deal, paid through second)` for each lease whose paid-through moved.
        #[schema(value_type = Vec<Vec<u64>>)]
        paid_through: Vec<(u64, u64)>,
    },
    /// To a requester: its proof is stored and counted.
    ProofAccepted {
        /// The cumulative amount accepted.
        amount: TokenAmount,
        /// Its leases are paid through this second, counting this proof (up to the node's
        /// payment clock: paying ahead moves it no further).
        paid_through: Option<u64>,
    },
    /// To a requester behind on its payments: pay `owed` before `cut_at`.
    PaymentDue {
        /// What its leases have accrued by now.
        owed: TokenAmount,
        /// What it has paid.
        paid: TokenAmount,
        /// Its leases are cut if still behind after this second.
        cut_at: u64,
    },
    /// A lease was cut because its requester stopped paying (both parties).
    CutOff {
        /// The deal.
        deal: u64,
        /// The second it stopped accruing.
        at: u64,
    },
    /// A message from the client was refused; nothing changed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

/// What a client sends on `GET /v1/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamRequest {
    /// A requester's cumulative balance proof on its channel to the node (129 bytes, hex).
    Proof {
        /// The proof.
        proof: String,
    },
}

mod anchored;
pub use anchored::{AnchorEntryKind, AnchorEntryView, AnchoredEntry, DealProofs};

mod market;
pub use market::{
    ClaimsView, DepthLevelView, LinkSessionRequest, LoginLink, MarketDepthView, MarketTick,
    OfferView, Offers, RecentDeal, RecentDeals,
};

/// `GET /v1/cluster`: where this node stands in its cluster (public).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// This node's id in the cluster; `None` on a node that runs alone.
    pub node: Option<String>,
    /// Whether it takes writes.
    pub role: ClusterRole,
    /// The leader's term, while this node leads or catches up to lead.
    pub term: Option<u64>,
    /// The URL of the node that takes writes, when known (this node's own while it leads).
    pub leader: Option<String>,
    /// The last record of the market's log this node applied and made durable: followers
    /// that show the same number hold the same market.
    pub applied: u64,
}

/// A node's part in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// Runs alone: takes every call.
    Single,
    /// Applies the leader's records and serves reads; writes get `not_leader`.
    Following,
    /// Won the lease; applying the rest of the log before it takes writes.
    CatchingUp,
    /// Takes writes.
    Leading,
    /// Lost its place (lease lost, fenced off, log unreachable); it exits and is restarted.
    Stopped,
}
