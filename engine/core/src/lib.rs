//! # ipsx-engine — the IPSX matching engine
//!
//! A deterministic, sans-I/O state machine that holds the exchange's order book and deal book.
//! Providers place **offers** (IPs with country, city, ASN, kind, protocols, availability
//! window, lease bounds, price per IP-second, tenants per IP) into the Offer Orders List;
//! requesters submit **requests** (N IPs with filters, start, duration, max price, IOC / FOK /
//! GTC) which are matched at once and, for GTC, rest in the Request Orders List to fill as
//! capacity appears. Each match books the IPs in their per-IP calendars and records a **deal**
//! that then follows the **agreement protocol**; finished deals feed **profiles** (ratings,
//! outcome counts) that later requests filter on. **Market depth** is kept up to date as
//! offers change.
//!
//! ## Data flow
//!
//! ```text
//!  Command { at, kind } ──► Engine::apply ──► Vec<Event>
//!                              │
//!        1. shape checks (no state touched on error)
//!        2. clock moves to `at`: due timers fire (ready deadlines, lease ends,
//!           GTC expiries, offer windows), resting requests retry freed capacity
//!        3. the command runs (state checks first, then changes)
//!        4. resting requests retry capacity the command freed
//! ```
//!
//! [`Engine::apply_deferring`] runs the same commands without step 2's burst: a second in
//! which many leases end is deferred whole and its ends settle as the matcher, a command or
//! [`Engine::settle`] looks at them — the same deals, each deal's events in the same order, and
//! once [`Engine::settle_all`] has run, the same state.
//!
//! The engine never reads a clock, draws a random number or iterates a hash map: the same
//! commands give the same events and the same [`Engine::state_hash`]. Queues, the journal and
//! snapshots on disk live in `ipsx-engine-runtime`, around this crate.
//!
//! A snapshot need not stop the engine: [`Engine::freeze`] returns a [`FrozenState`] that shares
//! the engine's records copy-on-write (a reference per chunk of records: ~2 ms for a book of
//! 1.5 M deals), and another thread turns it into the canonical [`Snapshot`] while the engine
//! goes on.
//!
//! An engine that grows fast (a replay) can take the empty record chunks it grows into from
//! another thread ([`Engine::stock_order`], [`StockOrder::build`], [`Engine::restock`]), which
//! then pays their first-touch page faults instead of the engine's thread.
//!
//! ## Matching rules
//!
//! * An IP is eligible when its offer passes every filter (country, city, ASN include/exclude,
//!   kind, protocols, provider rating), its price is at most the request's maximum, its window
//!   covers the lease and the lease length is within the offer's bounds, and its calendar keeps
//!   every second of the lease at or under the offer's tenant cap.
//! * Cheapest offer first, then oldest offer (smallest id). Inside an offer, IPs without any
//!   booking first, then booked IPs free over the lease, each in the order the provider listed
//!   them. With `distinct_subnets`, an IP whose /24 (IPv4) or /48 (IPv6) the request already
//!   holds is skipped.
//! * One request may fill across many offers: one deal per offer, at that offer's price.
//! * IOC keeps what was there; FOK takes all N or nothing; GTC keeps the rest in the book until
//!   its expiry (a GTC with a fixed start leaves the book once that start has passed). Resting
//!   requests fill by highest maximum price, then age.
//! * Requests filtering on exactly one country walk that country's index; others walk the
//!   global index. Offers whose every IP is booked without gaps sit in a separate index keyed
//!   by when they free up, so full offers cost nothing to requests they cannot serve.
//!
//! ## Agreement protocol
//!
//! A deal's status is a function of the provider's status and the requester's status
//! ([`agreement::deal_status`]); inputs move those ([`agreement::transition`]):
//!
//! | deal status | input | provider → | requester → | new status |
//! |---|---|---|---|---|
//! | Pending | `ProviderReady` | Ready | — | Active |
//! | Pending | `ProviderFailed` | NoShow | — | Voided, IPs re-matched |
//! | Pending | `ReadyTimeout` (auto, at start + `ready_timeout`, or end if sooner) | NoShow | — | Voided, IPs re-matched |
//! | Pending | `RequesterCancel` | — | Cancelled | Cancelled |
//! | Active | `EndReached` (auto, at end) | Done | Done | Completed |
//! | Active | `PaymentLapsed` (from the payments side) | — | Lapsed | PaymentLapsed |
//! | Active | `ProviderFailed` | Dropped | — | ProviderDropped |
//! | Active | `RequesterCancel` | — | Cancelled | Cancelled |
//! | any other pair | | | | [`EngineError::IllegalTransition`] |
//!
//! Every change is an [`Event::DealStatusChanged`]. A terminal status releases the deal's IPs
//! from their calendars. A deal closes at the command's second, except a cut-off, which
//! closes where the payments side stopped billing it (`PaymentLapsed { at }`), so what a deal
//! served ([`Deal::served_value`]) is what was billed. A voided deal's IPs are re-matched for the rest of the lease with the
//! request's filters, never again from the provider that failed. A wallet is never matched
//! with its own offers. Parties rate each other (1–5) once a deal is terminal and was served;
//! each rating weighs what the deal's served part cost, on top of a neutral prior
//! ([`EngineConfig::rating_prior`]), so stars cannot be bought with cheap deals between
//! friends. Requests with `min_rating` only match providers whose weighted average is at
//! least that (providers never rated do not pass).
//!
//! ## Limits
//!
//! An offer holds at most [`MAX_IPS_PER_OFFER`] IPs (a /16 of IPv4, a /112 of IPv6); a request
//! asks for at most [`MAX_REQUEST_COUNT`]; leases last [`MIN_LEASE_SECONDS`] to
//! [`MAX_LEASE_SECONDS`]. Prices and amounts are integers of token base units, never floats.
//!
//! ## Example
//!
//! ```
//! use ipsx_engine::*;
//!
//! let provider = Address::from_low_u64(1);
//! let requester = Address::from_low_u64(2);
//! let mut engine = Engine::new(EngineConfig::default());
//! let mut events = Vec::new();
//!
//! let offer = OfferSpec {
//!     provider,
//!     ips: IpSpec::Cidr { network: "198.51.100.0".parse().unwrap(), prefix: 30 },
//!     country: Country::parse("FR")?,
//!     region: None,
//!     city: Some("Paris".into()),
//!     asn: 64_500,
//!     kind: IpKind::Residential,
//!     protocols: ProtocolSet::of(&[Protocol::Socks5, Protocol::Https]),
//!     window: Window { from: Timestamp(0), until: Timestamp(86_400) },
//!     min_lease: 5,
//!     max_lease: 3_600,
//!     price: 1_000,
//!     tenants: 1,
//! };
//! engine.apply(&Command { at: Timestamp(100), kind: CommandKind::PlaceOffer(offer) }, &mut events)?;
//!
//! let request = RequestSpec {
//!     requester,
//!     count: 3,
//!     filters: Filters {
//!         countries: CountrySet::of(&[Country::parse("FR")?]),
//!         protocols: ProtocolSet::of(&[Protocol::Socks5]),
//!         ..Filters::default()
//!     },
//!     start: Start::Now,
//!     duration: 60,
//!     max_price: 2_000,
//!     time_in_force: TimeInForce::Ioc,
//! };
//! engine.apply(&Command { at: Timestamp(101), kind: CommandKind::SubmitRequest(request) }, &mut events)?;
//!
//! let deal = engine.deals_of(requester).next().expect("matched");
//! assert_eq!(deal.ips.len(), 3);
//! assert_eq!(deal.status(), DealStatus::Pending);
//! assert_eq!(deal.full_cost(), 1_000 * 3 * 60);
//! # Ok::<(), EngineError>(())
//! ```

mod addresses;
pub mod agreement;
mod bitset;
mod blocks;
mod book;
pub mod calendar;
mod command;
mod country;
mod deal;
mod depth;
mod engine;
mod error;
mod finished;
mod order;
mod ordered;
mod parties;
mod prefetch;
mod request;
mod slab;
mod snapshot;
mod stock;
mod timers;
mod types;

pub use agreement::{DealInput, DealStatus, ProviderStatus, RequesterStatus};
pub use book::Offer;
pub use calendar::{Booking, Calendar};
pub use command::{Command, CommandKind, Event, RequestEnd};
pub use country::{COUNTRY_COUNT, Country, CountrySet};
pub use deal::{Deal, NEUTRAL_STARS, Profile};
pub use depth::{DepthLevel, MarketDepth};
pub use engine::{Engine, EngineConfig, MIN_DEAL_RETENTION, SETTLE_PER_COMMAND};
pub use error::{EngineError, InputError};
pub use order::{
    Filters, IpSpec, MAX_ASN_ENTRIES, MAX_BASIS_POINTS, MAX_IPS_PER_OFFER, MAX_LEASE_SECONDS,
    MAX_REQUEST_COUNT, MAX_TENANTS, MAX_TEXT_BYTES, MIN_LEASE_SECONDS, OfferIps, OfferSpec,
    RequestSpec, Start, TimeInForce, subnet_of,
};
pub use request::RequestRecord;
pub use snapshot::{CheckedSnapshot, FrozenState, IpRecord, OfferRecord, Snapshot, SnapshotError};
pub use stock::{Stock, StockOrder};
pub use types::{
    Address, Amount, DealId, IpKind, KindSet, OfferId, Protocol, ProtocolSet, RequestId, Timestamp,
    Window,
};
