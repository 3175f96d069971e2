//! The deal book and the profiles it feeds.

use std::net::IpAddr;

use rkyv::{Archive, Deserialize, Serialize};
use smallvec::SmallVec;

use crate::agreement::{DealStatus, ProviderStatus, RequesterStatus, deal_status};
use crate::types::{Address, Amount, DealId, OfferId, ProtocolSet, RequestId, Timestamp};

/// A lease of some IPs of one offer to one requester over one span of time.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Deal {
    /// The deal's id.
    pub id: DealId,
    /// The request it fills.
    pub request: RequestId,
    /// The offer it takes from.
    pub offer: OfferId,
    /// Who serves and is paid.
    pub provider: Address,
    /// Who uses and pays.
    pub requester: Address,
    /// The leased IPs (most deals lease one: kept inline, no allocation).
    pub ips: SmallVec<[IpAddr; 1]>,
    /// First leased second.
    pub start: Timestamp,
    /// First second after the lease.
    pub end: Timestamp,
    /// Price per IP-second (the offer's at match time).
    pub price: Amount,
    /// What the leased IPs carry (the offer's at match time): part of the deal, journaled
    /// with the command that made it, so credentials and endpoints never guess.
    pub protocols: ProtocolSet,
    /// When it was matched.
    pub made_at: Timestamp,
    /// The provider must report ready before this.
    pub ready_deadline: Timestamp,
    /// The provider's side of the agreement protocol.
    pub provider_status: ProviderStatus,
    /// The requester's side.
    pub requester_status: RequesterStatus,
    /// When the provider reported ready (the served span starts at the later of this and
    /// `start`).
    pub ready_at: Option<Timestamp>,
    /// When it reached a terminal status.
    pub closed_at: Option<Timestamp>,
    /// Stars the requester gave the provider.
    pub provider_rating: Option<u8>,
    /// Stars the provider gave the requester.
    pub requester_rating: Option<u8>,
}

impl Deal {
    /// The deal's status, derived from both parties' statuses.
    pub fn status(&self) -> DealStatus {
        deal_status(self.provider_status, self.requester_status)
    }

    /// What the whole lease costs at full term: price x IPs x seconds.
    pub fn full_cost(&self) -> Amount {
        self.price * self.ips.len() as Amount * u128::from(self.end.0 - self.start.0)
    }

    /// What the served part of a finished deal is worth: price x IPs x the seconds from the
    /// later of its start and the provider's ready report to its close (never past its end).
    /// Zero for a deal never served (voided, cancelled before ready) or not finished yet. A
    /// rating weighs this much, so stars cost what the lease cost.
    pub fn served_value(&self) -> Amount {
        let (Some(ready), Some(closed)) = (self.ready_at, self.closed_at) else {
            return 0;
        };
        let from = ready.max(self.start);
        let until = closed.min(self.end);
        let seconds = until.0.saturating_sub(from.0);
        self.price
            .saturating_mul(self.ips.len() as Amount)
            .saturating_mul(Amount::from(seconds))
    }
}

/// What the exchange knows of a wallet: how its deals went and how others rated it.
///
/// `repr(C)`: the deal counters come first, where the engine's party record keeps them on the
/// cache line of its deal list.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Profile {
    /// Deals made as a provider.
    pub deals_as_provider: u64,
    /// Deals made as a requester.
    pub deals_as_requester: u64,
    /// Deals that ran to their end (either role).
    pub completed: u64,
    /// Deals voided because this wallet, as provider, never served.
    pub no_shows: u64,
    /// Deals this wallet, as provider, stopped serving mid-lease.
    pub dropped: u64,
    /// Deals this wallet, as requester, stopped paying.
    pub lapsed: u64,
    /// Deals this wallet, as requester, ended early.
    pub cancelled: u64,
    /// Ratings received.
    pub ratings_received: u64,
    /// What the rated deals were worth in all: each rating weighs its deal's served value.
    pub rated_value: Amount,
    /// The sum over ratings received of stars x the deal's served value.
    pub star_value: Amount,
    /// Ratings given.
    pub ratings_given: u64,
    /// As a provider behind the node's relay: the share of time its connection was up, in
    /// basis points, as last noted; `None` for providers never relayed.
    pub uptime: Option<u16>,
}

/// The stars every profile starts from, weighted by the engine's `rating_prior`.
pub const NEUTRAL_STARS: Amount = 3;

impl Profile {
    /// Average stars received, in hundredths (437 = 4.37 stars); `None` before any rating.
    ///
    /// A value-weighted mean that starts from [`NEUTRAL_STARS`] worth `prior` of paid usage:
    /// each rating weighs what its deal's served part cost, so a wallet cannot lift itself (or
    /// a friend) past other requesters' `min_rating` with a few cheap deals — it has to buy a
    /// few multiples of `prior` of real usage at full price first.
    pub fn average_rating(&self, prior: Amount) -> Option<u16> {
        if self.ratings_received == 0 {
            return None;
        }
        let stars = NEUTRAL_STARS
            .saturating_mul(prior)
            .saturating_add(self.star_value);
        let weight = prior.saturating_add(self.rated_value).max(1);
        // Scale before dividing (hundredths); values near u128::MAX lose precision, not bounds.
        let hundredths = match stars.checked_mul(100) {
            Some(scaled) => scaled / weight,
            None => stars / (weight / 100).max(1),
        };
        Some(hundredths.clamp(100, 500) as u16)
    }

    /// Counts a rating of `stars` on a deal whose served part was worth `value`.
    pub(crate) fn record_rating(&mut self, stars: u8, value: Amount) {
        self.ratings_received += 1;
        self.rated_value = self.rated_value.saturating_add(value);
        self.star_value = self
            .star_value
            .saturating_add(value.saturating_mul(Amount::from(stars)));
    }

    pub(crate) fn record_outcome(&mut self, status: DealStatus, as_provider: bool) {
        match (status, as_provider) {
            (DealStatus::Completed, _) => self.completed += 1,
            (DealStatus::Voided, true) => self.no_shows += 1,
            (DealStatus::ProviderDropped, true) => self.dropped += 1,
            (DealStatus::PaymentLapsed, false) => self.lapsed += 1,
            (DealStatus::Cancelled, false) => self.cancelled += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_weigh_what_was_paid_and_start_neutral() {
        let mut profile = Profile::default();
        assert_eq!(profile.average_rating(0), None);
        profile.record_rating(5, 100);
        profile.record_rating(4, 100);
        profile.record_rating(4, 100);
        assert_eq!(
            profile.average_rating(0),
            Some(433),
            "equal deals: the plain mean"
        );
        let mut profile = Profile::default();
        profile.record_rating(1, 1_000);
        profile.record_rating(5, 10);
        assert_eq!(
            profile.average_rating(0),
            Some(103),
            "the big deal dominates"
        );
        let mut profile = Profile::default();
        profile.record_rating(5, 10);
        assert_eq!(
            profile.average_rating(1_000),
            Some(301),
            "a cheap five-star deal barely moves a new wallet off neutral"
        );
        profile.record_rating(5, 3_000);
        assert_eq!(profile.average_rating(1_000), Some(450));
    }

    #[test]
    fn only_the_served_part_of_a_deal_has_value() {
        let mut deal = Deal {
            id: DealId(1),
            request: RequestId(1),
            offer: OfferId(1),
            provider: Address::from_low_u64(1),
            requester: Address::from_low_u64(2),
            ips: smallvec::smallvec![
                "192.0.2.1".parse().expect("ip"),
                "192.0.2.2".parse().expect("ip"),
            ],
            start: Timestamp(100),
            end: Timestamp(160),
            price: 7,
            protocols: ProtocolSet::default(),
            made_at: Timestamp(90),
            ready_deadline: Timestamp(130),
            provider_status: ProviderStatus::Awaiting,
            requester_status: RequesterStatus::Committed,
            ready_at: None,
            closed_at: Some(Timestamp(130)),
            provider_rating: None,
            requester_rating: None,
        };
        assert_eq!(deal.served_value(), 0, "never ready");
        deal.ready_at = Some(Timestamp(95));
        assert_eq!(
            deal.served_value(),
            7 * 2 * 30,
            "from the start, not the early report"
        );
        deal.ready_at = Some(Timestamp(110));
        deal.closed_at = Some(Timestamp(200));
        assert_eq!(deal.served_value(), 7 * 2 * 50, "never past the end");
    }
}
