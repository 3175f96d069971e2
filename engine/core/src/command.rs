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
        /// The second the payments side cut it off, where its lease stopped being billed:
        /// the deal closes there (never before it was served, never after this command's own
        /// second), so what it served is what was billed. `None`: at the command's own
        /// second, as journals written before the cut second was recorded read.
        at: Option<Timestamp>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `PaymentLapsed` as journals held it before it carried the cut second: the bytes rkyv
    /// wrote for `PaymentLapsed { deal: 77 }` at second 1234 (rkyv zeroes what a variant does
    /// not use, so the new field reads as `None`: close at the command's own second).
    #[test]
    fn a_cut_off_journaled_before_the_cut_second_was_recorded_reads_as_none() {
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        bytes.extend_from_slice(&[0; 192]);
        bytes[..8].copy_from_slice(&1234u64.to_le_bytes());
        bytes[16] = 9; // the variant's tag
        bytes[24..32].copy_from_slice(&77u64.to_le_bytes());
        let command = rkyv::from_bytes::<Command, rkyv::rancor::Error>(&bytes).expect("decodes");
        assert_eq!(
            command,
            Command {
                at: Timestamp(1234),
                kind: CommandKind::PaymentLapsed {
                    deal: DealId(77),
                    at: None
                },
            }
        );
        // And the new form round-trips.
        let cut = Command {
            at: Timestamp(1234),
            kind: CommandKind::PaymentLapsed {
                deal: DealId(77),
                at: Some(Timestamp(1230)),
            },
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&cut).expect("encodes");
        assert_eq!(bytes.len(), 192, "the archived command keeps its size");
        let back = rkyv::from_bytes::<Command, rkyv::rancor::Error>(&bytes).expect("decodes");
        assert_eq!(back, cut);
    }
}
