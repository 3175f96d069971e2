//! Per-lease state shared by every connection of a lease: metering and the cut-off signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::credentials::{Grant, LeaseId};

/// What a lease has used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseUsage {
    /// Bytes from the client to destinations.
    pub bytes_up: u64,
    /// Bytes from destinations to the client.
    pub bytes_down: u64,
    /// Connections (and UDP associations) accepted in all.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// First second a connection was accepted (unix), 0 if none.
    pub first_seen: u64,
    /// Seconds of the lease's window served so far: from its start to now, stopped at its end
    /// or at the cut.
    pub seconds: u64,
    /// Whether the lease was cut (payment lapsed or ended early).
    pub cut: bool,
}

/// One lease's live state, shared by the connections to every IP of the lease (the grant
/// kept here is the first one seen: its IP is not the egress IP of other connections, which
/// each leave from their own verified grant's IP).
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub(crate) grant: Grant,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) first_seen: AtomicU64,
    /// When the lease was cut here (unix), 0 if it was not.
    pub(crate) cut_at: AtomicU64,
    pub(crate) cut: watch::Sender<bool>,
}

impl LeaseState {
    pub(crate) fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Seconds of the window served by `now`: stopped at the end or at the cut.
    fn seconds_served(&self, now: u64) -> u64 {
        let cut_at = self.cut_at.load(Ordering::Acquire);
        let stop = if cut_at == 0 { now } else { now.min(cut_at) };
        stop.min(self.grant.not_after)
            .saturating_sub(self.grant.not_before)
    }

    /// Meters bytes a client sent that reached the destination outside the relay.
    pub(crate) fn count_up(&self, bytes: usize) {
        self.bytes_up.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Meters bytes that reached the client outside the relay.
    pub(crate) fn count_down(&self, bytes: usize) {
        self.bytes_down.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a new connection if the lease is below `limit` open ones; the guard uncounts it.
    pub(crate) fn open_connection(self: &Arc<Self>, limit: u64) -> Option<OpenConnection> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(OpenConnection(Arc::clone(self)))
    }
}

/// One open connection of a lease, counted in [`LeaseUsage::open`] while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<LeaseState>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The proxy's leases; the payments side and the node drive [`LeaseTable::cut`] and read
/// [`LeaseTable::usage`].
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: Mutex<HashMap<LeaseId, Arc<LeaseState>>>,
    /// Leases cut with no state here (cut before any connection arrived, or forgotten after
    /// a cut), and the second their credentials expire: a cut must hold for later
    /// connections too, and is dropped once no credential of the lease can verify.
    cut_early: Mutex<HashMap<LeaseId, u64>>,
}

impl LeaseTable {
    /// The state of a verified lease, created on its first connection.
    pub(crate) fn enter(&self, grant: Grant, now: u64) -> Arc<LeaseState> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let state = leases.entry(grant.lease).or_insert_with(|| {
            let cut = self
                .cut_early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&grant.lease);
            Arc::new(LeaseState {
                grant,
                bytes_up: AtomicU64::new(0),
                bytes_down: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                open: AtomicU64::new(0),
                first_seen: AtomicU64::new(now),
                cut_at: AtomicU64::new(0),
                cut: watch::channel(cut).0,
            })
        });
        Arc::clone(state)
    }

    /// Cuts a lease: new connections are refused, open ones closed at once.
    pub fn cut(&self, lease: LeaseId) {
        self.cut_until(lease, u64::MAX);
    }

    /// Cuts a lease whose credentials expire at `until` (unix): once that has passed,
    /// [`LeaseTable::sweep`] may drop the cut.
    pub fn cut_until(&self, lease: LeaseId, until: u64) {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get(&lease) {
            Some(state) => {
                let _ = state.cut_at.compare_exchange(
                    0,
                    crate::relay::unix_now(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                state.cut.send_replace(true);
            }
            None => {
                self.cut_early
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(lease, until);
            }
        }
    }

    /// Drops cuts of leases whose credentials expired before `now`: nothing can use them.
    pub fn sweep(&self, now: u64) {
        self.cut_early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until >= now);
    }

    /// Leases with state here, and cuts kept without state.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.leases.lock().unwrap_or_else(|e| e.into_inner()).len(),
            self.cut_early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
        )
    }

    /// Forgets a lease (once it has ended and its usage was read), returning its last usage.
    /// A cut lease stays refused: its credentials still verify until they expire.
    pub fn forget(&self, lease: LeaseId) -> Option<LeaseUsage> {
        let usage = self.usage(lease)?;
        let state = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease)?;
        if usage.cut {
            self.cut_early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(lease, state.grant.not_after);
        }
        Some(usage)
    }

    /// What a lease has used, if it has been seen.
    pub fn usage(&self, lease: LeaseId) -> Option<LeaseUsage> {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.get(&lease).map(|state| LeaseUsage {
            bytes_up: state.bytes_up.load(Ordering::Relaxed),
            bytes_down: state.bytes_down.load(Ordering::Relaxed),
            connections: state.connections.load(Ordering::Relaxed),
            open: state.open.load(Ordering::Relaxed),
            first_seen: state.first_seen.load(Ordering::Relaxed),
            seconds: state.seconds_served(crate::relay::unix_now()),
            cut: state.is_cut(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Protocols;

    fn grant(not_before: u64, not_after: u64) -> Grant {
        Grant {
            lease: 1,
            ip: "127.0.0.2".parse().expect("ip"),
            protocols: Protocols::SOCKS5,
            not_before,
            not_after,
        }
    }

    #[test]
    fn seconds_run_from_the_start_and_stop_at_the_end_or_the_cut() {
        let table = LeaseTable::default();
        let state = table.enter(grant(100, 200), 120);
        assert_eq!(state.seconds_served(150), 50);
        assert_eq!(state.seconds_served(250), 100, "stops at the end");
        assert_eq!(state.seconds_served(50), 0, "nothing before the start");
        state.cut_at.store(170, Ordering::Release);
        assert_eq!(state.seconds_served(190), 70, "stops at the cut");
    }

    #[test]
    fn a_cut_before_the_first_connection_holds_and_forget_keeps_it() {
        let table = LeaseTable::default();
        table.cut(1);
        assert!(table.enter(grant(0, u64::MAX), 5).is_cut());
        let usage = table.forget(1).expect("seen");
        assert!(usage.cut);
        assert!(
            table.enter(grant(0, u64::MAX), 6).is_cut(),
            "still cut after forget"
        );
    }

    #[test]
    fn forgotten_leases_leave_nothing_but_a_cut_and_the_cut_goes_once_expired() {
        let table = LeaseTable::default();
        table.enter(grant(100, 200), 120);
        table.forget(1).expect("seen");
        assert_eq!(table.sizes(), (0, 0), "an uncut lease leaves nothing");
        table.enter(grant(100, 200), 150);
        table.cut_until(1, 200);
        table.forget(1).expect("seen");
        assert_eq!(
            table.sizes(),
            (0, 1),
            "the cut stays while credentials verify"
        );
        table.sweep(200);
        assert_eq!(table.sizes(), (0, 1));
        table.sweep(201);
        assert_eq!(table.sizes(), (0, 0), "expired: nothing can use it");
    }

    #[test]
    fn the_connection_cap_counts_and_uncounts() {
        let table = LeaseTable::default();
        let state = table.enter(grant(0, u64::MAX), 5);
        let first = state.open_connection(2).expect("room");
        let second = state.open_connection(2).expect("room");
        assert!(state.open_connection(2).is_none(), "at the cap");
        drop(first);
        let _third = state.open_connection(2).expect("room again");
        drop(second);
        let usage = table.usage(1).expect("seen");
        assert_eq!((usage.open, usage.connections), (1, 3));
    }
}
