//! Probe: cost split between leasing and lease expiry.
use ipsx_benches::{LeaseDriver, build_market};
use ipsx_engine_runtime::workload::MarketShape;
use std::time::Instant;
fn main() {
    let market = build_market(&MarketShape::MILLION);
    let mut driver = LeaseDriver::new(market.clone(), MarketShape::MILLION, u64::MAX);
    let started = Instant::now();
    for _ in 0..500_000 {
        driver.lease(1);
    }
    println!(
        "500k leases, no expiry: {:.2?} per lease",
        started.elapsed() / 500_000
    );
    let mut driver = LeaseDriver::new(market.clone(), MarketShape::MILLION, 100_000);
    for _ in 0..600_000 {
        driver.lease(1);
    }
    let started = Instant::now();
    for _ in 0..1_000_000 {
        driver.lease(1);
    }
    println!(
        "1M leases, steady state with expiry: {:.2?} per lease",
        started.elapsed() / 1_000_000
    );
}
