//! # ipsx-proxy — the provider's egress proxy (in progress, issue 5)
//!
//! The parts built so far, each usable and tested on its own:
//!
//! * [`credentials`] — lease credentials (`username = lease id`, `password = grant ‖ HMAC tag`)
//!   the node issues and the proxy verifies locally in constant time: IP, protocols, window.
//! * [`guard`] — the provider-network guard: loopback, RFC 1918, CGNAT, link-local and cloud
//!   metadata, this-network, multicast, broadcast, reserved and documentation ranges, IPv6
//!   equivalents and every IPv4-in-IPv6 form, judged on resolved addresses.
//!
//! * [`server`] — SOCKS5 (RFC 1928) CONNECT with username/password (RFC 1929): one listener per
//!   provider IP, credentials checked against the IP the client came in on, destinations
//!   resolved here and guarded after resolution, egress bound to the leased IP before connect,
//!   bytes metered per lease ([`LeaseTable::usage`]), [`LeaseTable::cut`] closing a lease's
//!   connections at once, handshake timeout, connection caps.
//!
//! Still to come (issue 5): HTTP proxy (CONNECT and absolute URI) on the same port, UDP
//! ASSOCIATE, idle timeout, zero-copy relaying, the peer benchmarks.
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
