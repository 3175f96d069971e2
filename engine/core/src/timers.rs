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
//! Offer and request timers are amended and cancelled at will, and not always few: a home
//! user's offer comes and goes with its window's end timer. They sit in one hash set per
//! second and leave it at once: adding or removing one is a probe in a set that is mostly
//! the same one (offers share a window's end), with no tree node split or merged per offer,
//! and a second is sorted once, when it falls due.
//!
//! **Deferred seconds.** Most deal timers only end a deal: a lease reaching its end, or a ready
//! deadline that falls on the lease's end (nothing is left to re-match). The engine may settle
//! those later, a few per command, instead of all when their second falls due (see
//! `Engine::apply_deferring`). A ready deadline whose void would re-match the rest of the lease
//! must fire exactly in order, so the engine *watches* it ([`Timers::watch`]); a due second with
//! no live watched timer can be taken whole ([`Timers::defer_due`]) into the deferred queue,
//! in O(1) whatever its size, remembering when it fell due.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashSet;

use crate::types::{DealId, OfferId, RequestId, Timestamp};

/// Something due at a given time. The order of the variants is the order in which things due
/// at the same second happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// The deal a deal timer is for; `None` for the others.
    pub(crate) fn deal(self) -> Option<DealId> {
        match self {
            Timer::ReadyDeadline(id) | Timer::DealEnd(id) => Some(id),
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
    /// Live timers in it, until it fires: a second whose timers all died (ready deadlines of
    /// deals that got ready, mostly) is dropped whole.
    live: u32,
    /// Live watched ready deadlines: while any, the second cannot be deferred.
    watched: u32,
}

impl Bucket {
    fn push(&mut self, kind: usize, id: u64) {
        self.live += 1;
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
        self.live = 0;
        self.watched = 0;
    }
}

/// A due second taken whole, to be settled later.
#[derive(Clone, Debug)]
struct DeferredSecond {
    /// The clock of the command whose arrival made the second due: when an eager engine would
    /// have fired its timers.
    fired_at: Timestamp,
    due: Timestamp,
    bucket: Bucket,
    /// How many of each list were popped: a deferred second settles front first, in the order
    /// its deals were made (and their records written), which is also the order the matcher
    /// meets their IPs again — the cheapest offers' leases were made first. Nothing is sorted
    /// or reversed when it falls due.
    popped: [usize; BUCKETED],
}

impl DeferredSecond {
    fn pop(&mut self) -> Option<Timer> {
        for (kind, ids) in self.bucket.kinds.iter().enumerate() {
            if let Some(id) = ids.get(self.popped[kind]) {
                self.popped[kind] += 1;
                return Some(Timer::from_bucket(kind, *id));
            }
        }
        None
    }
}

/// Emptied buckets kept for reuse.
const SPARE_BUCKETS: usize = 64;

/// One second's offer and request timers.
#[derive(Clone, Debug, Default)]
struct ExactSecond {
    live: FxHashSet<Timer>,
    /// Once the second fires: its timers sorted in descending order, the next one last. A
    /// timer removed since is skipped as it comes up.
    firing: Vec<Timer>,
}

/// Offer and request timers, one set per second (see the module docs).
#[derive(Clone, Debug, Default)]
struct ExactTimers {
    seconds: BTreeMap<Timestamp, ExactSecond>,
    len: usize,
    spare: Vec<ExactSecond>,
}

impl ExactTimers {
    fn insert(&mut self, due: Timestamp, timer: Timer) {
        let spare = &mut self.spare;
        let second = self
            .seconds
            .entry(due)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        if !second.live.insert(timer) {
            return;
        }
        self.len += 1;
        if !second.firing.is_empty() {
            let at = second.firing.partition_point(|held| *held > timer);
            second.firing.insert(at, timer);
        }
    }

    fn remove(&mut self, due: Timestamp, timer: Timer) {
        let Some(second) = self.seconds.get_mut(&due) else {
            return;
        };
        if !second.live.remove(&timer) {
            return;
        }
        self.len -= 1;
        if second.live.is_empty() {
            let second = self.seconds.remove(&due).expect("looked up above");
            self.recycle(second);
        }
    }

    /// When the first timer is due.
    fn first_due(&self) -> Option<Timestamp> {
        self.seconds.first_key_value().map(|(due, _)| *due)
    }

    /// Takes the first timer: the earliest second, then kind, then id.
    fn pop_first(&mut self) -> Option<(Timestamp, Timer)> {
        let mut first = self.seconds.first_entry()?;
        let due = *first.key();
        let second = first.get_mut();
        if second.firing.is_empty() {
            second.firing.extend(second.live.iter().copied());
            second.firing.sort_unstable_by(|a, b| b.cmp(a));
        }
        let timer = loop {
            let timer = second
                .firing
                .pop()
                .expect("a second with live timers lists them");
            if second.live.remove(&timer) {
                break timer;
            }
        };
        self.len -= 1;
        if second.live.is_empty() {
            let second = first.remove();
            self.recycle(second);
        }
        Some((due, timer))
    }

    fn recycle(&mut self, mut second: ExactSecond) {
        if self.spare.len() < SPARE_BUCKETS {
            second.live.clear();
            second.firing.clear();
            self.spare.push(second);
        }
    }
}

/// The engine's timers: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    buckets: BTreeMap<Timestamp, Bucket>,
    /// Live deal timers (the buckets also hold dead ones).
    live_in_buckets: usize,
    spare: Vec<Bucket>,
    exact: ExactTimers,
    /// Deferred seconds, in order of `due` (strictly increasing).
    deferred: VecDeque<DeferredSecond>,
    /// Timers in `deferred` that were live when deferred and have not been settled since.
    deferred_live: usize,
    /// The latest time popped or deferred through: a bucket due by then holds no counts.
    through: Timestamp,
}

impl Timers {
    pub(crate) fn add(&mut self, due: Timestamp, timer: Timer) {
        let Some((kind, id)) = timer.bucketed() else {
            self.exact.insert(due, timer);
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
            if let Some(bucket) = self.counted_bucket(due) {
                bucket.live = bucket.live.saturating_sub(1);
            }
        } else {
            self.exact.remove(due, timer);
        }
    }

    /// Live timers: added and not removed.
    pub(crate) fn len(&self) -> usize {
        self.live_in_buckets + self.exact.len
    }

    /// Marks the ready deadline just added at `due` as watched: its second fires in order.
    pub(crate) fn watch(&mut self, due: Timestamp) {
        if let Some(bucket) = self.buckets.get_mut(&due) {
            bucket.watched += 1;
        }
    }

    /// A watched ready deadline at `due` will not fire (its deal left pending first).
    pub(crate) fn unwatch(&mut self, due: Timestamp) {
        if let Some(bucket) = self.counted_bucket(due) {
            bucket.watched = bucket.watched.saturating_sub(1);
        }
    }

    /// The bucket of a second still ahead, whose counts speak for its timers. A second popped
    /// or deferred already may have a bucket again (a timer added late), but the timer being
    /// removed is not in it.
    fn counted_bucket(&mut self, due: Timestamp) -> Option<&mut Bucket> {
        if due <= self.through {
            return None;
        }
        self.buckets.get_mut(&due)
    }

    /// Drops the first bucket if it is due and every timer in it died.
    fn drop_dead_first(&mut self, now: Timestamp) -> bool {
        let Some(first) = self.buckets.first_entry() else {
            return false;
        };
        if *first.key() > now || first.get().firing || first.get().live > 0 {
            return false;
        }
        let bucket = first.remove();
        self.recycle(bucket);
        true
    }

    /// Whether anything is due at or before `now`.
    pub(crate) fn any_due(&self, now: Timestamp) -> bool {
        self.buckets
            .first_key_value()
            .is_some_and(|(due, _)| *due <= now)
            || self.exact.first_due().is_some_and(|due| due <= now)
    }

    /// Takes the next due second whole into the deferred queue, if it may be: it is what fires
    /// next (no offer or request timer due before it), holds no live watched timer, has not
    /// started firing, and falls after every second already deferred. It fell due `now`, when
    /// an eager engine would have fired it. Whether it did.
    pub(crate) fn defer_due(&mut self, now: Timestamp) -> bool {
        self.through = self.through.max(now);
        if self.drop_dead_first(now) {
            return true;
        }
        let Some((&due, bucket)) = self.buckets.first_key_value() else {
            return false;
        };
        let exact_first = self.exact.first_due().is_some_and(|exact| exact < due);
        let after_deferred = self.deferred.back().is_none_or(|last| last.due < due);
        if due > now || exact_first || bucket.firing || bucket.watched > 0 || !after_deferred {
            return false;
        }
        let bucket = self.buckets.remove(&due).expect("first key is present");
        self.deferred_live += bucket.live as usize;
        self.deferred.push_back(DeferredSecond {
            fired_at: now,
            due,
            bucket,
            popped: [0; BUCKETED],
        });
        true
    }

    /// Pops one deferred timer, oldest second first, with the time it fell due at. Deal timers
    /// may be dead, as from [`Timers::pop_due`]; within a second, in the order they were
    /// added. The caller reports each live one it settles ([`Timers::settled_deferred`]).
    pub(crate) fn pop_deferred(&mut self) -> Option<(Timestamp, Timer)> {
        if self.deferred_live == 0 {
            // What is left is dead: dropped whole rather than popped one by one.
            while let Some(second) = self.deferred.pop_front() {
                self.recycle(second.bucket);
            }
            return None;
        }
        loop {
            let second = self.deferred.front_mut()?;
            if let Some(timer) = second.pop() {
                return Some((second.fired_at, timer));
            }
            let second = self.deferred.pop_front().expect("front is present");
            self.recycle(second.bucket);
        }
    }

    /// The deferred timer `ahead` places behind the next one [`Timers::pop_deferred`] gives
    /// (the next one itself at 0), if the queue holds that many.
    pub(crate) fn deferred_ahead(&self, mut ahead: usize) -> Option<Timer> {
        for second in &self.deferred {
            for (kind, ids) in second.bucket.kinds.iter().enumerate() {
                let left = ids.len() - second.popped[kind];
                if ahead < left {
                    return Some(Timer::from_bucket(kind, ids[second.popped[kind] + ahead]));
                }
                ahead -= left;
            }
        }
        None
    }

    /// The timer `ahead` places behind the next one [`Timers::pop_due`] gives from the second
    /// being fired (the next one itself at 0), if that second holds that many; `None` while no
    /// second is being fired.
    pub(crate) fn firing_ahead(&self, mut ahead: usize) -> Option<Timer> {
        let (_, bucket) = self.buckets.first_key_value()?;
        if !bucket.firing {
            return None;
        }
        // Each list pops from its end, ready deadlines first.
        for (kind, ids) in bucket.kinds.iter().enumerate() {
            if ahead < ids.len() {
                return Some(Timer::from_bucket(kind, ids[ids.len() - 1 - ahead]));
            }
            ahead -= ids.len();
        }
        None
    }

    /// A live deferred timer was settled (popped, or its deal settled out of turn).
    pub(crate) fn settled_deferred(&mut self) {
        self.deferred_live = self.deferred_live.saturating_sub(1);
    }

    fn recycle(&mut self, mut bucket: Bucket) {
        if self.spare.len() < SPARE_BUCKETS {
            bucket.clear();
            self.spare.push(bucket);
        }
    }

    /// When the deferred second `due` fell due, if it is deferred.
    pub(crate) fn deferred_fired_at(&self, due: Timestamp) -> Option<Timestamp> {
        let at = self.deferred.partition_point(|second| second.due < due);
        self.deferred
            .get(at)
            .filter(|second| second.due == due)
            .map(|second| second.fired_at)
    }

    /// Deferred timers still to settle.
    pub(crate) fn deferred_len(&self) -> usize {
        self.deferred_live
    }

    /// The next timer due at or before `now`. Deal timers may be dead: the caller checks them
    /// against their deal and calls [`Timers::remove`] for the live ones it fires. The others
    /// are live and leave the set as they pop.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        self.through = self.through.max(now);
        let exact_due = self.exact.first_due();
        loop {
            if self.drop_dead_first(now) {
                continue;
            }
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
    use std::collections::BTreeSet;

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
            ops in proptest::collection::vec((0u8..5, 0u8..5, 0u64..40, 0u64..12), 1..300)
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
                    4 => {
                        // Fire one timer only: its second is left part fired, and timers
                        // added to it now must still come out in order.
                        while let Some((due, t)) = timers.pop_due(Timestamp(now)) {
                            if model.remove(&(due, t)) {
                                if t.bucketed().is_some() {
                                    timers.remove(due, t);
                                }
                                prop_assert!(
                                    model.first().is_none_or(|first| *first > (due, t)),
                                    "fired the first live timer"
                                );
                                break;
                            }
                            prop_assert!(t.bucketed().is_some(), "only deal timers linger");
                        }
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
    fn firing_ahead_names_the_timers_the_firing_second_pops_next() {
        let mut timers = Timers::default();
        let t = Timestamp;
        for id in [4, 2, 6] {
            timers.add(t(10), Timer::DealEnd(DealId(id)));
        }
        timers.add(t(10), Timer::ReadyDeadline(DealId(5)));
        timers.add(t(11), Timer::DealEnd(DealId(1)));
        assert_eq!(timers.firing_ahead(0), None, "nothing fires yet");
        assert_eq!(
            timers.pop_due(t(11)),
            Some((t(10), Timer::ReadyDeadline(DealId(5))))
        );
        let ahead: Vec<Timer> = (0..4).map_while(|k| timers.firing_ahead(k)).collect();
        let popped: Vec<Timer> = std::iter::from_fn(|| timers.pop_due(t(11)))
            .map(|(_, timer)| timer)
            .take(ahead.len())
            .collect();
        assert_eq!(ahead, popped);
        assert_eq!(
            ahead,
            [2, 4, 6].map(|id| Timer::DealEnd(DealId(id))),
            "only the second being fired"
        );
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
    fn offer_and_request_timers_added_or_removed_while_their_second_fires_keep_their_order() {
        let mut timers = Timers::default();
        let t = Timestamp;
        for id in [2, 6, 4] {
            timers.add(t(10), Timer::OfferCloses(OfferId(id)));
        }
        assert_eq!(
            timers.pop_due(t(10)),
            Some((t(10), Timer::OfferCloses(OfferId(2))))
        );
        // Mid-second: an offer closing then is placed, another is cancelled, a request
        // expiring then arrives.
        timers.add(t(10), Timer::OfferCloses(OfferId(5)));
        timers.remove(t(10), Timer::OfferCloses(OfferId(6)));
        timers.add(t(10), Timer::RequestExpiry(RequestId(9)));
        assert_eq!(timers.len(), 3);
        assert_eq!(
            drain(&mut timers, 10),
            vec![
                (10, Timer::RequestExpiry(RequestId(9))),
                (10, Timer::OfferCloses(OfferId(4))),
                (10, Timer::OfferCloses(OfferId(5))),
            ]
        );
        assert_eq!(timers.len(), 0);
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
    fn a_deferred_second_settles_in_the_order_its_timers_were_added() {
        let mut timers = Timers::default();
        let t = Timestamp;
        for id in [3, 1, 4, 5, 9] {
            timers.add(t(10), Timer::DealEnd(DealId(id)));
        }
        timers.add(t(10), Timer::ReadyDeadline(DealId(2)));
        assert!(timers.defer_due(t(11)));
        let mut order = Vec::new();
        while let Some((fired_at, timer)) = timers.pop_deferred() {
            assert_eq!(fired_at, t(11));
            timers.settled_deferred();
            order.push(timer);
        }
        // Ready deadlines first (they come first within a second), then the ends as added:
        // the order the deals were made, whose records lie one after another.
        assert_eq!(
            order,
            [
                Timer::ReadyDeadline(DealId(2)),
                Timer::DealEnd(DealId(3)),
                Timer::DealEnd(DealId(1)),
                Timer::DealEnd(DealId(4)),
                Timer::DealEnd(DealId(5)),
                Timer::DealEnd(DealId(9)),
            ]
        );
    }

    #[test]
    fn looking_ahead_in_the_deferred_queue_names_what_pops_next_across_lists_and_seconds() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(10), Timer::DealEnd(DealId(1)));
        timers.add(t(10), Timer::ReadyDeadline(DealId(2)));
        timers.add(t(10), Timer::DealEnd(DealId(3)));
        timers.add(t(11), Timer::DealEnd(DealId(4)));
        assert!(timers.defer_due(t(12)));
        assert!(timers.defer_due(t(12)));
        let mut popped = Vec::new();
        loop {
            let ahead: Vec<Option<Timer>> = (0..5).map(|k| timers.deferred_ahead(k)).collect();
            let Some((_, next)) = timers.pop_deferred() else {
                assert_eq!(ahead, [None; 5]);
                break;
            };
            timers.settled_deferred();
            assert_eq!(ahead[0], Some(next));
            popped.push(next);
            // What was one place ahead is next now, and so on down the queue.
            assert_eq!(timers.deferred_ahead(0), ahead[1]);
            assert_eq!(timers.deferred_ahead(3), ahead[4]);
        }
        assert_eq!(popped.len(), 4);
    }

    #[test]
    fn a_second_is_deferred_whole_unless_a_watched_deadline_lives_in_it() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(10), Timer::DealEnd(DealId(1)));
        timers.add(t(10), Timer::ReadyDeadline(DealId(2)));
        timers.add(t(20), Timer::ReadyDeadline(DealId(3)));
        timers.watch(t(20));
        timers.add(t(20), Timer::DealEnd(DealId(4)));

        assert!(timers.defer_due(t(25)), "second 10 has nothing watched");
        assert!(
            !timers.defer_due(t(25)),
            "second 20 holds a watched deadline"
        );
        assert_eq!(timers.deferred_len(), 2);
        assert_eq!(timers.deferred_fired_at(t(10)), Some(t(25)));
        assert_eq!(timers.deferred_fired_at(t(20)), None);
        assert_eq!(
            drain(&mut timers, 25),
            vec![
                (20, Timer::ReadyDeadline(DealId(3))),
                (20, Timer::DealEnd(DealId(4)))
            ]
        );

        let mut deferred = Vec::new();
        while let Some((fired_at, timer)) = timers.pop_deferred() {
            timers.settled_deferred();
            deferred.push((fired_at.0, timer));
        }
        deferred.sort();
        assert_eq!(
            deferred,
            vec![
                (25, Timer::ReadyDeadline(DealId(2))),
                (25, Timer::DealEnd(DealId(1)))
            ]
        );
        assert_eq!(timers.deferred_len(), 0);
    }

    #[test]
    fn a_second_whose_timers_all_died_is_dropped_and_an_unwatched_one_defers() {
        let mut timers = Timers::default();
        let t = Timestamp;
        timers.add(t(10), Timer::ReadyDeadline(DealId(1)));
        timers.add(t(10), Timer::ReadyDeadline(DealId(2)));
        timers.remove(t(10), Timer::ReadyDeadline(DealId(1)));
        timers.remove(t(10), Timer::ReadyDeadline(DealId(2)));
        timers.add(t(12), Timer::ReadyDeadline(DealId(3)));
        timers.watch(t(12));
        timers.unwatch(t(12));
        assert_eq!(drain(&mut timers, 11), vec![], "dead timers are not popped");
        assert!(timers.defer_due(t(12)));
        assert_eq!(timers.deferred_len(), 1);
        assert!(timers.buckets.is_empty());
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
