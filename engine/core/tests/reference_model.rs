//! Random command streams run through the engine and through a deliberately simple,
//! brute-force reference matcher: both must make the same deals, reject the same commands and
//! leave the same requests resting. Invariants are checked on the engine at every step, and the
//! whole stream is replayed (and restored from a snapshot mid-way) to the same state hash.
//! A second property runs each stream through an engine that defers expiry, against one that
//! does not: the same outcomes, deals, per-deal events and settled state.
//!
//! The reference keeps no index at all: every match scans every offer and every IP, and checks
//! calendars second by second.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipsx_engine::agreement::transition;
use ipsx_engine::*;
use proptest::prelude::*;

const READY_TIMEOUT: u64 = 7;
/// The neutral weight every rating starts from (small, so that ratings in the streams matter).
const RATING_PRIOR: Amount = 50;

// ----- the reference model ---------------------------------------------------------------

#[derive(Clone, Debug)]
struct RefOffer {
    id: OfferId,
    spec: OfferSpec,
    ips: Vec<IpAddr>,
}

#[derive(Clone, Debug)]
struct RefRequest {
    id: RequestId,
    spec: RequestSpec,
    submitted_at: Timestamp,
    filled: u32,
    remaining: u32,
    resting: bool,
    open_deals: u32,
    excluded: Vec<Address>,
    used_subnets: BTreeSet<u128>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RefDeal {
    id: DealId,
    request: RequestId,
    offer: OfferId,
    provider: Address,
    requester: Address,
    ips: Vec<IpAddr>,
    start: Timestamp,
    end: Timestamp,
    price: Amount,
    ready_deadline: Timestamp,
    provider_status: ProviderStatus,
    requester_status: RequesterStatus,
    provider_rating: Option<u8>,
    requester_rating: Option<u8>,
    ready_at: Option<Timestamp>,
    closed_at: Option<Timestamp>,
    released: bool,
}

impl RefDeal {
    fn status(&self) -> DealStatus {
        agreement::deal_status(self.provider_status, self.requester_status)
    }

    /// Price x IPs x seconds served (from the later of start and ready to the close).
    fn served_value(&self) -> Amount {
        match (self.ready_at, self.closed_at) {
            (Some(ready), Some(closed)) => {
                let seconds = closed
                    .min(self.end)
                    .0
                    .saturating_sub(ready.max(self.start).0);
                self.price * self.ips.len() as Amount * Amount::from(seconds)
            }
            _ => 0,
        }
    }
}

#[derive(Default)]
struct Reference {
    now: Timestamp,
    next_offer: u64,
    next_request: u64,
    offers: Vec<RefOffer>,
    requests: Vec<RefRequest>,
    deals: Vec<RefDeal>,
    /// Uptimes noted per provider (basis points).
    uptimes: BTreeMap<Address, u16>,
}

struct RefFill<'a> {
    request: RequestId,
    requester: Address,
    filters: &'a Filters,
    excluded: &'a [Address],
    start: Timestamp,
    end: Timestamp,
    max_price: Amount,
}

impl Reference {
    fn new() -> Reference {
        Reference {
            next_offer: 1,
            next_request: 1,
            ..Reference::default()
        }
    }

    fn bookings_of(&self, ip: IpAddr) -> impl Iterator<Item = &RefDeal> {
        self.deals
            .iter()
            .filter(move |d| !d.released && d.ips.contains(&ip))
    }

    /// Brute force: every second of the span, count the leases holding the IP.
    fn admits(&self, ip: IpAddr, start: Timestamp, end: Timestamp, cap: u16) -> bool {
        (start.0..end.0).all(|second| {
            self.bookings_of(ip)
                .filter(|d| d.start.0 <= second && second < d.end.0)
                .count()
                < usize::from(cap)
        })
    }

    fn live_offer_of(&self, ip: IpAddr) -> Option<&RefOffer> {
        self.offers.iter().find(|o| o.ips.contains(&ip))
    }

    fn owner_of(&self, ip: IpAddr) -> Option<Address> {
        self.live_offer_of(ip)
            .map(|o| o.spec.provider)
            .or_else(|| self.bookings_of(ip).next().map(|d| d.provider))
    }

    /// Stars weighted by each rated deal's served value, from 3 stars worth `RATING_PRIOR`.
    fn average_rating(&self, wallet: Address) -> Option<u16> {
        let rated: Vec<(Amount, Amount)> = self
            .deals
            .iter()
            .flat_map(|d| {
                [
                    (d.provider == wallet)
                        .then_some(d.provider_rating)
                        .flatten(),
                    (d.requester == wallet)
                        .then_some(d.requester_rating)
                        .flatten(),
                ]
                .map(|stars| stars.map(|s| (Amount::from(s), d.served_value())))
            })
            .flatten()
            .collect();
        if rated.is_empty() {
            return None;
        }
        let stars: Amount = 3 * RATING_PRIOR + rated.iter().map(|(s, v)| s * v).sum::<Amount>();
        let weight: Amount = RATING_PRIOR + rated.iter().map(|(_, v)| v).sum::<Amount>();
        Some((stars * 100 / weight) as u16)
    }

    fn offer_admits(&self, offer: &RefOffer, fill: &RefFill<'_>) -> bool {
        let f = fill.filters;
        let s = &offer.spec;
        let duration = fill.end.0 - fill.start.0;
        s.price <= fill.max_price
            && (f.countries.is_empty() || f.countries.contains(s.country))
            && (f.kinds.is_empty() || f.kinds.contains(s.kind))
            && f.protocols.iter().all(|p| s.protocols.contains(p))
            && s.window.from <= fill.start
            && fill.end <= s.window.until
            && s.min_lease <= duration
            && duration <= s.max_lease
            && match &f.city {
                None => true,
                Some(city) => s
                    .city
                    .as_ref()
                    .is_some_and(|c| c.to_lowercase() == city.to_lowercase()),
            }
            && (f.asn_include.is_empty() || f.asn_include.contains(&s.asn))
            && !f.asn_exclude.contains(&s.asn)
            && s.provider != fill.requester
            && !fill.excluded.contains(&s.provider)
            && match f.min_rating {
                None => true,
                Some(min) => self
                    .average_rating(s.provider)
                    .is_some_and(|avg| avg >= min),
            }
            && match f.min_uptime {
                None => true,
                Some(min) => self.uptimes.get(&s.provider).is_some_and(|up| *up >= min),
            }
    }

    fn plan(
        &self,
        fill: &RefFill<'_>,
        need: u32,
        used: &BTreeSet<u128>,
    ) -> Vec<(OfferId, Vec<IpAddr>)> {
        let mut offers: Vec<&RefOffer> = self
            .offers
            .iter()
            .filter(|o| self.offer_admits(o, fill))
            .collect();
        offers.sort_by_key(|o| (o.spec.price, o.id));
        let mut taken_subnets = BTreeSet::new();
        let mut plan = Vec::new();
        let mut left = need as usize;
        for offer in offers {
            if left == 0 {
                break;
            }
            let unbooked = offer
                .ips
                .iter()
                .filter(|ip| self.bookings_of(**ip).next().is_none());
            let booked_but_free = offer.ips.iter().filter(|ip| {
                self.bookings_of(**ip).next().is_some()
                    && self.admits(**ip, fill.start, fill.end, offer.spec.tenants)
                    && !self.bookings_of(**ip).any(|d| d.request == fill.request)
            });
            let mut picked = Vec::new();
            for ip in unbooked.chain(booked_but_free) {
                if picked.len() == left {
                    break;
                }
                if fill.filters.distinct_subnets {
                    let subnet = subnet_of(*ip);
                    if used.contains(&subnet) || !taken_subnets.insert(subnet) {
                        continue;
                    }
                }
                picked.push(*ip);
            }
            if !picked.is_empty() {
                left -= picked.len();
                plan.push((offer.id, picked));
            }
        }
        plan
    }

    fn request_mut(&mut self, id: RequestId) -> Option<&mut RefRequest> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    fn commit(
        &mut self,
        request: RequestId,
        plan: Vec<(OfferId, Vec<IpAddr>)>,
        start: Timestamp,
        end: Timestamp,
    ) {
        let ready_deadline = Timestamp((start.0 + READY_TIMEOUT).min(end.0));
        for (offer_id, ips) in plan {
            let offer = self
                .offers
                .iter()
                .find(|o| o.id == offer_id)
                .expect("planned offer");
            let (provider, price) = (offer.spec.provider, offer.spec.price);
            let id = DealId(self.deals.len() as u64 + 1);
            let record = self.request_mut(request).expect("request of a plan");
            record.filled += ips.len() as u32;
            record.remaining = record.remaining.saturating_sub(ips.len() as u32);
            record.open_deals += 1;
            if record.spec.filters.distinct_subnets {
                record
                    .used_subnets
                    .extend(ips.iter().map(|ip| subnet_of(*ip)));
            }
            let requester = record.spec.requester;
            self.deals.push(RefDeal {
                id,
                request,
                offer: offer_id,
                provider,
                requester,
                ips,
                start,
                end,
                price,
                ready_deadline,
                provider_status: ProviderStatus::Awaiting,
                requester_status: RequesterStatus::Committed,
                provider_rating: None,
                requester_rating: None,
                ready_at: None,
                closed_at: None,
                released: false,
            });
        }
    }

    fn drop_if_done(&mut self, id: RequestId) {
        self.requests
            .retain(|r| r.id != id || r.resting || r.open_deals > 0);
    }

    fn close_request(&mut self, id: RequestId) {
        if let Some(record) = self.request_mut(id) {
            record.resting = false;
            record.remaining = 0;
        }
        self.drop_if_done(id);
    }

    fn span(start: Start, duration: u64, now: Timestamp) -> (Timestamp, Timestamp) {
        let start = match start {
            Start::Now => now,
            Start::At(at) => at,
        };
        (start, Timestamp(start.0 + duration))
    }

    fn expiry(record: &RefRequest) -> Timestamp {
        let TimeInForce::Gtc { expires_at } = record.spec.time_in_force else {
            return record.submitted_at;
        };
        match record.spec.start {
            Start::Now => expires_at,
            Start::At(start) => expires_at.min(Timestamp(start.0 + 1)),
        }
    }

    fn fill_resting(&mut self, id: RequestId) {
        let Some(record) = self
            .requests
            .iter()
            .find(|r| r.id == id && r.resting)
            .cloned()
        else {
            return;
        };
        if let Start::At(start) = record.spec.start
            && start < self.now
        {
            return;
        }
        let (start, end) = Self::span(record.spec.start, record.spec.duration, self.now);
        let fill = RefFill {
            request: record.id,
            requester: record.spec.requester,
            filters: &record.spec.filters,
            excluded: &record.excluded,
            start,
            end,
            max_price: record.spec.max_price,
        };
        let plan = self.plan(&fill, record.remaining, &record.used_subnets);
        self.commit(id, plan, start, end);
        if self.requests.iter().any(|r| r.id == id && r.remaining == 0) {
            self.close_request(id);
        }
    }

    fn retry_all_resting(&mut self) {
        let mut queue: Vec<(Amount, RequestId)> = self
            .requests
            .iter()
            .filter(|r| r.resting)
            .map(|r| (r.spec.max_price, r.id))
            .collect();
        queue.sort_by_key(|(price, id)| (std::cmp::Reverse(*price), *id));
        for (_, id) in queue {
            self.fill_resting(id);
        }
    }

    fn drive(&mut self, index: usize, input: DealInput) -> bool {
        let deal = &mut self.deals[index];
        let Some((p, r)) = transition(deal.provider_status, deal.requester_status, input) else {
            return false;
        };
        deal.provider_status = p;
        deal.requester_status = r;
        if input == DealInput::ProviderReady {
            deal.ready_at = Some(self.now);
        }
        let status = deal.status();
        if !status.is_terminal() {
            return true;
        }
        deal.released = true;
        deal.closed_at = Some(self.now);
        let deal = deal.clone();
        if let Some(record) = self.request_mut(deal.request) {
            record.open_deals -= 1;
            if status == DealStatus::Voided {
                record.filled -= deal.ips.len() as u32;
                if !record.excluded.contains(&deal.provider) {
                    record.excluded.push(deal.provider);
                }
                let record = record.clone();
                let mut unreplaced = deal.ips.len() as u32;
                if deal.end.0.saturating_sub(self.now.0) >= MIN_LEASE_SECONDS {
                    let fill = RefFill {
                        request: record.id,
                        requester: record.spec.requester,
                        filters: &record.spec.filters,
                        excluded: &record.excluded,
                        start: self.now,
                        end: deal.end,
                        max_price: record.spec.max_price,
                    };
                    let plan = self.plan(&fill, deal.ips.len() as u32, &record.used_subnets);
                    unreplaced -= plan.iter().map(|(_, ips)| ips.len() as u32).sum::<u32>();
                    self.commit(deal.request, plan, self.now, deal.end);
                }
                // What could not be replaced goes back to a resting request.
                if let Some(r) = self.request_mut(deal.request) {
                    r.remaining = record.remaining + if record.resting { unreplaced } else { 0 };
                }
            }
            self.drop_if_done(deal.request);
        }
        true
    }

    fn advance(&mut self, at: Timestamp) {
        self.now = at;
        loop {
            // (due, kind, id) of everything due, as the engine orders its timers.
            let mut due: Vec<(Timestamp, u8, u64)> = Vec::new();
            for d in &self.deals {
                match d.status() {
                    DealStatus::Pending if d.ready_deadline <= at => {
                        due.push((d.ready_deadline, 0, d.id.0))
                    }
                    DealStatus::Active if d.end <= at => due.push((d.end, 1, d.id.0)),
                    _ => {}
                }
            }
            for r in self.requests.iter().filter(|r| r.resting) {
                if Self::expiry(r) <= at {
                    due.push((Self::expiry(r), 2, r.id.0));
                }
            }
            for o in &self.offers {
                if o.spec.window.until <= at {
                    due.push((o.spec.window.until, 4, o.id.0));
                }
            }
            let Some(&(_, kind, id)) = due.iter().min() else {
                break;
            };
            match kind {
                0 => {
                    self.drive(id as usize - 1, DealInput::ReadyTimeout);
                }
                1 => {
                    self.drive(id as usize - 1, DealInput::EndReached);
                }
                2 => self.close_request(RequestId(id)),
                _ => self.offers.retain(|o| o.id.0 != id),
            }
        }
        self.retry_all_resting();
    }

    /// Applies a command; `false` when it is refused.
    fn apply(&mut self, command: &Command) -> bool {
        let at = command.at;
        let shape_ok = match &command.kind {
            CommandKind::PlaceOffer(spec) => spec.validate(at).is_ok(),
            CommandKind::SubmitRequest(spec) => spec.validate(at).is_ok(),
            CommandKind::Rate { score, .. } => (1..=5).contains(score),
            CommandKind::NoteUptime { uptime, .. } => *uptime <= 10_000,
            CommandKind::SetDealRetention { seconds } => *seconds >= 60,
            CommandKind::AmendOffer {
                price,
                window,
                max_ips,
                ..
            } => {
                (price.is_some() || window.is_some() || max_ips.is_some())
                    && *price != Some(0)
                    && *max_ips != Some(0)
                    && window.is_none_or(|w| w.from < w.until && at < w.until)
            }
            _ => true,
        };
        if !shape_ok {
            return false;
        }
        self.advance(at);
        let ok = self.execute(&command.kind);
        self.retry_all_resting();
        ok
    }

    fn execute(&mut self, kind: &CommandKind) -> bool {
        let now = self.now;
        match kind {
            // Not generated: the comparison keeps every deal.
            CommandKind::Tick | CommandKind::SetDealRetention { .. } => true,
            CommandKind::NoteUptime { provider, uptime } => {
                self.uptimes.insert(*provider, *uptime);
                true
            }
            CommandKind::PlaceOffer(spec) => {
                let ips = spec.ips.expand().expect("shape checked");
                for ip in &ips {
                    match self.owner_of(*ip) {
                        Some(owner) if owner != spec.provider => return false,
                        _ if self.live_offer_of(*ip).is_some() => return false,
                        _ => {}
                    }
                }
                self.offers.push(RefOffer {
                    id: OfferId(self.next_offer),
                    spec: spec.clone(),
                    ips: ips.to_vec(),
                });
                self.next_offer += 1;
                true
            }
            CommandKind::CancelOffer { offer, provider } => {
                let before = self.offers.len();
                self.offers
                    .retain(|o| !(o.id == *offer && o.spec.provider == *provider));
                before != self.offers.len()
            }
            CommandKind::AmendOffer {
                offer,
                provider,
                price,
                window,
                max_ips,
            } => {
                let Some(index) = self
                    .offers
                    .iter()
                    .position(|o| o.id == *offer && o.spec.provider == *provider)
                else {
                    return false;
                };
                let ips = self.offers[index].ips.clone();
                let unbooked: Vec<IpAddr> = ips
                    .iter()
                    .copied()
                    .filter(|ip| self.bookings_of(*ip).next().is_none())
                    .collect();
                if let Some(keep) = max_ips {
                    let booked = ips.len() - unbooked.len();
                    if (*keep as usize) < booked {
                        return false;
                    }
                    let surplus = ips.len().saturating_sub(*keep as usize);
                    let withdrawn: Vec<IpAddr> =
                        unbooked.iter().rev().take(surplus).copied().collect();
                    self.offers[index].ips.retain(|ip| !withdrawn.contains(ip));
                }
                let offer = &mut self.offers[index];
                if let Some(price) = price {
                    offer.spec.price = *price;
                }
                if let Some(window) = window {
                    offer.spec.window = *window;
                }
                true
            }
            CommandKind::SubmitRequest(spec) => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.requests.push(RefRequest {
                    id,
                    spec: spec.clone(),
                    submitted_at: now,
                    filled: 0,
                    remaining: spec.count,
                    resting: false,
                    open_deals: 0,
                    excluded: vec![],
                    used_subnets: BTreeSet::new(),
                });
                let (start, end) = Self::span(spec.start, spec.duration, now);
                let fill = RefFill {
                    request: id,
                    requester: spec.requester,
                    filters: &spec.filters,
                    excluded: &[],
                    start,
                    end,
                    max_price: spec.max_price,
                };
                let plan = self.plan(&fill, spec.count, &BTreeSet::new());
                let planned: usize = plan.iter().map(|(_, ips)| ips.len()).sum();
                if spec.time_in_force == TimeInForce::Fok && planned < spec.count as usize {
                    self.close_request(id);
                    return true;
                }
                self.commit(id, plan, start, end);
                let remaining = self.request_mut(id).map_or(0, |r| r.remaining);
                if remaining > 0 && matches!(spec.time_in_force, TimeInForce::Gtc { .. }) {
                    if let Some(r) = self.request_mut(id) {
                        r.resting = true;
                    }
                } else {
                    self.close_request(id);
                }
                true
            }
            CommandKind::CancelRequest { request, requester } => {
                let ok = self
                    .requests
                    .iter()
                    .any(|r| r.id == *request && r.resting && r.spec.requester == *requester);
                if ok {
                    self.close_request(*request);
                }
                ok
            }
            CommandKind::AmendRequest {
                request,
                requester,
                max_price,
                ..
            } => {
                let Some(record) = self
                    .requests
                    .iter_mut()
                    .find(|r| r.id == *request && r.resting && r.spec.requester == *requester)
                else {
                    return false;
                };
                // The generator only amends prices.
                if let Some(price) = max_price {
                    record.spec.max_price = *price;
                }
                self.fill_resting(*request);
                true
            }
            CommandKind::ProviderReady { deal, provider }
            | CommandKind::ProviderFailed { deal, provider } => {
                let input = if matches!(kind, CommandKind::ProviderReady { .. }) {
                    DealInput::ProviderReady
                } else {
                    DealInput::ProviderFailed
                };
                match self.deals.iter().position(|d| d.id == *deal) {
                    Some(index) if self.deals[index].provider == *provider => {
                        self.drive(index, input)
                    }
                    _ => false,
                }
            }
            CommandKind::PaymentLapsed { deal, at } => {
                let Some(index) = self.deals.iter().position(|d| d.id == *deal) else {
                    return false;
                };
                let driven = self.drive(index, DealInput::PaymentLapsed);
                if driven && let Some(at) = at {
                    // Closed where the payments side cut it: not before it was served, not
                    // after now.
                    let d = &mut self.deals[index];
                    let served_from = d.ready_at.map_or(d.start, |ready| ready.max(d.start));
                    d.closed_at = Some(Timestamp(at.0.max(served_from.0).min(self.now.0)));
                }
                driven
            }
            CommandKind::CancelDeal { deal, requester } => {
                match self.deals.iter().position(|d| d.id == *deal) {
                    Some(index) if self.deals[index].requester == *requester => {
                        self.drive(index, DealInput::RequesterCancel)
                    }
                    _ => false,
                }
            }
            CommandKind::Rate { deal, rater, score } => {
                let Some(d) = self.deals.iter_mut().find(|d| d.id == *deal) else {
                    return false;
                };
                let terminal = d.status().is_terminal();
                let served = d.served_value() > 0 && d.provider != d.requester;
                let slot = if *rater == d.requester {
                    &mut d.provider_rating
                } else if *rater == d.provider {
                    &mut d.requester_rating
                } else {
                    return false;
                };
                if !terminal || slot.is_some() || !served {
                    return false;
                }
                *slot = Some(*score);
                true
            }
        }
    }
}

// ----- random command streams --------------------------------------------------------------

fn provider(n: u8) -> Address {
    Address::from_low_u64(100 + u64::from(n))
}

/// Requester 2 is provider 0's wallet: it buys too, and must never be matched with itself.
fn requester(n: u8) -> Address {
    match n {
        2 => provider(0),
        n => Address::from_low_u64(200 + u64::from(n)),
    }
}

fn country(n: u8) -> Country {
    Country::parse(["FR", "DE", "US"][usize::from(n % 3)]).expect("valid code")
}

/// Provider `p`'s pools: pool 0 is exclusive and spans two /24s, pool 1 is shared by 2 tenants.
fn pool(p: u8, pool: u8) -> (Vec<IpAddr>, u16) {
    if pool == 0 {
        let ips = [(0u8, 0u8), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
            .map(|(c, d)| IpAddr::V4(Ipv4Addr::new(10, p, c, d)));
        (ips.to_vec(), 1)
    } else {
        (
            (0..4)
                .map(|d| IpAddr::V4(Ipv4Addr::new(10, p, 1, d)))
                .collect(),
            2,
        )
    }
}

#[derive(Clone, Debug)]
enum Gen {
    Tick,
    Offer {
        provider: u8,
        pool_owner: u8,
        pool: u8,
        pick: u8,
        country: u8,
        kind: u8,
        protocols: u8,
        city: u8,
        asn: u8,
        opens_in: u64,
        length: u64,
        max_lease: u64,
        price: u8,
    },
    CancelOffer(u8, u8),
    AmendOffer {
        offer: u8,
        provider: u8,
        price: Option<u8>,
        shift: Option<u64>,
        keep: Option<u8>,
    },
    Request {
        requester: u8,
        count: u8,
        countries: u8,
        kinds: u8,
        protocols: u8,
        city: u8,
        asn: u8,
        min_rating: bool,
        min_uptime: bool,
        distinct: bool,
        start_in: Option<u64>,
        duration: u64,
        max_price: u8,
        tif: u8,
        expires_in: u64,
    },
    CancelRequest(u8, u8),
    AmendRequest(u8, u8, u8),
    /// The relay's uptime of a provider (sometimes out of range).
    Uptime(u8, u16),
    /// An input to one of the latest deals (`back` deals before the newest), usually from the
    /// right party.
    Deal {
        back: u8,
        action: u8,
        wrong_party: bool,
        score: u8,
    },
}

fn offer_gen() -> impl Strategy<Value = Gen> {
    (
        (0u8..3, 0u8..8, 0u8..2, 1u8..64, 0u8..3, 0u8..3),
        (
            1u8..32,
            0u8..3,
            0u8..3,
            prop_oneof![3 => Just(0u64), 1 => 1u64..30],
            40u64..300,
        ),
        (prop_oneof![Just(30u64), Just(120), Just(400)], 1u8..6),
    )
        .prop_map(
            |(
                (provider, pool_owner, pool, pick, country, kind),
                (protocols, city, asn, opens_in, length),
                (max_lease, price),
            )| {
                // Mostly their own IPs; sometimes another provider's (refused while held).
                let pool_owner = if pool_owner < 6 {
                    provider
                } else {
                    pool_owner % 3
                };
                Gen::Offer {
                    provider,
                    pool_owner,
                    pool,
                    pick,
                    country,
                    kind,
                    protocols,
                    city,
                    asn,
                    opens_in,
                    length,
                    max_lease,
                    price,
                }
            },
        )
}

fn offer_change_gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (1u8..12, 0u8..3).prop_map(|(o, p)| Gen::CancelOffer(o, p)),
        (
            1u8..12,
            0u8..3,
            proptest::option::of(1u8..6),
            proptest::option::of(0u64..60),
            proptest::option::of(1u8..6)
        )
            .prop_map(|(offer, provider, price, shift, keep)| Gen::AmendOffer {
                offer,
                provider,
                price,
                shift,
                keep
            }),
    ]
}

fn request_gen() -> impl Strategy<Value = Gen> {
    (
        (0u8..3, 1u8..7, 0u8..16, 0u8..16, 0u8..64, 0u8..6, 0u8..8),
        (
            proptest::bool::weighted(0.15),
            proptest::bool::weighted(0.15),
            any::<bool>(),
            proptest::option::weighted(0.3, 0u64..30),
            5u64..60,
            1u8..7,
            0u8..3,
            5u64..80,
        ),
    )
        .prop_map(
            |(
                (requester, count, countries, kinds, protocols, city, asn),
                (min_rating, min_uptime, distinct, start_in, duration, max_price, tif, expires_in),
            )| Gen::Request {
                requester,
                count,
                countries,
                kinds,
                protocols,
                city,
                asn,
                min_rating,
                min_uptime,
                distinct,
                start_in,
                duration,
                max_price,
                tif,
                expires_in,
            },
        )
}

fn deal_input_gen() -> impl Strategy<Value = Gen> {
    (0u8..4, 0u8..12, proptest::bool::weighted(0.1), 0u8..7).prop_map(
        |(back, action, wrong_party, score)| Gen::Deal {
            back,
            action,
            wrong_party,
            score,
        },
    )
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        1 => Just(Gen::Tick),
        6 => offer_gen(),
        2 => offer_change_gen(),
        8 => request_gen(),
        1 => (0u8..3, 0u16..10_500).prop_map(|(p, up)| Gen::Uptime(p, up)),
        1 => (1u8..16, 0u8..3).prop_map(|(r, q)| Gen::CancelRequest(r, q)),
        1 => (1u8..16, 0u8..3, 1u8..7).prop_map(|(r, q, p)| Gen::AmendRequest(r, q, p)),
        10 => deal_input_gen(),
    ]
}

fn protocol_set(bits: u8) -> ProtocolSet {
    let chosen: Vec<Protocol> = Protocol::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, p)| p)
        .collect();
    ProtocolSet::of(&chosen)
}

fn kind_set(bits: u8) -> KindSet {
    let chosen: Vec<IpKind> = IpKind::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, k)| k)
        .collect();
    KindSet::of(&chosen)
}

fn materialize(step: &Gen, now: Timestamp, reference: &Reference) -> CommandKind {
    let city = |n: u8| match n {
        1 => Some("Paris".to_string()),
        2 => Some("berlin".to_string()),
        _ => None,
    };
    match step.clone() {
        Gen::Tick => CommandKind::Tick,
        Gen::Uptime(p, uptime) => CommandKind::NoteUptime {
            provider: provider(p),
            uptime,
        },
        Gen::Offer {
            provider: p,
            pool_owner,
            pool: which,
            pick,
            country: c,
            kind,
            protocols,
            city: ci,
            asn,
            opens_in,
            length,
            max_lease,
            price,
        } => {
            let (all, tenants) = pool(pool_owner, which);
            let ips: Vec<IpAddr> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| pick & (1 << (i % 6)) != 0)
                .map(|(_, ip)| *ip)
                .collect();
            let from = Timestamp(now.0 + opens_in);
            CommandKind::PlaceOffer(OfferSpec {
                provider: provider(p),
                ips: if ips.len() == 1 {
                    IpSpec::Single(ips[0])
                } else {
                    IpSpec::List(ips)
                },
                country: country(c),
                region: None,
                city: city(ci),
                asn: u32::from(asn),
                kind: IpKind::ALL[usize::from(kind)],
                protocols: protocol_set(protocols),
                window: Window {
                    from,
                    until: Timestamp(from.0 + length),
                },
                min_lease: 5,
                max_lease,
                price: Amount::from(price),
                tenants,
            })
        }
        Gen::CancelOffer(o, p) => CommandKind::CancelOffer {
            offer: OfferId(u64::from(o)),
            provider: provider(p),
        },
        Gen::AmendOffer {
            offer,
            provider: p,
            price,
            shift,
            keep,
        } => CommandKind::AmendOffer {
            offer: OfferId(u64::from(offer)),
            provider: provider(p),
            price: price.map(Amount::from),
            window: shift.map(|s| Window {
                from: now,
                until: Timestamp(now.0 + 20 + s * 4),
            }),
            max_ips: keep.map(u32::from),
        },
        Gen::Request {
            requester: q,
            count,
            countries,
            kinds,
            protocols,
            city: ci,
            asn,
            min_rating,
            min_uptime,
            distinct,
            start_in,
            duration,
            max_price,
            tif,
            expires_in,
        } => {
            // Half the requests accept any country, kind and protocol; the rest narrow down.
            let chosen: Vec<Country> = (0..3)
                .filter(|i| countries < 8 && countries & (1 << i) != 0)
                .map(country)
                .collect();
            CommandKind::SubmitRequest(RequestSpec {
                requester: requester(q),
                count: u32::from(count),
                filters: Filters {
                    countries: CountrySet::of(&chosen),
                    city: city(ci.saturating_sub(3)).map(|c| c.to_uppercase()),
                    asn_include: if asn == 1 { vec![1] } else { vec![] },
                    asn_exclude: if asn == 2 { vec![2] } else { vec![] },
                    kinds: kind_set(if kinds < 8 { kinds } else { 0 }),
                    protocols: protocol_set(if protocols < 32 { protocols & 0b101 } else { 0 }),
                    min_rating: min_rating.then_some(300),
                    min_uptime: min_uptime.then_some(5_000),
                    distinct_subnets: distinct,
                },
                start: start_in.map_or(Start::Now, |s| Start::At(Timestamp(now.0 + s))),
                duration,
                max_price: Amount::from(max_price),
                time_in_force: match tif {
                    0 => TimeInForce::Ioc,
                    1 => TimeInForce::Fok,
                    _ => TimeInForce::Gtc {
                        expires_at: Timestamp(now.0 + expires_in),
                    },
                },
            })
        }
        Gen::CancelRequest(r, q) => CommandKind::CancelRequest {
            request: RequestId(u64::from(r)),
            requester: requester(q),
        },
        Gen::AmendRequest(r, q, price) => CommandKind::AmendRequest {
            request: RequestId(u64::from(r)),
            requester: requester(q),
            max_price: Some(Amount::from(price)),
            remaining: None,
            start: None,
            duration: None,
        },
        Gen::Deal {
            back,
            action,
            wrong_party,
            score,
        } => {
            let newest = reference.deals.len() as u64;
            let deal = DealId(newest.saturating_sub(u64::from(back)).max(1));
            let (mut provider_party, mut requester_party) = reference
                .deals
                .iter()
                .find(|d| d.id == deal)
                .map_or((provider(0), requester(0)), |d| (d.provider, d.requester));
            if wrong_party {
                std::mem::swap(&mut provider_party, &mut requester_party);
            }
            match action {
                0..=5 => CommandKind::ProviderReady {
                    deal,
                    provider: provider_party,
                },
                6 => CommandKind::ProviderFailed {
                    deal,
                    provider: provider_party,
                },
                7 => CommandKind::PaymentLapsed {
                    deal,
                    // Mostly a cut second a little in the past; sometimes none, sometimes one
                    // in the future (taken as now).
                    at: match score {
                        0 => None,
                        6 => Some(Timestamp(reference.now.0 + 5)),
                        back => Some(Timestamp(
                            reference.now.0.saturating_sub(3 * u64::from(back)),
                        )),
                    },
                },
                8 => CommandKind::CancelDeal {
                    deal,
                    requester: requester_party,
                },
                9 => CommandKind::Rate {
                    deal,
                    rater: provider_party,
                    score,
                },
                _ => CommandKind::Rate {
                    deal,
                    rater: requester_party,
                    score,
                },
            }
        }
    }
}

// ----- comparison and invariants -----------------------------------------------------------

fn same_deals(engine: &Engine, reference: &Reference) -> Result<(), TestCaseError> {
    prop_assert_eq!(engine.deals().len(), reference.deals.len(), "deal count");
    for (mine, theirs) in engine.deals().zip(&reference.deals) {
        prop_assert_eq!(mine.id, theirs.id);
        prop_assert_eq!(mine.request, theirs.request, "request of {}", mine.id);
        prop_assert_eq!(mine.offer, theirs.offer, "offer of {}", mine.id);
        prop_assert_eq!(&mine.ips[..], &theirs.ips[..], "IPs of {}", mine.id);
        prop_assert_eq!((mine.start, mine.end), (theirs.start, theirs.end));
        prop_assert_eq!(mine.price, theirs.price);
        prop_assert_eq!(mine.status(), theirs.status(), "status of {}", mine.id);
        prop_assert_eq!(
            mine.served_value(),
            theirs.served_value(),
            "value of {}",
            mine.id
        );
        prop_assert!(mine.provider != mine.requester, "self-deal {}", mine.id);
    }
    let engine_resting: Vec<(RequestId, u32)> = engine
        .resting_requests()
        .map(|r| (r.id, r.remaining))
        .collect();
    let mut reference_resting: Vec<(Amount, RequestId, u32)> = reference
        .requests
        .iter()
        .filter(|r| r.resting)
        .map(|r| (r.spec.max_price, r.id, r.remaining))
        .collect();
    reference_resting.sort_by_key(|(price, id, _)| (std::cmp::Reverse(*price), *id));
    let reference_resting: Vec<(RequestId, u32)> = reference_resting
        .into_iter()
        .map(|(_, id, remaining)| (id, remaining))
        .collect();
    prop_assert_eq!(engine_resting, reference_resting, "resting requests");
    Ok(())
}

fn check_invariants(
    engine: &Engine,
    new_deals: &[Deal],
    requests: &Reference,
    prices_before: &[(RequestId, Amount)],
) -> Result<(), TestCaseError> {
    // The market depth, kept up to date change by change, is what the offers hold now.
    let mut depth: BTreeMap<(Country, Protocol, IpKind, Amount), u64> = BTreeMap::new();
    for offer in engine.offers().filter(|offer| offer.idle_count() > 0) {
        for protocol in offer.protocols.iter() {
            *depth
                .entry((offer.country, protocol, offer.kind, offer.price))
                .or_default() += u64::from(offer.idle_count());
        }
    }
    let counted: BTreeMap<_, _> = engine
        .depth()
        .levels
        .iter()
        .map(|l| ((l.country, l.protocol, l.kind, l.price), l.ips))
        .collect();
    prop_assert_eq!(counted, depth, "market depth");
    // No IP of a live offer over its tenant cap at any second.
    for offer in engine.offers() {
        for ip in engine.offer_ips(offer.id).expect("live offer") {
            let bookings = engine.calendar(ip).unwrap_or_default();
            for booking in bookings {
                let peak = bookings
                    .iter()
                    .filter(|b| b.start <= booking.start && booking.start < b.end)
                    .count();
                prop_assert!(
                    peak <= usize::from(offer.tenants),
                    "{ip} holds {peak} leases at {}, cap {}",
                    booking.start,
                    offer.tenants
                );
            }
        }
    }
    // Every new deal honours its request's price and filters.
    for deal in new_deals {
        let Some(request) = requests.requests.iter().find(|r| r.id == deal.request) else {
            continue;
        };
        let f = &request.spec.filters;
        // An amend in the same step may have lowered the maximum after the deal was made.
        let max_before = prices_before
            .iter()
            .find(|(id, _)| *id == request.id)
            .map_or(0, |(_, price)| *price);
        prop_assert!(
            deal.price <= request.spec.max_price.max(max_before),
            "price above max"
        );
        prop_assert!(deal.end.0 - deal.start.0 >= MIN_LEASE_SECONDS);
        if f.distinct_subnets {
            let subnets: BTreeSet<u128> = deal.ips.iter().map(|ip| subnet_of(*ip)).collect();
            prop_assert_eq!(subnets.len(), deal.ips.len(), "distinct subnets");
        }
        if let Some(offer) = engine.offer(deal.offer) {
            prop_assert!(f.countries.accepts(offer.country));
            prop_assert!(f.kinds.accepts(offer.kind));
            prop_assert!(offer.protocols.covers(f.protocols));
        }
    }
    Ok(())
}

fn run_stream(stream: &[(u64, Gen)]) -> Result<(), TestCaseError> {
    let config = EngineConfig {
        ready_timeout: READY_TIMEOUT,
        shard: 0,
        // The comparison covers every deal ever made, so none leaves the book.
        deal_retention: u64::MAX,
        rating_prior: RATING_PRIOR,
    };
    let mut engine = Engine::new(config);
    let mut reference = Reference::new();
    let mut commands = Vec::new();
    let mut events = Vec::new();
    let mut now = 1_000u64;
    let mut restored_at: Option<(usize, Engine)> = None;
    let mut frozen_at = None;
    for (step, (dt, generated)) in stream.iter().enumerate() {
        now += dt;
        let command = Command {
            at: Timestamp(now),
            kind: materialize(generated, Timestamp(now), &reference),
        };
        let deals_before = engine.deals().len();
        let prices_before: Vec<(RequestId, Amount)> = reference
            .requests
            .iter()
            .map(|r| (r.id, r.spec.max_price))
            .collect();
        let ours = engine.apply(&command, &mut events);
        let theirs = reference.apply(&command);
        prop_assert_eq!(
            ours.is_ok(),
            theirs,
            "step {}: {:?} -> engine {:?}",
            step,
            command,
            ours
        );
        same_deals(&engine, &reference)?;
        // Every timer is live: one per pending deadline, running lease, resting request and
        // offer window edge still ahead (a pending deal's end is scheduled once it is active).
        let live = engine
            .deals()
            .map(|d| match d.status() {
                DealStatus::Pending | DealStatus::Active => 1,
                _ => 0,
            })
            .sum::<usize>()
            + engine.resting_requests().count()
            + engine
                .offers()
                .map(|o| 1 + usize::from(o.window.from > engine.now()))
                .sum::<usize>();
        prop_assert_eq!(engine.pending_timers(), live, "live timers");
        let new_deals: Vec<Deal> = engine.deals().skip(deals_before).cloned().collect();
        check_invariants(&engine, &new_deals, &reference, &prices_before)?;
        commands.push(command);
        if step == stream.len() / 2 {
            let bytes = engine.snapshot().to_bytes();
            // Frozen at the same point, and read only after the rest of the stream has been
            // written over the records it shares: it must still give the same bytes.
            frozen_at = Some((engine.freeze(), bytes.clone()));
            let snapshot = Snapshot::from_bytes(&bytes).expect("own snapshot reads back");
            restored_at = Some((step, Engine::restore(snapshot)));
        }
    }
    if let Some((frozen, bytes)) = frozen_at {
        prop_assert!(
            frozen.canonical().to_bytes() == bytes,
            "a frozen state changed"
        );
    }
    // Replaying the log from scratch gives the same state.
    let mut replayed = Engine::new(config);
    let mut replay_events = Vec::new();
    for command in &commands {
        let _ = replayed.apply(command, &mut replay_events);
    }
    prop_assert_eq!(replayed.state_hash(), engine.state_hash(), "replay hash");
    // A snapshot taken mid-way, restored and fed the rest, gives the same state too.
    if let Some((step, mut restored)) = restored_at {
        for command in &commands[step + 1..] {
            let _ = restored.apply(command, &mut replay_events);
        }
        prop_assert_eq!(restored.state_hash(), engine.state_hash(), "restore hash");
        prop_assert_eq!(restored.pending_timers(), engine.pending_timers(), "timers");
    }
    Ok(())
}

proptest! {
    // 3,000 streams each: about 2 minutes in the debug build CI runs (10,000 pass in release).
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_brute_force_reference(
        stream in proptest::collection::vec((prop_oneof![4 => 0u64..3, 1 => 3u64..25], gen_strategy()), 1..100)
    ) {
        run_stream(&stream)?;
    }
}

// ----- deferred expiry -------------------------------------------------------------------

/// The deal an event is about, if any.
fn deal_of(event: &Event) -> Option<DealId> {
    match event {
        Event::DealMade { deal, .. }
        | Event::DealStatusChanged { deal, .. }
        | Event::Rated { deal, .. } => Some(*deal),
        _ => None,
    }
}

/// Each deal's events in order, and the others in order.
fn by_deal(events: &[Event]) -> (BTreeMap<DealId, Vec<Event>>, Vec<Event>) {
    let mut deals: BTreeMap<DealId, Vec<Event>> = BTreeMap::new();
    let mut others = Vec::new();
    for event in events {
        match deal_of(event) {
            Some(deal) => deals.entry(deal).or_default().push(event.clone()),
            None => others.push(event.clone()),
        }
    }
    (deals, others)
}

/// The deals a command made, with their IPs (their status aside, which a deferring engine
/// may show late).
fn made_deals(engine: &Engine, events: &[Event]) -> Vec<(Event, Vec<IpAddr>)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::DealMade { deal, .. } => Some((
                event.clone(),
                engine
                    .deal(*deal)
                    .map(|d| d.ips.to_vec())
                    .unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

/// One stream through an engine that expires eagerly and one that defers (settling now and
/// then, by `settle`): same outcome for every command, same deals as they are made, the same
/// state hash whenever the deferring one is settled, and in the end the same events for every
/// deal, in the same order.
fn run_deferring(stream: &[(u64, Gen, u8)], retention: u64) -> Result<(), TestCaseError> {
    let config = EngineConfig {
        ready_timeout: READY_TIMEOUT,
        shard: 0,
        deal_retention: retention,
        rating_prior: RATING_PRIOR,
    };
    let (mut eager, mut deferring) = (Engine::new(config), Engine::new(config));
    let mut reference = Reference::new();
    let (mut eager_events, mut deferring_events) = (Vec::new(), Vec::new());
    let mut now = 1_000u64;
    for (step, (dt, generated, settle)) in stream.iter().enumerate() {
        now += dt;
        let command = Command {
            at: Timestamp(now),
            kind: materialize(generated, Timestamp(now), &reference),
        };
        reference.apply(&command);
        let (eager_before, deferring_before) = (eager_events.len(), deferring_events.len());
        let ours =
            deferring.apply_deferring(&command, usize::from(*settle % 3), &mut deferring_events);
        let theirs = eager.apply(&command, &mut eager_events);
        prop_assert_eq!(&ours, &theirs, "step {}: {:?}", step, command);
        let made = made_deals(&eager, &eager_events[eager_before..]);
        let also = made_deals(&deferring, &deferring_events[deferring_before..]);
        prop_assert_eq!(made, also, "deals made at step {}", step);
        match settle / 3 % 8 {
            0 => deferring.settle_all(&mut deferring_events),
            1 | 2 => {
                deferring.settle(usize::from(*settle / 24), &mut deferring_events);
            }
            _ => {}
        }
        if deferring.is_settled() {
            prop_assert_eq!(
                deferring.state_hash(),
                eager.state_hash(),
                "settled state at step {}",
                step
            );
            prop_assert_eq!(deferring.pending_timers(), eager.pending_timers());
        }
    }
    deferring.settle_all(&mut deferring_events);
    prop_assert_eq!(deferring.state_hash(), eager.state_hash(), "final state");
    let (eager_deals, eager_others) = by_deal(&eager_events);
    let (deferring_deals, deferring_others) = by_deal(&deferring_events);
    prop_assert_eq!(deferring_deals, eager_deals, "each deal's events");
    prop_assert_eq!(deferring_others, eager_others, "offer and request events");
    Ok(())
}

/// The streams of a leasing fleet: IOC and FOK requests only (so no request rests and seconds
/// can be deferred), mostly without filters, for leases short enough that even their ready
/// deadlines may be deferred; providers mostly report ready, so leases run to their end.
fn leasing(mut generated: Gen) -> Gen {
    match &mut generated {
        Gen::Request {
            countries,
            kinds,
            protocols,
            city,
            asn,
            duration,
            tif,
            ..
        } => {
            if *countries % 4 != 0 {
                (*countries, *kinds, *protocols, *city, *asn) = (0, 0, 0, 0, 0);
            }
            *duration = 5 + *duration % 8;
            *tif %= 2;
        }
        Gen::Deal { action, .. } if *action < 8 => *action = 0,
        _ => {}
    }
    generated
}

/// A fleet's market: offers come and go, requests are many, deal inputs more.
fn fleet_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        3 => offer_gen(),
        2 => offer_change_gen(),
        1 => Just(Gen::Tick),
        10 => request_gen(),
        10 => deal_input_gen(),
    ]
    .prop_map(leasing)
}

proptest! {
    // 3,000 streams each: about 2 minutes in the debug build CI runs (10,000 pass in release).
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// Deferred expiry changes when ends are processed, never what happens.
    #[test]
    fn deferred_expiry_matches_eager_expiry(
        stream in proptest::collection::vec(
            (prop_oneof![4 => 0u64..3, 1 => 3u64..25], gen_strategy(), any::<u8>()),
            1..100,
        ),
        fleet in proptest::collection::vec(
            (prop_oneof![4 => 0u64..3, 1 => 3u64..25], fleet_strategy(), any::<u8>()),
            1..150,
        ),
        retention in prop_oneof![Just(u64::MAX), 1u64..20],
        fleet_only in any::<bool>(),
    ) {
        // Either a fleet alone, or any market followed by a fleet.
        let stream: Vec<(u64, Gen, u8)> = if fleet_only {
            fleet
        } else {
            stream.into_iter().chain(fleet).collect()
        };
        run_deferring(&stream, retention)?;
    }
}
