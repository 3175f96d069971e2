//! The Offer Orders List: offers, the IPs they hold with their calendars, and the ordered
//! indexes the matcher walks (cheapest first, then oldest).
//!
//! Every IP has one calendar, whichever offer holds it, and is in at most one live offer. Inside
//! an offer each IP sits in exactly one of four places, by the shape of its calendar: `idle`
//! (no booking), the `busy_*` indexes (exclusive and gap-free: admits `[s, e)` iff
//! `e <= first_start` or `s >= free_from`; indexed by `free_from` always, by `first_start`
//! only while that is still ahead), or `irregular` (checked booking by booking).
//! An offer with idle or irregular IPs is `open` in its country's price index; one whose IPs are
//! all simple-busy is `saturated` and indexed by when it frees up, so a full offer costs nothing
//! to requests it cannot serve.

use std::net::IpAddr;

use smallvec::SmallVec;

use crate::addresses::AddressMap;
use crate::bitset::PositionSet;
use crate::calendar::{Booking, Calendar, Shape};
use crate::country::{COUNTRY_COUNT, Country};
use crate::depth::{DepthCounters, DepthKey, LevelId};
use crate::error::EngineError;
use crate::order::OfferSpec;
use crate::ordered::OrderedSet;
use crate::parties::PartyId;
use crate::slab::{CowTable, IdSlab};
use crate::types::{Address, Amount, DealId, IpKind, OfferId, ProtocolSet, Timestamp, Window};

/// Offers per chunk of the offer ring (see [`OfferBook::offers`]).
pub(crate) const OFFER_CHUNK: usize = if cfg!(test) { 4 } else { 16 };

/// One IP the engine knows, with its calendar.
#[derive(Clone, Debug)]
pub(crate) struct IpSlot {
    pub(crate) addr: IpAddr,
    pub(crate) owner: Address,
    /// The live offer holding it and its position there.
    pub(crate) home: Option<(OfferId, u32)>,
    pub(crate) calendar: Calendar,
    shape: Shape,
}

/// An offer in the book.
#[derive(Clone, Debug)]
pub struct Offer {
    /// Its id (smaller is older).
    pub id: OfferId,
    /// Its provider.
    pub provider: Address,
    /// Its provider, interned.
    pub(crate) party: PartyId,
    /// Country of its IPs.
    pub country: Country,
    /// Region, if given.
    pub region: Option<String>,
    /// City, if given.
    pub city: Option<String>,
    /// ASN of its IPs.
    pub asn: u32,
    /// Kind of its IPs.
    pub kind: IpKind,
    /// Protocols served.
    pub protocols: ProtocolSet,
    /// Availability window.
    pub window: Window,
    /// Shortest lease, seconds.
    pub min_lease: u64,
    /// Longest lease, seconds.
    pub max_lease: u64,
    /// Price per IP-second.
    pub price: Amount,
    /// Tenants per IP.
    pub tenants: u16,
    /// The IP slots it holds, by position (inline for a home user's one or two IPs).
    pub(crate) slots: SmallVec<[u32; 2]>,
    pub(crate) idle: PositionSet,
    /// Simple-busy IPs by when they free up.
    pub(crate) busy_by_free: OrderedSet<(Timestamp, u32)>,
    /// Simple-busy IPs by when their first booking starts, for those booked to start later
    /// than when they were filed (see [`file`]).
    pub(crate) busy_by_start: OrderedSet<(Timestamp, u32)>,
    pub(crate) irregular: PositionSet,
    /// No booking on its IPs ends before this: when it is past, deals of the offer may have
    /// ended unsettled (see `Engine::apply_deferring`).
    pub(crate) ended_by: Timestamp,
    placement: Placement,
    /// Its price level in the market depth.
    depth: LevelId,
}

impl Offer {
    /// How many IPs the offer holds.
    pub fn ip_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// How many of them have no booking at all.
    pub fn idle_count(&self) -> u32 {
        self.idle.len() as u32
    }

    fn depth_key(&self) -> DepthKey {
        DepthKey {
            country: self.country,
            kind: self.kind,
            protocols: self.protocols,
            price: self.price,
        }
    }

    /// Where the offer belongs at `now`. An offer whose IPs are all booked but one of them free
    /// by `now` (its leases ended, not yet settled) is open: every fill from now on could take
    /// that IP, so both indexes would list it, and an offer taking turns between them with
    /// each lease would pay for moving every time.
    fn wanted_placement(&self, now: Timestamp) -> Placement {
        if !self.idle.is_empty() || !self.irregular.is_empty() {
            return Placement::Open;
        }
        match self.busy_by_free.first() {
            Some((free_from, _)) if *free_from <= now => Placement::Open,
            Some((free_from, _)) => Placement::Saturated {
                earliest_free: *free_from,
                latest_start: self.busy_by_start.last().map(|(start, _)| *start),
            },
            None => Placement::Nowhere,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Nowhere,
    Open,
    Saturated {
        earliest_free: Timestamp,
        /// The latest first start of its IPs booked from a later second than they were booked
        /// at, if any (see [`Offer::busy_by_start`]).
        latest_start: Option<Timestamp>,
    },
}

/// Price-ordered offer ids of one market (a country, or all of them).
///
/// A saturated offer is indexed by when its first IP frees up, then by price: the offers
/// freeing up in one second read cheapest first, so the offers whose leases ended but are not
/// settled yet (see `Engine::apply_deferring`), however many, are walked in price order without
/// being gathered and sorted. A country's market is small: its sets are sorted rings (see
/// [`OrderedSet`]); the market of all countries grows into sorted blocks.
#[derive(Clone, Debug, Default)]
pub(crate) struct OfferIndex {
    pub(crate) open: OrderedSet<(Amount, OfferId)>,
    pub(crate) saturated_by_free: OrderedSet<(Timestamp, Amount, OfferId)>,
    pub(crate) saturated_by_start: OrderedSet<(Timestamp, OfferId)>,
}

/// Seconds past which the offers freed up by then are gathered and sorted rather than merged
/// second by second (there are that many only in a book settled long ago).
const MERGED_SECONDS: usize = 8;

type FreeRange<'a> = crate::ordered::Range<'a, (Timestamp, Amount, OfferId)>;

impl OfferIndex {
    fn apply(&mut self, price: Amount, id: OfferId, placement: Placement, insert: bool) {
        match placement {
            Placement::Nowhere => {}
            Placement::Open => {
                if insert {
                    self.open.insert((price, id));
                } else {
                    self.open.remove(&(price, id));
                }
            }
            Placement::Saturated {
                earliest_free,
                latest_start,
            } => {
                if insert {
                    self.saturated_by_free.insert((earliest_free, price, id));
                    if let Some(latest_start) = latest_start {
                        self.saturated_by_start.insert((latest_start, id));
                    }
                } else {
                    self.saturated_by_free.remove(&(earliest_free, price, id));
                    if let Some(latest_start) = latest_start {
                        self.saturated_by_start.remove(&(latest_start, id));
                    }
                }
            }
        }
    }

    /// Offers that might hold an IP free over `[start, end)` at a price up to `max_price`,
    /// cheapest then oldest first, each once. `now` splits the saturated offers: those free by
    /// `now` are merged a second at a time, those freeing up later (a lease starting ahead) and
    /// those whose IPs are booked only after `end` are gathered (they are few).
    pub(crate) fn candidates(
        &self,
        now: Timestamp,
        start: Timestamp,
        end: Timestamp,
        max_price: Amount,
        price_of: impl Fn(OfferId) -> Amount,
    ) -> Candidates<'_> {
        let split = now.min(start);
        // Built where it is returned from: the per-second streams are a few hundred bytes
        // inline, and a struct put together at the end would copy them once more per request.
        // The streams run to the end of their sets and stop at the price (and at the end of
        // their second) as they are read: in the usual case, one second of saturated offers
        // and the open ones, none of them needs a search.
        let mut candidates = Candidates {
            open: self.open.range(..).peekable(),
            seconds: SmallVec::new(),
            gathered: Vec::new().into_iter().peekable(),
            max_price,
            last: None,
        };
        let seconds = &mut candidates.seconds;
        let mut second = self.saturated_by_free.first().map(|(t, _, _)| *t);
        while let Some(t) = second.filter(|t| *t <= split) {
            if seconds.len() == MERGED_SECONDS {
                break;
            }
            let entries = if seconds.is_empty() {
                // The first second starts the set.
                self.saturated_by_free.range(..)
            } else {
                self.saturated_by_free.range((t, 0, OfferId(0))..)
            };
            seconds.push((t, entries.peekable()));
            if t == split {
                // Any later second is past `split`: no search for where this one stops (the
                // usual case, with the deferred queue keeping up).
                second = None;
                break;
            }
            second = t.0.checked_add(1).and_then(|next| {
                self.saturated_by_free
                    .range((Timestamp(next), 0, OfferId(0))..)
                    .next()
                    .map(|(t, _, _)| t)
            });
        }
        // Past MERGED_SECONDS seconds, the rest up to `split` joins the gathered ones.
        let gathered_from = match second.filter(|t| *t <= split) {
            Some(t) => t,
            None => Timestamp(split.0.saturating_add(1)),
        };
        // Both rare: a lease starting ahead, an offer booked only after the span. The usual
        // request builds neither (the chained iterators alone are a few hundred bytes).
        let freeing_later = gathered_from <= start;
        let booked_after = self
            .saturated_by_start
            .last()
            .is_some_and(|(latest, _)| *latest >= end);
        if !freeing_later && !booked_after {
            return candidates;
        }
        let mut gathered: Vec<(Amount, OfferId)> = freeing_later
            .then(|| {
                self.saturated_by_free
                    .range((gathered_from, 0, OfferId(0))..=(start, Amount::MAX, OfferId(u64::MAX)))
            })
            .into_iter()
            .flatten()
            .map(|(_, price, id)| (price, id))
            .chain(
                booked_after
                    .then(|| self.saturated_by_start.range((end, OfferId(0))..))
                    .into_iter()
                    .flatten()
                    .map(|(_, id)| (price_of(id), id)),
            )
            .filter(|(price, _)| *price <= max_price)
            .collect();
        gathered.sort_unstable();
        gathered.dedup();
        candidates.gathered = gathered.into_iter().peekable();
        candidates
    }
}

/// The merge behind [`OfferIndex::candidates`]: open offers, saturated ones free by now (a
/// stream per second), and the gathered rest, in `(price, id)` order without repeats (an offer
/// can be both free by now and booked only after the span).
pub(crate) struct Candidates<'a> {
    open: std::iter::Peekable<crate::ordered::Range<'a, (Amount, OfferId)>>,
    /// Each with the second it reads: its entries past that second belong to the next one.
    /// Two inline (the deferred queue keeping up leaves one or two): the walk is moved once
    /// or twice as it is built and used, and eight would make each move a kilobyte.
    seconds: SmallVec<[(Timestamp, std::iter::Peekable<FreeRange<'a>>); 2]>,
    gathered: std::iter::Peekable<std::vec::IntoIter<(Amount, OfferId)>>,
    /// Where the open and per-second streams stop (each is in price order).
    max_price: Amount,
    last: Option<OfferId>,
}

impl Iterator for Candidates<'_> {
    type Item = OfferId;

    fn next(&mut self) -> Option<OfferId> {
        loop {
            let max_price = self.max_price;
            let mut best = self
                .open
                .peek()
                .filter(|(price, _)| *price <= max_price)
                .map(|(price, id)| ((*price, *id), 0usize));
            let mut consider = |key: (Amount, OfferId), source: usize| {
                if best.is_none_or(|(held, _)| key < held) {
                    best = Some((key, source));
                }
            };
            if let Some(key) = self.gathered.peek() {
                consider(*key, 1);
            }
            for (index, (second, entries)) in self.seconds.iter_mut().enumerate() {
                if let Some((free, price, id)) = entries.peek()
                    && free == second
                    && *price <= max_price
                {
                    consider((*price, *id), 2 + index);
                }
            }
            let ((_, id), source) = best?;
            match source {
                0 => {
                    self.open.next();
                }
                1 => {
                    self.gathered.next();
                }
                index => {
                    self.seconds[index - 2].1.next();
                }
            }
            if self.last != Some(id) {
                self.last = Some(id);
                return Some(id);
            }
        }
    }
}

/// The Offer Orders List with its IPs and indexes.
#[derive(Clone, Debug)]
pub(crate) struct OfferBook {
    /// Offers by id (ids are sequential: a ring, see [`IdSlab`]), in small chunks: copying a
    /// chunk after a snapshot's freeze copies each offer's indexes too.
    pub(crate) offers: IdSlab<Offer, OFFER_CHUNK>,
    /// Every IP with an offer or a booking, by slot id (shared copy-on-write with snapshots).
    pub(crate) slots: CowTable<IpSlot>,
    /// Slot ids handed out so far: the next new one follows.
    slots_made: u32,
    free_slots: Vec<u32>,
    by_addr: AddressMap,
    pub(crate) by_country: Vec<OfferIndex>,
    pub(crate) all: OfferIndex,
    /// Each provider's live offers, oldest first, by party: an offer comes and goes with a
    /// push at the back and a removal from a short sorted list, where a set keyed by
    /// `(address, id)` cost two B-tree walks of 20-byte key compares per offer.
    by_provider: Vec<OrderedSet<OfferId>>,
    pub(crate) depth: DepthCounters,
    /// The engine's clock, for placing offers (see [`Offer::wanted_placement`]).
    pub(crate) now: Timestamp,
}

impl Default for OfferBook {
    fn default() -> Self {
        OfferBook {
            offers: Default::default(),
            slots: CowTable::default(),
            slots_made: 0,
            free_slots: Vec::new(),
            by_addr: AddressMap::default(),
            by_country: vec![OfferIndex::default(); COUNTRY_COUNT],
            all: OfferIndex::default(),
            by_provider: Vec::new(),
            depth: DepthCounters::default(),
            now: Timestamp(0),
        }
    }
}

impl OfferBook {
    /// The live offers of a provider, oldest first.
    pub(crate) fn offers_of(&self, party: PartyId) -> impl Iterator<Item = OfferId> + '_ {
        self.by_provider
            .get(party.index())
            .into_iter()
            .flat_map(|offers| offers.up_to(OfferId(u64::MAX)))
    }

    /// Asks for an IP's slot before it is read (see [`crate::prefetch`]).
    pub(crate) fn prefetch_slot(&self, slot: u32) {
        self.slots.prefetch(slot);
    }

    pub(crate) fn slot(&self, slot: u32) -> &IpSlot {
        self.slots
            .get(slot)
            .expect("slot ids held by offers and deals are live")
    }

    fn slot_mut(&mut self, slot: u32) -> &mut IpSlot {
        self.slots
            .get_mut(slot)
            .expect("slot ids held by offers and deals are live")
    }

    pub(crate) fn slot_of(&self, addr: IpAddr) -> Option<u32> {
        self.by_addr.get(addr)
    }

    /// Refuses IPs another provider holds or a live offer already lists.
    pub(crate) fn check_ips(&self, provider: Address, ips: &[IpAddr]) -> Result<(), EngineError> {
        for ip in ips {
            if let Some(slot) = self.slot_of(*ip) {
                let slot = self.slot(slot);
                if slot.owner != provider {
                    return Err(EngineError::IpOwnedByOther {
                        ip: *ip,
                        owner: slot.owner,
                    });
                }
                if let Some((offer, _)) = slot.home {
                    return Err(EngineError::IpAlreadyOffered { ip: *ip, offer });
                }
            }
        }
        Ok(())
    }

    /// Inserts an offer whose IPs passed [`OfferBook::check_ips`].
    pub(crate) fn insert(&mut self, id: OfferId, spec: &OfferSpec, ips: &[IpAddr], party: PartyId) {
        let depth = self.depth.attach(DepthKey {
            country: spec.country,
            kind: spec.kind,
            protocols: spec.protocols,
            price: spec.price,
        });
        let mut offer = Offer {
            id,
            provider: spec.provider,
            party,
            country: spec.country,
            region: spec.region.clone(),
            city: spec.city.clone(),
            asn: spec.asn,
            kind: spec.kind,
            protocols: spec.protocols,
            window: spec.window,
            min_lease: spec.min_lease,
            max_lease: spec.max_lease,
            price: spec.price,
            tenants: spec.tenants,
            slots: SmallVec::with_capacity(ips.len()),
            idle: PositionSet::with_capacity(ips.len()),
            busy_by_free: OrderedSet::default(),
            busy_by_start: OrderedSet::default(),
            irregular: PositionSet::with_capacity(ips.len()),
            ended_by: Timestamp(u64::MAX),
            placement: Placement::Nowhere,
            depth,
        };
        for (position, ip) in ips.iter().enumerate() {
            let position = position as u32;
            let slot = match self.slot_of(*ip) {
                Some(slot) => slot,
                None => self.new_slot(*ip, spec.provider),
            };
            let entry = self.slot_mut(slot);
            if let Some(end) = entry.calendar.bookings().iter().map(|b| b.end).min() {
                offer.ended_by = offer.ended_by.min(end);
            }
            entry.home = Some((id, position));
            entry.shape = entry.calendar.shape(spec.tenants);
            let shape = entry.shape;
            offer.slots.push(slot);
            file(&mut offer, position, shape, true, self.now);
        }
        self.depth.add(depth, offer.idle.len() as i64);
        if self.by_provider.len() <= party.index() {
            self.by_provider
                .resize_with(party.index() + 1, OrderedSet::default);
        }
        self.by_provider[party.index()].insert(id);
        self.offers.insert(id.0, offer);
        self.place(id);
    }

    /// Recreates the IPs of a snapshot, before its offers are inserted again.
    pub(crate) fn restore_ips(&mut self, ips: Vec<crate::snapshot::IpRecord>) {
        for ip in ips {
            let slot = self.new_slot(ip.addr, ip.owner);
            self.slot_mut(slot).calendar = ip.bookings.into();
        }
    }

    fn new_slot(&mut self, addr: IpAddr, owner: Address) -> u32 {
        let entry = IpSlot {
            addr,
            owner,
            home: None,
            calendar: Calendar::default(),
            shape: Shape::Idle,
        };
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots_made += 1;
            self.slots_made - 1
        });
        self.slots.insert(slot, entry);
        self.by_addr.insert(addr, slot);
        slot
    }

    /// Takes an offer out of the book: unbooked IPs are forgotten, booked ones keep their
    /// calendars until their deals end.
    pub(crate) fn remove(&mut self, id: OfferId) -> Option<Offer> {
        self.unplace(id);
        let offer = self.offers.remove(id.0)?;
        self.depth.add(offer.depth, -(offer.idle.len() as i64));
        self.depth.detach(offer.depth);
        self.by_provider[offer.party.index()].remove(&id);
        for slot in &offer.slots {
            self.slot_mut(*slot).home = None;
            self.forget_if_unused(*slot);
        }
        Some(offer)
    }

    fn forget_if_unused(&mut self, slot: u32) {
        let entry = self.slot(slot);
        if entry.home.is_none() && entry.calendar.is_empty() {
            let addr = entry.addr;
            self.by_addr.remove(addr);
            self.slots.delete(slot);
            self.free_slots.push(slot);
        }
    }

    /// Withdraws idle IPs from the end of the offer until it holds `keep`; returns how many
    /// left, or `Err(booked)` if that many booked IPs make it impossible.
    pub(crate) fn shrink(&mut self, id: OfferId, keep: u32) -> Result<u32, u32> {
        let Some(offer) = self.offers.get(id.0) else {
            return Ok(0);
        };
        let booked = offer.ip_count() - offer.idle_count();
        if keep < booked {
            return Err(booked);
        }
        let surplus = offer.ip_count().saturating_sub(keep);
        let withdraw: Vec<u32> = offer.idle.iter().rev().take(surplus as usize).collect();
        // Idle IPs of the tail go; booked IPs keep their positions so calendars stay filed.
        self.unplace(id);
        let offer = self.offers.get_mut(id.0).expect("checked above");
        let depth = offer.depth;
        let mut freed = Vec::with_capacity(withdraw.len());
        for position in &withdraw {
            offer.idle.remove(*position);
            freed.push(offer.slots[*position as usize]);
        }
        self.depth.add(depth, -(withdraw.len() as i64));
        // Compact positions: rebuild the offer's sets over the remaining slots.
        let remaining: Vec<u32> = offer
            .slots
            .iter()
            .copied()
            .filter(|slot| !freed.contains(slot))
            .collect();
        offer.slots = SmallVec::from_slice(&remaining);
        offer.idle.clear();
        offer.busy_by_free.clear();
        offer.busy_by_start.clear();
        offer.irregular.clear();
        for (position, slot) in remaining.iter().enumerate() {
            let entry = self
                .slots
                .get_mut(*slot)
                .expect("slot ids held by offers are live");
            entry.home = Some((id, position as u32));
            file(offer, position as u32, entry.shape, true, self.now);
        }
        for slot in freed {
            self.slot_mut(slot).home = None;
            self.forget_if_unused(slot);
        }
        self.place(id);
        Ok(withdraw.len() as u32)
    }

    /// Changes price and window, keeping the offer's age.
    pub(crate) fn amend(&mut self, id: OfferId, price: Option<Amount>, window: Option<Window>) {
        self.unplace(id);
        let Some(offer) = self.offers.get_mut(id.0) else {
            return;
        };
        let idle = offer.idle.len() as i64;
        if let Some(price) = price {
            // Another price is another level.
            self.depth.add(offer.depth, -idle);
            self.depth.detach(offer.depth);
            offer.price = price;
            offer.depth = self.depth.attach(offer.depth_key());
            self.depth.add(offer.depth, idle);
        }
        if let Some(window) = window {
            offer.window = window;
        }
        self.place(id);
    }

    /// Books `slot` for a deal. The caller checked the calendar admits it.
    pub(crate) fn book(&mut self, slot: u32, booking: Booking) -> Option<OfferId> {
        self.edit_calendar(slot, |calendar| {
            calendar.book(booking);
            Some(booking.end)
        })
    }

    /// Releases the deal's hold on `slot`; returns the offer that gained capacity, if any.
    pub(crate) fn release(&mut self, slot: u32, deal: DealId) -> Option<OfferId> {
        let offer = self.edit_calendar(slot, |calendar| {
            calendar.release(deal);
            None
        });
        self.forget_if_unused(slot);
        offer
    }

    /// Applies `edit` to a slot's calendar and refiles the IP in its offer. `edit` returns the
    /// end of a booking it added, which bounds the offer's `ended_by`.
    fn edit_calendar(
        &mut self,
        slot: u32,
        edit: impl FnOnce(&mut Calendar) -> Option<Timestamp>,
    ) -> Option<OfferId> {
        let entry = self
            .slots
            .get_mut(slot)
            .expect("slot ids held by offers and deals are live");
        let booked_end = edit(&mut entry.calendar);
        let (id, position) = entry.home?;
        let offer = self
            .offers
            .get_mut(id.0)
            .expect("an IP's home offer is live");
        if let Some(end) = booked_end {
            offer.ended_by = offer.ended_by.min(end);
        }
        let old = entry.shape;
        let new = entry.calendar.shape(offer.tenants);
        entry.shape = new;
        if old == new {
            return Some(id);
        }
        let placed = offer.placement;
        let idle_before = offer.idle.len() as i64;
        file(offer, position, old, false, self.now);
        file(offer, position, new, true, self.now);
        let idle_delta = offer.idle.len() as i64 - idle_before;
        let wanted = offer.wanted_placement(self.now);
        self.depth.add(offer.depth, idle_delta);
        if placed != wanted {
            self.unplace(id);
            self.place(id);
        }
        Some(id)
    }

    fn place(&mut self, id: OfferId) {
        let Some(offer) = self.offers.get_mut(id.0) else {
            return;
        };
        let placement = offer.wanted_placement(self.now);
        offer.placement = placement;
        let (price, country) = (offer.price, offer.country);
        self.by_country[country.index()].apply(price, id, placement, true);
        self.all.apply(price, id, placement, true);
    }

    fn unplace(&mut self, id: OfferId) {
        let Some(offer) = self.offers.get_mut(id.0) else {
            return;
        };
        let placement = std::mem::replace(&mut offer.placement, Placement::Nowhere);
        let (price, country) = (offer.price, offer.country);
        self.by_country[country.index()].apply(price, id, placement, false);
        self.all.apply(price, id, placement, false);
    }
}

/// Files (or unfiles) one position of an offer under its calendar shape, at `now`.
///
/// A busy IP goes into `busy_by_start` only if its first booking starts after `now`: only
/// then can a request (which starts at `now` or later) fit before it, and a lease starting
/// as it is made, the usual one, costs the offer one index write instead of two. Entries
/// left there once their start has passed are harmless: no request ends by then.
fn file(offer: &mut Offer, position: u32, shape: Shape, insert: bool, now: Timestamp) {
    match (shape, insert) {
        (Shape::Idle, true) => {
            offer.idle.insert(position);
        }
        (Shape::Idle, false) => {
            offer.idle.remove(position);
        }
        (Shape::Irregular, true) => {
            offer.irregular.insert(position);
        }
        (Shape::Irregular, false) => {
            offer.irregular.remove(position);
        }
        (
            Shape::Simple {
                first_start,
                free_from,
            },
            true,
        ) => {
            offer.busy_by_free.insert((free_from, position));
            if first_start > now {
                offer.busy_by_start.insert((first_start, position));
            }
        }
        (
            Shape::Simple {
                first_start,
                free_from,
            },
            false,
        ) => {
            offer.busy_by_free.remove(&(free_from, position));
            // Absent if it started by the time it was filed: removing it from the index, empty
            // then in the usual case, reads nothing.
            offer.busy_by_start.remove(&(first_start, position));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An offer of the index: `(price, saturated as (earliest_free, latest_start) or open)`.
    type Listed = (Amount, Option<(u64, Option<u64>)>);

    fn listed() -> impl Strategy<Value = Listed> {
        (
            0u128..5,
            prop::option::of((0u64..12, prop::option::of(0u64..12))),
        )
    }

    proptest! {
        /// The merged walk yields what a filter and a sort over every offer would: open ones,
        /// saturated ones free by the lease's start or booked only after its end, within the
        /// price, cheapest then oldest, each once — however many seconds the saturated ones
        /// free up over, and however the open and saturated sets interleave in price.
        #[test]
        fn candidates_are_every_fitting_offer_cheapest_then_oldest(
            offers in proptest::collection::vec(listed(), 0..40),
            now in 0u64..10,
            ahead in 0u64..4,
            length in 1u64..6,
            max_price in 0u128..6,
        ) {
            let mut index = OfferIndex::default();
            for (at, (price, saturated)) in offers.iter().enumerate() {
                let placement = match saturated {
                    None => Placement::Open,
                    Some((free, start)) => Placement::Saturated {
                        earliest_free: Timestamp(*free),
                        latest_start: start.map(Timestamp),
                    },
                };
                index.apply(*price, OfferId(at as u64), placement, true);
            }
            let (start, end) = (now + ahead, now + ahead + length);
            let walked: Vec<OfferId> = index
                .candidates(Timestamp(now), Timestamp(start), Timestamp(end), max_price, |id| {
                    offers[id.0 as usize].0
                })
                .collect();
            let mut expected: Vec<(Amount, OfferId)> = offers
                .iter()
                .enumerate()
                .filter(|(_, (price, saturated))| {
                    *price <= max_price
                        && saturated.is_none_or(|(free, latest)| {
                            free <= start || latest.is_some_and(|latest| latest >= end)
                        })
                })
                .map(|(at, (price, _))| (*price, OfferId(at as u64)))
                .collect();
            expected.sort_unstable();
            let expected: Vec<OfferId> = expected.into_iter().map(|(_, id)| id).collect();
            prop_assert_eq!(walked, expected);
        }
    }
}
