//! Criterion benchmarks of the matching engine alone (no I/O), on about a million resting IPs
//! over 200 countries. `cargo bench -p ipsx-benches --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipsx_benches::{LeaseDriver, OfferChurn, build_market};
use ipsx_engine::{Command, CommandKind, SETTLE_PER_COMMAND, Timestamp};
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
        driver.warm_up(count);
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

/// The stall the lease benchmarks average away: one command moving the clock past a second
/// in which 10,000 single-IP leases end (voided at their end, no provider having reported
/// ready), measured per ended lease when expiring eagerly; and, deferring expiry, what the
/// first lease request of that second costs instead.
fn expiry(c: &mut Criterion) {
    const LEASES: u64 = 10_000;
    let shape = MarketShape::MILLION;
    let mut driver = LeaseDriver::new(build_market(&shape), shape, LEASES).eager();
    // Two seconds of leases: the second second's 10,000 all end at the same later second.
    for _ in 0..2 * LEASES {
        driver.lease(1);
    }
    let mut before = driver.engine().clone();
    let end = Timestamp(before.now().0 + ipsx_benches::LEASE_SECONDS);
    // The first second's leases end a second earlier, outside the measurement.
    before
        .apply(&Command::tick(Timestamp(end.0 - 1)), &mut Vec::new())
        .expect("a tick is always accepted");
    let mut group = c.benchmark_group("expiry");
    group.throughput(Throughput::Elements(LEASES));
    group.bench_function("end_10k_leases_in_one_second", |b| {
        b.iter_batched_ref(
            || before.clone(),
            |engine| {
                let mut events = Vec::with_capacity(2 * LEASES as usize);
                engine
                    .apply(&Command::tick(end), &mut events)
                    .expect("a tick is always accepted");
                black_box(events.len())
            },
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    let lease = Command {
        at: end,
        kind: CommandKind::SubmitRequest(shape.lease(0, 1, ipsx_benches::LEASE_SECONDS)),
    };
    group.bench_function("first_lease_of_that_second_deferring", |b| {
        b.iter_batched_ref(
            || before.clone(),
            |engine| {
                let mut events = Vec::with_capacity(64);
                engine
                    .apply_deferring(&lease, SETTLE_PER_COMMAND, &mut events)
                    .expect("a lease request is accepted");
                black_box(events.len())
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = offers, leases, expiry
}
criterion_main!(engine);
