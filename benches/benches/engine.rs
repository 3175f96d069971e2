//! Criterion benchmarks of the matching engine alone (no I/O), on about a million resting IPs
//! over 200 countries. `cargo bench -p ipsx-benches --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipsx_benches::{LeaseDriver, OfferChurn, build_market};
use ipsx_engine_runtime::workload::MarketShape;

fn offers(c: &mut Criterion) {
    let market = build_market(&MarketShape::MILLION);
    let mut group = c.benchmark_group("offers");
    group.throughput(Throughput::Elements(2));
    let mut churn = OfferChurn::new(market);
    group.bench_function("add_and_cancel_one_ip_offer", |b| {
        b.iter(|| churn.add_and_cancel())
    });
    group.finish();
}

fn leases(c: &mut Criterion) {
    let market = build_market(&MarketShape::MILLION);
    let mut group = c.benchmark_group("leases");
    for (count, per_second) in [(1u32, 100_000u64), (100, 1_000)] {
        group.throughput(Throughput::Elements(u64::from(count)));
        let mut driver = LeaseDriver::new(market.clone(), MarketShape::MILLION, per_second);
        // Warm the steady state up: a few simulated seconds of leases ending.
        for _ in 0..per_second * 6 {
            driver.lease(count);
        }
        group.bench_function(format!("lease_{count}_ips_ioc"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(driver.lease(count));
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = offers, leases
}
criterion_main!(engine);
