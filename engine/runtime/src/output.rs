//! The shard's output: every batch's events, published once the batch is durable.
//!
//! LMAX style, the writer is the only place the book changes, and what changed leaves it as
//! one ordered stream: the events of accepted commands, of refused ones (the clock still moved
//! and timers fired) and of the writer's own ticks, in the order they happened. A batch with
//! no events is published too when it moved the clock, so followers know how far the engine's
//! time has gone even when nothing happens (the payment hub never runs ahead of it). Followers
//! (the node's feed, a test, a replica) react to it instead of polling the book.
//!
//! ```text
//!  writer: apply batch ─► commit ─► EventBatch { seq, at, events } ─► every follower's sink
//!                                                                        │ full? lag flag
//!                                                                        ▼
//!                                                   follower: Batch(..) … Lagged ─► re-read
//! ```
//!
//! A sink never blocks the writer. A follower that falls behind (its queue is full) loses
//! batches; it is told so once ([`Followed::Lagged`]) and must re-read what it follows from
//! the engine, as after a restart.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ipsx_engine::{Event, Timestamp};

/// What one batch of the writer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBatch {
    /// The last journal record durable after the batch (a batch of reads and refusals
    /// repeats the previous one).
    pub seq: u64,
    /// The engine's clock after the batch.
    pub at: Timestamp,
    /// What happened, in order.
    pub events: Vec<Event>,
}

/// What one command did, as its submitter gets it: its part of its batch's events.
///
/// A batch's events sit in one buffer that its submitters (and, when the shard is followed,
/// its followers) share: answering a command allocates nothing. A `Vec` per command, made on
/// the writer and freed on the submitter's thread, cost the writer 7 % of its throughput.
/// Holding an `Events` holds its batch's buffer (a few MB at most): keep what you need of it
/// ([`Events::into_vec`]) rather than the handle, when you keep it long.
#[derive(Clone, Default)]
pub struct Events {
    held: Held,
}

#[derive(Clone)]
enum Held {
    /// A range of a batch's events.
    Shared(Arc<EventBatch>, Range<usize>),
    /// Events of their own (answers read on the writer, before the batch is shared).
    Owned(Vec<Event>),
}

impl Default for Held {
    fn default() -> Self {
        Held::Owned(Vec::new())
    }
}

impl Events {
    /// Events `range` of `batch`.
    pub(crate) fn of_batch(batch: &Arc<EventBatch>, range: Range<usize>) -> Events {
        debug_assert!(range.end <= batch.events.len());
        Events {
            held: Held::Shared(Arc::clone(batch), range),
        }
    }

    /// Events of their own.
    pub(crate) fn owned(events: Vec<Event>) -> Events {
        Events {
            held: Held::Owned(events),
        }
    }

    /// The events as a vector of their own (a copy, unless they were owned already).
    pub fn into_vec(self) -> Vec<Event> {
        match self.held {
            Held::Shared(batch, range) => batch.events[range].to_vec(),
            Held::Owned(events) => events,
        }
    }
}

impl Deref for Events {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        match &self.held {
            Held::Shared(batch, range) => &batch.events[range.clone()],
            Held::Owned(events) => events,
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Events {
    fn eq(&self, other: &Events) -> bool {
        **self == **other
    }
}

impl Eq for Events {}

/// Where the shard hands each non-empty batch once it is durable; runs on the journal thread,
/// between syncs, so it must be quick and must not block (hand the batch to a queue and
/// return).
pub type Sink = Box<dyn FnMut(&Arc<EventBatch>) + Send>;

/// What a [`Follower`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// The next batch.
    Batch(Arc<EventBatch>),
    /// Batches were dropped because this follower fell behind: re-read the engine.
    Lagged,
}

/// A queue of batches for a follower on its own thread (see [`crate::ShardHandle::follow`]).
#[derive(Debug)]
pub struct Follower {
    batches: Receiver<Arc<EventBatch>>,
    lagged: Arc<AtomicBool>,
}

impl Follower {
    /// A follower and the sink that feeds it, holding up to `capacity` batches.
    pub fn new(capacity: usize) -> (Follower, Sink) {
        let (sender, batches) = crossbeam_channel::bounded(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let sink = lagging_sink(sender, Arc::clone(&lagged));
        (Follower { batches, lagged }, sink)
    }

    /// The next batch, or `Lagged`, waiting at most `timeout`; `None` if nothing came (or the
    /// shard stopped and everything was read).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Followed> {
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Some(Followed::Lagged);
        }
        match self.batches.recv_timeout(timeout) {
            Ok(batch) => Some(Followed::Batch(batch)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => self
                .lagged
                .swap(false, Ordering::AcqRel)
                .then_some(Followed::Lagged),
        }
    }
}

fn lagging_sink(sender: Sender<Arc<EventBatch>>, lagged: Arc<AtomicBool>) -> Sink {
    Box::new(move |batch| match sender.try_send(Arc::clone(batch)) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(_)) => lagged.store(true, Ordering::Release),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> Arc<EventBatch> {
        Arc::new(EventBatch {
            seq,
            at: Timestamp(seq),
            events: Vec::new(),
        })
    }

    #[test]
    fn a_follower_that_falls_behind_is_told_once() {
        let (follower, mut sink) = Follower::new(2);
        for seq in 1..=3 {
            sink(&batch(seq));
        }
        let wait = Duration::ZERO;
        assert_eq!(follower.recv_timeout(wait), Some(Followed::Lagged));
        assert_eq!(follower.recv_timeout(wait), Some(Followed::Batch(batch(1))));
        assert_eq!(follower.recv_timeout(wait), Some(Followed::Batch(batch(2))));
        assert_eq!(follower.recv_timeout(wait), None);
        sink(&batch(4));
        assert_eq!(follower.recv_timeout(wait), Some(Followed::Batch(batch(4))));
    }
}
