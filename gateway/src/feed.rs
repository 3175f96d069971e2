//! The node's heartbeat: once a second it reads what changed in the engine's deal book, turns
//! it into lease terms for the payment hub, ticks the hub, and pushes what each party must
//! hear on its event stream (`GET /v1/stream`).
//!
//! ```text
//!  engine deals (new since last, or still open) ──► DealMade ─────────────────► both parties
//!        status Active  ──► Payments::start_lease ──► LeaseReady {terms} ──────► both
//!        terminal       ──► Payments::end_lease   ──► LeaseEnded {terms} ──────► both
//!  Payments::tick ──► Payment {proof, paid_through} ─────────────────────────► provider
//!                 └─► cuts ──► engine PaymentLapsed, CutOff ─────────────────► both
//!                 └─► requesters behind ──► PaymentDue ──────────────────────► requester
//! ```
//!
//! The feed is the only writer of lease terms, so the book, the hub and what the parties are
//! told always agree. Events go to every open stream of a party; a stream that cannot keep up
//! (its queue of 4,096 is full) is dropped, and its client reconnects and reads `/v1/deals`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use ipsx_api::{DealView, LeaseTermsView, StreamEvent, TokenAmount};
use ipsx_channels::LeaseTerms;
use ipsx_engine::{CommandKind, DealId, DealStatus};
use tokio::sync::{mpsc, watch};

use crate::market::deal_view;
use crate::server::{AppState, lock};

/// Each party's open streams.
#[derive(Default)]
pub(crate) struct Streams {
    subscribers: Mutex<HashMap<Address, Vec<mpsc::Sender<Arc<str>>>>>,
}

const STREAM_QUEUE: usize = 4096;

impl Streams {
    /// A new stream for `party`.
    pub(crate) fn subscribe(&self, party: Address) -> mpsc::Receiver<Arc<str>> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        lock(&self.subscribers)
            .entry(party)
            .or_default()
            .push(sender);
        receiver
    }

    /// Sends `event` to every stream of `party`.
    pub(crate) fn send(&self, party: Address, event: &StreamEvent) {
        let mut subscribers = lock(&self.subscribers);
        let Some(senders) = subscribers.get_mut(&party) else {
            return;
        };
        let Ok(text) = serde_json::to_string(event) else {
            return;
        };
        let text: Arc<str> = text.into();
        senders.retain(|sender| sender.try_send(Arc::clone(&text)).is_ok());
        if senders.is_empty() {
            subscribers.remove(&party);
        }
    }

    fn send_both(&self, one: Address, other: Address, event: &StreamEvent) {
        self.send(one, event);
        if other != one {
            self.send(other, event);
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A deal as the feed needs it.
struct Scanned {
    view: DealView,
    status: DealStatus,
    closed_at: Option<u64>,
}

fn scan(deal: &ipsx_engine::Deal) -> Scanned {
    Scanned {
        view: deal_view(deal),
        status: deal.status(),
        closed_at: deal.closed_at.map(|t| t.0),
    }
}

/// What the feed remembers between seconds.
#[derive(Default)]
struct Tracker {
    /// The highest deal id seen.
    last_deal: u64,
    /// Deals not yet terminal.
    open: HashMap<u64, Open>,
}

/// A deal not yet terminal, as last seen.
#[derive(Clone, Copy)]
struct Open {
    /// Its lease is metered (or deliberately not).
    metered: bool,
    /// Its status when last read.
    status: DealStatus,
}

impl Open {
    /// Whether the next read must bring its full record: its status moved, or it is active and
    /// not metered yet (a failed booking is retried). Pending deals waiting for their provider
    /// cost the writer one lookup per second, not a copy.
    fn wants_view(self, now: DealStatus) -> bool {
        now != self.status || (now == DealStatus::Active && !self.metered)
    }
}

pub(crate) fn terms_view(terms: LeaseTerms) -> LeaseTermsView {
    LeaseTermsView {
        deal: terms.id,
        start: terms.start,
        end: terms.end,
        rate: TokenAmount(terms.rate),
    }
}

fn rate_of(view: &DealView) -> u128 {
    view.price.0.saturating_mul(view.ips.len() as u128)
}

/// Runs the feed until `stop` turns true.
pub(crate) async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tracker = Tracker::default();
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_settle = Instant::now();
    loop {
        tokio::select! {
            _ = every_second.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if !state.engine_alive() {
            continue;
        }
        if let Err(error) = step(&state, &mut tracker, unix_now()).await {
            tracing::warn!(%error, "feed step failed; retrying next second");
        }
        if let Some(payments) = &state.payments
            && last_settle.elapsed() >= payments.settle_every()
        {
            last_settle = Instant::now();
            let payments = Arc::clone(payments);
            tokio::spawn(async move { payments.settle(unix_now(), false).await });
        }
    }
}

async fn step(state: &Arc<AppState>, tracker: &mut Tracker, now: u64) -> Result<(), String> {
    let last = tracker.last_deal;
    let open: Vec<(u64, Open)> = tracker.open.iter().map(|(id, seen)| (*id, *seen)).collect();
    let scanned = state
        .query(move |engine| {
            let mut fresh: Vec<Scanned> = engine
                .deals()
                .rev()
                .take_while(|deal| deal.id.0 > last)
                .map(scan)
                .collect();
            fresh.reverse();
            let tracked: Vec<(u64, Option<Scanned>)> = open
                .iter()
                .filter_map(|&(id, seen)| match engine.deal(DealId(id)) {
                    Some(deal) => seen
                        .wants_view(deal.status())
                        .then(|| (id, Some(scan(deal)))),
                    None => Some((id, None)),
                })
                .collect();
            (fresh, tracked)
        })
        .await
        .map_err(|e| e.message().to_owned())?;
    let worker = Arc::clone(state);
    let (tracker_out, cuts) = tokio::task::spawn_blocking({
        let mut tracker = std::mem::take(tracker);
        move || {
            let cuts = apply(&worker, &mut tracker, scanned, now);
            (tracker, cuts)
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    *tracker = tracker_out;
    for deal in cuts? {
        if let Err(error) = state
            .submit(CommandKind::PaymentLapsed { deal: DealId(deal) })
            .await
        {
            tracing::warn!(deal, error = error.message(), "recording a cut-off failed");
        }
    }
    Ok(())
}

type Scan = (Vec<Scanned>, Vec<(u64, Option<Scanned>)>);

/// Applies one second of changes; returns the deals the hub cut for non-payment.
fn apply(
    state: &AppState,
    tracker: &mut Tracker,
    (fresh, tracked): Scan,
    now: u64,
) -> Result<Vec<u64>, String> {
    for deal in fresh {
        let id = deal.view.deal;
        tracker.last_deal = tracker.last_deal.max(id);
        if deal.status.is_terminal() {
            // Only after a restart: a metered lease whose end was not booked yet.
            end(state, &deal, now)?;
            continue;
        }
        state.streams.send_both(
            deal.view.provider,
            deal.view.requester,
            &StreamEvent::DealMade {
                deal: deal.view.clone(),
            },
        );
        let metered = match &state.payments {
            Some(payments) => payments
                .booked(id)
                .map_err(|e| e.message().to_owned())?
                .is_some(),
            None => false,
        };
        tracker.open.insert(
            id,
            Open {
                metered,
                status: deal.status,
            },
        );
        changed(state, tracker, &deal, now)?;
    }
    for (id, deal) in tracked {
        match deal {
            Some(deal) => changed(state, tracker, &deal, now)?,
            None => {
                // Pruned from the deal book: it ended long ago.
                tracker.open.remove(&id);
            }
        }
    }
    let Some(payments) = &state.payments else {
        return Ok(Vec::new());
    };
    let outcome = payments.tick(now).map_err(|e| e.to_string())?;
    for payment in &outcome.tick.payments {
        state.streams.send(
            payment.provider,
            &StreamEvent::Payment {
                proof: alloy_primitives::hex::encode_prefixed(payment.proof.encode()),
                paid_through: payment.paid_through.clone(),
            },
        );
    }
    state
        .metrics
        .provider_payments
        .inc_by(outcome.tick.payments.len() as u64);
    for cut in &outcome.tick.cuts {
        state.streams.send_both(
            cut.provider,
            cut.requester,
            &StreamEvent::CutOff {
                deal: cut.lease,
                at: cut.at,
            },
        );
    }
    state
        .metrics
        .cut_offs
        .inc_by(outcome.tick.cuts.len() as u64);
    for top_up in &outcome.tick.top_ups {
        payments.top_up(top_up.provider, top_up.channel, top_up.owed);
    }
    for (requester, owed, paid, cut_at) in outcome.due {
        state.streams.send(
            requester,
            &StreamEvent::PaymentDue {
                owed: TokenAmount(owed),
                paid: TokenAmount(paid),
                cut_at,
            },
        );
    }
    Ok(outcome.tick.cuts.iter().map(|cut| cut.lease).collect())
}

/// A tracked deal: starts metering when it turns active, ends when it turns terminal.
fn changed(
    state: &AppState,
    tracker: &mut Tracker,
    deal: &Scanned,
    now: u64,
) -> Result<(), String> {
    let id = deal.view.deal;
    let Some(seen) = tracker.open.get_mut(&id) else {
        return Ok(());
    };
    seen.status = deal.status;
    let metered = seen.metered;
    if deal.status == DealStatus::Active && !metered {
        let view = &deal.view;
        let terms = match &state.payments {
            Some(payments) => match payments.start_lease(
                id,
                view.requester,
                view.provider,
                rate_of(view),
                view.start,
                view.end,
            ) {
                Ok(terms) => terms,
                Err(error) if error.code == "lease_refused" => {
                    tracing::error!(deal = id, error = error.message(), "deal not metered");
                    mark_metered(tracker, id);
                    return Ok(());
                }
                // The book could not be written: try again next second.
                Err(error) => return Err(error.message().to_owned()),
            },
            None => LeaseTerms {
                id,
                rate: rate_of(view),
                start: view.start.max(now),
                end: view.end.max(now),
            },
        };
        mark_metered(tracker, id);
        state.streams.send_both(
            view.provider,
            view.requester,
            &StreamEvent::LeaseReady {
                terms: terms_view(terms),
                provider: view.provider,
                requester: view.requester,
            },
        );
    }
    if deal.status.is_terminal() {
        tracker.open.remove(&id);
        end(state, deal, now)?;
    }
    Ok(())
}

fn mark_metered(tracker: &mut Tracker, id: u64) {
    if let Some(seen) = tracker.open.get_mut(&id) {
        seen.metered = true;
    }
}

fn end(state: &AppState, deal: &Scanned, now: u64) -> Result<(), String> {
    let view = &deal.view;
    let at = match deal.status {
        DealStatus::Completed => view.end,
        _ => deal.closed_at.unwrap_or(now),
    };
    let terms = match &state.payments {
        Some(payments) => payments
            .end_lease(view.deal, at)
            .map_err(|e| e.message().to_owned())?,
        None => None,
    };
    // Never metered: it ends with nothing charged.
    let terms = terms.unwrap_or(LeaseTerms {
        id: view.deal,
        rate: rate_of(view),
        start: view.start,
        end: view.start,
    });
    state.streams.send_both(
        view.provider,
        view.requester,
        &StreamEvent::LeaseEnded {
            terms: terms_view(terms),
            status: view.status.into(),
            provider: view.provider,
            requester: view.requester,
        },
    );
    Ok(())
}
