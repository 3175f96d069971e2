//! Typed errors. Every rejected command returns one of these and leaves the state unchanged
//! (except the clock, which moves to the command's timestamp: time passes whatever the input).

use std::net::IpAddr;

use thiserror::Error;

use crate::agreement::{DealInput, DealStatus};
use crate::types::{Address, DealId, OfferId, RequestId, Timestamp};

/// A command whose shape is wrong, whatever the state of the book.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    /// Not a 20-byte hex Ethereum address.
    #[error("not an Ethereum address: {0:?}")]
    BadAddress(String),
    /// Not an ISO 3166-1 alpha-2 code.
    #[error("unknown country code {0:?} (expected ISO 3166-1 alpha-2, e.g. \"FR\")")]
    UnknownCountry(String),
    /// A deal retention below [`crate::MIN_DEAL_RETENTION`].
    #[error("finished deals must stay at least {min} s in the deal book, not {0} s", min = crate::MIN_DEAL_RETENTION)]
    RetentionTooShort(u64),
    /// An offer with no IP at all.
    #[error("the offer lists no IP address")]
    NoIps,
    /// An offer over the per-offer cap.
    #[error("an offer holds at most {max} IPs, this one {count}; split it into several offers")]
    TooManyIps {
        /// IPs in the offer.
        count: u128,
        /// The cap, [`crate::MAX_IPS_PER_OFFER`].
        max: usize,
    },
    /// A CIDR block whose prefix length or host bits are wrong.
    #[error("bad CIDR block {network}/{prefix}: {reason}")]
    BadCidr {
        /// The network address given.
        network: IpAddr,
        /// The prefix length given.
        prefix: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same IP twice in one offer.
    #[error("IP {0} is listed twice")]
    DuplicateIp(IpAddr),
    /// An address no provider can lend (unspecified, loopback outside tests is allowed).
    #[error("IP {0} cannot be offered (unspecified, multicast or broadcast)")]
    UnusableIp(IpAddr),
    /// A window that ends before it starts.
    #[error("the window is empty: it must end after it starts")]
    EmptyWindow,
    /// A window that is already over.
    #[error("the window ends at {until}, which is not after now ({now})")]
    WindowOver {
        /// End of the window.
        until: Timestamp,
        /// Engine time.
        now: Timestamp,
    },
    /// Lease bounds outside 5 s … 30 days or inverted.
    #[error("lease bounds {min}s..{max}s are invalid: need 5 <= min <= max <= 2592000")]
    BadLeaseBounds {
        /// Minimum lease length, seconds.
        min: u64,
        /// Maximum lease length, seconds.
        max: u64,
    },
    /// A price of zero.
    #[error("the price must be at least 1 base unit per IP-second")]
    ZeroPrice,
    /// Tenants per IP outside 1 … [`crate::MAX_TENANTS`].
    #[error("tenants per IP must be between 1 and {max}, got {got}")]
    BadTenantCap {
        /// The value given.
        got: u16,
        /// The cap.
        max: u16,
    },
    /// No protocol offered.
    #[error("an offer must serve at least one protocol")]
    NoProtocols,
    /// A text field over its length limit.
    #[error("{field} is longer than {max} bytes")]
    TextTooLong {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A list filter over its length limit.
    #[error("{field} lists more than {max} entries")]
    TooManyEntries {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A request for zero IPs.
    #[error("the count must be at least 1")]
    ZeroCount,
    /// A request over the per-request cap.
    #[error("one request leases at most {max} IPs, this one {count}")]
    CountTooLarge {
        /// IPs asked for.
        count: u32,
        /// The cap, [`crate::MAX_REQUEST_COUNT`].
        max: u32,
    },
    /// A lease duration outside 5 s … 30 days.
    #[error("duration {0}s is out of range: leases last 5 s to 30 days (2592000 s)")]
    DurationOutOfRange(u64),
    /// A start time before the command's time.
    #[error("start {start} is in the past (now {now})")]
    StartInPast {
        /// Requested start.
        start: Timestamp,
        /// Engine time.
        now: Timestamp,
    },
    /// A GTC expiry that is not after now.
    #[error("expiry {expires_at} is not after now ({now})")]
    ExpiryNotInFuture {
        /// Requested expiry.
        expires_at: Timestamp,
        /// Engine time.
        now: Timestamp,
    },
    /// A minimum rating outside 1.00 … 5.00 (given in hundredths).
    #[error("minimum rating must be 100..=500 hundredths of a star, got {0}")]
    BadMinRating(u16),
    /// An uptime above 10,000 basis points.
    #[error("an uptime is 0..=10000 basis points, got {0}")]
    BadUptime(u16),
    /// A rating outside 1 … 5.
    #[error("a rating is 1 to 5 stars, got {0}")]
    BadScore(u8),
    /// Arithmetic on the given numbers would overflow.
    #[error("the numbers overflow: price x count x duration must fit in 128 bits")]
    Overflow,
    /// An amend that changes nothing.
    #[error("the amend changes nothing")]
    NothingToAmend,
}

/// Why the engine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// The command itself is malformed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The command is older than the engine's clock.
    #[error("command time {at} is before engine time {now}")]
    ClockWentBackwards {
        /// The command's time.
        at: Timestamp,
        /// The engine's time.
        now: Timestamp,
    },
    /// No such offer in the book.
    #[error("unknown offer {0}")]
    UnknownOffer(OfferId),
    /// No such request resting in the book.
    #[error("unknown or finished request {0}")]
    UnknownRequest(RequestId),
    /// No such deal.
    #[error("unknown deal {0}")]
    UnknownDeal(DealId),
    /// The party named is not the owner of what it tries to change.
    #[error("{party} is not a party to this order or deal")]
    NotOwner {
        /// Who tried.
        party: Address,
    },
    /// The IP belongs to another provider.
    #[error("IP {ip} is already offered by {owner}")]
    IpOwnedByOther {
        /// The IP.
        ip: IpAddr,
        /// Its provider.
        owner: Address,
    },
    /// The IP is already in one of the provider's live offers.
    #[error("IP {ip} is already in {offer}; amend or cancel that offer first")]
    IpAlreadyOffered {
        /// The IP.
        ip: IpAddr,
        /// The offer holding it.
        offer: OfferId,
    },
    /// An amend would withdraw IPs that are booked.
    #[error("cannot shrink the offer to {requested} IPs: {booked} are booked")]
    ShrinkBelowBooked {
        /// IPs with bookings.
        booked: u32,
        /// The size asked for.
        requested: u32,
    },
    /// The deal's state does not allow this input (see the transition table in the crate docs).
    #[error("{deal} is {status:?}; {input:?} is not allowed there")]
    IllegalTransition {
        /// The deal.
        deal: DealId,
        /// Its status.
        status: DealStatus,
        /// The refused input.
        input: DealInput,
    },
    /// The rater already rated this deal.
    #[error("{deal} was already rated by this party")]
    AlreadyRated {
        /// The deal.
        deal: DealId,
    },
    /// Only finished deals can be rated.
    #[error("{deal} is not finished yet; rate it once it has ended")]
    NotFinished {
        /// The deal.
        deal: DealId,
    },
    /// Only deals that were served (and so paid for) can be rated: a rating weighs what the
    /// lease cost, and a deal never served cost nothing.
    #[error("{deal} was never served, so it cannot be rated (no-shows count in the profile)")]
    NothingServed {
        /// The deal.
        deal: DealId,
    },
    /// A wallet on both sides of a deal cannot rate it.
    #[error("{deal} has the same wallet on both sides; it cannot be rated")]
    SelfRating {
        /// The deal.
        deal: DealId,
    },
}
