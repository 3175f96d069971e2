//! The engine's state in canonical form: what snapshots store and the state hash covers.
//!
//! Only the facts are stored (offers, IP calendars, requests, deals, profiles, counters); the
//! indexes, market depth and timers are derived from them on restore. Every list is in a fixed
//! order, so two engines in the same state give byte-identical snapshots and equal hashes.

use std::cmp::Reverse;

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};
use thiserror::Error;

use crate::agreement::{DealStatus, ProviderStatus, RequesterStatus, deal_status};
use crate::book::{IpSlot, OFFER_CHUNK, Offer};
use crate::calendar::Booking;
use crate::deal::{Deal, Profile};
use crate::engine::{Engine, EngineConfig};
use crate::order::{IpSpec, OfferSpec};
use crate::request::RequestRecord;
use crate::slab::{CHUNK, FrozenSlab};
use crate::stock::{Stock, StockOrder};
use crate::timers::Timer;
use crate::types::{Address, OfferId, Timestamp};

/// An IP the engine knows: owner and calendar.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct IpRecord {
    /// The address.
    pub addr: std::net::IpAddr,
    /// The provider it belongs to.
    pub owner: Address,
    /// Its bookings, sorted.
    pub bookings: Vec<Booking>,
}

/// An offer, as placed (IPs listed in position order) plus its id.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OfferRecord {
    /// The offer's id.
    pub id: OfferId,
    /// Its terms as they stand (after amends).
    pub spec: OfferSpec,
}

/// The whole state of an engine, canonical and serialisable.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Snapshot {
    /// Settings.
    pub config: EngineConfig,
    /// Clock.
    pub now: Timestamp,
    /// Next offer id.
    pub next_offer: u64,
    /// Next request id.
    pub next_request: u64,
    /// Deals ever made (the next deal id follows).
    pub deals_made: u64,
    /// Every IP with an offer or a booking, by address.
    pub ips: Vec<IpRecord>,
    /// Live offers, by id.
    pub offers: Vec<OfferRecord>,
    /// Resting requests and requests with running deals, by id.
    pub requests: Vec<RequestRecord>,
    /// The deal book (what retention kept), by id.
    pub deals: Vec<Deal>,
    /// Profiles, by address.
    pub profiles: Vec<(Address, Profile)>,
}

/// Why snapshot bytes could not be read back.
#[derive(Debug, Error)]
#[error("snapshot bytes are corrupt or of another version: {0}")]
pub struct SnapshotError(String);

impl Snapshot {
    /// Serialises with rkyv.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.serialise().into_vec()
    }

    /// Serialises with rkyv into the aligned buffer rkyv builds: [`Snapshot::to_bytes`]
    /// without its last step, a copy of the whole into a plain vector (for a book of a million
    /// deals, half a gigabyte copied onto fresh pages, which took longer than serialising).
    pub fn serialise(&self) -> rkyv::util::AlignedVec {
        self.serialise_with_room(0)
    }

    /// [`Snapshot::serialise`] into a buffer made with room for `bytes` (the size of the last
    /// snapshot, say): a buffer that grows by doubling copies itself each time, on fresh pages.
    pub fn serialise_with_room(&self, bytes: usize) -> rkyv::util::AlignedVec {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(
            self,
            rkyv::util::AlignedVec::with_capacity(bytes),
        )
        .expect("serialising owned data into memory cannot fail")
    }

    /// Reads bytes from [`Snapshot::to_bytes`], validating them first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        Snapshot::check(bytes)?.read()
    }

    /// Validates bytes from [`Snapshot::to_bytes`] without reading them into records yet: what
    /// an engine restored from them will grow into can be built meanwhile
    /// ([`CheckedSnapshot::stock_order`]).
    pub fn check(bytes: &[u8]) -> Result<CheckedSnapshot<'_>, SnapshotError> {
        rkyv::access::<ArchivedSnapshot, rancor::Error>(bytes)
            .map(CheckedSnapshot)
            .map_err(|e| SnapshotError(e.to_string()))
    }
}

/// Snapshot bytes that passed [`Snapshot::check`].
pub struct CheckedSnapshot<'a>(&'a ArchivedSnapshot);

impl CheckedSnapshot<'_> {
    /// The owned snapshot.
    pub fn read(&self) -> Result<Snapshot, SnapshotError> {
        rkyv::deserialize::<Snapshot, rancor::Error>(self.0)
            .map_err(|e| SnapshotError(e.to_string()))
    }

    /// The empty chunks [`Engine::restore_stocked`] fills with this snapshot's deals, open
    /// deals, requests and IP slots.
    pub fn stock_order(&self) -> StockOrder {
        let deals = &self.0.deals;
        let open = deals.iter().filter(|deal| {
            let provider =
                rkyv::deserialize::<ProviderStatus, rancor::Error>(&deal.provider_status);
            let requester =
                rkyv::deserialize::<RequesterStatus, rancor::Error>(&deal.requester_status);
            matches!((provider, requester), (Ok(p), Ok(r)) if !deal_status(p, r).is_terminal())
        });
        StockOrder::new(
            chunks_for(deals.iter().map(|deal| deal.id.0.to_native())),
            chunks_for(open.map(|deal| deal.id.0.to_native())),
            chunks_for(self.0.requests.iter().map(|r| r.id.0.to_native())),
            self.0.ips.len().div_ceil(CHUNK),
        )
    }
}

/// Chunks a ring of records with these ids (ascending) fills. Records are kept by id, so the
/// ring spans from the first id to the last, holes included; but a ring with long gaps starts
/// over past them (see `IdSlab::insert`), so no more are ordered than the records fill
/// without holes, and one more: the engine builds any others itself.
fn chunks_for(ids: impl Iterator<Item = u64>) -> usize {
    let (mut first, mut last, mut count) = (None, 0, 0usize);
    for id in ids {
        first = first.or(Some(id));
        last = id;
        count += 1;
    }
    let Some(first) = first else {
        return 0;
    };
    let span = usize::try_from(last.saturating_sub(first) / CHUNK as u64 + 1).unwrap_or(usize::MAX);
    span.min(count.div_ceil(CHUNK) + 1)
}

/// The engine's state as it stood at [`Engine::freeze`], whatever the engine does after.
///
/// It shares the engine's records (deals, requests, offers, IPs) copy-on-write, so taking one
/// costs the engine a reference count per chunk of records, not a copy of the book; the engine
/// copies a chunk the first time it writes to it while this lives. [`FrozenState::canonical`]
/// then builds the [`Snapshot`] wherever there is time for it: a shard's snapshot thread, not
/// its writer.
#[derive(Debug)]
pub struct FrozenState(StateView<'static>);

impl FrozenState {
    /// Deals in the frozen book.
    pub fn deal_count(&self) -> usize {
        self.0.deals.len()
    }

    /// The state in canonical form: what [`Engine::snapshot`] gave when this was frozen.
    pub fn canonical(&self) -> Snapshot {
        self.0.canonical()
    }
}

/// The state's records as a snapshot reads them: frozen (`'static`, see [`FrozenState`]) or
/// borrowed from an engine that cannot change meanwhile ([`Engine::snapshot`]).
#[derive(Debug)]
struct StateView<'a> {
    config: EngineConfig,
    now: Timestamp,
    next_offer: u64,
    next_request: u64,
    deals_made: u64,
    slots: FrozenSlab<'a, IpSlot>,
    offers: FrozenSlab<'a, Offer, OFFER_CHUNK>,
    requests: FrozenSlab<'a, RequestRecord>,
    deals: FrozenSlab<'a, Deal>,
    /// Copied: one small record per wallet.
    profiles: Vec<(Address, Profile)>,
}

impl StateView<'_> {
    /// The state in canonical form.
    fn canonical(&self) -> Snapshot {
        // Every list made at its final size: a vector of a million records grown by doubling
        // would copy itself on fresh pages again and again.
        let mut ips = sized(
            self.slots.len(),
            self.slots.sorted().map(|slot| IpRecord {
                addr: slot.addr,
                owner: slot.owner,
                bookings: slot.calendar.bookings().to_vec(),
            }),
        );
        ips.sort_unstable_by_key(|ip| ip.addr);
        let addr_of = |slot: u32| {
            self.slots
                .get(u64::from(slot))
                .expect("slot ids held by offers are live")
                .addr
        };
        let mut profiles = self.profiles.clone();
        profiles.sort_unstable_by_key(|(address, _)| *address);
        Snapshot {
            config: self.config,
            now: self.now,
            next_offer: self.next_offer,
            next_request: self.next_request,
            deals_made: self.deals_made,
            ips,
            offers: sized(
                self.offers.len(),
                self.offers.sorted().map(|offer| OfferRecord {
                    id: offer.id,
                    spec: spec_of(offer, addr_of),
                }),
            ),
            requests: sized(self.requests.len(), self.requests.sorted().cloned()),
            deals: sized(self.deals.len(), self.deals.sorted().cloned()),
            profiles,
        }
    }
}

/// The items of `items`, of which there are `len`, in a vector allocated once.
fn sized<T>(len: usize, items: impl Iterator<Item = T>) -> Vec<T> {
    let mut all = Vec::with_capacity(len);
    all.extend(items);
    all
}

/// An offer's terms as they stand (after amends), its IPs listed in position order: what
/// placing it again would take.
fn spec_of(offer: &Offer, addr_of: impl Fn(u32) -> std::net::IpAddr) -> OfferSpec {
    OfferSpec {
        provider: offer.provider,
        ips: IpSpec::List(offer.slots.iter().map(|slot| addr_of(*slot)).collect()),
        country: offer.country,
        region: offer.region.clone(),
        city: offer.city.clone(),
        asn: offer.asn,
        kind: offer.kind,
        protocols: offer.protocols,
        window: offer.window,
        min_lease: offer.min_lease,
        max_lease: offer.max_lease,
        price: offer.price,
        tenants: offer.tenants,
    }
}

impl Engine {
    /// An offer's terms as they stand (after amends), its IPs listed in position order: what
    /// placing it again would take.
    pub fn offer_spec(&self, id: OfferId) -> Option<OfferSpec> {
        let offer = self.book.offers.get(id.0)?;
        Some(spec_of(offer, |slot| self.book.slot(slot).addr))
    }

    /// The state as it stands, frozen for a [`Snapshot`] built later (see [`FrozenState`]):
    /// a reference per chunk (~2 ms for 1.5 M deals), where [`Engine::snapshot`] copies it all.
    pub fn freeze(&mut self) -> FrozenState {
        let (slots, offers) = (self.book.slots.freeze(), self.book.offers.freeze());
        let (requests, deals) = (self.requests.freeze(), self.deals.freeze());
        FrozenState(self.view_of(slots, offers, requests, deals))
    }

    /// The state in canonical form.
    pub fn snapshot(&self) -> Snapshot {
        let (slots, offers) = (self.book.slots.view(), self.book.offers.view());
        let (requests, deals) = (self.requests.view(), self.deals.view());
        self.view_of(slots, offers, requests, deals).canonical()
    }

    fn view_of<'a>(
        &self,
        slots: FrozenSlab<'a, IpSlot>,
        offers: FrozenSlab<'a, Offer, OFFER_CHUNK>,
        requests: FrozenSlab<'a, RequestRecord>,
        deals: FrozenSlab<'a, Deal>,
    ) -> StateView<'a> {
        debug_assert_eq!(
            self.unsettled(),
            0,
            "a snapshot is of a settled engine: call settle_all first"
        );
        StateView {
            config: self.config,
            now: self.now,
            next_offer: self.next_offer,
            next_request: self.next_request,
            deals_made: self.deals_made,
            slots,
            offers,
            requests,
            deals,
            profiles: self
                .parties
                .profiles()
                .map(|(address, profile)| (address, profile.clone()))
                .collect(),
        }
    }

    /// A BLAKE3 hash of the canonical state: equal for equal states, whatever the history of
    /// indexes and allocations behind them.
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.snapshot().serialise()).as_bytes()
    }

    /// Rebuilds an engine, with its indexes and timers, from a snapshot.
    pub fn restore(snapshot: Snapshot) -> Engine {
        Engine::restore_stocked(snapshot, Stock::default())
    }

    /// [`Engine::restore`] into empty chunks built ahead on another thread
    /// ([`CheckedSnapshot::stock_order`]), which then paid their page faults.
    pub fn restore_stocked(snapshot: Snapshot, stock: Stock) -> Engine {
        let mut engine = Engine::new(snapshot.config);
        engine.restock(stock);
        engine.now = snapshot.now;
        engine.book.now = snapshot.now;
        engine.next_offer = snapshot.next_offer;
        engine.next_request = snapshot.next_request;
        engine.book.restore_ips(snapshot.ips);
        for offer in snapshot.offers {
            let ips: crate::order::OfferIps = match &offer.spec.ips {
                IpSpec::List(ips) => ips.iter().copied().collect(),
                other => other.expand().unwrap_or_default(),
            };
            let party = engine.parties.intern(offer.spec.provider);
            engine.book.insert(offer.id, &offer.spec, &ips, party);
            let window = offer.spec.window;
            engine
                .timers
                .add(window.until, Timer::OfferCloses(offer.id));
            if window.from > engine.now {
                engine.timers.add(window.from, Timer::OfferOpens(offer.id));
            }
        }
        for record in snapshot.requests {
            if record.resting {
                engine
                    .resting
                    .insert((Reverse(record.max_price), record.id));
                engine
                    .timers
                    .add(record.expiry(), Timer::RequestExpiry(record.id));
            }
            engine.requests.insert(record.id.0, record);
        }
        for deal in &snapshot.deals {
            let provider = engine.parties.intern(deal.provider);
            let requester = engine.parties.intern(deal.requester);
            engine
                .parties
                .party_mut(provider)
                .deals
                .ids
                .push_back(deal.id);
            if requester != provider {
                engine
                    .parties
                    .party_mut(requester)
                    .deals
                    .ids
                    .push_back(deal.id);
            }
            match deal.status() {
                DealStatus::Pending => {
                    engine
                        .timers
                        .add(deal.ready_deadline, Timer::ReadyDeadline(deal.id));
                    if crate::engine::deadline_frees_early(deal.ready_deadline, deal.end) {
                        engine.timers.watch(deal.ready_deadline);
                    }
                }
                DealStatus::Active => {
                    engine.timers.add(deal.end, Timer::DealEnd(deal.id));
                }
                _ => {}
            }
            if !deal.status().is_terminal() {
                let slots = deal
                    .ips
                    .iter()
                    .filter_map(|ip| engine.book.slot_of(*ip))
                    .collect();
                let open = crate::engine::OpenDeal {
                    slots,
                    provider,
                    requester,
                };
                engine.open.insert(deal.id.0, open);
            }
        }
        engine.deals_made = snapshot.deals_made;
        let mut finished: Vec<(Timestamp, crate::DealId, [Address; 2])> = snapshot
            .deals
            .iter()
            .filter_map(|deal| Some((deal.closed_at?, deal.id, [deal.provider, deal.requester])))
            .collect();
        finished.sort_unstable();
        for (closed_at, deal, [provider, requester]) in finished {
            // Interned with the deals above.
            let provider = engine.parties.intern(provider);
            let requester = engine.parties.intern(requester);
            let finished = crate::engine::Finished {
                deal,
                provider,
                requester,
            };
            engine.finished.push(closed_at, finished);
        }
        for deal in snapshot.deals {
            engine.deals.insert(deal.id.0, deal);
        }
        for (address, profile) in snapshot.profiles {
            let party = engine.parties.intern(address);
            *engine.parties.profile_mut(party) = profile;
        }
        engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_orders_the_chunks_its_records_fill_never_a_long_gap() {
        assert_eq!(chunks_for(std::iter::empty()), 0);
        // Contiguous ids: the span (chunks are of 8 records under test).
        assert_eq!(chunks_for(100..=131), 4);
        // A month-old lease among recent ones: the ring starts over past the gap, so the
        // order stays near what the records fill, not the millions of ids between.
        let ids = std::iter::once(1).chain(5_000_000..5_000_031);
        assert_eq!(chunks_for(ids), 32usize.div_ceil(CHUNK) + 1);
    }
}
