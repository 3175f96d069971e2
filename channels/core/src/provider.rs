//! A provider's view of its channel from the hub: which seconds of each lease are paid.
//!
//! The hub sends a signed cumulative proof plus, per lease, the second it is now paid through.
//! The breakdown is only believed as far as the signature covers it: the provider recomputes
//! what those paid seconds cost from its own copy of the lease terms and refuses a payment whose
//! breakdown adds up to more than the signed amount. The egress proxy asks
//! [`ProviderLedger::paid_through`] and stops serving a lease more than `grace` seconds unpaid.

use rustc_hash::FxHashMap;

use crate::error::{LeaseError, ProofError};
use crate::meter::{LeaseId, LeaseTerms};
use crate::proof::{ChannelDomain, SignedProof};
use crate::receiver::ReceiverChannel;

#[derive(Debug, Clone, Copy)]
struct PaidLease {
    terms: LeaseTerms,
    paid_through: u64,
}

/// The provider's side of its channel from the hub.
#[derive(Debug, Clone)]
pub struct ProviderLedger {
    channel: ReceiverChannel,
    leases: FxHashMap<LeaseId, PaidLease>,
    /// What paid seconds of forgotten (ended, fully paid) leases came to.
    base: u128,
}

impl ProviderLedger {
    /// A ledger over `channel` (whose latest proof comes from the store after a restart).
    pub fn new(channel: ReceiverChannel) -> Self {
        Self {
            channel,
            leases: FxHashMap::default(),
            base: 0,
        }
    }

    /// The channel.
    pub fn channel(&self) -> &ReceiverChannel {
        &self.channel
    }

    /// Starts following a lease (told by the node when the deal is made).
    pub fn add_lease(&mut self, terms: LeaseTerms) -> Result<(), LeaseError> {
        if self.leases.contains_key(&terms.id) {
            return Err(LeaseError::Duplicate(terms.id));
        }
        if terms.end <= terms.start {
            return Err(LeaseError::EmptySpan {
                id: terms.id,
                start: terms.start,
                end: terms.end,
            });
        }
        self.leases.insert(
            terms.id,
            PaidLease {
                terms,
                paid_through: terms.start,
            },
        );
        Ok(())
    }

    /// Ends a lease early at `at` (cancelled or cut, as the node reports); `at` before its
    /// start makes it accrue nothing. Unknown leases are ignored.
    pub fn end_lease(&mut self, id: LeaseId, at: u64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.terms.end = lease.terms.end.min(at.max(lease.terms.start));
            lease.paid_through = lease.paid_through.min(lease.terms.end);
        }
    }

    /// Checks a payment without recording it.
    pub fn check(
        &self,
        domain: &ChannelDomain,
        proof: &SignedProof,
        paid_through: &[(LeaseId, u64)],
    ) -> Result<(), ProofError> {
        self.channel.check(domain, proof)?;
        let mut claimed = self.covered();
        for &(id, through) in paid_through {
            let lease = self.leases.get(&id).ok_or(ProofError::UnknownLease(id))?;
            let through = through.clamp(lease.paid_through, lease.terms.end);
            claimed = claimed.saturating_add(
                lease.terms.accrued_at(through) - lease.terms.accrued_at(lease.paid_through),
            );
        }
        if claimed > proof.amount {
            return Err(ProofError::BreakdownNotCovered {
                claimed,
                amount: proof.amount,
            });
        }
        Ok(())
    }

    /// Records a checked, persisted payment.
    pub fn accept(&mut self, proof: SignedProof, paid_through: &[(LeaseId, u64)]) {
        self.channel.accept(proof);
        for &(id, through) in paid_through {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.paid_through = through.clamp(lease.paid_through, lease.terms.end);
            }
        }
    }

    /// What the recorded paid-through seconds cost in all.
    pub fn covered(&self) -> u128 {
        self.leases.values().fold(self.base, |sum, lease| {
            sum.saturating_add(lease.terms.accrued_at(lease.paid_through))
        })
    }

    /// The second a lease is paid through.
    pub fn paid_through(&self, id: LeaseId) -> Option<u64> {
        self.leases.get(&id).map(|lease| lease.paid_through)
    }

    /// Whether `id` is over and every second of it paid (`false` for a lease not followed).
    pub fn paid_in_full(&self, id: LeaseId) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|lease| lease.paid_through >= lease.terms.end)
    }

    /// Whether the proxy should stop serving `id` at `now`: ended, or more than `grace`
    /// seconds unpaid.
    pub fn should_cut(&self, id: LeaseId, now: u64, grace: u64) -> bool {
        self.leases.get(&id).is_none_or(|lease| {
            now >= lease.terms.end || now.saturating_sub(lease.paid_through) > grace
        })
    }

    /// Stops following a lease: what its paid seconds came to stays in the total, and it is no
    /// longer metered (a lease over and left unpaid is not kept forever). Whether it was known.
    pub fn forget(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        self.base = self
            .base
            .saturating_add(lease.terms.accrued_at(lease.paid_through));
        true
    }

    /// Leases followed.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Forgets leases that ended and are fully paid (their value stays in the total).
    pub fn forget_settled(&mut self) {
        let mut forgotten = 0u128;
        self.leases.retain(|_, lease| {
            let done = lease.paid_through >= lease.terms.end;
            if done {
                forgotten = forgotten.saturating_add(lease.terms.total());
            }
            !done
        });
        self.base = self.base.saturating_add(forgotten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::proof::ChannelId;

    #[test]
    fn a_lease_is_paid_in_full_once_paid_through_its_end_even_an_early_one() {
        let hub = SigningKey::from_bytes(&[7; 32]).expect("key");
        let domain = ChannelDomain::new(31337, alloy_primitives::Address::repeat_byte(9));
        let channel = ChannelId(3);
        let mut ledger = ProviderLedger::new(ReceiverChannel::new(
            channel,
            hub.address(),
            1_000_000,
            None,
        ));
        let terms = |id, end| LeaseTerms {
            id,
            rate: 10,
            start: 100,
            end,
        };
        ledger.add_lease(terms(1, 160)).expect("lease");
        ledger.add_lease(terms(2, 160)).expect("lease");
        let proof = domain.sign_balance_proof(&hub, channel, 600);
        let through = [(1, 130), (2, 130)];
        ledger.check(&domain, &proof, &through).expect("covered");
        ledger.accept(proof, &through);
        assert!(!ledger.paid_in_full(1), "half paid");
        ledger.end_lease(2, 120);
        assert!(ledger.paid_in_full(2), "ended early, paid past its new end");
        let proof = domain.sign_balance_proof(&hub, channel, 1_000);
        ledger.accept(proof, &[(1, 160)]);
        assert!(ledger.paid_in_full(1), "paid through its end");
        assert!(!ledger.paid_in_full(9), "never followed");
    }
}
