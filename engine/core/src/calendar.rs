//! The per-IP calendar: which leases hold an IP over which seconds, so an IP is never booked
//! beyond its tenant cap in overlapping time.

use rkyv::{Archive, Deserialize, Serialize};
use smallvec::SmallVec;

use crate::types::{DealId, Timestamp};

/// One lease's hold on one IP over `[start, end)`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[rkyv(derive(Debug))]
pub struct Booking {
    /// First leased second.
    pub start: Timestamp,
    /// First second after the lease.
    pub end: Timestamp,
    /// The deal holding the IP.
    pub deal: DealId,
}

impl Booking {
    fn overlaps(&self, start: Timestamp, end: Timestamp) -> bool {
        self.start < end && start < self.end
    }
}

/// How a calendar looks to the matcher's indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// No booking at all.
    Idle,
    /// Exclusive IP held without gaps over `[first_start, free_from)`: it admits `[s, e)` exactly
    /// when `e <= first_start` or `s >= free_from`, which two ordered indexes answer.
    Simple {
        first_start: Timestamp,
        free_from: Timestamp,
    },
    /// Anything else (shared IPs, gaps between bookings): checked booking by booking.
    Irregular,
}

/// The bookings of one IP, sorted by start. Most IPs hold one lease at a time, kept inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    bookings: SmallVec<[Booking; 1]>,
}

impl From<Vec<Booking>> for Calendar {
    fn from(mut bookings: Vec<Booking>) -> Calendar {
        bookings.sort_unstable();
        Calendar {
            bookings: SmallVec::from_vec(bookings),
        }
    }
}

impl Calendar {
    /// The bookings, sorted by start then deal.
    pub fn bookings(&self) -> &[Booking] {
        &self.bookings
    }

    /// Whether there is no booking.
    pub fn is_empty(&self) -> bool {
        self.bookings.is_empty()
    }

    /// Whether one more lease over `[start, end)` keeps every second at or under `cap` tenants.
    pub fn admits(&self, start: Timestamp, end: Timestamp, cap: u16) -> bool {
        let cap = usize::from(cap);
        let overlapping = self
            .bookings
            .iter()
            .filter(|b| b.overlaps(start, end))
            .count();
        if overlapping < cap {
            return true;
        }
        // Overlapping the request is not overlapping each other: sweep for the true peak.
        let mut edges: Vec<(Timestamp, i32)> = self
            .bookings
            .iter()
            .filter(|b| b.overlaps(start, end))
            .flat_map(|b| [(b.start.max(start), 1), (b.end.min(end), -1)])
            .collect();
        // Ends sort before starts at the same second: [a, t) and [t, b) do not overlap.
        edges.sort_unstable();
        let mut load = 0usize;
        for (_, delta) in edges {
            load = load.saturating_add_signed(delta as isize);
            if load >= cap {
                return false;
            }
        }
        true
    }

    /// Adds a booking. The caller has checked [`Calendar::admits`].
    pub fn book(&mut self, booking: Booking) {
        let at = self.bookings.partition_point(|b| *b < booking);
        self.bookings.insert(at, booking);
    }

    /// Removes the deal's booking; returns whether there was one.
    pub fn release(&mut self, deal: DealId) -> bool {
        let before = self.bookings.len();
        self.bookings.retain(|b| b.deal != deal);
        self.bookings.len() != before
    }

    pub(crate) fn shape(&self, cap: u16) -> Shape {
        let (Some(first), Some(last)) = (self.bookings.first(), self.bookings.last()) else {
            return Shape::Idle;
        };
        let contiguous = self.bookings.windows(2).all(|w| w[1].start == w[0].end);
        if cap == 1 && contiguous {
            Shape::Simple {
                first_start: first.start,
                free_from: last.end,
            }
        } else {
            Shape::Irregular
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booking(start: u64, end: u64, deal: u64) -> Booking {
        Booking {
            start: Timestamp(start),
            end: Timestamp(end),
            deal: DealId(deal),
        }
    }

    fn calendar(bookings: &[(u64, u64)]) -> Calendar {
        let mut calendar = Calendar::default();
        for (i, (start, end)) in bookings.iter().enumerate() {
            calendar.book(booking(*start, *end, i as u64));
        }
        calendar
    }

    #[test]
    fn exclusive_ips_admit_only_free_time() {
        let c = calendar(&[(10, 20), (30, 40)]);
        let t = Timestamp;
        assert!(c.admits(t(0), t(10), 1));
        assert!(c.admits(t(20), t(30), 1));
        assert!(c.admits(t(40), t(50), 1));
        assert!(!c.admits(t(15), t(16), 1));
        assert!(!c.admits(t(19), t(31), 1));
        assert!(!c.admits(t(0), t(100), 1));
        assert_eq!(c.shape(1), Shape::Irregular);
    }

    #[test]
    fn shared_ips_count_the_peak_not_the_overlaps() {
        // Two tenants allowed; [0,10) and [10,20) never overlap each other.
        let c = calendar(&[(0, 10), (10, 20)]);
        assert!(c.admits(Timestamp(5), Timestamp(15), 2));
        let c = calendar(&[(0, 10), (5, 20)]);
        assert!(!c.admits(Timestamp(6), Timestamp(7), 2));
        assert!(c.admits(Timestamp(0), Timestamp(5), 2));
        assert!(c.admits(Timestamp(10), Timestamp(30), 2));
    }

    #[test]
    fn shapes_follow_bookings() {
        let mut c = calendar(&[(10, 20)]);
        assert_eq!(
            c.shape(1),
            Shape::Simple {
                first_start: Timestamp(10),
                free_from: Timestamp(20)
            }
        );
        c.book(booking(20, 25, 7));
        assert_eq!(
            c.shape(1),
            Shape::Simple {
                first_start: Timestamp(10),
                free_from: Timestamp(25)
            }
        );
        assert_eq!(c.shape(2), Shape::Irregular);
        assert!(c.release(DealId(0)));
        assert!(!c.release(DealId(0)));
        assert!(c.release(DealId(7)));
        assert_eq!(c.shape(1), Shape::Idle);
    }
}
