//! What is due when: ready deadlines, lease ends, request expiries and offer windows, fired in
//! order of time, then kind, then id.
//!
//! Deal timers are the many: a ready deadline per lease, and its end once active. Time is whole seconds, so they sit in one bucket
//! per second (a calendar queue): adding is a push onto the bucket's list for that kind, with
//! no tree to rebalance, and a second's bucket is sorted once, when it falls due. Emptied
//! buckets are kept for reuse, so a steady stream of leases allocates nothing here. Their
//! removal is lazy: a deal that ended early leaves its timer in its bucket, the engine skips
//! it when it pops (it checks the deal's status), and [`Timers::remove`] only lowers the live
//! count, since taking one entry out of a bucket of 100,000 would cost a scan.
//!
//! Offer and request timers are few, amended and cancelled at will: they sit in an ordered set
//! and leave it at once.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{DealId, OfferId, RequestId, Timestamp};

/// Something due at a given time. The order of the variants is the order in which things due
/// at the same second happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    ReadyDeadline(DealId),
    DealEnd(DealId),
    RequestExpiry(RequestId),
    OfferOpens(OfferId),
    OfferCloses(OfferId),
}

/// Kinds kept in buckets: the deal timers.
const BUCKETED: usize = 2;

impl Timer {
    /// The bucket list and id of a deal timer; `None` for the others.
    fn bucketed(self) -> Option<(usize, u64)> {
        match self {
            Timer::ReadyDeadline(id) => Some((0, id.0)),
            Timer::DealEnd(id) => Some((1, id.0)),
            _ => None,
        }
    }

    fn from_bucket(kind: usize, id: u64) -> Timer {
        if kind == 0 {
            Timer::ReadyDeadline(DealId(id))
        } else {
            Timer::DealEnd(DealId(id))
        }
    }
}

/// One second's deal timers, a list per kind. While the second is being fired each list is
/// sorted in descending order, so the next timer is the last element.
#[derive(Clone, Debug, Default)]
struct Bucket {
    kinds: [Vec<u64>; BUCKETED],
    firing: bool,
}

impl Bucket {
    fn push(&mut self, kind: usize, id: u64) {
        let ids = &mut self.kinds[kind];
        if self.firing {
            let at = ids.partition_point(|held| *held > id);
            ids.insert(at, id);
        } else {
            ids.push(id);
        }
    }

    /// Sorts each list for firing. Deals are made in id order, so the lists mostly arrive
    /// sorted and a reverse is enough.
    fn start_firing(&mut self) {
        for ids in &mut self.kinds {
            if ids.is_sorted() {
                ids.reverse();
            } else {
                ids.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
        self.firing = true;
    }

    fn pop(&mut self) -> Option<Timer> {
        self.kinds
            .iter_mut()
            .enumerate()
            .find_map(|(kind, ids)| ids.pop().map(|id| Timer::from_bucket(kind, id)))
    }

    fn clear(&mut self) {
        for ids in &mut self.kinds {
            ids.clear();
        }
        self.firing = false;
    }
}

/// Emptied buckets kept for reuse.
const SPARE_BUCKETS: usize = 64;

/// The engine's timers: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    buckets: BTreeMap<Timestamp, Bucket>,
    /// Live deal timers (the buckets also hold dead ones).
    live_in_buckets: usize,
    spare: Vec<Bucket>,
    exact: BTreeSet<(Timestamp, Timer)>,
}

impl Timers {
    pub(crate) fn add(&mut self, due: Timestamp, timer: Timer) {
        let Some((kind, id)) = timer.bucketed() else {
            self.exact.insert((due, timer));
            return;
        };
        self.live_in_buckets += 1;
        let spare = &mut self.spare;
        self.buckets
            .entry(due)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(kind, id);
    }

    /// The timer's subject no longer waits for it (it fired, or ended early). For a deal
    /// timer, call it exactly once per [`Timers::add`].
    pub(crate) fn remove(&mut self, due: Timestamp, timer: Timer) {
        if timer.bucketed().is_some() {
            self.live_in_buckets = self.live_in_buckets.saturating_sub(1);
        } else {
            self.exact.remove(&(due, timer));
        }
    }

    /// Live timers: added and not removed.
    pub(crate) fn len(&self) -> usize {
        self.live_in_buckets + self.exact.len()
    }

    /// The next timer due at or before `now`. Deal timers may be dead: the caller checks them
    /// against their deal and calls [`Timers::remove`] for the live ones it fires. The others
    /// are live and leave the set as they pop.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        let exact_due = self.exact.first().map(|(due, _)| *due);
        loop {
            let bucket_due = self.buckets.first_key_value().map(|(due, _)| *due);
            // Deal timers come first among those due at the same second.
            let from_bucket = match (bucket_due, exact_due) {
                (Some(bucket), Some(exact)) => bucket <= exact,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !from_bucket {
                return match exact_due {
                    Some(due) if due <= now => self.exact.pop_first(),
                    _ => None,
                };
            }
            let mut first = self.buckets.first_entry()?;
            let due = *first.key();
            if due > now {
                return None;
            }
            let bucket = first.get_mut();
            if !bucket.firing {
                bucket.start_firing();
            }
            if let Some(timer) = bucket.pop() {
                return Some((due, timer));
            }
            let mut bucket = first.remove();
            if self.spare.len() < SPARE_BUCKETS {
                bucket.clear();
                self.spare.push(bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn timer(kind: u8, id: u64) -> Timer {
        match kind % 5 {
            0 => Timer::ReadyDeadline(DealId(id)),
            1 => Timer::DealEnd(DealId(id)),
            2 => Timer::RequestExpiry(RequestId(id)),
            3 => Timer::OfferOpens(OfferId(id)),
            _ => Timer::OfferCloses(OfferId(id)),
        }
    }

    proptest! {
        /// Against an ordered set of live timers (what the engine kept before): the live
        /// timers come out in the same order, dead ones are only ever extra, and the live
        /// count agrees. As in the engine, a deal timer is added once and removed at most
        /// once; offer and request timers come and go freely.
        #[test]
        fn fires_live_timers_like_an_ordered_set(
            ops in proptest::collection::vec((0u8..4, 0u8..5, 0u64..40, 0u64..12), 1..300)
        ) {
            let mut timers = Timers::default();
            let mut model: BTreeSet<(Timestamp, Timer)> = BTreeSet::new();
            let mut added: BTreeSet<Timer> = BTreeSet::new();
            let mut now = 0u64;
            let mut next_deal = 0u64;
            for (op, kind, id, at) in ops {
                match op {
                    0 => {
                        let due = Timestamp(now + at);
                        let t = if kind % 5 < 2 {
                            next_deal += 1;
                            timer(kind, next_deal)
                        } else {
                            timer(kind, id)
                        };
                        if t.bucketed().is_none() || added.insert(t) {
                            timers.add(due, t);
                            model.insert((due, t));
                        }
                    }
                    1 => {
                        // Remove a live timer, as the engine does when a subject ends early.
                        let Some(&(due, t)) = model.iter().nth(id as usize % model.len().max(1)) else {
                            continue;
                        };
                        timers.remove(due, t);
                        model.remove(&(due, t));
                    }
                    _ => {
                        now += at;
                        let mut fired = Vec::new();
                        while let Some((due, t)) = timers.pop_due(Timestamp(now)) {
                            // The engine fires a popped deal timer only if it is still live.
                            if model.remove(&(due, t)) {
                                if t.bucketed().is_some() {
                                    timers.remove(due, t);
                                }
                                fired.push((due, t));
                            } else {
                                prop_assert!(t.bucketed().is_some(), "only deal timers linger");
                            }
                        }
                        prop_assert!(fired.is_sorted(), "fired in order: {:?}", fired);
                        prop_assert!(
                            model.first().is_none_or(|(due, _)| due.0 > now),
                            "everything due fired"
                        );
                    }
                }
                prop_assert_eq!(timers.len(), model.len());
            }
        }
    }

    fn drain(timers: &mut Timers, now: u64) -> Vec<(u64, Timer)> {
        std::iter::from_fn(|| timers.pop_due(Timestamp(now)))
            .map(|(due, timer)| (due.0, timer))
            .collect()
    }

    #[test]
    fn fire_in_time_then_kind_then_id_order() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(20), Timer::DealEnd(DealId(3)));
        timers.add(t(10), Timer::OfferCloses(OfferId(1)));
        timers.add(t(20), Timer::ReadyDeadline(DealId(9)));
        timers.add(t(20), Timer::DealEnd(DealId(1)));
        timers.add(t(30), Timer::DealEnd(DealId(2)));
        assert_eq!(drain(&mut timers, 5), vec![]);
        assert_eq!(
            drain(&mut timers, 20),
            vec![
                (10, Timer::OfferCloses(OfferId(1))),
                (20, Timer::ReadyDeadline(DealId(9))),
                (20, Timer::DealEnd(DealId(1))),
                (20, Timer::DealEnd(DealId(3))),
            ]
        );
        assert_eq!(timers.len(), 4, "deal timers stay live until removed");
    }

    #[test]
    fn a_timer_added_to_the_second_being_fired_keeps_its_place() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(10), Timer::DealEnd(DealId(1)));
        timers.add(t(10), Timer::DealEnd(DealId(5)));
        assert_eq!(
            timers.pop_due(t(10)),
            Some((t(10), Timer::DealEnd(DealId(1))))
        );
        timers.add(t(10), Timer::DealEnd(DealId(3)));
        timers.add(t(10), Timer::ReadyDeadline(DealId(7)));
        assert_eq!(
            drain(&mut timers, 10),
            vec![
                (10, Timer::ReadyDeadline(DealId(7))),
                (10, Timer::DealEnd(DealId(3))),
                (10, Timer::DealEnd(DealId(5))),
            ]
        );
    }

    #[test]
    fn amended_offer_and_request_timers_are_held_once() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(10), Timer::RequestExpiry(RequestId(4)));
        timers.remove(t(10), Timer::RequestExpiry(RequestId(4)));
        timers.add(t(10), Timer::RequestExpiry(RequestId(4)));
        assert_eq!(timers.len(), 1);
        assert_eq!(
            drain(&mut timers, 10),
            vec![(10, Timer::RequestExpiry(RequestId(4)))]
        );
    }

    #[test]
    fn buckets_are_reused() {
        let mut timers = Timers::default();
        for second in 0..1_000u64 {
            for id in 0..10 {
                timers.add(
                    Timestamp(second + 5),
                    Timer::DealEnd(DealId(second * 10 + id)),
                );
            }
            let fired = drain(&mut timers, second);
            for (due, timer) in &fired {
                timers.remove(Timestamp(*due), *timer);
            }
        }
        assert!(timers.buckets.len() <= 6);
        assert!(!timers.spare.is_empty());
    }
}
