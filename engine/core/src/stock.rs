//! Empty record chunks built on another thread, for the engine to grow into.
//!
//! An engine that grows (a replay from empty, or from a snapshot older than a burst) adds a
//! chunk of records every few hundred deals, and the first write to a new chunk's pages is a
//! page fault each: the kernel maps and zeroes them. Replaying a journal from empty spends
//! about a fifth of its time there. The engine's thread can instead take chunks another thread
//! built (and so faulted in): it says what it lacks ([`Engine::stock_order`]), a helper builds
//! that ([`StockOrder::build`]), and the engine takes it between commands
//! ([`Engine::restock`]). Nothing here changes what the engine does: stocked chunks are empty,
//! and a slab that runs out builds its own as before.
//!
//! ```
//! use ipsx_engine::{Engine, EngineConfig};
//!
//! let mut engine = Engine::new(EngineConfig::default());
//! let order = engine.stock_order(4);
//! assert!(!order.is_empty());
//! let stock = std::thread::spawn(move || order.build()).join().unwrap();
//! engine.restock(stock);
//! assert!(engine.stock_order(4).is_empty());
//! ```

use crate::book::IpSlot;
use crate::deal::Deal;
use crate::engine::{Engine, OpenDeal};
use crate::request::RequestRecord;
use crate::slab::{CHUNK, Chunk, empty_chunks};

/// How many empty chunks of each kind of record an engine lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockOrder {
    deals: usize,
    open: usize,
    requests: usize,
    slots: usize,
}

impl StockOrder {
    pub(crate) fn new(deals: usize, open: usize, requests: usize, slots: usize) -> StockOrder {
        StockOrder {
            deals,
            open,
            requests,
            slots,
        }
    }

    /// Whether the engine lacks nothing.
    pub fn is_empty(&self) -> bool {
        *self == StockOrder::default()
    }

    /// Builds the chunks, on the calling thread (which pays their page faults).
    pub fn build(&self) -> Stock {
        Stock {
            deals: empty_chunks(self.deals),
            open: empty_chunks(self.open),
            requests: empty_chunks(self.requests),
            slots: empty_chunks(self.slots),
        }
    }
}

/// Empty chunks for an engine's deals, open deals, requests and IP slots (see the module
/// docs). `Send`: built on one thread, handed to the engine's.
#[derive(Default)]
pub struct Stock {
    deals: Vec<Chunk<Deal, CHUNK>>,
    open: Vec<Chunk<OpenDeal, CHUNK>>,
    requests: Vec<Chunk<RequestRecord, CHUNK>>,
    slots: Vec<Chunk<IpSlot, CHUNK>>,
}

impl Engine {
    /// What the engine lacks to hold `ahead` empty chunks of each kind of record it grows by.
    pub fn stock_order(&self, ahead: usize) -> StockOrder {
        StockOrder {
            deals: ahead.saturating_sub(self.deals.spare_len()),
            open: ahead.saturating_sub(self.open.spare_len()),
            requests: ahead.saturating_sub(self.requests.spare_len()),
            slots: ahead.saturating_sub(self.book.slots.spare_len()),
        }
    }

    /// Takes empty chunks built on another thread, to grow into.
    pub fn restock(&mut self, stock: Stock) {
        self.deals.stock(stock.deals);
        self.open.stock(stock.open);
        self.requests.stock(stock.requests);
        self.book.slots.stock(stock.slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    /// An engine holding one offer of 16 IPs and a deal for 3 of them.
    fn small_book() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        let mut events = Vec::new();
        let offer = OfferSpec {
            provider: Address::from_low_u64(1),
            ips: IpSpec::Cidr {
                network: "198.51.100.0".parse().expect("ip"),
                prefix: 28,
            },
            country: Country::parse("FR").expect("country"),
            region: None,
            city: None,
            asn: 64_500,
            kind: IpKind::Residential,
            protocols: ProtocolSet::of(&[Protocol::Socks5]),
            window: Window {
                from: Timestamp(0),
                until: Timestamp(86_400),
            },
            min_lease: 5,
            max_lease: 3_600,
            price: 1_000,
            tenants: 1,
        };
        let request = RequestSpec {
            requester: Address::from_low_u64(2),
            count: 3,
            filters: Filters::default(),
            start: Start::Now,
            duration: 60,
            max_price: 2_000,
            time_in_force: TimeInForce::Ioc,
        };
        for (at, kind) in [
            (100, CommandKind::PlaceOffer(offer)),
            (101, CommandKind::SubmitRequest(request)),
        ] {
            let command = Command {
                at: Timestamp(at),
                kind,
            };
            engine.apply(&command, &mut events).expect("applied");
        }
        engine
    }

    #[test]
    fn a_snapshot_orders_the_chunks_its_records_span_and_restores_the_same_into_them() {
        let engine = small_book();
        let bytes = engine.snapshot().to_bytes();
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let checked = Snapshot::check(&aligned).expect("valid");
        let order = checked.stock_order();
        // Chunks are of 8 records under test: the 16 IPs take two.
        assert_eq!(order, StockOrder::new(1, 1, 1, 2));
        let restored = Engine::restore_stocked(checked.read().expect("read"), order.build());
        assert_eq!(restored.state_hash(), engine.state_hash());
        // The chunks were used, not added beside the ones the restore made.
        assert_eq!(restored.stock_order(1), StockOrder::new(1, 1, 1, 1));
    }

    #[test]
    fn an_order_asks_only_for_what_is_missing() {
        let mut engine = Engine::new(EngineConfig::default());
        let order = engine.stock_order(3);
        assert_eq!(
            order,
            StockOrder {
                deals: 3,
                open: 3,
                requests: 3,
                slots: 3
            }
        );
        engine.restock(StockOrder { deals: 2, ..order }.build());
        assert_eq!(
            engine.stock_order(3),
            StockOrder {
                deals: 1,
                open: 0,
                requests: 0,
                slots: 0
            }
        );
    }
}
