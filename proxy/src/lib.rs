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
//! Still to come: the SOCKS5 / HTTP listeners, bind-before-connect egress, metering, cut-off
//! and the peer benchmarks.
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
pub mod guard;
