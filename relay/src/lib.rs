//! # ipsx-relay — serving from behind NAT
//!
//! A home device has a private address behind its router's NAT: nobody can connect to it. So
//! the provider dials **out** to a relay over QUIC and keeps the connection open; each
//! requester connection to the relay becomes one stream down that connection, to the
//! provider's own proxy.
//!
//! ```text
//!  provider daemon ──QUIC, TLS 1.3 (pinned cert), keep-alive──► relay
//!     [link]  hello(ticket) ─────────────────────────────────►  ticket → provider address
//!             ◄──────────────────────── welcome(observed IP)    source address → its IP
//!                                                               node told first (on_change)
//!  requester ──TCP: SOCKS5 / HTTP, lease credentials──► relay [server]
//!             sniff credentials → seal + window (RelayKey) → route by the grant's IP
//!             ──► new stream on that provider's connection ──► provider's proxy (local port)
//!                 verifies with the provider's key, guard, meters, cuts; egress from its IP
//! ```
//!
//! * [`wire`] — the control stream's messages and typed refusals.
//! * [`presence`] — sans-I/O: which provider holds which public IP, the grace after a drop,
//!   a renewed home IP; emits [`Change`]s the node turns into withdrawn offers and dropped deals.
//! * [`sniff`] — sans-I/O: the first SOCKS5 / HTTP bytes, just far enough to find credentials.
//! * [`server`] — the relay ([`start`]): limits per provider and per requester, quality
//!   measures ([`Quality`]).
//! * [`link`] — the provider's side ([`Link`], [`run`] with reconnect and back-off).
//! * [`tls`] — the relay's identity and both ends' QUIC settings.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ipsx_relay::{Change, Presence};
//!
//! let mut presence = Presence::new(Duration::from_secs(10));
//! let (provider, home) = ([7; 20], "203.0.113.7".parse().unwrap());
//! let t0 = Instant::now();
//! assert_eq!(presence.arrive(provider, home, 1, t0), Ok(vec![Change::Up { provider, ip: home }]));
//! presence.leave(provider, 1, t0);
//! assert_eq!(presence.expire(t0 + Duration::from_secs(10)), vec![Change::Gone { provider, ip: home }]);
//! ```

pub mod link;
pub mod presence;
pub mod server;
pub mod sniff;
pub mod tls;
pub mod wire;

pub use ipsx_credentials::{RelayKey, TicketError};
pub use link::{Access, Link, LinkConfig, LinkError, Welcomed, run};
pub use presence::{Change, Presence, Provider};
pub use server::{
    ConnectionQuality, OnChange, Quality, RelayConfig, RelayHandle, StartError, start,
};
pub use tls::Identity;
