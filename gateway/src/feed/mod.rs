//! The node's feed: it follows the engine's output stream, turns what happened to deals into
//! lease terms for the payment hub, and pushes what each party must hear on its event stream
//! (`GET /v1/stream`). Once a second it ticks the hub.
//!
//! ```text
//!  engine batch (durable) ──► Tracker::reads_after ──► one read of those deals ──► Tracker::take
//!        Made   ─────────────────────────────────────────► DealMade ───────────► both parties
//!        Meter  ──► Payments::start_lease ──────────────► LeaseReady {terms} ──► both
//!        End    ──► Payments::end_lease   ──────────────► LeaseEnded {terms} ──► both
//!  every second: Payments::tick ──► Payment {proof, paid_through} ───────────► provider
//!                                └─► cuts ──► engine PaymentLapsed, CutOff ──► both
//!                                └─► requesters behind ──► PaymentDue ───────► requester
//! ```
//!
//! The work per batch is proportional to the deals it touched, never to the deals open; a
//! deal made reaches its provider as soon as its batch is durable. A feed that falls behind the
//! engine (its queue of batches is full) is told so and re-reads every deal it still follows.
//! The feed is the only writer of lease terms, so the book, the hub and what the parties are
//! told always agree. The hub's clock never runs ahead of the engine time the feed has
//! followed: a lease is billed from the second the engine stamped on its ready report to the
//! second it closed, exactly what the engine counts as served (and the anchor proves).
//!
//! Events go to every open stream of a party; a stream that cannot keep up (its queue of 4,096
//! is full) is dropped, and its client reconnects and reads `/v1/deals`.

mod tracker;

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use ipsx_api::{DealView, LeaseTermsView, StreamEvent, TokenAmount};
use ipsx_channels::LeaseTerms;
use ipsx_engine::{CommandKind, DealId, Event, Timestamp};
use ipsx_engine_runtime::EventBatch;
use tokio::sync::{Notify, mpsc, watch};

use crate::server::{AppState, lock};
use tracker::{Scanned, Step, Tracker};

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

/// Batches the feed may be behind before it re-reads instead.
const FEED_QUEUE: usize = 1024;

/// The engine's output as the feed receives it.
struct Following {
    batches: mpsc::Receiver<Arc<EventBatch>>,
    lagged: Arc<AtomicBool>,
    lag_noticed: Arc<Notify>,
}

/// Follows the shard's output stream: batches into a queue, a flag when the queue was full.
fn follow(state: &AppState) -> Result<Following, String> {
    let (sender, batches) = mpsc::channel(FEED_QUEUE);
    let lagged = Arc::new(AtomicBool::new(false));
    let lag_noticed = Arc::new(Notify::new());
    let (flag, notice) = (Arc::clone(&lagged), Arc::clone(&lag_noticed));
    let shard = state.shard().map_err(|e| e.message().to_owned())?;
    shard
        .follow_with(Box::new(move |batch: &Arc<EventBatch>| {
            if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(Arc::clone(batch)) {
                flag.store(true, Ordering::Release);
                notice.notify_one();
            }
        }))
        .map_err(|e| e.to_string())?;
    Ok(Following {
        batches,
        lagged,
        lag_noticed,
    })
}

/// Runs the feed until `stop` turns true.
pub(crate) async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut following = match follow(&state) {
        Ok(following) => following,
        Err(error) => {
            tracing::error!(%error, "the feed cannot follow the engine");
            return;
        }
    };
    let mut feed = Feed {
        state,
        tracker: Tracker::default(),
    };
    // Everything before the first batch followed is read once, as after a restart.
    let mut reread = true;
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_settle = Instant::now();
    loop {
        if reread || following.lagged.swap(false, Ordering::AcqRel) {
            reread = false;
            if let Err(error) = feed.reread().await {
                tracing::warn!(%error, "re-reading the deal book failed; trying again");
                reread = true;
            }
        }
        tokio::select! {
            batch = following.batches.recv() => {
                let Some(batch) = batch else { break };
                let mut events = batch.events.clone();
                let mut at = batch.at.0;
                // Take whatever else is queued: one read for all of it.
                while let Ok(more) = following.batches.try_recv() {
                    events.extend(more.events.iter().cloned());
                    at = at.max(more.at.0);
                }
                match feed.after(&events).await {
                    Ok(()) => feed.tracker.followed_to(at),
                    Err(error) => {
                        tracing::warn!(%error, "following the engine failed; re-reading");
                        reread = true;
                    }
                }
            }
            _ = following.lag_noticed.notified() => {}
            () = feed.state.feed_restart.notified() => {
                // As after a restart: every deal read anew, running ones metered from the book.
                feed.tracker.restart();
                reread = true;
            }
            _ = every_second.tick() => {
                if feed.second(&mut last_settle).await.is_err() {
                    reread = true;
                }
            }
            // The guard `wait_for` returns is not `Send`: drop it inside.
            () = async { drop(stop.wait_for(|stop| *stop).await) } => break,
        }
    }
}

/// The feed's state between batches.
struct Feed {
    state: Arc<AppState>,
    tracker: Tracker,
}

impl Feed {
    /// Reads the deals `events` touched and acts on them.
    async fn after(&mut self, events: &[Event]) -> Result<(), String> {
        let ids = self.tracker.reads_after(events);
        if ids.is_empty() {
            return Ok(());
        }
        let anchoring = self.state.anchoring.is_some();
        let read = self
            .state
            .query(move |engine| read_deals(engine, ids, anchoring))
            .await
            .map_err(|e| e.message().to_owned())?;
        self.take(read).await
    }

    /// Reads every deal newer than the last seen and every open one.
    async fn reread(&mut self) -> Result<(), String> {
        self.state.metrics.feed_rereads.inc();
        let (last, open) = self.tracker.reads_to_catch_up();
        let anchoring = self.state.anchoring.is_some();
        let (read, at) = self
            .state
            .query(move |engine| {
                let mut read = read_deals(engine, open, anchoring);
                for deal in engine.deals_after(DealId(last)) {
                    read.note(engine, deal, anchoring);
                }
                (read, engine.now().0)
            })
            .await
            .map_err(|e| e.message().to_owned())?;
        self.take(read).await?;
        self.tracker.followed_to(at);
        Ok(())
    }

    /// Records the deals' anchor entries, hands the deals read to the tracker and carries out
    /// what follows. Entries go first: a failed write is derived again at the re-read it
    /// asks for.
    async fn take(&mut self, read: Read) -> Result<(), String> {
        if let Some(anchoring) = &self.state.anchoring
            && !read.entries.is_empty()
        {
            let anchoring = Arc::clone(anchoring);
            let entries = read.entries;
            let recorded =
                tokio::task::spawn_blocking(move || anchoring.record(unix_now(), entries))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            self.state.metrics.anchor_entries.inc_by(recorded as u64);
        }
        let steps = self.tracker.take(read.deals, unix_now());
        self.state
            .metrics
            .open_deals
            .set(self.tracker.open() as i64);
        self.carry_out(steps).await
    }

    /// The once-a-second work: steps that failed, deals to read again, the hub's tick.
    async fn second(&mut self, last_settle: &mut Instant) -> Result<(), String> {
        if !self.state.engine_alive() {
            return Ok(());
        }
        let retry = self.tracker.take_unended();
        if !retry.is_empty() {
            self.carry_out(retry).await?;
        }
        if self.tracker.has_retries() {
            self.after(&[]).await?;
        }
        // Nothing followed yet (a re-read is due): the hub waits for it.
        let Some(now) = self.tracker.hub_clock(unix_now()) else {
            return Ok(());
        };
        let state = Arc::clone(&self.state);
        let cuts = tokio::task::spawn_blocking(move || pay(&state, now))
            .await
            .map_err(|e| e.to_string())?;
        for (deal, at) in cuts.unwrap_or_else(|error| {
            tracing::warn!(%error, "the payment hub's tick failed; trying next second");
            Vec::new()
        }) {
            // The engine closes the deal at the second the hub stopped billing it.
            let lapsed = CommandKind::PaymentLapsed {
                deal: DealId(deal),
                at: Some(Timestamp(at)),
            };
            if let Err(error) = self.state.submit(lapsed).await {
                tracing::warn!(deal, error = error.message(), "recording a cut-off failed");
            }
        }
        if let Some(payments) = self.state.payments.running()
            && last_settle.elapsed() >= payments.settle_every()
        {
            *last_settle = Instant::now();
            let payments = Arc::clone(payments);
            tokio::spawn(async move { payments.settle(unix_now(), false).await });
        }
        Ok(())
    }

    /// Books and announces `steps` (the book is on disk: off the async threads).
    async fn carry_out(&mut self, steps: Vec<Step>) -> Result<(), String> {
        if steps.is_empty() {
            return Ok(());
        }
        let state = Arc::clone(&self.state);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut over = Vec::new();
            let outcome = steps
                .into_iter()
                .map(|step| match carry_out(&state, &step) {
                    Ok(()) => {
                        if let Step::End { view, .. } = &step {
                            over.push(view.clone());
                        }
                        (step, true)
                    }
                    Err(error) => {
                        tracing::warn!(%error, ?step, "booking a lease failed; trying again");
                        (step, false)
                    }
                })
                .collect::<Vec<_>>();
            // History is for reading back, not money: a failed write is only logged.
            if let Err(error) = state.history.record(&over) {
                tracing::warn!(%error, deals = over.len(), "recording finished deals failed");
            }
            outcome
        })
        .await
        .map_err(|e| e.to_string())?;
        for (step, booked) in outcome {
            self.tracker.booking(step, booked);
        }
        Ok(())
    }
}

/// Deals as the feed read them, and the anchor entries their state calls for.
#[derive(Default)]
struct Read {
    /// In id order; `None`: gone from the engine's book.
    deals: Vec<(u64, Option<Scanned>)>,
    /// (mark, entry), when the node anchors.
    entries: Vec<(u8, ipsx_anchor::DealEntry)>,
}

impl Read {
    fn note(&mut self, engine: &ipsx_engine::Engine, deal: &ipsx_engine::Deal, anchoring: bool) {
        self.deals.push((deal.id.0, Some(Scanned::of(deal))));
        if anchoring {
            self.entries
                .extend(crate::anchoring::entries_of(deal, engine.now().0));
        }
    }
}

/// The deals `ids` as the engine holds them now (`None`: gone from its book).
fn read_deals(engine: &ipsx_engine::Engine, ids: Vec<u64>, anchoring: bool) -> Read {
    let mut read = Read::default();
    for id in ids {
        match engine.deal(DealId(id)) {
            Some(deal) => read.note(engine, deal, anchoring),
            None => read.deals.push((id, None)),
        }
    }
    read
}

/// Books one step and tells both parties.
fn carry_out(state: &AppState, step: &Step) -> Result<(), String> {
    match step {
        Step::Made(view) => {
            state.recent.push(view);
            state.streams.send_both(
                view.provider,
                view.requester,
                &StreamEvent::DealMade { deal: view.clone() },
            );
            Ok(())
        }
        Step::Meter { view, from } => meter(state, view, *from),
        Step::End { view, at } => end(state, view, *at),
    }
}

/// Starts metering a deal its provider serves, from the second `from`.
fn meter(state: &AppState, view: &DealView, from: u64) -> Result<(), String> {
    // A follower in a paying cluster: the leader fixes the terms and tells the parties.
    if state.payments.elsewhere() {
        return Ok(());
    }
    let terms = match state.payments.running() {
        Some(payments) => match payments.start_lease(
            view.deal,
            view.requester,
            view.provider,
            rate_of(view),
            from,
            view.end,
        ) {
            Ok(terms) => terms,
            Err(error) if error.code == ErrorCode::LeaseRefused => {
                tracing::error!(
                    deal = view.deal,
                    error = error.message(),
                    "deal not metered"
                );
                return Ok(());
            }
            Err(error) => return Err(error.message().to_owned()),
        },
        None => LeaseTerms {
            id: view.deal,
            rate: rate_of(view),
            start: from,
            end: view.end.max(from),
        },
    };
    state.streams.send_both(
        view.provider,
        view.requester,
        &StreamEvent::LeaseReady {
            terms: terms_view(terms),
            provider: view.provider,
            requester: view.requester,
        },
    );
    Ok(())
}

/// Ends a deal's lease at `at` and tells both parties its final terms.
fn end(state: &AppState, view: &DealView, at: u64) -> Result<(), String> {
    if state.payments.elsewhere() {
        return Ok(());
    }
    let terms = match state.payments.running() {
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

/// One second of the hub: proofs to providers, cut-offs, payment reminders. Returns the deals
/// cut for non-payment, each with the second it was cut at.
fn pay(state: &AppState, now: u64) -> Result<Vec<(u64, u64)>, String> {
    let Some(payments) = state.payments.running() else {
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
    Ok(outcome
        .tick
        .cuts
        .iter()
        .map(|cut| (cut.lease, cut.at))
        .collect())
}
