//! The deal book and the profiles it feeds.

use std::net::IpAddr;

use rkyv::{Archive, Deserialize, Serialize};

use crate::agreement::{DealStatus, ProviderStatus, RequesterStatus, deal_status};
use crate::types::{Address, Amount, DealId, OfferId, RequestId, Timestamp};

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
    /// The leased IPs.
    pub ips: Vec<IpAddr>,
    /// First leased second.
    pub start: Timestamp,
    /// First second after the lease.
    pub end: Timestamp,
    /// Price per IP-second (the offer's at match time).
    pub price: Amount,
    /// When it was matched.
    pub made_at: Timestamp,
    /// The provider must report ready before this.
    pub ready_deadline: Timestamp,
    /// The provider's side of the agreement protocol.
    pub provider_status: ProviderStatus,
    /// The requester's side.
    pub requester_status: RequesterStatus,
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
}

/// What the exchange knows of a wallet: how its deals went and how others rated it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
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
    /// Sum of the stars received.
    pub rating_points: u64,
    /// Ratings given.
    pub ratings_given: u64,
}

impl Profile {
    /// Average stars received, in hundredths (437 = 4.37 stars); `None` before any rating.
    pub fn average_rating(&self) -> Option<u16> {
        (self.ratings_received > 0)
            .then(|| (self.rating_points * 100 / self.ratings_received) as u16)
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
    fn averages_are_integer_hundredths() {
        let mut profile = Profile::default();
        assert_eq!(profile.average_rating(), None);
        profile.ratings_received = 3;
        profile.rating_points = 5 + 4 + 4;
        assert_eq!(profile.average_rating(), Some(433));
    }
}
