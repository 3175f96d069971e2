//! Per-second metering: what a set of leases has accrued by a given second.
//!
//! A lease accrues `rate` base units per second from `start` to `end` (unix seconds, whole
//! seconds like the engine's clock). [`LeaseMeter::owed_at`] sums them; leases that are over and
//! settled are folded into a base amount so the set stays as small as what is running.

use rustc_hash::FxHashMap;

use crate::error::LeaseError;

/// A lease's id (the engine's deal id, or any id unique to one meter).
pub type LeaseId = u64;

/// What one lease costs and when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// The lease.
    pub id: LeaseId,
    /// Base units per second (the deal's price per IP-second times its IPs).
    pub rate: u128,
    /// First second accrued (unix seconds).
    pub start: u64,
    /// The lease stops accruing here (exclusive).
    pub end: u64,
}

impl LeaseTerms {
    /// What the lease has accrued by second `t`.
    #[inline]
    pub fn accrued_at(&self, t: u64) -> u128 {
        let until = t.min(self.end);
        if until <= self.start {
            0
        } else {
            self.rate * u128::from(until - self.start)
        }
    }

    /// What the whole lease costs.
    pub fn total(&self) -> u128 {
        self.accrued_at(self.end)
    }

    fn validate(&self) -> Result<(), LeaseError> {
        if self.end <= self.start {
            return Err(LeaseError::EmptySpan {
                id: self.id,
                start: self.start,
                end: self.end,
            });
        }
        self.rate
            .checked_mul(u128::from(self.end - self.start))
            .ok_or(LeaseError::Overflow(self.id))?;
        Ok(())
    }
}

/// The leases of one payer (or one payee): their accrual at any second.
#[derive(Debug, Clone, Default)]
pub struct LeaseMeter {
    leases: Vec<LeaseTerms>,
    position: FxHashMap<LeaseId, usize>,
    /// What leases folded away had accrued in all.
    base: u128,
}

impl LeaseMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts metering a lease. Refuses duplicates, empty spans and overflowing totals.
    pub fn add(&mut self, terms: LeaseTerms) -> Result<(), LeaseError> {
        terms.validate()?;
        if self.position.contains_key(&terms.id) {
            return Err(LeaseError::Duplicate(terms.id));
        }
        self.position.insert(terms.id, self.leases.len());
        self.leases.push(terms);
        Ok(())
    }

    /// Ends a lease early at `at` (a cut-off or a cancel); `at` before its start makes it
    /// accrue nothing.
    pub fn end_at(&mut self, id: LeaseId, at: u64) -> Result<LeaseTerms, LeaseError> {
        let index = *self.position.get(&id).ok_or(LeaseError::Unknown(id))?;
        let lease = &mut self.leases[index];
        lease.end = lease.end.min(at.max(lease.start));
        Ok(*lease)
    }

    /// A lease's terms.
    pub fn get(&self, id: LeaseId) -> Option<&LeaseTerms> {
        self.position.get(&id).map(|&index| &self.leases[index])
    }

    /// The leases still metered.
    pub fn leases(&self) -> &[LeaseTerms] {
        &self.leases
    }

    /// What folded leases came to.
    pub fn base(&self) -> u128 {
        self.base
    }

    /// Counts `amount` of leases folded elsewhere (restored from a book that no longer lists
    /// them one by one).
    pub fn add_base(&mut self, amount: u128) {
        self.base = self.base.saturating_add(amount);
    }

    /// Leases still metered.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// No lease metered.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The sum of per-second rates of leases running at `t`.
    pub fn rate_at(&self, t: u64) -> u128 {
        self.leases
            .iter()
            .filter(|l| l.start <= t && t < l.end)
            .map(|l| l.rate)
            .sum()
    }

    /// Everything accrued by second `t`, folded leases included.
    pub fn owed_at(&self, t: u64) -> u128 {
        self.leases.iter().fold(self.base, |sum, lease| {
            sum.saturating_add(lease.accrued_at(t))
        })
    }

    /// The last second `t` in `[from, to]` with `owed_at(t) <= amount`, or `None` if even
    /// `from` is not covered. `owed_at` never decreases, so this is a binary search.
    pub fn paid_through(&self, amount: u128, from: u64, to: u64) -> Option<u64> {
        if self.owed_at(from) > amount {
            return None;
        }
        if self.owed_at(to) <= amount {
            return Some(to);
        }
        // owed(covered) <= amount < owed(uncovered)
        let (mut covered, mut uncovered) = (from, to);
        while uncovered - covered > 1 {
            let mid = covered + (uncovered - covered) / 2;
            if self.owed_at(mid) <= amount {
                covered = mid;
            } else {
                uncovered = mid;
            }
        }
        Some(covered)
    }

    /// Folds leases that ended at or before `t` into the base; returns them.
    pub fn fold_ended(&mut self, t: u64) -> Vec<LeaseTerms> {
        let mut folded = Vec::new();
        let mut index = 0;
        while index < self.leases.len() {
            if self.leases[index].end <= t {
                let lease = self.leases.swap_remove(index);
                self.position.remove(&lease.id);
                if let Some(moved) = self.leases.get(index) {
                    self.position.insert(moved.id, index);
                }
                self.base = self.base.saturating_add(lease.total());
                folded.push(lease);
            } else {
                index += 1;
            }
        }
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: LeaseId, rate: u128, start: u64, end: u64) -> LeaseTerms {
        LeaseTerms {
            id,
            rate,
            start,
            end,
        }
    }

    #[test]
    fn accrual_is_rate_times_seconds_run() {
        let mut meter = LeaseMeter::new();
        meter.add(lease(1, 10, 100, 110)).expect("add");
        meter.add(lease(2, 3, 105, 200)).expect("add");
        assert_eq!(meter.owed_at(100), 0);
        assert_eq!(meter.owed_at(104), 40);
        assert_eq!(meter.owed_at(110), 100 + 15);
        assert_eq!(meter.owed_at(1_000), 100 + 3 * 95);
        assert_eq!(meter.rate_at(106), 13);
        assert_eq!(meter.rate_at(110), 3);
    }

    #[test]
    fn paid_through_finds_the_last_covered_second() {
        let mut meter = LeaseMeter::new();
        meter.add(lease(1, 10, 100, 110)).expect("add");
        meter.add(lease(2, 1, 100, 200)).expect("add");
        // owed(t) = 11 (t - 100) until 110, then 110 + (t - 110).
        assert_eq!(meter.paid_through(0, 100, 150), Some(100));
        assert_eq!(meter.paid_through(54, 100, 150), Some(104));
        assert_eq!(meter.paid_through(55, 100, 150), Some(105));
        assert_eq!(meter.paid_through(125, 100, 150), Some(125));
        assert_eq!(meter.paid_through(10_000, 100, 150), Some(150));
        assert_eq!(meter.paid_through(20, 103, 150), None);
    }

    #[test]
    fn folding_keeps_the_total_and_ending_early_stops_accrual() {
        let mut meter = LeaseMeter::new();
        meter.add(lease(1, 10, 100, 110)).expect("add");
        meter.add(lease(2, 1, 100, 200)).expect("add");
        meter.add(lease(3, 7, 150, 160)).expect("add");
        let before = meter.owed_at(300);
        assert_eq!(meter.fold_ended(160).len(), 2);
        assert_eq!(meter.owed_at(300), before);
        assert_eq!(meter.get(2).map(|l| l.id), Some(2));
        meter.end_at(2, 120).expect("end");
        assert_eq!(meter.owed_at(300), 100 + 70 + 20);
        assert_eq!(meter.end_at(9, 1), Err(LeaseError::Unknown(9)));
    }

    #[test]
    fn bad_leases_are_refused() {
        let mut meter = LeaseMeter::new();
        assert!(matches!(
            meter.add(lease(1, 1, 10, 10)),
            Err(LeaseError::EmptySpan { .. })
        ));
        assert_eq!(
            meter.add(lease(2, u128::MAX, 0, 2)),
            Err(LeaseError::Overflow(2))
        );
        meter.add(lease(3, 1, 0, 2)).expect("add");
        assert_eq!(meter.add(lease(3, 1, 0, 2)), Err(LeaseError::Duplicate(3)));
        assert_eq!(meter.len(), 1);
    }
}
