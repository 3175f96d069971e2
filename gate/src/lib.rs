//! # ipsx-gate — one proxy address for a crawler fleet
//!
//! The gate runs on the fleet's side, next to its crawlers, with the fleet's wallet (the key
//! never leaves the fleet). Crawlers point at one local port, as they would at any
//! residential-proxy service, and write what they want in the username; the gate leases the
//! IPs on the node, pays for them every second, spreads or pins requests over them, and
//! retries on another IP when one fails.
//!
//! ```text
//! crawler ── http://fleet-country-de-session-7:pw@127.0.0.1:24000 ──► gate
//!   gate: username → Target (filter + stickiness)             [target]
//!         Pools::pick → exit │ wait for a batch lease │ refuse [pool, control]
//!         exit = the provider's proxy on the leased IP, lease credentials   [upstream]
//!         http:// forwarded over kept-alive exit connections; CONNECT / SOCKS5 tunnelled
//!         exit failed → another exit (non-sticky) │ 502 session_gone (sticky)  [refusal]
//!   ledger task: one signature a second for everything held; cancels; the node's events
//! ```
//!
//! * [`target`] — the username/password grammar (`country`, `city`, `asn`, `kind`,
//!   `session`, `sesstime`, `rotate`, `minrating`, `maxprice`).
//! * [`pool`] — the sans-I/O exit pool: warm pools per filter, sessions, rotation, renewals,
//!   limits (IPs held, spend per minute, price), exit quality.
//! * [`refusal`] — the gate's own answers: stable codes, `Proxy-Status` (RFC 9209).
//! * [`start`] runs it: the listener (HTTP proxy and SOCKS5 on one port), the ledger, the
//!   pool's clock and, on a port of its own, `/metrics`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ipsx_gate::{GateConfig, PoolConfig};
//! use ipsx_sdk::{Client, Wallet};
//!
//! let wallet: Wallet = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse()?;
//! let mut node = Client::new("http://127.0.0.1:7700");
//! node.sign_in(&wallet).await?;
//! ipsx_sdk::ensure_channel(&node, &wallet, "http://127.0.0.1:8545", 100 * 10u128.pow(18)).await?;
//! // With the wallet it pays every second (and connects again if the node restarts).
//! let gate = ipsx_gate::start(GateConfig::new(PoolConfig::default()), node, Some(wallet)).await?;
//! // curl -x http://fleet-country-de:x@127.0.0.1:24000 http://example.com/
//! println!("crawl through http://{}", gate.addr);
//! let paid = gate.shutdown().await; // cancels every lease, pays up to their end
//! # let _ = paid; Ok(()) }
//! ```

mod control;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz;
pub mod metrics;
pub mod pool;
pub mod refusal;
mod server;
pub mod target;
mod upstream;

pub use control::{GateConfig, GateHandle, Snapshot, start};
pub use pool::PoolConfig;
pub use refusal::GateError;
pub use target::{Filter, Stickiness, Target};
