//! The store on disk: torn tails, damaged files, snapshots, and the shard and exchange fronts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ipsx_engine::{CommandKind, Country, EngineError, OfferId, RequestId, Timestamp};
use ipsx_engine_runtime::workload::{EPOCH, MarketShape, mixed_stream};
use ipsx_engine_runtime::{
    DurableEngine, Exchange, FsyncPolicy, ShardConfig, ShardHandle, StoreConfig, StoreError,
    SubmitError,
};

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.snapshot_every = 0;
    config
}

/// Applies stream commands `range` and commits; returns the state hash.
fn write_stream(store: &mut DurableEngine, range: std::ops::Range<u64>) -> [u8; 32] {
    let mut events = Vec::new();
    for index in range {
        let _ = store.apply(&mixed_stream(index), &mut events);
        events.clear();
    }
    store.commit().expect("commit");
    store.engine().state_hash()
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_torn_record_at_the_tail_is_cut_and_writing_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Unsynced, the journal only appends: the segment ends where its records do, and the
    // garbage below goes right after them. (Synced, it writes into zero-filled room: see
    // the next story.)
    let unsynced = StoreConfig {
        fsync: FsyncPolicy::Never,
        ..config(dir.path())
    };
    let (mut store, recovery) = DurableEngine::open(unsynced.clone()).expect("open");
    assert_eq!(recovery.last_seq, 0);
    let hash = write_stream(&mut store, 0..500);
    let last = store.last_seq();
    drop(store);

    // A crash in the middle of a write: half a header and some garbage.
    let segment = files(dir.path(), "journal-").pop().expect("a segment");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    file.write_all(&[42, 0, 0, 0, 7, 7]).expect("garbage");
    drop(file);

    let (mut store, recovery) = DurableEngine::open(unsynced.clone()).expect("recovers");
    assert_eq!(recovery.torn_bytes, 6);
    assert_eq!(recovery.last_seq, last);
    assert_eq!(store.engine().state_hash(), hash);
    let hash = write_stream(&mut store, 500..800);
    let last = store.last_seq();
    drop(store);
    let (store, recovery) = DurableEngine::open(unsynced.clone()).expect("recovers again");
    assert_eq!((recovery.last_seq, recovery.torn_bytes), (last, 0));
    assert_eq!(store.engine().state_hash(), hash);
}

/// Polls `done` until it holds, or fails after a generous deadline.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_synced_journal_writes_into_zero_filled_room_and_recovers_without_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    assert_eq!(config.fsync, FsyncPolicy::Always, "the default syncs");
    let (mut store, _) = DurableEngine::open(config.clone()).expect("open");
    let hash = write_stream(&mut store, 0..500);
    let last = store.last_seq();
    // The helper fills room past the records: the segment is longer than what it holds.
    let segment = files(dir.path(), "journal-").pop().expect("a segment");
    let records = {
        let mut seqs = 0;
        ipsx_engine_runtime::journal::scan(dir.path(), |_, _| seqs += 1).expect("scan");
        seqs
    };
    assert_eq!(records, last);
    eventually("room filled", || {
        fs::metadata(&segment).expect("metadata").len() >= 1 << 20
    });
    drop(store);

    // The zeros after the records are the journal's clean end, not a torn record.
    let (mut store, recovery) = DurableEngine::open(config.clone()).expect("recovers");
    assert_eq!((recovery.last_seq, recovery.torn_bytes), (last, 0));
    assert_eq!(store.engine().state_hash(), hash);
    // Writing goes on where the records end, not after the room.
    let hash = write_stream(&mut store, 500..900);
    let last = store.last_seq();
    drop(store);
    let (store, recovery) = DurableEngine::open(config.clone()).expect("recovers again");
    assert_eq!((recovery.last_seq, recovery.torn_bytes), (last, 0));
    assert_eq!(store.engine().state_hash(), hash);
    drop(store);

    // A crash in the middle of the next write: part of a record lands in the room. It is cut,
    // with the room after it, and nothing before it is lost.
    let segment = files(dir.path(), "journal-").pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    let end = records_end(&bytes);
    bytes[end..end + 6].copy_from_slice(&[42, 0, 0, 0, 7, 7]);
    fs::write(&segment, &bytes).expect("write");
    let (store, recovery) = DurableEngine::open(config).expect("recovers from the torn write");
    assert_eq!(recovery.last_seq, last);
    assert_eq!(recovery.torn_bytes, (bytes.len() - end) as u64);
    assert_eq!(store.engine().state_hash(), hash);
}

#[test]
fn a_power_cut_during_the_last_sync_loses_that_write_and_nothing_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let (mut store, _) = DurableEngine::open(config.clone()).expect("open");
    write_stream(&mut store, 0..500);
    let synced = store.last_seq();
    let segment = files(dir.path(), "journal-").pop().expect("a segment");
    let synced_end = records_end(&fs::read(&segment).expect("read"));
    // The last write: a group of a few kilobytes, into the room.
    write_stream(&mut store, 500..540);
    let written = store.last_seq();
    drop(store);
    let mut bytes = fs::read(&segment).expect("read");
    let written_end = records_end(&bytes);
    assert!(
        written_end - synced_end > 3 * 512,
        "a write of several sectors"
    );

    // The power went during its sync: one sector in its middle never reached the disk and
    // reads as the zeros the room held; the sectors around it did.
    let lost = (synced_end + 1).next_multiple_of(512) + 512;
    bytes[lost..lost + 512].fill(0);
    fs::write(&segment, &bytes).expect("write");
    let (mut store, recovery) = DurableEngine::open(config.clone()).expect("recovers");
    assert!(
        (synced..written).contains(&recovery.last_seq),
        "everything synced before the write is kept, and the write is cut at the lost \
         sector: recovered up to {}, synced {synced}, written {written}",
        recovery.last_seq
    );
    assert!(recovery.torn_bytes > 0);
    // The store goes on from there, and holds what it wrote next.
    let hash = write_stream(&mut store, 540..700);
    let last = store.last_seq();
    drop(store);
    let (store, recovery) = DurableEngine::open(config).expect("recovers again");
    assert_eq!((recovery.last_seq, recovery.torn_bytes), (last, 0));
    assert_eq!(store.engine().state_hash(), hash);
}

/// Where the records of a segment end: each is a 16-byte header (payload length first) and
/// its payload, back to back, and zeros follow the last.
fn records_end(segment: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = segment.get(at..at + 4) {
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        at += 16 + len;
    }
    at
}

#[test]
fn a_damaged_record_before_the_tail_stops_recovery() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = DurableEngine::open(config(dir.path())).expect("open");
    write_stream(&mut store, 0..300);
    drop(store);
    // A flipped bit early in the journal, with good records after it: not a torn tail, and
    // cutting there would drop acknowledged commands.
    let segment = files(dir.path(), "journal-").remove(0);
    let mut bytes = fs::read(&segment).expect("read");
    bytes[100] ^= 0xff;
    fs::write(&segment, bytes).expect("write");
    let error = DurableEngine::open(config(dir.path()))
        .err()
        .expect("refused");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
}

#[test]
fn a_journal_that_does_not_reach_back_to_the_state_is_a_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = DurableEngine::open(config(dir.path())).expect("open");
    write_stream(&mut store, 0..300);
    store
        .snapshot_and_wait()
        .expect("snapshot prunes the journal it covers");
    write_stream(&mut store, 300..400);
    drop(store);
    for snapshot in files(dir.path(), "snapshot-") {
        fs::remove_file(snapshot).expect("remove");
    }
    let error = DurableEngine::open(config(dir.path()))
        .err()
        .expect("refused");
    assert!(
        matches!(error, StoreError::Gap { expected: 1, .. }),
        "{error}"
    );
}

#[test]
fn recovery_starts_from_the_newest_readable_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = DurableEngine::open(config(dir.path())).expect("open");
    write_stream(&mut store, 0..400);
    store.snapshot_and_wait().expect("first snapshot");
    write_stream(&mut store, 400..800);
    store.snapshot_and_wait().expect("second snapshot");
    let hash = write_stream(&mut store, 800..1000);
    let last = store.last_seq();
    drop(store);

    let (store, recovery) = DurableEngine::open(config(dir.path())).expect("recovers");
    assert!(recovery.snapshot_seq.is_some());
    assert!(recovery.replayed < last);
    assert_eq!(store.engine().state_hash(), hash);
    drop(store);

    // The newest snapshot is damaged: the older one and the journal after it still recover.
    let newest = files(dir.path(), "snapshot-").pop().expect("snapshot");
    let mut bytes = fs::read(&newest).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&newest, bytes).expect("write");
    let (store, recovery) = DurableEngine::open(config(dir.path())).expect("falls back");
    let older = files(dir.path(), "snapshot-")[0].clone();
    assert!(
        older
            .to_str()
            .is_some_and(|p| p.contains(&format!("{:020}", recovery.snapshot_seq.unwrap_or(0))))
    );
    assert_eq!(recovery.last_seq, last);
    assert_eq!(store.engine().state_hash(), hash);
    drop(store);

    // Cut short, or cut inside its header: skipped the same way.
    for keep in [fs::metadata(&newest).expect("size").len() / 2, 10] {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .expect("open");
        file.set_len(keep).expect("truncate");
        let (store, recovery) = DurableEngine::open(config(dir.path())).expect("falls back");
        assert_eq!(recovery.last_seq, last);
        assert_eq!(store.engine().state_hash(), hash);
    }
}

#[test]
fn a_shard_answers_after_the_commit_and_refuses_bad_input_without_journaling_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut shard_config = ShardConfig::new(config(dir.path()));
    shard_config.tick_every = None;
    shard_config.store.fsync = FsyncPolicy::Always;
    let shard = ShardHandle::start(shard_config.clone()).expect("start");
    let shape = MarketShape {
        countries: 3,
        offers: 3,
        ips_per_offer: 4,
        providers: 3,
    };
    let placed = shard
        .submit_at(Some(EPOCH), CommandKind::PlaceOffer(shape.offer(0)))
        .expect("answered");
    assert_eq!(placed.seq, Some(1));
    let refused = shard
        .submit_at(
            Some(EPOCH),
            CommandKind::CancelOffer {
                offer: OfferId(99),
                provider: shape.offer(0).provider,
            },
        )
        .expect("answered");
    assert_eq!(refused.seq, None, "a refused command is not journaled");
    assert_eq!(refused.result, Err(EngineError::UnknownOffer(OfferId(99))));
    let backwards = shard
        .submit_at(Some(Timestamp(EPOCH.0 - 1)), CommandKind::Tick)
        .expect("answered");
    assert!(matches!(
        backwards.result,
        Err(EngineError::ClockWentBackwards { .. })
    ));
    let offers = shard
        .query(|engine| engine.offers().count())
        .expect("query");
    assert_eq!(offers, 1);
    shard.shutdown().expect("shutdown");

    let shard = ShardHandle::start(shard_config).expect("restart");
    assert_eq!(shard.recovery().last_seq, 1);
    assert_eq!(shard.query(|e| e.offers().count()).expect("query"), 1);
    assert_eq!(shard.depth().levels.iter().map(|l| l.ips).max(), Some(4));
}

#[test]
fn an_exchange_routes_markets_to_their_shards() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut template = ShardConfig::new(config(dir.path()));
    template.tick_every = None;
    // Every batch publishes its depth (before its answers), so each read below is exact.
    template.depth_every = std::time::Duration::ZERO;
    let exchange = Exchange::start(dir.path(), 2, &template).expect("start");
    let de = Country::parse("DE").expect("DE");
    let fr = Country::parse("FR").expect("FR");
    assert_eq!(exchange.shard_of_country(fr), exchange.shard_of_country(de));
    let elsewhere = Country::all()
        .find(|c| exchange.shard_of_country(*c) != exchange.shard_of_country(de))
        .expect("two shards own different countries");

    let mut offer = MarketShape {
        countries: 1,
        offers: 1,
        ips_per_offer: 2,
        providers: 1,
    }
    .offer(0);
    offer.country = de;
    offer.window.from = Timestamp(0);
    let placed = exchange
        .submit(CommandKind::PlaceOffer(offer.clone()))
        .expect("routed");
    let id = placed
        .result
        .expect("placed")
        .iter()
        .find_map(|e| match e {
            ipsx_engine::Event::OfferPlaced { offer, .. } => Some(*offer),
            _ => None,
        })
        .expect("an id");
    assert_eq!(
        usize::from(ipsx_engine::EngineConfig::shard_of(id.0)),
        exchange.shard_of_country(de)
    );
    assert_eq!(exchange.depth().ips(de, ipsx_engine::Protocol::Socks5), 2);

    let mut request = MarketShape {
        countries: 1,
        offers: 1,
        ips_per_offer: 1,
        providers: 1,
    }
    .lease(0, 1, 60);
    request.filters.countries = ipsx_engine::CountrySet::of(&[de]);
    let leased = exchange
        .submit(CommandKind::SubmitRequest(request.clone()))
        .expect("routed");
    assert!(
        leased
            .result
            .expect("accepted")
            .iter()
            .any(|e| matches!(e, ipsx_engine::Event::DealMade { .. }))
    );

    request.filters.countries = ipsx_engine::CountrySet::of(&[de, fr]);
    let same_shard = exchange
        .submit(CommandKind::SubmitRequest(request.clone()))
        .expect("one shard owns both");
    assert!(same_shard.result.is_ok());
    request.filters.countries = ipsx_engine::CountrySet::of(&[de, elsewhere]);
    assert!(matches!(
        exchange.submit(CommandKind::SubmitRequest(request.clone())),
        Err(SubmitError::CrossShard)
    ));
    request.filters.countries = ipsx_engine::CountrySet::ANY;
    assert!(matches!(
        exchange.submit(CommandKind::SubmitRequest(request)),
        Err(SubmitError::CrossShard)
    ));
    assert!(matches!(
        exchange.submit(CommandKind::CancelRequest {
            request: RequestId(7 << 48),
            requester: offer.provider,
        }),
        Err(SubmitError::UnknownShard(7))
    ));
    assert_eq!(exchange.depth().ips(de, ipsx_engine::Protocol::Socks5), 0);
    exchange
        .submit(CommandKind::CancelOffer {
            offer: id,
            provider: offer.provider,
        })
        .expect("routed")
        .result
        .expect("cancelled");
    exchange.shutdown().expect("shutdown");
}

/// The niceness of every thread of this process named `name` (Linux: `/proc/self/task`).
fn niceness_of_threads(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in fs::read_dir("/proc/self/task").expect("list threads") {
        let Ok(stat) = fs::read_to_string(task.expect("thread").path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "tid (comm) state ppid ...": niceness is the 19th field, the 17th after the name.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.ends_with(&format!("({name}")) {
            let nice = rest.split_whitespace().nth(16).expect("a niceness field");
            found.push(nice.parse().expect("a number"));
        }
    }
    found
}

#[test]
fn the_snapshot_thread_leaves_the_cpu_to_the_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_store, _) = DurableEngine::open(config(dir.path())).expect("open");
    // The thread lowers its own priority as it starts: wait for it, within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let nice = niceness_of_threads("ipsx-snapshot");
        if !nice.is_empty() && nice.iter().all(|n| *n == 19) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot threads at niceness {nice:?}"
        );
        std::thread::yield_now();
    }
}
