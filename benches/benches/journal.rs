//! Criterion benchmarks of the journal: group commits of 1, 64 and 1024 lease commands with
//! `fdatasync` (what a durable acknowledgement costs per command), and decoding on recovery.
//! `cargo bench -p ipsx-benches --bench journal`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipsx_engine::{Command, CommandKind};
use ipsx_engine_runtime::workload::{EPOCH, MarketShape};
use ipsx_engine_runtime::{DurableEngine, FsyncPolicy, StoreConfig};

fn lease_command(index: u64) -> Command {
    Command {
        at: EPOCH,
        // The store holds no offer: each request is accepted and matches nothing, so the
        // engine's share of the cost stays small and the journal's shows.
        kind: CommandKind::SubmitRequest(MarketShape::MILLION.lease(index as usize, 1, 60)),
    }
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_group_commit_fsync");
    for batch in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = StoreConfig::new(dir.path());
        config.fsync = FsyncPolicy::Always;
        config.snapshot_every = 0;
        let (mut store, _) = DurableEngine::open(config).expect("open");
        let mut events = Vec::new();
        let mut index = 0u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                for _ in 0..batch {
                    let _ = store.apply(&lease_command(index), &mut events);
                    events.clear();
                    index += 1;
                }
                store.commit().expect("commit");
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = StoreConfig::new(dir.path());
    config.fsync = FsyncPolicy::Never;
    config.snapshot_every = 0;
    let (mut store, _) = DurableEngine::open(config).expect("open");
    let mut events = Vec::new();
    const RECORDS: u64 = 200_000;
    for index in 0..RECORDS {
        let _ = store.apply(&lease_command(index), &mut events);
        events.clear();
    }
    store.commit().expect("commit");
    drop(store);
    let mut group = c.benchmark_group("journal_decode");
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("scan_200k_records", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let count = ipsx_engine_runtime::journal::scan(dir.path(), |_, command| {
                    std::hint::black_box(command);
                })
                .expect("scan");
                assert_eq!(count, RECORDS);
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = journal;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = group_commit, decode
}
criterion_main!(journal);
