//! Commands in, events out: the whole interface of the state machine.

use rkyv::{Archive, Deserialize, Serialize};

use crate::agreement::DealStatus;
use crate::order::{OfferSpec, RequestSpec, Start};
use crate::types::{Address, Amount, DealId, OfferId, RequestId, Timestamp, Window};

/// One input to the engine, stamped with the time it was accepted. Timestamps never go
/// backwards; the engine has no other notion of time.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Command {
    /// When the command was accepted (seconds since the Unix epoch).
    pub at: Timestamp,
    /// What it asks for.
    pub kind: CommandKind,
}

impl Command {
    /// A command that only moves the clock (timeouts, expiries and completions fire).
    pub fn tick(at: Timestamp) -> Command {
        Command {
            at,
            kind: CommandKind::Tick,
        }
    }
}

/// What a command asks for. Commands that name a party are checked against the owner.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CommandKind {
    /// Move the clock only.
    Tick,
    /// Put an offer in the Offer Orders List.
    PlaceOffer(OfferSpec),
    /// Withdraw an offer's unleased capacity; running deals continue.
    CancelOffer {
        /// The offer.
        offer: OfferId,
        /// Its provider.
        provider: Address,
    },
    /// Change an offer's price, window or size. The offer keeps its age.
    AmendOffer {
        /// The offer.
        offer: OfferId,
        /// Its provider.
        provider: Address,
        /// New price per IP-second.
        price: Option<Amount>,
        /// New availability window.
        window: Option<Window>,
        /// Keep at most this many IPs: unbooked IPs are withdrawn from the end of the list.
        max_ips: Option<u32>,
    },
    /// Match a request now; a GTC rest stays in the Request Orders List.
    SubmitRequest(RequestSpec),
    /// Take a resting request out of the book; its deals continue.
    CancelRequest {
        /// The request.
        request: RequestId,
        /// Its requester.
        requester: Address,
    },
    /// Change a resting request. It keeps its age.
    AmendRequest {
        /// The request.
        request: RequestId,
        /// Its requester.
        requester: Address,
        /// New maximum price per IP-second.
        max_price: Option<Amount>,
        /// New number of IPs still wanted.
        remaining: Option<u32>,
        /// New start.
        start: Option<Start>,
        /// New lease duration, seconds.
        duration: Option<u64>,
    },
    /// The provider's daemon serves the deal's IPs.
    ProviderReady {
        /// The deal.
        deal: DealId,
        /// Its provider.
        provider: Address,
    },
    /// The provider cannot serve the deal (or was seen offline).
    ProviderFailed {
        /// The deal.
        deal: DealId,
        /// Its provider.
        provider: Address,
    },
    /// The payments side: the requester stopped paying beyond the grace period.
    PaymentLapsed {
        /// The deal.
        deal: DealId,
    },
    /// The requester ends a lease early.
    CancelDeal {
        /// The deal.
        deal: DealId,
        /// Its requester.
        requester: Address,
    },
    /// The node's relay measured a provider's connection: the share of time it was up, in
    /// basis points (10,000 = always). `min_uptime` filters compare with it.
    NoteUptime {
        /// The provider.
        provider: Address,
        /// Basis points, 0 to 10,000.
        uptime: u16,
    },
    /// The node's operator sets how long finished deals stay in the deal book (look-ups and
    /// ratings need them there); at least [`crate::MIN_DEAL_RETENTION`] seconds. Journaled, so
    /// a replay prunes exactly as the original run did.
    SetDealRetention {
        /// Seconds after a deal finishes.
        seconds: u64,
    },
    /// One party rates the other after a deal ended.
    Rate {
        /// The deal.
        deal: DealId,
        /// Who rates (the other party is rated).
        rater: Address,
        /// 1 to 5 stars.
        score: u8,
    },
}

/// How a request left the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestEnd {
    /// Every IP asked for was leased.
    Filled,
    /// IOC: what was there was leased, the rest dropped.
    Unfilled,
    /// FOK: not all N were there, so nothing was leased.
    Killed,
    /// GTC: the expiry passed with IPs still missing.
    Expired,
    /// The requester cancelled it.
    Cancelled,
}

/// What happened. Each command yields its events in order; a replay yields the same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An offer entered the book.
    OfferPlaced {
        /// The new offer.
        offer: OfferId,
        /// How many IPs it holds.
        ips: u32,
    },
    /// An offer was amended.
    OfferAmended {
        /// The offer.
        offer: OfferId,
    },
    /// An offer left the book (cancelled, window over, or every IP withdrawn).
    OfferClosed {
        /// The offer.
        offer: OfferId,
    },
    /// A request was accepted and given an id.
    RequestAccepted {
        /// The request.
        request: RequestId,
    },
    /// A request rests in the book with IPs still missing.
    RequestResting {
        /// The request.
        request: RequestId,
        /// IPs still wanted.
        remaining: u32,
    },
    /// A request left the book.
    RequestClosed {
        /// The request.
        request: RequestId,
        /// IPs leased for it in all.
        filled: u32,
        /// Why it left.
        end: RequestEnd,
    },
    /// A deal was made (IPs booked; the provider must now report ready).
    DealMade {
        /// The deal.
        deal: DealId,
        /// The request it fills.
        request: RequestId,
        /// The offer it takes from.
        offer: OfferId,
        /// The provider.
        provider: Address,
        /// The requester.
        requester: Address,
        /// How many IPs.
        ips: u32,
        /// Price per IP-second (the offer's).
        price: Amount,
        /// Lease start.
        start: Timestamp,
        /// Lease end.
        end: Timestamp,
    },
    /// A deal's status changed.
    DealStatusChanged {
        /// The deal.
        deal: DealId,
        /// Status before.
        from: DealStatus,
        /// Status now.
        to: DealStatus,
    },
    /// A party rated the other after a deal.
    Rated {
        /// The deal.
        deal: DealId,
        /// Who was rated.
        ratee: Address,
        /// 1 to 5 stars.
        score: u8,
    },
}
