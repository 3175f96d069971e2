//! Finished deals waiting for the end of their retention, by the second they closed.
//!
//! Deals close in time order, except that a deferred end closes at the second it fell due
//! (see `Engine::apply_deferring`), behind deals closed since. One list per second makes that
//! a push, where a single sorted queue would shift everything closed after it.

use std::collections::VecDeque;

use crate::types::Timestamp;

/// Emptied lists kept for reuse.
const SPARE_LISTS: usize = 64;

/// The finished deals, oldest second first: each as a `T` that names it (the engine files the
/// deal with its parties' ids, so dropping it needs no lookup by address).
#[derive(Clone, Debug)]
pub(crate) struct FinishedDeals<T> {
    seconds: VecDeque<(Timestamp, Vec<T>)>,
    /// How many deals of the oldest second have left: a second's deals leave in the order
    /// they closed, which for each wallet is the order its deals were made, so each leaves
    /// from the front of its parties' deal lists (out of order, every one would leave a gap
    /// there to be swept later).
    taken: usize,
    spare: Vec<Vec<T>>,
}

impl<T> Default for FinishedDeals<T> {
    fn default() -> Self {
        FinishedDeals {
            seconds: VecDeque::new(),
            taken: 0,
            spare: Vec::new(),
        }
    }
}

impl<T: Copy> FinishedDeals<T> {
    /// Files a deal that closed at `at`.
    pub(crate) fn push(&mut self, at: Timestamp, deal: T) {
        let index = match self.seconds.back() {
            Some((last, _)) if *last == at => self.seconds.len() - 1,
            Some((last, _)) if *last > at => {
                let index = self.seconds.partition_point(|(second, _)| *second < at);
                if self.seconds[index].0 != at {
                    if index == 0 {
                        // A second before the oldest: the count taken is the oldest's.
                        self.seconds[0].1.drain(..self.taken);
                        self.taken = 0;
                    }
                    let list = self.spare.pop().unwrap_or_default();
                    self.seconds.insert(index, (at, list));
                }
                index
            }
            _ => {
                let list = self.spare.pop().unwrap_or_default();
                self.seconds.push_back((at, list));
                self.seconds.len() - 1
            }
        };
        self.seconds[index].1.push(deal);
    }

    /// When the oldest finished deal closed.
    pub(crate) fn oldest(&self) -> Option<Timestamp> {
        self.seconds.front().map(|(second, _)| *second)
    }

    /// The deal `ahead` places behind the one [`FinishedDeals::pop_oldest`] takes next (that
    /// one itself at 0), if there are that many.
    pub(crate) fn ahead(&self, mut ahead: usize) -> Option<T> {
        let mut taken = self.taken;
        for (_, list) in &self.seconds {
            let left = &list[taken..];
            if ahead < left.len() {
                return Some(left[ahead]);
            }
            ahead -= left.len();
            taken = 0;
        }
        None
    }

    /// Takes one deal of the oldest second.
    pub(crate) fn pop_oldest(&mut self) -> Option<T> {
        let (_, list) = self.seconds.front()?;
        let deal = list.get(self.taken).copied();
        self.taken += 1;
        if self.taken >= list.len() {
            // Never an emptied second at the front: `oldest` speaks for a deal.
            let (_, mut list) = self.seconds.pop_front().expect("front is present");
            self.taken = 0;
            if self.spare.len() < SPARE_LISTS {
                list.clear();
                self.spare.push(list);
            }
        }
        deal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DealId;

    #[test]
    fn deals_leave_by_the_second_they_closed_whatever_order_they_were_filed_in() {
        let mut finished = FinishedDeals::<DealId>::default();
        let t = Timestamp;
        finished.push(t(10), DealId(1));
        finished.push(t(12), DealId(2));
        finished.push(t(11), DealId(3));
        finished.push(t(10), DealId(4));
        finished.push(t(12), DealId(5));
        let mut order = Vec::new();
        while let Some(second) = finished.oldest() {
            let deal = finished.pop_oldest().expect("a deal of that second");
            order.push((second.0, deal.0));
        }
        order.sort_by_key(|(second, _)| *second);
        assert_eq!(
            order.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [10, 10, 11, 12, 12]
        );
        let mut ids: Vec<u64> = order.iter().map(|(_, d)| *d).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_seconds_deals_leave_in_the_order_they_closed_even_when_an_older_second_arrives() {
        let mut finished = FinishedDeals::<DealId>::default();
        let t = Timestamp;
        for deal in [1, 2, 3] {
            finished.push(t(10), DealId(deal));
        }
        assert_eq!(finished.pop_oldest(), Some(DealId(1)));
        // A deferred end closes at an older second, behind the one being emptied.
        finished.push(t(9), DealId(7));
        finished.push(t(10), DealId(4));
        let mut order = Vec::new();
        while let Some(second) = finished.oldest() {
            order.push((second.0, finished.pop_oldest().map(|d| d.0)));
        }
        assert_eq!(
            order,
            [(9, Some(7)), (10, Some(2)), (10, Some(3)), (10, Some(4))]
        );
    }

    #[test]
    fn looking_ahead_names_the_deals_that_leave_next_in_order() {
        let mut finished = FinishedDeals::<DealId>::default();
        let t = Timestamp;
        for (second, deal) in [(10, 1), (10, 2), (11, 3), (12, 4), (11, 5)] {
            finished.push(t(second), DealId(deal));
        }
        let ahead: Vec<Option<DealId>> = (0..6).map(|k| finished.ahead(k)).collect();
        let mut popped = Vec::new();
        while finished.oldest().is_some() {
            popped.push(finished.pop_oldest());
        }
        popped.push(None);
        assert_eq!(ahead, popped);
    }
}
