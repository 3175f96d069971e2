//! # ipsx-gateway — the IPSX node
//!
//! The node runs the matching engine, the payment hub and the chain client behind a network
//! API. Data flows: HTTP call ─► session and rate checks ─► engine command (journaled before the
//! answer) ─► answer; the feed follows the engine's output stream (every durable batch's
//! events), fixes lease terms as deals turn active and end, records finished deals in the
//! history and pushes events down each party's WebSocket; once a second it ticks the payment
//! hub and sends providers' proofs; requesters' proofs come up the same socket and are stored
//! before they count.
//!
//! * [`session`] — wallet sign-in in the EIP-4361 style: the node issues a challenge message
//!   with a single-use nonce, the wallet signs it with `personal_sign` (no key leaves it), the
//!   node recovers the signer and hands out a MACed session token it can check without a
//!   lookup.
//! * [`rate`] — per-session and per-IP token buckets (sans I/O, bounded memory).
//! * [`server`] — the axum HTTP server: `POST /v1/auth/challenge`, `POST /v1/auth/session`,
//!   `GET /v1/me`, `GET /v1/health`; body limit, JSON shape errors, bearer sessions and rate
//!   limits, every refusal an [`ApiError`] `{"error": {"code", "message"}}` with a 4xx status.
//!   The market: `POST /v1/providers` (a provider registers its proxy port and gets the key
//!   its proxy verifies credentials with), `POST /v1/offers`, `DELETE /v1/offers/{id}`,
//!   `POST /v1/leases` (N IPs with filters, answered with the deals, their IPs and, for the
//!   requester, `socks5h://` / `http://` endpoints with per-IP credentials), `GET /v1/deals`,
//!   `POST /v1/deals/{id}/ready|failed|cancel|rating`, `GET /v1/profiles/{address}`. Each
//!   command is acknowledged only once the engine's journal holds it (see [`market`]).
//! * [`metrics`] — Prometheus metrics at `GET /metrics`: calls by route and status, latency
//!   histograms, offers, lease requests, IPs leased, deals.
//! * [`history`] — finished deals on disk (`history.redb`), by party: `GET /v1/deals` pages
//!   through them after the engine's retention let them go (`?cursor=&limit=&status=&role=`
//!   `&since=&until=`).
//! * [`registry`] — the node's own redb store: providers' proxy keys, ports, and whether they
//!   serve through the relay.
//! * [`probe`] — before a direct provider's offer goes live, each IP is fetched through the
//!   provider's own proxy from the node's echo endpoint (`GET /v1/echo`) and must come back as
//!   the source address.
//! * [`relayed`] — providers behind NAT: the IP a relay observed is the only one they may
//!   offer; gone from it, their offers there are withdrawn and their deals there dropped.
//! * [`anchoring`] — with a `DealAnchor` ([`anchoring::AnchorConfig`]): every change of the
//!   deal book goes into an epoch logged in `anchor.redb`, each epoch's Merkle root is
//!   anchored on chain through the node's one sender, and `GET /v1/deals/{id}/proofs` gives a
//!   deal's parties its entries with their proofs.
//! * `dashboard` — the web dashboard at `/` (assets embedded) and the public market reads it
//!   draws: `GET /v1/market/depth`, `GET /v1/market/live` (server-sent events),
//!   `GET /v1/market/recent`; signed in (wallet, or `POST /v1/auth/link`'s one-time link), the
//!   caller's offers (`GET /v1/offers`), leases, earnings and channel.
//! * [`openapi`] — the OpenAPI document at `GET /openapi.json`, its schemas derived from the
//!   API types.
//! * [`payments`] — with a chain ([`PaymentsConfig`]): the hub, the proof store, the payment
//!   book and the chain client; `GET /v1/wallet`, `POST /v1/wallet/channel`, and
//!   `GET /v1/stream` (WebSocket: deal made, lease ready / ended with their terms, payment to
//!   providers, proof accepted, payment due, cut-off; requesters send `proof`).
//!
//! ```
//! use ipsx_gateway::session::{SignIn, SignInDomain, SignInLimits, parse_address};
//!
//! let domain = SignInDomain::for_url("http://127.0.0.1:7700", 31337).unwrap();
//! let sign_in = SignIn::new(domain, SignInLimits::default(), [42; 32]);
//! let address = parse_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap();
//! let challenge = sign_in.challenge(address, 1_700_000_000, [7; 8]);
//! assert!(challenge.message.starts_with("127.0.0.1:7700 wants you to sign in"));
//! assert!(challenge.message.contains("Chain ID: 31337"));
//! // The wallet signs `challenge.message`; `sign_in.complete(&challenge.nonce, &sig, now)`
//! // then returns the session whose token `sign_in.verify` accepts.
//! ```

pub mod anchoring;
mod cluster;
mod dashboard;
pub mod error;
mod feed;
pub mod history;
pub mod market;
pub mod metrics;
pub mod openapi;
pub mod payments;
pub mod probe;
pub mod rate;
pub mod registry;
pub mod relayed;
pub mod server;
pub mod session;
mod stream;

pub use error::ApiError;
pub use ipsx_engine::MIN_DEAL_RETENTION;
pub use payments::PaymentsConfig;
pub use probe::ProbeSettings;
pub use relayed::{PresenceHook, RelayInfo, RelaySettings};
pub use server::{GatewayConfig, GatewayError, GatewayHandle, start};
pub use session::{Challenge, Session, SessionError, SignIn, SignInDomain, SignInError};
