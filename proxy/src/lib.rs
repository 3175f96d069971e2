//! # ipsx-proxy — the provider's egress proxy
//!
//! A crawler is handed `socks5h://LEASE:SECRET@IP:PORT` (or `http://…`) for each leased IP and
//! points its usual client at it. This crate serves those endpoints on the provider's machine:
//!
//! ```text
//! client ──► listener on leased IP A ──► first byte 5? ──► SOCKS5 (RFC 1928/1929)
//!                                             │ else ──► HTTP proxy (CONNECT, absolute URI)
//!            credentials verified here (HMAC grant: lease, IP A, protocols, window)
//!            admit: protocol leased (SMTP ports need SMTP), lease not cut, caps
//!            destination resolved here → guard on every address → socket bound to A → connect
//!            relay: copy small exchanges, splice(2) bulk ones; meter bytes per lease;
//!            close on idle, lease end, cut, shutdown
//! ```
//!
//! * [`credentials`] — lease credentials (`username = lease id`, `password = grant ‖ HMAC tag`)
//!   the node issues and the proxy verifies locally, in constant time: IP, protocols, window.
//! * [`guard`] — the provider-network guard: loopback, RFC 1918, CGNAT, link-local and cloud
//!   metadata, this-network, multicast, broadcast, reserved and documentation ranges, IPv6
//!   equivalents and every IPv4-in-IPv6 form, judged on resolved addresses.
//! * [`server`] — [`start`] binds one listener per provider IP and serves SOCKS5 (CONNECT and
//!   UDP ASSOCIATE) and HTTP (CONNECT tunnels, plain `http://` forwarding) on the same port;
//!   refusals are SOCKS reply codes or HTTP statuses with an RFC 9209 `Proxy-Status`.
//! * [`leases`] — [`LeaseTable`]: per-lease usage (bytes each way, connections, first second)
//!   for the payments side, and [`LeaseTable::cut`], which refuses new connections and closes
//!   open ones at once.
//!
//! The binary `ipsx-proxy` runs it standalone (`serve`, `issue`); `scripts/bench-proxy.sh`
//! measures it against direct loopback, microsocks and dante.
//!
//! ```
//! use ipsx_proxy::credentials::{CredentialKey, Grant, Protocols};
//! use ipsx_proxy::guard::Guard;
//!
//! let key = CredentialKey::new([7; 32]);
//! let grant = Grant {
//!     lease: 42,
//!     ip: "127.0.0.2".parse().unwrap(),
//!     protocols: Protocols::SOCKS5,
//!     not_before: 100,
//!     not_after: 200,
//! };
//! let issued = key.issue(&grant);
//! let arrived_on = "127.0.0.2".parse().unwrap();
//! let verified = key.verify(issued.username.as_bytes(), issued.password.as_bytes(), arrived_on, 150);
//! assert_eq!(verified, Ok(grant));
//! assert!(Guard::default().check("169.254.169.254".parse().unwrap()).is_err());
//! ```

pub mod credentials;
mod egress;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz;
pub mod guard;
mod http;
pub mod leases;
mod refusal;
mod relay;
pub mod server;
mod socks5;
mod udp;

pub use credentials::{
    AuthError, BadKey, CredentialKey, Credentials, Grant, LeaseId, Protocols, UnknownProtocol,
};
pub use guard::{Guard, Guarded};
pub use leases::{LeaseTable, LeaseUsage};
pub use server::{ProxyConfig, ProxyHandle, start};
