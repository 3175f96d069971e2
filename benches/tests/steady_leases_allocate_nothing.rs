//! A market in its steady state leases single IPs without touching the allocator: every record
//! a lease writes reuses room a finished lease gave back.
//!
//! A market of 3,000 offers puts the all-countries offer indexes past the size where they
//! leave sorted rings, and offers of four IPs fill up and free up all the time, moving between
//! the open and saturated indexes with most leases. That churn used to split and merge B-tree
//! nodes: a few allocations per thousand leases.

use std::alloc::System;

use ipsx_benches::{LeaseDriver, build_market};
use ipsx_engine_runtime::workload::MarketShape;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 12,000 IPs, about half of them leased at any time.
const SHAPE: MarketShape = MarketShape {
    countries: 20,
    offers: 3_000,
    ips_per_offer: 4,
    providers: 300,
};
const REQUESTS_PER_SECOND: u64 = 1_200;

#[test]
fn single_ip_leases_in_a_steady_market_allocate_nothing() {
    for eager in [false, true] {
        let mut driver = LeaseDriver::new(build_market(&SHAPE), SHAPE, REQUESTS_PER_SECOND);
        if eager {
            driver = driver.eager();
        }
        // Twice the time it takes leases to end and their deals to leave the book: every
        // structure has met its peak.
        driver.warm_up(1);
        driver.warm_up(1);
        let region = Region::new(ALLOCATOR);
        let mut leased = 0;
        for _ in 0..20 * REQUESTS_PER_SECOND {
            leased += driver.lease(1);
        }
        let stats = region.change();
        assert!(
            leased > 10 * REQUESTS_PER_SECOND as u32,
            "the market serves most leases"
        );
        assert_eq!(
            stats.allocations + stats.reallocations,
            0,
            "allocations in {} steady single-IP leases ({})",
            20 * REQUESTS_PER_SECOND,
            if eager { "eager" } else { "deferring" }
        );
    }
}
