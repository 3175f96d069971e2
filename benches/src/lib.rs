//! # ipsx-benches — how fast the exchange is, measured
//!
//! Shared drivers for the criterion benchmarks (`benches/`) and the load harness
//! (`src/bin/engine_load.rs`, HDR-histogram latency percentiles). Everything here drives the
//! real engine and runtime; nothing is mocked.
//!
//! * [`build_market`] fills an engine with a synthetic market (about a million IPs over 200
//!   countries by default).
//! * [`LeaseDriver`] sends lease requests against it forever: the clock advances one second
//!   every `requests_per_second` requests, so leases end (their deals are voided at their end,
//!   no provider having reported ready) and the market keeps its capacity — a steady state
//!   rather than a book that runs dry. It applies them as a node does, deferring expiry
//!   ([`Engine::apply_deferring`]), or eagerly ([`LeaseDriver::eager`]) for comparison.
//!
//! ```
//! use ipsx_benches::{LeaseDriver, build_market};
//! use ipsx_engine_runtime::workload::MarketShape;
//!
//! let shape = MarketShape { countries: 4, offers: 8, ips_per_offer: 10, providers: 2 };
//! let mut driver = LeaseDriver::new(build_market(&shape), shape, 100);
//! assert_eq!(driver.lease(3), 3);
//! ```

pub mod processes;
pub mod report;
pub mod tunnels;

use std::time::Duration;

use hdrhistogram::Histogram;
use ipsx_engine::{
    Command, CommandKind, Engine, EngineConfig, Event, SETTLE_PER_COMMAND, Timestamp,
};
use ipsx_engine_runtime::workload::{EPOCH, MarketShape};

/// Lease duration the drivers use, seconds.
pub const LEASE_SECONDS: u64 = 5;

/// Seconds finished deals stay in the benchmarked deal book. At a million leases a second a
/// day's retention would not fit in memory: a node sizes retention to its memory, and the
/// benchmarks measure that steady state rather than a book that only grows.
pub const DEAL_RETENTION: u64 = 10;

/// Simulated seconds of leasing before a measurement: by then the first leases have ended and
/// left the deal book, and the book has been through its peaks a few times, so it holds as
/// many deals as it ever will (the steady state, not a book still growing).
pub const WARM_UP_SECONDS: u64 = LEASE_SECONDS + DEAL_RETENTION + 4;

/// An engine holding `shape`'s offers, its clock at [`EPOCH`].
pub fn build_market(shape: &MarketShape) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        deal_retention: DEAL_RETENTION,
        ..EngineConfig::default()
    });
    let mut events = Vec::new();
    for index in 0..shape.offers {
        let command = Command {
            at: EPOCH,
            kind: CommandKind::PlaceOffer(shape.offer(index)),
        };
        engine
            .apply(&command, &mut events)
            .expect("synthetic offers are valid");
        events.clear();
    }
    engine
}

/// Sends IOC lease requests to an engine, moving its clock so leases keep ending.
pub struct LeaseDriver {
    engine: Engine,
    shape: MarketShape,
    requests_per_second: u64,
    sent: u64,
    now: Timestamp,
    events: Vec<Event>,
    deferring: bool,
}

impl LeaseDriver {
    /// A driver over `engine` holding `shape`, advancing the clock one second every
    /// `requests_per_second` requests.
    pub fn new(engine: Engine, shape: MarketShape, requests_per_second: u64) -> LeaseDriver {
        let now = engine.now();
        LeaseDriver {
            engine,
            shape,
            requests_per_second: requests_per_second.max(1),
            sent: 0,
            now,
            events: Vec::with_capacity(64),
            deferring: true,
        }
    }

    /// The same driver expiring eagerly ([`Engine::apply`]): each second's lease ends all run
    /// in the first command of the next second.
    pub fn eager(mut self) -> LeaseDriver {
        self.deferring = false;
        self
    }

    /// Sends one request for `count` IPs; returns how many were leased.
    pub fn lease(&mut self, count: u32) -> u32 {
        if self.sent.is_multiple_of(self.requests_per_second) {
            self.now = Timestamp(self.now.0 + 1);
        }
        let command = Command {
            at: self.now,
            kind: CommandKind::SubmitRequest(self.shape.lease(
                self.sent as usize,
                count,
                LEASE_SECONDS,
            )),
        };
        self.sent += 1;
        self.events.clear();
        let applied = if self.deferring {
            self.engine
                .apply_deferring(&command, SETTLE_PER_COMMAND, &mut self.events)
        } else {
            self.engine.apply(&command, &mut self.events)
        };
        applied.expect("synthetic requests are valid");
        self.events
            .iter()
            .map(|e| match e {
                Event::DealMade { ips, .. } => *ips,
                _ => 0,
            })
            .sum()
    }

    /// Leases `count` IPs a request for [`WARM_UP_SECONDS`] simulated seconds, so what is
    /// measured next is the steady state (see [`WARM_UP_SECONDS`]).
    pub fn warm_up(&mut self, count: u32) {
        for _ in 0..self.requests_per_second * WARM_UP_SECONDS {
            self.lease(count);
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Settles what is deferred and freezes the state, as a shard's writer does for a
    /// snapshot.
    pub fn freeze(&mut self) -> ipsx_engine::FrozenState {
        self.engine.settle_all(&mut Vec::new());
        self.engine.freeze()
    }
}

/// Sends offer placements and cancellations of one-IP offers (a home user's IP coming and
/// going) against a market.
pub struct OfferChurn {
    engine: Engine,
    next: u32,
    events: Vec<Event>,
    /// The offers' terms, built before the clock starts: the churn measures the engine, not
    /// the building of specs (each [`MarketShape::offer`] allocates its lists). Their terms
    /// repeat every [`OfferChurn::TERMS`] offers anyway (ASN, kind, protocols, price).
    terms: Vec<ipsx_engine::OfferSpec>,
}

impl OfferChurn {
    /// Distinct terms the churn cycles through.
    const TERMS: usize = 3_000;

    /// The one-provider shape the churned offers come from.
    const SHAPE: MarketShape = MarketShape {
        countries: 200,
        offers: 1,
        ips_per_offer: 1,
        providers: 1,
    };

    /// Churn over `engine`.
    pub fn new(engine: Engine) -> OfferChurn {
        let terms = (0..Self::TERMS)
            .map(|index| {
                let mut spec = Self::SHAPE.offer(index);
                spec.ips = ipsx_engine::IpSpec::Single(std::net::Ipv4Addr::UNSPECIFIED.into());
                spec
            })
            .collect();
        OfferChurn {
            engine,
            next: 0,
            events: Vec::with_capacity(8),
            terms,
        }
    }

    /// Places a one-IP offer and cancels it: two commands.
    pub fn add_and_cancel(&mut self) {
        let mut spec = self.terms[self.next as usize % Self::TERMS].clone();
        // A fresh address in 100.64.0.0/10 … beyond the synthetic market's 11.0.0.0 blocks.
        spec.ips = ipsx_engine::IpSpec::Single(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x6440_0000u32.wrapping_add(self.next),
        )));
        spec.country = Self::SHAPE.country(self.next as usize * 7_919);
        self.next = self.next.wrapping_add(1);
        let at = self.engine.now();
        let provider = spec.provider;
        self.events.clear();
        self.engine
            .apply(
                &Command {
                    at,
                    kind: CommandKind::PlaceOffer(spec),
                },
                &mut self.events,
            )
            .expect("a fresh offer is valid");
        let Some(Event::OfferPlaced { offer, .. }) = self.events.first().cloned() else {
            panic!("placing an offer yields OfferPlaced");
        };
        self.events.clear();
        self.engine
            .apply(
                &Command {
                    at,
                    kind: CommandKind::CancelOffer { offer, provider },
                },
                &mut self.events,
            )
            .expect("cancelling one's own offer");
    }
}

/// A latency histogram in nanoseconds, from 10 ns to 10 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(10, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Records the time since `began` in a nanosecond [`latency_histogram`].
pub fn record_since(histogram: &mut Histogram<u64>, began: std::time::Instant) {
    record(histogram, began.elapsed());
}

/// Records `elapsed` in a nanosecond [`latency_histogram`].
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    // Out-of-range values only happen past the histogram's 10 s bound; they are dropped.
    let _ = histogram.record(nanos.max(10));
}

/// Lets load workers run for `seconds`, raises `stop`, and merges the histograms they return.
/// Answers the merged histogram and the seconds elapsed since `started`.
pub async fn stop_and_merge(
    tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
    stop: &std::sync::atomic::AtomicBool,
    seconds: f64,
    started: std::time::Instant,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = latency_histogram();
    for task in tasks {
        all.add(task.await?)?;
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// `p50 p99 p99.9 max` of a nanosecond histogram, as durations.
pub fn percentiles(histogram: &Histogram<u64>) -> [Duration; 4] {
    [0.5, 0.99, 0.999, 1.0].map(|q| Duration::from_nanos(histogram.value_at_quantile(q)))
}

/// The median of some measurements.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
