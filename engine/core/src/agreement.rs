//! The agreement protocol: a deal's status follows from the provider's status and the
//! requester's status, which move on explicit inputs (from the parties, from the payments side)
//! and on automatic timeouts. The table is in the crate documentation; [`transition`] is the
//! single place that implements it.

use rkyv::{Archive, Deserialize, Serialize};

/// Where the provider stands in a deal.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum ProviderStatus {
    /// Told of the deal, not ready to serve yet.
    Awaiting,
    /// Serving the leased IPs.
    Ready,
    /// Failed or missed the ready deadline before serving.
    NoShow,
    /// Stopped serving after having been ready.
    Dropped,
    /// Served until the end.
    Done,
}

/// Where the requester stands in a deal.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum RequesterStatus {
    /// Committed to pay for the lease.
    Committed,
    /// Ended the lease early.
    Cancelled,
    /// Stopped paying beyond the grace period.
    Lapsed,
    /// Used the lease until the end.
    Done,
}

/// A deal's status, derived from both parties' statuses by [`deal_status`].
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq))]
#[rkyv(compare(PartialEq))]
pub enum DealStatus {
    /// Matched; waiting for the provider to report ready.
    Pending,
    /// The provider serves, the requester pays.
    Active,
    /// Ran to its end. Terminal.
    Completed,
    /// The provider never served; its IPs were re-matched. Terminal.
    Voided,
    /// The requester ended it early. Terminal.
    Cancelled,
    /// The requester stopped paying and was cut off. Terminal.
    PaymentLapsed,
    /// The provider stopped serving mid-lease. Terminal.
    ProviderDropped,
}

impl DealStatus {
    /// Whether the deal is over (no input moves it any more).
    pub fn is_terminal(self) -> bool {
        !matches!(self, DealStatus::Pending | DealStatus::Active)
    }
}

/// What can happen to a deal.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum DealInput {
    /// The provider's daemon reports the IPs are being served.
    ProviderReady,
    /// The provider reports it cannot serve, or is seen offline.
    ProviderFailed,
    /// Automatic: the ready deadline passed while pending.
    ReadyTimeout,
    /// The payments side reports the requester stopped paying beyond the grace period.
    PaymentLapsed,
    /// The requester ends the lease.
    RequesterCancel,
    /// Automatic: the lease's end time was reached.
    EndReached,
}

/// The deal status for a pair of party statuses.
pub fn deal_status(provider: ProviderStatus, requester: RequesterStatus) -> DealStatus {
    use ProviderStatus as P;
    use RequesterStatus as R;
    match (provider, requester) {
        (P::NoShow, _) => DealStatus::Voided,
        (P::Dropped, _) => DealStatus::ProviderDropped,
        (_, R::Cancelled) => DealStatus::Cancelled,
        (_, R::Lapsed) => DealStatus::PaymentLapsed,
        (P::Done, _) | (_, R::Done) => DealStatus::Completed,
        (P::Awaiting, R::Committed) => DealStatus::Pending,
        (P::Ready, R::Committed) => DealStatus::Active,
    }
}

/// The party statuses after `input`, or `None` when the input is illegal in the current status.
pub fn transition(
    provider: ProviderStatus,
    requester: RequesterStatus,
    input: DealInput,
) -> Option<(ProviderStatus, RequesterStatus)> {
    use DealInput as I;
    use ProviderStatus as P;
    use RequesterStatus as R;
    match (deal_status(provider, requester), input) {
        (DealStatus::Pending, I::ProviderReady) => Some((P::Ready, requester)),
        (DealStatus::Pending, I::ProviderFailed | I::ReadyTimeout | I::EndReached) => {
            Some((P::NoShow, requester))
        }
        (DealStatus::Pending | DealStatus::Active, I::RequesterCancel) => {
            Some((provider, R::Cancelled))
        }
        (DealStatus::Active, I::ProviderFailed) => Some((P::Dropped, requester)),
        (DealStatus::Active, I::PaymentLapsed) => Some((provider, R::Lapsed)),
        (DealStatus::Active, I::EndReached) => Some((P::Done, R::Done)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUTS: [DealInput; 6] = [
        DealInput::ProviderReady,
        DealInput::ProviderFailed,
        DealInput::ReadyTimeout,
        DealInput::PaymentLapsed,
        DealInput::RequesterCancel,
        DealInput::EndReached,
    ];

    #[test]
    fn the_table_in_the_docs_holds() {
        use DealInput as I;
        use DealStatus as S;
        let start = (ProviderStatus::Awaiting, RequesterStatus::Committed);
        let after = |steps: &[I]| {
            steps
                .iter()
                .try_fold(start, |(p, r), input| transition(p, r, *input))
                .map(|(p, r)| deal_status(p, r))
        };
        assert_eq!(after(&[]), Some(S::Pending));
        assert_eq!(after(&[I::ProviderReady]), Some(S::Active));
        assert_eq!(after(&[I::ProviderFailed]), Some(S::Voided));
        assert_eq!(after(&[I::ReadyTimeout]), Some(S::Voided));
        assert_eq!(after(&[I::EndReached]), Some(S::Voided));
        assert_eq!(after(&[I::RequesterCancel]), Some(S::Cancelled));
        assert_eq!(after(&[I::PaymentLapsed]), None);
        assert_eq!(after(&[I::ProviderReady, I::ProviderReady]), None);
        assert_eq!(after(&[I::ProviderReady, I::ReadyTimeout]), None);
        assert_eq!(
            after(&[I::ProviderReady, I::EndReached]),
            Some(S::Completed)
        );
        assert_eq!(
            after(&[I::ProviderReady, I::PaymentLapsed]),
            Some(S::PaymentLapsed)
        );
        assert_eq!(
            after(&[I::ProviderReady, I::ProviderFailed]),
            Some(S::ProviderDropped)
        );
        assert_eq!(
            after(&[I::ProviderReady, I::RequesterCancel]),
            Some(S::Cancelled)
        );
    }

    #[test]
    fn terminal_deals_accept_nothing() {
        use ProviderStatus as P;
        use RequesterStatus as R;
        for provider in [P::Awaiting, P::Ready, P::NoShow, P::Dropped, P::Done] {
            for requester in [R::Committed, R::Cancelled, R::Lapsed, R::Done] {
                if deal_status(provider, requester).is_terminal() {
                    for input in INPUTS {
                        assert_eq!(transition(provider, requester, input), None);
                    }
                }
            }
        }
    }
}
