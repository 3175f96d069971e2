//! The feed's decisions, free of I/O: which deals to read after a batch of engine events, and
//! what each read means for the parties and the payment hub.
//!
//! ```text
//!  engine events ──► Tracker::reads_after ──► (the shell reads those deals) ──► Tracker::take
//!                                                                              │
//!        deal first seen, not over ─► Step::Made   (tell both parties)         │
//!        deal active, not metered  ─► Step::Meter  (fix terms, start the hub)  ◄┘
//!        deal over                 ─► Step::End    (final terms, stop the hub)
//! ```
//!
//! The tracker remembers only deals that are not over, so its memory is what is running. It
//! reads nothing on its own: time and the engine's answers come in as arguments, so the tests
//! drive it with a real [`ipsx_engine::Engine`] on a clock they move by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipsx_api::DealView;
use ipsx_engine::{DealStatus, Event};

/// A deal as the feed reads it from the engine.
#[derive(Clone, Debug)]
pub(crate) struct Scanned {
    pub(crate) view: DealView,
    pub(crate) status: DealStatus,
    pub(crate) closed_at: Option<u64>,
    /// The second the engine stamped on the provider's ready report.
    pub(crate) ready_at: Option<u64>,
}

impl Scanned {
    pub(crate) fn of(deal: &ipsx_engine::Deal) -> Scanned {
        Scanned {
            view: crate::market::deal_view(deal),
            status: deal.status(),
            closed_at: deal.closed_at.map(|t| t.0),
            ready_at: deal.ready_at.map(|t| t.0),
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// Tell both parties a deal was made.
    Made(DealView),
    /// The provider serves: fix the lease terms, start metering from `from`, tell both.
    Meter {
        /// The deal.
        view: DealView,
        /// The first paid second: the deal's start, or the second the engine stamped on the
        /// ready report if later. The engine counts a deal's served value from the same
        /// second, so what is metered is what the anchor proves.
        from: u64,
    },
    /// The deal is over at `at`: final terms, stop metering, tell both.
    End {
        /// The deal.
        view: DealView,
        /// When it stopped accruing.
        at: u64,
    },
}

/// A deal not over yet, as last read.
#[derive(Clone, Copy, Debug)]
struct Open {
    status: DealStatus,
    /// A `Meter` step was handed out (and not given back by [`Tracker::booking`]).
    metered: bool,
}

/// What the feed remembers between batches: the deals not over yet.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The highest deal id seen: a higher one is new.
    last_deal: u64,
    open: HashMap<u64, Open>,
    /// Deals to read again at the next chance (their `Meter` step failed).
    again: BTreeSet<u64>,
    /// Deals whose `Meter` step failed, until one is booked, with the second it meters from.
    unmetered: BTreeMap<u64, u64>,
    /// `End` steps whose booking failed, to carry out again.
    unended: Vec<Step>,
    /// Deals the events showed turning active, until read: one may be over by the time it is
    /// read, and was served all the same.
    activated: BTreeSet<u64>,
    /// The engine's clock as of the last batch (or re-read) whose steps were handed out.
    followed: Option<u64>,
}

impl Tracker {
    /// The deals to read after `events`: those made or changed, and any waiting to be read
    /// again. Proportional to what happened, never to what is open.
    pub(crate) fn reads_after(&mut self, events: &[ipsx_engine::Event]) -> Vec<u64> {
        let mut ids: BTreeSet<u64> = std::mem::take(&mut self.again);
        for event in events {
            match event {
                Event::DealMade { deal, .. } => {
                    ids.insert(deal.0);
                }
                Event::DealStatusChanged { deal, to, .. } => {
                    if *to == DealStatus::Active {
                        self.activated.insert(deal.0);
                    }
                    ids.insert(deal.0);
                }
                // Nothing for the parties or the hub, but the rating is anchored.
                Event::Rated { deal, .. } => {
                    ids.insert(deal.0);
                }
                _ => {}
            }
        }
        ids.into_iter().collect()
    }

    /// What a full re-read needs (at start, and after the feed fell behind the engine): deals
    /// newer than the last seen, and every open one.
    pub(crate) fn reads_to_catch_up(&mut self) -> (u64, Vec<u64>) {
        self.again.clear();
        let (last, open) = (self.last_deal, &self.open);
        self.activated
            .retain(|id| *id > last || open.contains_key(id));
        let mut open: Vec<u64> = self.open.keys().copied().collect();
        open.sort_unstable();
        (self.last_deal, open)
    }

    /// Takes the deals read (in id order; `None`: no longer in the engine's deal book) at
    /// second `now`, and says what follows from them.
    pub(crate) fn take(&mut self, read: Vec<(u64, Option<Scanned>)>, now: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for (id, deal) in read {
            let went_active = self.activated.remove(&id);
            let Some(deal) = deal else {
                // Gone from the book: it ended long ago, and was ended here then. (One never
                // metered cannot be now: the hub no longer waits for it.)
                self.open.remove(&id);
                self.unmetered.remove(&id);
                continue;
            };
            let over = deal.status.is_terminal();
            let first_seen = id > self.last_deal;
            if first_seen {
                self.last_deal = id;
                if !over {
                    // Made and over before the feed saw it (a restart, or a batch that made and
                    // ended it) is not news to the parties: only its end is.
                    steps.push(Step::Made(deal.view.clone()));
                }
                self.open.insert(
                    id,
                    Open {
                        status: deal.status,
                        metered: false,
                    },
                );
            }
            let Some(seen) = self.open.get_mut(&id) else {
                // Already over and ended here.
                continue;
            };
            seen.status = deal.status;
            let served =
                went_active || matches!(deal.status, DealStatus::Active | DealStatus::Completed);
            if served && !seen.metered {
                seen.metered = true;
                steps.push(Step::Meter {
                    view: deal.view.clone(),
                    from: deal.view.start.max(deal.ready_at.unwrap_or(0)),
                });
            }
            if over {
                self.open.remove(&id);
                steps.push(end(deal, now));
            }
        }
        steps
    }

    /// How booking a step handed out went. One that failed (the book could not be written)
    /// is tried again: a deal not metered is read again at the next chance, an end is handed
    /// out again ([`Tracker::take_unended`]). Until it is booked the hub holds below the
    /// second it hinges on ([`Tracker::hub_clock`]): had the hub ticked past, the requester
    /// would have settled seconds the lease was to bill, or paid for seconds after its close.
    pub(crate) fn booking(&mut self, step: Step, booked: bool) {
        match (step, booked) {
            (Step::Meter { view, .. }, true) => {
                self.unmetered.remove(&view.deal);
            }
            (Step::Meter { view, from }, false) => {
                if let Some(seen) = self.open.get_mut(&view.deal) {
                    seen.metered = false;
                    self.again.insert(view.deal);
                    self.unmetered.insert(view.deal, from);
                }
            }
            (end @ Step::End { .. }, false) => self.unended.push(end),
            _ => {}
        }
    }

    /// Starts over as after a restart (every deal to be read anew), keeping the ends whose
    /// booking failed: they are carried out again all the same.
    pub(crate) fn restart(&mut self) {
        *self = Tracker {
            unended: std::mem::take(&mut self.unended),
            ..Tracker::default()
        };
    }

    /// The ends whose booking failed, to carry out again.
    pub(crate) fn take_unended(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.unended)
    }

    /// Whether some deal waits to be read again.
    pub(crate) fn has_retries(&self) -> bool {
        !self.again.is_empty()
    }

    /// The engine's clock has reached `at` in what the tracker has taken.
    pub(crate) fn followed_to(&mut self, at: u64) {
        self.followed = self.followed.max(Some(at));
    }

    /// The second the payment hub may tick to at wall-clock second `wall`: never past the
    /// engine time taken so far (`None` before anything was). A later report or end is
    /// stamped no earlier than that, so its requester has not yet settled its second: the
    /// hub bills a lease from the second its ready report was stamped, and stops at the
    /// second it closed — what the engine says was served, and what the anchor proves.
    ///
    /// Nor past a step not booked yet: a meter's first second, an end's second.
    pub(crate) fn hub_clock(&self, wall: u64) -> Option<u64> {
        let unended = self.unended.iter().filter_map(|step| match step {
            Step::End { at, .. } => Some(*at),
            _ => None,
        });
        let held = self.unmetered.values().copied().chain(unended).min();
        self.followed
            .map(|engine| engine.min(wall).min(held.unwrap_or(u64::MAX)))
    }

    /// Deals not over yet.
    pub(crate) fn open(&self) -> usize {
        self.open.len()
    }
}

/// When a deal over stopped accruing: a completed lease at its end, one cut short when it was.
fn end(deal: Scanned, now: u64) -> Step {
    let at = match deal.status {
        DealStatus::Completed => deal.view.end,
        _ => deal.closed_at.unwrap_or(now),
    };
    Step::End {
        view: deal.view,
        at,
    }
}

#[cfg(test)]
mod tests;
