//! The state machine: commands with their timestamps in, events out.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::net::IpAddr;

use smallvec::SmallVec;

use rkyv::{Archive, Deserialize, Serialize};

use crate::agreement::{DealInput, DealStatus, ProviderStatus, RequesterStatus, transition};
use crate::book::{Offer, OfferBook};
use crate::calendar::Booking;
use crate::command::{Command, CommandKind, Event, RequestEnd};
use crate::deal::{Deal, Profile};
use crate::depth::MarketDepth;
use crate::error::{EngineError, InputError};
use crate::finished::FinishedDeals;
use crate::order::{
    MAX_REQUEST_COUNT, MIN_LEASE_SECONDS, OfferIps, RequestSpec, Start, TimeInForce,
    check_duration, check_price, check_total_cost, check_window, subnet_of,
};
use crate::parties::{Parties, PartyId};
use crate::request::{KeptFilters, RareParts, RequestRecord};
use crate::slab::IdSlab;
use crate::timers::{Timer, Timers};
use crate::types::{Address, Amount, DealId, OfferId, RequestId, Timestamp};

/// Settings that shape the engine's behaviour. They are part of the state (snapshots carry
/// them) so a replay behaves exactly like the original run.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EngineConfig {
    /// Seconds a provider has, from a lease's start, to report ready before the deal is voided
    /// and its IPs re-matched.
    pub ready_timeout: u64,
    /// Which shard this engine is. Its offer, request and deal ids carry it in their top 16
    /// bits ([`EngineConfig::shard_of`]), so ids from different shards never collide and a
    /// router can send a command naming an id to the shard that owns it.
    pub shard: u16,
    /// Seconds a finished deal stays in the deal book (for look-ups and ratings) before it is
    /// dropped from memory; the journal keeps its history.
    pub deal_retention: u64,
    /// How much paid usage a wallet's rating starts with at neutral (3 stars), in token base
    /// units: stars must be bought with real usage worth a few times this before they lift a
    /// provider past a `min_rating` filter (see [`Profile::average_rating`]).
    pub rating_prior: Amount,
}

impl EngineConfig {
    /// The shard an id was issued by.
    pub fn shard_of(id: u64) -> u16 {
        (id >> 48) as u16
    }

    fn id_base(&self) -> u64 {
        u64::from(self.shard) << 48
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ready_timeout: 30,
            shard: 0,
            deal_retention: 86_400,
            // One IPSX (18 decimals): at 10^15 per IP-second, about 17 IP-minutes.
            rating_prior: 1_000_000_000_000_000_000,
        }
    }
}

/// One attempt to lease IPs for a request: its filters and the span of the leases.
struct Fill<'a> {
    /// The request filled: an IP it already holds is never taken twice.
    request: RequestId,
    /// Who asks: never matched with its own offers (a party is never both sides of a deal).
    requester: Address,
    filters: &'a KeptFilters,
    /// City and ASN filters, and providers that failed the request, if it has any.
    rare: Option<&'a RareParts>,
    start: Timestamp,
    end: Timestamp,
    max_price: Amount,
}

impl<'a> Fill<'a> {
    /// A fill of a request in the book over `[start, end)`.
    fn of(record: &'a RequestRecord, start: Timestamp, end: Timestamp) -> Fill<'a> {
        Fill {
            request: record.id,
            requester: record.requester,
            filters: &record.filters,
            rare: record.rare.as_deref(),
            start,
            end,
            max_price: record.max_price,
        }
    }
}

/// Deferred deal timers each [`Engine::apply_deferring`] settles besides what it looks at:
/// enough to drain a second of ends at the rate they were made (front first, so in a steady
/// market the queue frees each IP just before the matcher wants it again), few enough to stay
/// within the latency of one lease.
pub const SETTLE_PER_COMMAND: usize = 1;

/// How many deferred timers ahead of the next the engine asks for a deal and its open entry,
/// and for the records they name (see `Engine::prefetch_deferred`): far enough for a miss to
/// arrive over the commands between, near enough to stay in cache.
const PREFETCH_FAR: usize = 16;
const PREFETCH_NEAR: usize = 8;

/// Finished deals past their retention each [`Engine::apply_deferring`] drops: more than one
/// command finishes, so a backlog drains.
const PRUNE_PER_COMMAND: usize = 4;

/// Ended IPs of an offer the matcher settles at least, once it settles any: an offer whose
/// leases ended keeps idle IPs for the next few fills, instead of moving between the open and
/// the saturated index with every lease. Few enough to stay within the latency of one lease.
const SETTLE_AHEAD: usize = 4;

/// The shortest deal retention: the node's feed reads each deal after it finishes, and
/// parties rate each other then.
pub const MIN_DEAL_RETENTION: u64 = 60;

/// An offer a plan reached that may hold deferred ends, and how many IPs the plan still
/// needed there.
struct Unsettled {
    offer: OfferId,
    need: usize,
}

/// Which IP slots of which offers a fill would take, in priority order.
type Plan = SmallVec<[(OfferId, Picked); 2]>;

/// The IP slots a fill takes from one offer (a handful, inline: planning a small lease
/// allocates nothing).
type Picked = SmallVec<[u32; 4]>;

/// What ending an open deal needs besides the deal itself.
#[derive(Clone, Debug)]
pub(crate) struct OpenDeal {
    /// The IP slots it books.
    pub(crate) slots: SmallVec<[u32; 1]>,
    pub(crate) provider: PartyId,
    pub(crate) requester: PartyId,
}

/// A finished deal waiting for its retention to end, with its parties: dropping it then
/// touches their deal lists by index, not by two lookups of 20-byte addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    pub(crate) deal: DealId,
    pub(crate) provider: PartyId,
    pub(crate) requester: PartyId,
}

/// The matching engine of one shard: order book, deal book, agreement protocol, profiles.
/// Deterministic and free of I/O: see the crate docs.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) now: Timestamp,
    pub(crate) next_offer: u64,
    pub(crate) next_request: u64,
    pub(crate) book: OfferBook,
    /// Requests by id (ids are sequential: a ring, see [`IdSlab`]).
    pub(crate) requests: IdSlab<RequestRecord>,
    pub(crate) resting: BTreeSet<(Reverse<Amount>, RequestId)>,
    /// The deal book: open deals, and finished ones for [`EngineConfig::deal_retention`].
    pub(crate) deals: IdSlab<Deal>,
    /// What ending each open deal needs besides the deal: its IP slots and parties, so it
    /// looks up no address.
    pub(crate) open: IdSlab<OpenDeal>,
    /// Deals ever made: the next id follows.
    pub(crate) deals_made: u64,
    /// Finished deals by the second they closed, so each leaves the book when its own
    /// retention is over, whatever deals made before it still run.
    pub(crate) finished: FinishedDeals<Finished>,
    /// Every wallet met: its profile and its deals in the book.
    pub(crate) parties: Parties,
    pub(crate) timers: Timers,
    dirty: Vec<OfferId>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

impl Engine {
    /// An empty book.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            now: Timestamp(0),
            next_offer: config.id_base() + 1,
            next_request: config.id_base() + 1,
            book: OfferBook::default(),
            requests: IdSlab::default(),
            resting: BTreeSet::new(),
            deals: IdSlab::default(),
            open: IdSlab::default(),
            deals_made: 0,
            finished: FinishedDeals::default(),
            parties: Parties::default(),
            timers: Timers::default(),
            dirty: Vec::new(),
        }
    }

    /// Applies one command, appending what happened to `events`.
    ///
    /// On error the book is unchanged, except that the clock moved to `command.at` (whatever
    /// was due by then happened, and its events are in `events`): time passes whatever the
    /// input. Shape errors ([`EngineError::Input`]) are found before the clock moves.
    pub fn apply(&mut self, command: &Command, events: &mut Vec<Event>) -> Result<(), EngineError> {
        let at = command.at;
        if at < self.now {
            return Err(EngineError::ClockWentBackwards { at, now: self.now });
        }
        if self.unsettled() > 0 {
            // Left by `apply_deferring`: what it deferred happens first, as it would have.
            self.settle_all(events);
        }
        let offer_ips = self.check_shape(command)?;
        self.advance(at, events);
        self.execute(&command.kind, offer_ips, events)?;
        self.retry_resting(events);
        Ok(())
    }

    /// Applies one command like [`Engine::apply`], with the same deals, the same outcome and,
    /// once settled, the same state, but without ending every lease that fell due first: a
    /// second in which 100,000 leases end costs each command a few of those ends rather than
    /// blocking one command for all of them.
    ///
    /// A due second whose deal timers only end deals (lease ends, and ready deadlines that fall
    /// on the lease's end) is deferred whole. What a command looks at is settled first: the
    /// deal it names, the offers and IPs it changes, each offer the matcher considers (before it
    /// takes IPs from it), and `settle` more, oldest first ([`SETTLE_PER_COMMAND`] keeps up
    /// with a steady stream of leases). Whatever must happen in order settles everything
    /// first: a ready deadline before the lease's end (its void frees IPs early and may
    /// re-match), offer and request timers, and any command while a request rests (resting
    /// requests have first call on freed capacity).
    ///
    /// Why a re-match needs no more: the deals of a request share its end, so a sibling whose
    /// unsettled void would exclude its provider ended by now, and a lease ending by now is not
    /// re-matched.
    ///
    /// Until [`Engine::settle_all`], reads ([`Engine::deal`], [`Engine::depth`], snapshots…)
    /// may show deals that ended as still running, and the events of those ends come later,
    /// each deal's own events still in order.
    pub fn apply_deferring(
        &mut self,
        command: &Command,
        settle: usize,
        events: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let at = command.at;
        if at < self.now {
            return Err(EngineError::ClockWentBackwards { at, now: self.now });
        }
        let offer_ips = self.check_shape(command)?;
        if self.resting.is_empty() {
            self.advance_deferring(at, events);
            self.settle_touched(&command.kind, offer_ips.as_deref(), events);
            self.settle_deferred(settle, events);
        } else {
            self.settle_all(events);
            self.advance(at, events);
        }
        let executed = self.execute(&command.kind, offer_ips, events);
        if executed.is_ok() {
            self.retry_resting(events);
        }
        // Finished deals leave the book a few at a time too (a second's worth of them reach
        // the end of their retention together), faster than leases finish.
        self.prune_some_deals(PRUNE_PER_COMMAND);
        executed
    }

    /// Settles up to `budget` deferred deal timers, oldest first (see
    /// [`Engine::apply_deferring`]); returns how many it took, including those of deals settled
    /// out of turn already. A node calls it when idle, so the backlog drains between commands.
    pub fn settle(&mut self, budget: usize, events: &mut Vec<Event>) -> usize {
        let settled = self.settle_deferred(budget, events);
        self.prune_some_deals(budget);
        settled
    }

    /// Settles every deferred deal timer and drops the finished deals past their retention:
    /// reads and snapshots then show what [`Engine::apply`] would have left.
    pub fn settle_all(&mut self, events: &mut Vec<Event>) {
        self.settle(usize::MAX, events);
    }

    /// Deals whose deferred end or deadline is not settled yet (see
    /// [`Engine::apply_deferring`]).
    pub fn unsettled(&self) -> usize {
        self.timers.deferred_len()
    }

    /// Whether reads are exact: nothing deferred is left to settle, and no finished deal past
    /// its retention is left to drop.
    pub fn is_settled(&self) -> bool {
        self.unsettled() == 0
            && self
                .finished
                .oldest()
                .is_none_or(|closed_at| !self.retention_over(closed_at))
    }

    fn retention_over(&self, closed_at: Timestamp) -> bool {
        closed_at.0.saturating_add(self.config.deal_retention) <= self.now.0
    }

    /// The engine's clock: the timestamp of the last command applied.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Timers waiting to fire (ready deadlines, lease ends, expiries, offer windows). Only
    /// live ones: a timer leaves when what it watches ends early.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The settings.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// An offer in the book.
    pub fn offer(&self, id: OfferId) -> Option<&Offer> {
        self.book.offers.get(id.0)
    }

    /// Every offer in the book, oldest first.
    pub fn offers(&self) -> std::vec::IntoIter<&Offer> {
        self.book.offers.sorted().into_iter()
    }

    /// The live offers of a provider, oldest first.
    pub fn offers_of(&self, provider: Address) -> impl Iterator<Item = &Offer> {
        self.parties
            .id(&provider)
            .into_iter()
            .flat_map(|party| self.book.offers_of(party))
            .filter_map(|id| self.book.offers.get(id.0))
    }

    /// The IPs of an offer, in the order the provider listed them.
    pub fn offer_ips(&self, id: OfferId) -> Option<Vec<IpAddr>> {
        let offer = self.book.offers.get(id.0)?;
        Some(
            offer
                .slots
                .iter()
                .map(|slot| self.book.slot(*slot).addr)
                .collect(),
        )
    }

    /// The calendar of an IP the engine knows.
    pub fn calendar(&self, ip: IpAddr) -> Option<&[Booking]> {
        let slot = self.book.slot_of(ip)?;
        Some(self.book.slot(slot).calendar.bookings())
    }

    /// A request that rests or has running deals.
    pub fn request(&self, id: RequestId) -> Option<&RequestRecord> {
        self.requests.get(id.0)
    }

    /// Resting requests in matching priority (highest price, then oldest).
    pub fn resting_requests(&self) -> impl Iterator<Item = &RequestRecord> {
        self.resting
            .iter()
            .filter_map(|(_, id)| self.requests.get(id.0))
    }

    /// A deal.
    pub fn deal(&self, id: DealId) -> Option<&Deal> {
        self.deals.get(id.0)
    }

    fn next_deal_id(&self) -> DealId {
        DealId(self.config.id_base() + self.deals_made + 1)
    }

    /// Every deal still in the deal book, oldest first (finished deals leave it
    /// [`EngineConfig::deal_retention`] seconds after they close). Sorts the whole book: for
    /// tools and tests; a follower reads [`Engine::deals_after`].
    pub fn deals(&self) -> std::vec::IntoIter<&Deal> {
        self.deals.sorted().into_iter()
    }

    /// Deals made after `id` still in the book, oldest first.
    pub fn deals_after(&self, id: DealId) -> impl Iterator<Item = &Deal> {
        let first = id.0.max(self.config.id_base()) + 1;
        (first..=self.config.id_base() + self.deals_made).filter_map(|id| self.deal(DealId(id)))
    }

    /// How many deals the book holds (open, and finished within the retention).
    pub fn deal_count(&self) -> usize {
        self.deals.len()
    }

    /// The deals a wallet is party to made after `after`, oldest first: a page starts where
    /// the last one stopped without walking what came before.
    pub fn deals_of_after(&self, party: Address, after: DealId) -> impl Iterator<Item = &Deal> {
        let ids = self.parties.get(&party).map(|kept| &kept.deals.ids);
        let from = ids.map_or(0, |ids| ids.partition_point(|id| *id <= after));
        ids.into_iter()
            .flat_map(move |ids| ids.range(from..))
            .filter_map(|id| self.deal(*id))
    }

    /// The deals a wallet is party to (either side), oldest first.
    pub fn deals_of(&self, party: Address) -> impl Iterator<Item = &Deal> {
        self.parties
            .get(&party)
            .into_iter()
            .flat_map(|kept| kept.deals.ids.iter())
            .filter_map(|id| self.deal(*id))
    }

    /// A wallet's weighted average rating in hundredths of a star, as `min_rating` filters
    /// see it ([`Profile::average_rating`] under this engine's prior).
    pub fn rating(&self, wallet: Address) -> Option<u16> {
        self.parties
            .get(&wallet)
            .and_then(|party| party.profile.average_rating(self.config.rating_prior))
    }

    /// A wallet's profile (a default one if it never traded).
    pub fn profile(&self, wallet: Address) -> Profile {
        self.parties
            .get(&wallet)
            .map(|party| party.profile.clone())
            .unwrap_or_default()
    }

    /// A copy of the market depth.
    pub fn depth(&self) -> MarketDepth {
        self.book.depth.snapshot()
    }

    fn deal_mut(&mut self, id: DealId) -> Result<&mut Deal, EngineError> {
        self.deals.get_mut(id.0).ok_or(EngineError::UnknownDeal(id))
    }

    // ----- shape checks --------------------------------------------------------------------

    fn check_shape(&self, command: &Command) -> Result<Option<OfferIps>, InputError> {
        let at = command.at;
        match &command.kind {
            CommandKind::PlaceOffer(spec) => return spec.validate(at).map(Some),
            CommandKind::SubmitRequest(spec) => spec.validate(at)?,
            CommandKind::AmendOffer {
                price,
                window,
                max_ips,
                ..
            } => {
                if price.is_none() && window.is_none() && max_ips.is_none() {
                    return Err(InputError::NothingToAmend);
                }
                if let Some(price) = price {
                    check_price(*price)?;
                }
                if let Some(window) = window {
                    check_window(*window, at)?;
                }
                if *max_ips == Some(0) {
                    return Err(InputError::ZeroCount);
                }
            }
            CommandKind::AmendRequest {
                max_price,
                remaining,
                start,
                duration,
                ..
            } => {
                if max_price.is_none()
                    && remaining.is_none()
                    && start.is_none()
                    && duration.is_none()
                {
                    return Err(InputError::NothingToAmend);
                }
                if let Some(price) = max_price {
                    check_price(*price)?;
                }
                match remaining {
                    Some(0) => return Err(InputError::ZeroCount),
                    Some(count) if *count > MAX_REQUEST_COUNT => {
                        return Err(InputError::CountTooLarge {
                            count: *count,
                            max: MAX_REQUEST_COUNT,
                        });
                    }
                    _ => {}
                }
                if let Some(duration) = duration {
                    check_duration(*duration)?;
                }
                if let Some(Start::At(start)) = start
                    && *start < at
                {
                    return Err(InputError::StartInPast {
                        start: *start,
                        now: at,
                    });
                }
            }
            CommandKind::Rate { score, .. } => {
                if !(1..=5).contains(score) {
                    return Err(InputError::BadScore(*score));
                }
            }
            CommandKind::NoteUptime { uptime, .. } => {
                if *uptime > crate::MAX_BASIS_POINTS {
                    return Err(InputError::BadUptime(*uptime));
                }
            }
            CommandKind::SetDealRetention { seconds } => {
                if *seconds < MIN_DEAL_RETENTION {
                    return Err(InputError::RetentionTooShort(*seconds));
                }
            }
            CommandKind::Tick
            | CommandKind::CancelOffer { .. }
            | CommandKind::CancelRequest { .. }
            | CommandKind::ProviderReady { .. }
            | CommandKind::ProviderFailed { .. }
            | CommandKind::PaymentLapsed { .. }
            | CommandKind::CancelDeal { .. } => {}
        }
        Ok(None)
    }

    // ----- time ----------------------------------------------------------------------------

    /// Moves the clock to `at` and runs whatever fell due, in time order.
    fn advance(&mut self, at: Timestamp, events: &mut Vec<Event>) {
        self.now = at;
        self.book.now = at;
        while let Some((due, timer)) = self.timers.pop_due(at) {
            // A second of lease ends fires here at once: its deals' records, read a few
            // timers early, overlap their misses as the deferred queue's do.
            self.prefetch_firing();
            self.fire(due, timer, events);
        }
        self.retry_resting(events);
        self.prune_deals();
    }

    /// [`Engine::advance`], deferring the due seconds that may be deferred (see
    /// [`Engine::apply_deferring`]).
    fn advance_deferring(&mut self, at: Timestamp, events: &mut Vec<Event>) {
        self.now = at;
        self.book.now = at;
        loop {
            if self.timers.defer_due(at) {
                continue;
            }
            if !self.timers.any_due(at) {
                break;
            }
            // What fires next fires as it would have: after everything due before it.
            self.settle_all(events);
            let Some((due, timer)) = self.timers.pop_due(at) else {
                break;
            };
            self.fire(due, timer, events);
        }
        self.retry_resting(events);
    }

    /// Settles what a command reads or changes besides the offers the matcher considers, and
    /// drops the deal it names if that deal is past its retention.
    fn settle_touched(
        &mut self,
        kind: &CommandKind,
        offer_ips: Option<&[IpAddr]>,
        events: &mut Vec<Event>,
    ) {
        match kind {
            CommandKind::PlaceOffer(_) if self.timers.deferred_len() > 0 => {
                // An IP whose last lease ended may be offered again, by anyone.
                let now = self.now;
                let ended: SmallVec<[DealId; 4]> = offer_ips
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|ip| self.book.slot_of(*ip))
                    .flat_map(|slot| self.book.slot(slot).calendar.bookings())
                    .filter(|booking| booking.end <= now)
                    .map(|booking| booking.deal)
                    .collect();
                for deal in ended {
                    self.settle_deal(deal, events);
                }
            }
            CommandKind::CancelOffer { offer, .. } | CommandKind::AmendOffer { offer, .. } => {
                self.settle_offer(*offer, events);
            }
            CommandKind::ProviderReady { deal, .. }
            | CommandKind::ProviderFailed { deal, .. }
            | CommandKind::PaymentLapsed { deal, .. }
            | CommandKind::CancelDeal { deal, .. }
            | CommandKind::Rate { deal, .. } => {
                self.settle_deal(*deal, events);
                // A deal past its retention is gone, as it would have been.
                if let Some(closed_at) = self.deal(*deal).and_then(|d| d.closed_at)
                    && self.retention_over(closed_at)
                {
                    self.drop_deal(*deal);
                }
            }
            _ => {}
        }
    }

    /// Settles up to `budget` deferred timers, oldest first.
    fn settle_deferred(&mut self, budget: usize, events: &mut Vec<Event>) -> usize {
        let mut settled = 0;
        if budget <= SETTLE_PER_COMMAND {
            self.prefetch_deferred();
        }
        while settled < budget {
            // A few at a time, their records read first (see `Engine::warm`).
            let mut batch: SmallVec<[(Timestamp, Timer); 8]> = SmallVec::new();
            while batch.len() < batch.inline_size() && settled + batch.len() < budget {
                let Some(next) = self.timers.pop_deferred() else {
                    break;
                };
                batch.push(next);
            }
            if batch.is_empty() {
                break;
            }
            settled += batch.len();
            if batch.len() > 1 {
                let deals: SmallVec<[DealId; 8]> = batch
                    .iter()
                    .filter_map(|(_, timer)| timer.deal())
                    .filter(|id| self.open.contains(id.0))
                    .collect();
                self.warm(&deals);
            }
            for (fired_at, timer) in batch {
                self.settle_timer(fired_at, timer, events);
            }
        }
        settled
    }

    /// Settles a deal whose deferred timer is due, if it is.
    fn settle_deal(&mut self, id: DealId, events: &mut Vec<Event>) {
        let Some(deal) = self.deal(id) else {
            return;
        };
        let (timer, due) = match deal.status() {
            DealStatus::Pending => (Timer::ReadyDeadline(id), deal.ready_deadline),
            DealStatus::Active => (Timer::DealEnd(id), deal.end),
            _ => return,
        };
        if due > self.now {
            return;
        }
        if let Some(fired_at) = self.timers.deferred_fired_at(due) {
            self.settle_timer(fired_at, timer, events);
        }
    }

    /// Settles every deal booked on an offer's IPs that ended, if any may have; the offer then
    /// looks as [`Engine::apply`] would have left it.
    fn settle_offer(&mut self, id: OfferId, events: &mut Vec<Event>) {
        let now = self.now;
        let Some(offer) = self.book.offers.get(id.0) else {
            return;
        };
        if offer.ended_by > now || self.timers.deferred_len() == 0 {
            return;
        }
        let mut ended: SmallVec<[DealId; 4]> = SmallVec::new();
        let mut next_end = Timestamp(u64::MAX);
        let busy = offer
            .busy_by_free
            .up_to((Timestamp(u64::MAX), u32::MAX))
            .map(|(_, position)| position)
            .chain(offer.irregular.iter());
        for position in busy {
            let slot = self.book.slot(offer.slots[position as usize]);
            for booking in slot.calendar.bookings() {
                if booking.end <= now {
                    ended.push(booking.deal);
                } else {
                    next_end = next_end.min(booking.end);
                }
            }
        }
        ended.sort_unstable();
        ended.dedup();
        self.warm(&ended);
        for deal in ended {
            self.settle_deal(deal, events);
        }
        if let Some(offer) = self.book.offers.get_mut(id.0) {
            offer.ended_by = next_end;
        }
    }

    /// Settles enough of an offer for a fill that takes up to `need` of its IPs: the IPs whose
    /// leases all ended come before booked ones, in listed order, so settling the first `need`
    /// of them (by position) shows the fill the same IPs as settling them all. They are found
    /// by merging, a second at a time, the busy index (by end, then position). When a fill may
    /// skip IPs (distinct subnets), or the offer has shared or gapped IPs (checked booking by
    /// booking), the whole offer settles.
    fn settle_offer_for(
        &mut self,
        id: OfferId,
        need: usize,
        distinct: bool,
        events: &mut Vec<Event>,
    ) {
        let now = self.now;
        let Some(offer) = self.book.offers.get(id.0) else {
            return;
        };
        if distinct || !offer.irregular.is_empty() {
            return self.settle_offer(id, events);
        }
        let Some(positions) = first_ended(offer, now, need.max(SETTLE_AHEAD)) else {
            return self.settle_offer(id, events);
        };
        let deals: SmallVec<[DealId; 4]> = positions
            .iter()
            .flat_map(|position| {
                let slot = self.book.slot(offer.slots[*position as usize]);
                slot.calendar.bookings().iter().map(|booking| booking.deal)
            })
            .collect();
        self.warm(&deals);
        for deal in deals {
            self.settle_deal(deal, events);
        }
    }

    /// Reads what settling `deals` reads first (each deal; then its request and open entry;
    /// then the IPs' slots and their offers), in passes of independent loads: the cache misses
    /// of a batch overlap instead of following one another, one deal at a time.
    fn warm(&self, deals: &[DealId]) {
        // Eight at a time: enough loads in flight to overlap, and nothing to allocate.
        for batch in deals.chunks(8) {
            let mut found: SmallVec<[(DealId, RequestId); 8]> = SmallVec::new();
            for id in batch {
                if let Some(deal) = self.deals.get(id.0) {
                    found.push((*id, deal.request));
                }
            }
            let mut seen = 0usize;
            for (deal, request) in &found {
                seen += usize::from(self.requests.contains(request.0));
                if let Some(open) = self.open.get(deal.0) {
                    // The IPs it releases, and the offers holding them.
                    for slot in &open.slots {
                        let slot = self.book.slot(*slot);
                        seen += slot.calendar.bookings().len();
                        if let Some((offer, _)) = slot.home {
                            seen += usize::from(self.book.offers.contains(offer.0));
                        }
                    }
                }
            }
            // Kept, so the reads are not optimised away.
            std::hint::black_box(seen);
        }
    }

    /// Asks for what the deferred queue settles a few commands from now, in two stages: the
    /// deal and its open entry further ahead; nearer, where those have arrived, the request
    /// and the IPs' slots they name. Settling one end per command then finds its records in
    /// cache instead of waiting on each in turn.
    fn prefetch_deferred(&self) {
        self.prefetch_settling(
            self.timers.deferred_ahead(PREFETCH_FAR),
            self.timers.deferred_ahead(PREFETCH_NEAR),
        );
    }

    /// [`Engine::prefetch_deferred`] for the second the eager engine is firing.
    fn prefetch_firing(&self) {
        self.prefetch_settling(
            self.timers.firing_ahead(PREFETCH_FAR),
            self.timers.firing_ahead(PREFETCH_NEAR),
        );
    }

    /// Asks for the deal and open entry of the timer `far` ahead, and for the IPs' slots and
    /// the request of the one `near` ahead (whose deal and open entry were asked for before).
    fn prefetch_settling(&self, far: Option<Timer>, near: Option<Timer>) {
        if let Some(id) = far.and_then(Timer::deal) {
            self.deals.prefetch(id.0);
            self.open.prefetch(id.0);
        }
        if let Some(id) = near.and_then(Timer::deal)
            && let Some(open) = self.open.get(id.0)
        {
            for slot in &open.slots {
                self.book.prefetch_slot(*slot);
            }
            if let Some(deal) = self.deals.get(id.0) {
                self.requests.prefetch(deal.request.0);
            }
        }
    }

    /// Asks for the slots the requests and deals a few commands from now are written to: the
    /// rings reuse memory last written seconds ago, and a record written to a cold line waits
    /// for the line first.
    fn prefetch_next_records(&self) {
        self.requests
            .prefetch(self.next_request + PREFETCH_NEAR as u64);
        let deal = self.next_deal_id().0 + PREFETCH_NEAR as u64;
        self.deals.prefetch(deal);
        self.open.prefetch(deal);
    }

    /// Runs a deferred deal timer as it would have run when it fell due: with the clock of
    /// then (the deal closes at that time), and with the offers it frees retried against no
    /// resting request (a second is deferred only while none rests).
    fn settle_timer(&mut self, fired_at: Timestamp, timer: Timer, events: &mut Vec<Event>) {
        let (id, input) = match timer {
            Timer::ReadyDeadline(id) => (id, DealInput::ReadyTimeout),
            Timer::DealEnd(id) => (id, DealInput::EndReached),
            _ => return,
        };
        let waits = match input {
            DealInput::ReadyTimeout => DealStatus::Pending,
            _ => DealStatus::Active,
        };
        // Most deferred timers find their deal settled out of turn already: the compact
        // open-deal entry says so without reading the deal's own record (a cache miss each).
        if !self.open.contains(id.0) || self.deal(id).map(Deal::status) != Some(waits) {
            return;
        }
        self.timers.settled_deferred();
        let now = std::mem::replace(&mut self.now, fired_at);
        let dirty = self.dirty.len();
        self.drive_deal(id, input, events);
        self.dirty.truncate(dirty);
        self.now = now;
    }

    /// Drops finished deals whose retention is over from the deal book.
    fn prune_deals(&mut self) {
        self.prune_some_deals(usize::MAX);
    }

    /// Drops up to `budget` finished deals whose retention is over, oldest first.
    fn prune_some_deals(&mut self, budget: usize) {
        if budget <= PRUNE_PER_COMMAND
            && let Some(finished) = self.finished.ahead(PREFETCH_FAR * PRUNE_PER_COMMAND)
        {
            // Asked for a few commands early: dropping empties the deal's slot.
            self.deals.prefetch(finished.deal.0);
        }
        for _ in 0..budget {
            match self.finished.oldest() {
                Some(closed_at) if self.retention_over(closed_at) => {
                    if let Some(finished) = self.finished.pop_oldest() {
                        self.drop_finished(finished);
                    }
                }
                _ => break,
            }
        }
    }

    /// Takes a finished deal out of the deal book and its parties' lists, out of turn (its
    /// entry in `finished` finds it gone).
    fn drop_deal(&mut self, id: DealId) {
        let Some((provider, requester)) = self.deal(id).map(|deal| (deal.provider, deal.requester))
        else {
            return;
        };
        // Interned when the deal was made (or restored).
        let provider = self.parties.intern(provider);
        let requester = self.parties.intern(requester);
        self.drop_finished(Finished {
            deal: id,
            provider,
            requester,
        });
    }

    /// Takes a finished deal out of the deal book and its parties' lists, unless it left
    /// already.
    fn drop_finished(&mut self, finished: Finished) {
        let Finished {
            deal,
            provider,
            requester,
        } = finished;
        if !self.deals.delete(deal.0) {
            return;
        }
        self.parties
            .party_mut(provider)
            .deals
            .forget(deal, &self.deals);
        if requester != provider {
            self.parties
                .party_mut(requester)
                .deals
                .forget(deal, &self.deals);
        }
    }

    /// Runs a popped timer. A deal timer may be dead (its removal is lazy: see
    /// [`crate::timers`]), so it runs only if the deal still waits for it; ending the deal
    /// removes it from the live count.
    fn fire(&mut self, due: Timestamp, timer: Timer, events: &mut Vec<Event>) {
        match timer {
            Timer::ReadyDeadline(deal) => {
                if self.deal(deal).map(Deal::status) == Some(DealStatus::Pending) {
                    self.drive_deal(deal, DealInput::ReadyTimeout, events);
                }
            }
            Timer::DealEnd(deal) => {
                if self.deal(deal).map(Deal::status) == Some(DealStatus::Active) {
                    self.drive_deal(deal, DealInput::EndReached, events);
                }
            }
            Timer::RequestExpiry(request) => {
                let expired = self
                    .requests
                    .get(request.0)
                    .is_some_and(|r| r.resting && r.expiry() <= self.now);
                if expired {
                    self.close_request(request, RequestEnd::Expired, events);
                }
            }
            Timer::OfferOpens(offer) => {
                if self.offer(offer).is_some_and(|o| o.window.from == due) {
                    self.dirty.push(offer);
                }
            }
            Timer::OfferCloses(offer) => {
                if self
                    .offer(offer)
                    .is_some_and(|o| o.window.until <= self.now)
                {
                    self.remove_offer(offer);
                    events.push(Event::OfferClosed { offer });
                }
            }
        }
    }

    // ----- commands ------------------------------------------------------------------------

    fn execute(
        &mut self,
        kind: &CommandKind,
        offer_ips: Option<OfferIps>,
        events: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        match kind {
            CommandKind::Tick => Ok(()),
            CommandKind::PlaceOffer(spec) => {
                let ips = offer_ips.unwrap_or_default();
                self.book.check_ips(spec.provider, &ips)?;
                let id = OfferId(self.next_offer);
                self.next_offer += 1;
                let party = self.parties.intern(spec.provider);
                self.book.insert(id, spec, &ips, party);
                self.schedule_offer(id);
                self.dirty.push(id);
                events.push(Event::OfferPlaced {
                    offer: id,
                    ips: ips.len() as u32,
                });
                Ok(())
            }
            CommandKind::CancelOffer { offer, provider } => {
                self.owned_offer(*offer, *provider)?;
                self.remove_offer(*offer);
                events.push(Event::OfferClosed { offer: *offer });
                Ok(())
            }
            CommandKind::AmendOffer {
                offer,
                provider,
                price,
                window,
                max_ips,
            } => {
                self.owned_offer(*offer, *provider)?;
                if let Some(keep) = max_ips {
                    // Refused before anything changes: the price and window stay as they were.
                    self.book.shrink(*offer, *keep).map_err(|booked| {
                        EngineError::ShrinkBelowBooked {
                            booked,
                            requested: *keep,
                        }
                    })?;
                }
                if window.is_some() {
                    self.unschedule_offer(*offer);
                }
                self.book.amend(*offer, *price, *window);
                if window.is_some() {
                    self.schedule_offer(*offer);
                }
                self.dirty.push(*offer);
                events.push(Event::OfferAmended { offer: *offer });
                Ok(())
            }
            CommandKind::SubmitRequest(spec) => {
                self.submit(spec, events);
                Ok(())
            }
            CommandKind::CancelRequest { request, requester } => {
                self.owned_resting(*request, *requester)?;
                self.close_request(*request, RequestEnd::Cancelled, events);
                Ok(())
            }
            CommandKind::AmendRequest {
                request,
                requester,
                max_price,
                remaining,
                start,
                duration,
            } => {
                let record = self.owned_resting(*request, *requester)?;
                let old_price = record.max_price;
                let old_expiry = record.expiry();
                let new_duration = duration.unwrap_or(record.duration);
                let new_remaining = remaining.unwrap_or(record.remaining);
                let new_price = max_price.unwrap_or(record.max_price);
                let new_start = start.unwrap_or(record.start);
                check_total_cost(new_price, new_remaining, new_duration)?;
                if let Start::At(at) = new_start {
                    at.checked_add(new_duration)?;
                }
                self.resting.remove(&(Reverse(old_price), *request));
                self.resting.insert((Reverse(new_price), *request));
                self.timers
                    .remove(old_expiry, Timer::RequestExpiry(*request));
                let record = self
                    .requests
                    .get_mut(request.0)
                    .expect("owned_resting found it");
                record.duration = new_duration;
                record.max_price = new_price;
                record.start = new_start;
                record.remaining = new_remaining;
                let expiry = record.expiry();
                self.timers.add(expiry, Timer::RequestExpiry(*request));
                self.fill_resting(*request, events);
                Ok(())
            }
            CommandKind::ProviderReady { deal, provider } => {
                self.check_deal_party(*deal, *provider, true)?;
                self.try_drive_deal(*deal, DealInput::ProviderReady, events)
            }
            CommandKind::ProviderFailed { deal, provider } => {
                self.check_deal_party(*deal, *provider, true)?;
                self.try_drive_deal(*deal, DealInput::ProviderFailed, events)
            }
            CommandKind::PaymentLapsed { deal, at } => {
                self.check_transition(*deal, DealInput::PaymentLapsed)?;
                let closes_at = at
                    .zip(self.deal(*deal))
                    .map_or(self.now, |(at, lapsing)| cut_second(lapsing, at, self.now));
                self.drive_deal_closing(*deal, DealInput::PaymentLapsed, closes_at, events);
                // Closed so far back that its retention is over already: it leaves now, in
                // either mode, rather than at whichever prune comes next.
                if self.retention_over(closes_at) {
                    self.drop_deal(*deal);
                }
                Ok(())
            }
            CommandKind::CancelDeal { deal, requester } => {
                self.check_deal_party(*deal, *requester, false)?;
                self.try_drive_deal(*deal, DealInput::RequesterCancel, events)
            }
            CommandKind::Rate { deal, rater, score } => self.rate(*deal, *rater, *score, events),
            CommandKind::SetDealRetention { seconds } => {
                self.config.deal_retention = *seconds;
                self.prune_deals();
                Ok(())
            }
            CommandKind::NoteUptime { provider, uptime } => {
                let party = self.parties.intern(*provider);
                self.parties.profile_mut(party).uptime = Some(*uptime);
                // Its offers may now pass (or fail) uptime filters of resting requests.
                self.dirty.extend(self.book.offers_of(party));
                Ok(())
            }
        }
    }

    fn owned_offer(&self, id: OfferId, provider: Address) -> Result<&Offer, EngineError> {
        let offer = self.offer(id).ok_or(EngineError::UnknownOffer(id))?;
        if offer.provider != provider {
            return Err(EngineError::NotOwner { party: provider });
        }
        Ok(offer)
    }

    fn owned_resting(
        &self,
        id: RequestId,
        requester: Address,
    ) -> Result<&RequestRecord, EngineError> {
        let record = self
            .requests
            .get(id.0)
            .filter(|r| r.resting)
            .ok_or(EngineError::UnknownRequest(id))?;
        if record.requester != requester {
            return Err(EngineError::NotOwner { party: requester });
        }
        Ok(record)
    }

    fn check_deal_party(
        &self,
        id: DealId,
        party: Address,
        as_provider: bool,
    ) -> Result<(), EngineError> {
        let deal = self.deal(id).ok_or(EngineError::UnknownDeal(id))?;
        let owner = if as_provider {
            deal.provider
        } else {
            deal.requester
        };
        if owner != party {
            return Err(EngineError::NotOwner { party });
        }
        Ok(())
    }

    fn remove_offer(&mut self, id: OfferId) {
        self.unschedule_offer(id);
        self.book.remove(id);
    }

    fn unschedule_offer(&mut self, id: OfferId) {
        if let Some(offer) = self.book.offers.get(id.0) {
            let window = offer.window;
            self.timers.remove(window.until, Timer::OfferCloses(id));
            self.timers.remove(window.from, Timer::OfferOpens(id));
        }
    }

    fn schedule_offer(&mut self, id: OfferId) {
        if let Some(offer) = self.book.offers.get(id.0) {
            let window = offer.window;
            self.timers.add(window.until, Timer::OfferCloses(id));
            if window.from > self.now {
                self.timers.add(window.from, Timer::OfferOpens(id));
            }
        }
    }

    // ----- requests and matching -----------------------------------------------------------

    fn submit(&mut self, spec: &RequestSpec, events: &mut Vec<Event>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.prefetch_next_records();
        events.push(Event::RequestAccepted { request: id });
        let record = RequestRecord::new(id, spec, self.now);
        let (start, end) = lease_span(spec.start, spec.duration, self.now);
        self.requests.insert(id.0, record);
        // Interned now, so its record is on its way while the matcher runs.
        let requester = self.parties.intern(spec.requester);
        self.parties.prefetch(requester);
        let plan = self.plan_settling(id, start, end, spec.count, events);
        let planned: u32 = plan.iter().map(|(_, slots)| slots.len() as u32).sum();
        if spec.time_in_force == TimeInForce::Fok && planned < spec.count {
            self.close_request(id, RequestEnd::Killed, events);
            return;
        }
        self.commit(id, requester, plan, start, end, events);
        let remaining = self.requests.get(id.0).map_or(0, |r| r.remaining);
        match spec.time_in_force {
            _ if remaining == 0 => self.close_request(id, RequestEnd::Filled, events),
            TimeInForce::Gtc { .. } => {
                let record = self.requests.get_mut(id.0).expect("inserted above");
                record.resting = true;
                let expiry = record.expiry();
                self.resting.insert((Reverse(spec.max_price), id));
                self.timers.add(expiry, Timer::RequestExpiry(id));
                events.push(Event::RequestResting {
                    request: id,
                    remaining,
                });
            }
            TimeInForce::Ioc | TimeInForce::Fok => {
                self.close_request(id, RequestEnd::Unfilled, events)
            }
        }
    }

    /// Gives resting requests a chance at capacity that appeared since they last tried, highest
    /// price then oldest first. A request is retried only if one of the offers that changed
    /// could serve it: every other offer was already unable to.
    fn retry_resting(&mut self, events: &mut Vec<Event>) {
        if self.dirty.is_empty() {
            return;
        }
        if self.resting.is_empty() {
            // Cleared in place: the list keeps its room, and marking an offer allocates nothing.
            self.dirty.clear();
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        // A wave of lease ends marks the same offers many times over.
        dirty.sort_unstable();
        dirty.dedup();
        let queue: Vec<RequestId> = self.resting.iter().map(|(_, id)| *id).collect();
        for id in queue {
            let Some(record) = self.requests.get(id.0).filter(|r| r.resting) else {
                continue;
            };
            let Some(fill) = self.resting_fill(record) else {
                continue;
            };
            let touched = dirty
                .iter()
                .filter_map(|offer| self.book.offers.get(offer.0))
                .any(|offer| self.offer_admits(offer, &fill));
            if touched {
                self.fill_resting(id, events);
            }
        }
        // Offers these fills changed are marked for the next round; otherwise the emptied list
        // goes back with its room.
        if self.dirty.is_empty() {
            dirty.clear();
            self.dirty = dirty;
        }
    }

    fn resting_fill<'a>(&self, record: &'a RequestRecord) -> Option<Fill<'a>> {
        if let Start::At(start) = record.start
            && start < self.now
        {
            return None;
        }
        let (start, end) = lease_span(record.start, record.duration, self.now);
        Some(Fill::of(record, start, end))
    }

    fn fill_resting(&mut self, id: RequestId, events: &mut Vec<Event>) {
        let Some(record) = self.requests.get(id.0).filter(|r| r.resting) else {
            return;
        };
        let Some(fill) = self.resting_fill(record) else {
            return;
        };
        let (start, end, remaining) = (fill.start, fill.end, record.remaining);
        let requester = record.requester;
        let plan = self.plan_settling(id, start, end, remaining, events);
        if plan.is_empty() {
            return;
        }
        let requester = self.parties.intern(requester);
        self.commit(id, requester, plan, start, end, events);
        if self.requests.get(id.0).is_some_and(|r| r.remaining == 0) {
            self.close_request(id, RequestEnd::Filled, events);
        }
    }

    /// Whether an offer as a whole qualifies for a fill (its IPs' calendars aside).
    fn offer_admits(&self, offer: &Offer, fill: &Fill<'_>) -> bool {
        let filters = fill.filters;
        let duration = fill.end.0 - fill.start.0;
        offer.price <= fill.max_price
            && filters.admit(offer)
            && offer.window.covers(fill.start, fill.end)
            && (offer.min_lease..=offer.max_lease).contains(&duration)
            && offer.provider != fill.requester
            && fill.rare.is_none_or(|rare| rare.admit(offer))
            && filters.min_rating.is_none_or(|min| {
                self.parties
                    .party(offer.party)
                    .profile
                    .average_rating(self.config.rating_prior)
                    .is_some_and(|avg| avg >= min)
            })
            && filters.min_uptime.is_none_or(|min| {
                self.parties
                    .party(offer.party)
                    .profile
                    .uptime
                    .is_some_and(|uptime| uptime >= min)
            })
    }

    /// Plans a fill of `need` IPs over `[start, end)` for a request in the book, settling on the
    /// way each offer the matcher looks at that holds deferred ends (see [`Engine::plan`]).
    fn plan_settling(
        &mut self,
        request: RequestId,
        start: Timestamp,
        end: Timestamp,
        need: u32,
        events: &mut Vec<Event>,
    ) -> Plan {
        let mut settled: SmallVec<[OfferId; 4]> = SmallVec::new();
        loop {
            let (planned, distinct) = {
                let Some(record) = self.requests.get(request.0) else {
                    return Plan::new();
                };
                let fill = Fill::of(record, start, end);
                let planned = self.plan(&fill, need, record.used_subnets(), &settled);
                (planned, record.distinct_subnets())
            };
            match planned {
                Ok(plan) => return plan,
                Err(Unsettled { offer, need }) => {
                    self.settle_offer_for(offer, need, distinct, events);
                    settled.push(offer);
                }
            }
        }
    }

    /// Picks up to `need` IPs for a fill: offers cheapest then oldest; inside an offer, IPs with
    /// no booking first, then booked ones that are free over the span, each in listed order.
    ///
    /// `Err` when an offer it reached (not in `settled`) may hold deferred ends: settled, it
    /// could look different (an IP idle rather than booked), so the caller settles what this
    /// fill needs of it and plans again.
    fn plan(
        &self,
        fill: &Fill<'_>,
        need: u32,
        used_subnets: &BTreeSet<u128>,
        settled: &[OfferId],
    ) -> Result<Plan, Unsettled> {
        let deferred = self.timers.deferred_len() > 0;
        let distinct = fill.filters.distinct_subnets;
        let mut taken_subnets: BTreeSet<u128> = BTreeSet::new();
        let mut plan = Plan::new();
        let mut left = need as usize;
        let index = match fill.filters.countries.len() {
            1 => {
                let country = fill
                    .filters
                    .countries
                    .iter()
                    .next()
                    .expect("a set of one has one");
                &self.book.by_country[country.index()]
            }
            _ => &self.book.all,
        };
        let price_of = |id: OfferId| self.book.offers.get(id.0).map_or(Amount::MAX, |o| o.price);
        for id in index.candidates(self.now, fill.start, fill.end, fill.max_price, price_of) {
            if left == 0 {
                break;
            }
            let Some(offer) = self.book.offers.get(id.0) else {
                continue;
            };
            if !self.offer_admits(offer, fill) {
                continue;
            }
            if deferred
                && may_hold_ended(offer, self.now)
                && !settled.contains(&id)
                && !idle_comes_first(offer, self.now, left, distinct)
            {
                return Err(Unsettled {
                    offer: id,
                    need: left,
                });
            }
            // The deal made from it joins its provider's deal list (see `commit`).
            self.parties.prefetch(offer.party);
            let mut picked = Picked::new();
            let mut take = |position: u32, picked: &mut Picked| {
                let slot = offer.slots[position as usize];
                if distinct {
                    let subnet = subnet_of(self.book.slot(slot).addr);
                    if used_subnets.contains(&subnet) || !taken_subnets.insert(subnet) {
                        return;
                    }
                }
                // Asked for as soon as it is picked: the deal reads it first thing.
                self.book.prefetch_slot(slot);
                picked.push(slot);
            };
            let mut idle = offer.idle.iter();
            for position in idle.by_ref() {
                take(position, &mut picked);
                if picked.len() == left {
                    // The next fill in this market most likely takes the next idle IP here:
                    // asked for now, its slot waits in cache instead of costing that fill a
                    // miss.
                    if let Some(next) = idle.next() {
                        self.book.prefetch_slot(offer.slots[next as usize]);
                    }
                    break;
                }
            }
            if picked.len() < left {
                // Busy IPs free for the window, lowest position first: the regular ones from
                // the two time indexes, merged with the irregular ones (several tenants or
                // gaps), whose calendars are checked lazily — an offer of many partly booked
                // multi-tenant IPs is not scanned past the IPs this request takes.
                let mut regular: Vec<u32> = offer
                    .busy_by_free
                    .up_to((fill.start, u32::MAX))
                    .chain(offer.busy_by_start.from((fill.end, 0)))
                    .map(|(_, position)| position)
                    .collect();
                regular.sort_unstable();
                regular.dedup();
                let mut regular = regular.into_iter().peekable();
                let mut irregular = offer
                    .irregular
                    .iter()
                    .filter(|position| {
                        self.book
                            .slot(offer.slots[*position as usize])
                            .calendar
                            .admits(fill.start, fill.end, offer.tenants)
                    })
                    .peekable();
                let mut last = None;
                while picked.len() < left {
                    let next = match (regular.peek(), irregular.peek()) {
                        (Some(a), Some(b)) if a <= b => regular.next(),
                        (Some(_), Some(_)) | (None, Some(_)) => irregular.next(),
                        (Some(_), None) => regular.next(),
                        (None, None) => None,
                    };
                    let Some(position) = next else { break };
                    if last == Some(position) {
                        continue;
                    }
                    last = Some(position);
                    if !self.holds(fill.request, offer.slots[position as usize]) {
                        take(position, &mut picked);
                    }
                }
            }
            if !picked.is_empty() {
                left -= picked.len();
                plan.push((id, picked));
            }
        }
        Ok(plan)
    }

    /// Whether the request already holds the IP in `slot` through one of its deals.
    fn holds(&self, request: RequestId, slot: u32) -> bool {
        self.book
            .slot(slot)
            .calendar
            .bookings()
            .iter()
            .any(|b| self.deal(b.deal).is_some_and(|d| d.request == request))
    }

    /// Books `plan` for `request`, one deal per offer. Its requester comes interned as
    /// `requester_party`: the caller has it at hand, and a second look-up by address would
    /// cost a hash and a probe.
    fn commit(
        &mut self,
        request: RequestId,
        requester_party: PartyId,
        plan: Plan,
        start: Timestamp,
        end: Timestamp,
        events: &mut Vec<Event>,
    ) {
        let ready_deadline = start.saturating_add(self.config.ready_timeout).min(end);
        let Some(requester) = self.requests.get(request.0).map(|r| r.requester) else {
            return;
        };
        // The end of the requester's deal list, which every deal below joins: a new request's
        // record, which says where that end is, was asked for as it arrived. The provider's end is
        // not asked for: its record was asked for only as the matcher picked the offer, and a
        // prefetch that has to read a record still on its way waits for it.
        self.parties.prefetch_deal_list_end(requester_party);
        for (offer_id, slots) in plan {
            let id = self.next_deal_id();
            let Some(offer) = self.book.offers.get(offer_id.0) else {
                continue;
            };
            let (provider, provider_party) = (offer.provider, offer.party);
            let (price, protocols) = (offer.price, offer.protocols);
            let Some(record) = self.requests.get_mut(request.0) else {
                continue;
            };
            let count = slots.len() as u32;
            record.filled += count;
            record.remaining = record.remaining.saturating_sub(count);
            record.open_deals += 1;
            let mut ips = SmallVec::with_capacity(slots.len());
            let booked: SmallVec<[u32; 1]> = SmallVec::from_slice(&slots);
            for slot in &slots {
                let addr = self.book.slot(*slot).addr;
                if record.distinct_subnets() {
                    record.rare_mut().used_subnets.insert(subnet_of(addr));
                }
                ips.push(addr);
            }
            for slot in slots {
                self.book.book(
                    slot,
                    Booking {
                        start,
                        end,
                        deal: id,
                    },
                );
            }
            self.open.insert(
                id.0,
                OpenDeal {
                    slots: booked,
                    provider: provider_party,
                    requester: requester_party,
                },
            );
            self.deals_made += 1;
            self.deals.insert(
                id.0,
                Deal {
                    id,
                    request,
                    offer: offer_id,
                    provider,
                    requester,
                    ips,
                    start,
                    end,
                    price,
                    protocols,
                    made_at: self.now,
                    ready_deadline,
                    provider_status: ProviderStatus::Awaiting,
                    requester_status: RequesterStatus::Committed,
                    ready_at: None,
                    closed_at: None,
                    provider_rating: None,
                    requester_rating: None,
                },
            );
            let provider_side = self.parties.party_mut(provider_party);
            provider_side.deals.ids.push_back(id);
            provider_side.profile.deals_as_provider += 1;
            let requester_side = self.parties.party_mut(requester_party);
            if requester_party != provider_party {
                requester_side.deals.ids.push_back(id);
            }
            requester_side.profile.deals_as_requester += 1;
            // The lease end is scheduled once the deal is active: a pending deal's ready
            // deadline comes first (never after its end) and settles it.
            self.timers.add(ready_deadline, Timer::ReadyDeadline(id));
            if deadline_frees_early(ready_deadline, end) {
                self.timers.watch(ready_deadline);
            }
            events.push(Event::DealMade {
                deal: id,
                request,
                offer: offer_id,
                provider,
                requester,
                ips: count,
                price,
                start,
                end,
            });
        }
    }

    fn close_request(&mut self, id: RequestId, end: RequestEnd, events: &mut Vec<Event>) {
        let Some(record) = self.requests.get_mut(id.0) else {
            return;
        };
        if record.resting {
            record.resting = false;
            self.resting.remove(&(Reverse(record.max_price), id));
            self.timers
                .remove(record.expiry(), Timer::RequestExpiry(id));
        }
        record.remaining = 0;
        events.push(Event::RequestClosed {
            request: id,
            filled: record.filled,
            end,
        });
        if record.open_deals == 0 {
            self.requests.delete(id.0);
        }
    }

    // ----- deals ---------------------------------------------------------------------------

    fn try_drive_deal(
        &mut self,
        id: DealId,
        input: DealInput,
        events: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        self.check_transition(id, input)?;
        self.drive_deal(id, input, events);
        Ok(())
    }

    /// Whether `input` is legal for deal `id` now.
    fn check_transition(&self, id: DealId, input: DealInput) -> Result<(), EngineError> {
        let deal = self.deal(id).ok_or(EngineError::UnknownDeal(id))?;
        if transition(deal.provider_status, deal.requester_status, input).is_none() {
            return Err(EngineError::IllegalTransition {
                deal: id,
                status: deal.status(),
                input,
            });
        }
        Ok(())
    }

    /// Moves a deal by a legal input; a terminal status releases its IPs, and a void re-matches
    /// them for the request.
    fn drive_deal(&mut self, id: DealId, input: DealInput, events: &mut Vec<Event>) {
        self.drive_deal_closing(id, input, self.now, events);
    }

    /// [`Engine::drive_deal`], where a terminal status closes the deal at `closes_at` (now, but
    /// for a cut-off: where billing stopped). Its IPs are freed now all the same.
    fn drive_deal_closing(
        &mut self,
        id: DealId,
        input: DealInput,
        closes_at: Timestamp,
        events: &mut Vec<Event>,
    ) {
        let now = self.now;
        let Ok(deal) = self.deal_mut(id) else {
            return;
        };
        let Some((provider, requester)) =
            transition(deal.provider_status, deal.requester_status, input)
        else {
            return;
        };
        let from = deal.status();
        deal.provider_status = provider;
        deal.requester_status = requester;
        if input == DealInput::ProviderReady {
            deal.ready_at = Some(now);
        }
        let to = deal.status();
        let (ready_deadline, end) = (deal.ready_deadline, deal.end);
        events.push(Event::DealStatusChanged { deal: id, from, to });
        if from == DealStatus::Pending {
            self.timers.remove(ready_deadline, Timer::ReadyDeadline(id));
            if deadline_frees_early(ready_deadline, end) {
                self.timers.unwatch(ready_deadline);
            }
        }
        if to == DealStatus::Active {
            self.timers.add(end, Timer::DealEnd(id));
        }
        if !to.is_terminal() {
            return;
        }
        if from == DealStatus::Active {
            self.timers.remove(end, Timer::DealEnd(id));
        }
        let Ok(deal) = self.deal_mut(id) else {
            return;
        };
        deal.closed_at = Some(closes_at);
        let (provider, request, end, count) =
            (deal.provider, deal.request, deal.end, deal.ips.len() as u32);
        let open = self
            .open
            .remove(id.0)
            .expect("an open deal has its slots and parties");
        self.finished.push(
            closes_at,
            Finished {
                deal: id,
                provider: open.provider,
                requester: open.requester,
            },
        );
        for slot in open.slots {
            if let Some(offer) = self.book.release(slot, id) {
                self.dirty.push(offer);
            }
        }
        self.parties
            .profile_mut(open.provider)
            .record_outcome(to, true);
        self.parties
            .profile_mut(open.requester)
            .record_outcome(to, false);
        let Some(record) = self.requests.get_mut(request.0) else {
            return;
        };
        record.open_deals = record.open_deals.saturating_sub(1);
        if to == DealStatus::Voided {
            record.filled = record.filled.saturating_sub(count);
            // The exclusion matters only to a request that goes on (a re-match now, or later
            // fills): a request about to leave the book is spared the allocation.
            let goes_on = record.resting || record.open_deals > 0 || still_a_lease(now, end);
            // Sorted, so the record reads the same whatever order voids were settled in.
            if goes_on && let Err(at) = record.excluded().binary_search(&provider) {
                record.rare_mut().excluded.insert(at, provider);
            }
            self.rematch(request, count, end, events);
        }
        if let Some(record) = self.requests.get(request.0)
            && !record.resting
            && record.open_deals == 0
        {
            self.requests.delete(request.0);
        }
    }

    /// Replaces a voided deal's IPs for what is left of its span, if that is still a lease.
    fn rematch(&mut self, request: RequestId, count: u32, end: Timestamp, events: &mut Vec<Event>) {
        let start = self.now;
        let Some(record) = self.requests.get_mut(request.0) else {
            return;
        };
        if !still_a_lease(start, end) {
            if record.resting {
                record.remaining += count;
            }
            return;
        }
        let (remaining_before, requester) = (record.remaining, record.requester);
        let plan = self.plan_settling(request, start, end, count, events);
        let rematched: u32 = plan.iter().map(|(_, slots)| slots.len() as u32).sum();
        if !plan.is_empty() {
            let requester = self.parties.intern(requester);
            self.commit(request, requester, plan, start, end, events);
        }
        // A re-match replaces IPs already counted, so it must not eat into a resting rest; what
        // it could not replace goes back to a resting request, to fill as offers arrive.
        if let Some(record) = self.requests.get_mut(request.0) {
            record.remaining = remaining_before;
            if record.resting {
                record.remaining += count - rematched;
            }
        }
    }

    fn rate(
        &mut self,
        id: DealId,
        rater: Address,
        score: u8,
        events: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let deal = self.deal_mut(id)?;
        let finished = deal.status().is_terminal();
        let value = deal.served_value();
        if deal.provider == deal.requester {
            // Deals made before self-dealing was refused: they never count.
            return Err(EngineError::SelfRating { deal: id });
        }
        let (slot, ratee) = if rater == deal.requester {
            (&mut deal.provider_rating, deal.provider)
        } else if rater == deal.provider {
            (&mut deal.requester_rating, deal.requester)
        } else {
            return Err(EngineError::NotOwner { party: rater });
        };
        if !finished {
            return Err(EngineError::NotFinished { deal: id });
        }
        if slot.is_some() {
            return Err(EngineError::AlreadyRated { deal: id });
        }
        if value == 0 {
            return Err(EngineError::NothingServed { deal: id });
        }
        *slot = Some(score);
        let (ratee_party, rater_party) = (self.parties.intern(ratee), self.parties.intern(rater));
        self.parties
            .profile_mut(ratee_party)
            .record_rating(score, value);
        self.parties.profile_mut(rater_party).ratings_given += 1;
        // The ratee's offers may now pass (or fail) rating filters.
        self.dirty.extend(self.book.offers_of(ratee_party));
        events.push(Event::Rated {
            deal: id,
            ratee,
            score,
        });
        Ok(())
    }
}

/// Whether a plan could see an offer differently once its deferred ends settle: an exclusive
/// IP whose leases all ended (it reads as booked, not idle), or a shared or gapped IP with a
/// lease that may have ended. An IP with a lease that ended and another still running reads
/// as booked either way.
fn may_hold_ended(offer: &Offer, now: Timestamp) -> bool {
    offer
        .busy_by_free
        .first()
        .is_some_and(|(free, _)| *free <= now)
        || (!offer.irregular.is_empty() && offer.ended_by <= now)
}

/// Whether a fill of `need` IPs takes the same IPs of `offer` settled or not: its first `need`
/// idle IPs all come before every IP whose leases ended unsettled (settled, those would be
/// idle too, and taken in listed order). Then the matcher leaves the ends to the deferred
/// queue, which settles them a few per command, rather than settling a batch of them itself.
fn idle_comes_first(offer: &Offer, now: Timestamp, need: usize, distinct: bool) -> bool {
    if distinct || !offer.irregular.is_empty() || need == 0 {
        return false;
    }
    let Some(last_idle) = offer.idle.iter().nth(need - 1) else {
        return false;
    };
    first_ended(offer, now, 1)
        .is_some_and(|ended| ended.first().is_none_or(|first| last_idle < *first))
}

/// Seconds of ends [`first_ended`] merges before it gives up (the offer then settles whole).
const ENDED_RUNS: usize = 4;

/// The first `need` positions (or all, if fewer), in order, of an offer's exclusive IPs whose
/// every lease ended by `now`; `None` if they ended over more than [`ENDED_RUNS`] seconds.
fn first_ended(offer: &Offer, now: Timestamp, need: usize) -> Option<SmallVec<[u32; 4]>> {
    type Run<'a> = (
        Timestamp,
        std::iter::Peekable<crate::ordered::Range<'a, (Timestamp, u32)>>,
    );
    let mut runs: SmallVec<[Run<'_>; ENDED_RUNS]> = SmallVec::new();
    let mut second = offer.busy_by_free.first().map(|(free, _)| *free);
    while let Some(free) = second.filter(|free| *free <= now) {
        if runs.len() == ENDED_RUNS {
            return None;
        }
        runs.push((free, offer.busy_by_free.from((free, 0)).peekable()));
        if free == now {
            // Any later second is still to come: no search for where this one stops (the
            // usual case, with the deferred queue keeping up, and a search on cold lines).
            break;
        }
        second = offer
            .busy_by_free
            .from((Timestamp(free.0 + 1), 0))
            .next()
            .map(|(free, _)| free);
    }
    let mut picked = SmallVec::new();
    while picked.len() < need {
        // The smallest position at the head of a run still within its own second.
        let Some((run, position)) = runs
            .iter_mut()
            .enumerate()
            .filter_map(|(index, (second, entries))| {
                let (free, position) = *entries.peek()?;
                (free == *second).then_some((index, position))
            })
            .min_by_key(|(_, position)| *position)
        else {
            break;
        };
        runs[run].1.next();
        picked.push(position);
    }
    Some(picked)
}

/// Where a deal the payments side cut off at `at` closes: there (a cut-off reaches the engine a
/// little after it was decided), but never before the deal was served nor after `now`.
fn cut_second(deal: &Deal, at: Timestamp, now: Timestamp) -> Timestamp {
    let served_from = deal.ready_at.unwrap_or(deal.start).max(deal.start);
    at.max(served_from).min(now)
}

/// Whether a ready deadline must fire in order (it is watched, never deferred): a void before
/// the lease's end frees its IPs early, while their bookings still say otherwise, and may
/// re-match the rest. A deadline on the end only closes the deal, like the end itself.
pub(crate) fn deadline_frees_early(ready_deadline: Timestamp, end: Timestamp) -> bool {
    ready_deadline < end
}

/// Whether what is left of a voided lease, from `now` to `end`, is long enough to re-match.
fn still_a_lease(now: Timestamp, end: Timestamp) -> bool {
    end.0.saturating_sub(now.0) >= MIN_LEASE_SECONDS
}

/// The `[start, end)` of a lease that starts as asked, matched at `now`.
fn lease_span(start: Start, duration: u64, now: Timestamp) -> (Timestamp, Timestamp) {
    let start = match start {
        Start::Now => now,
        Start::At(at) => at,
    };
    (start, start.saturating_add(duration))
}
