//! The shard's output stream: a follower sees exactly what the engine did, timers and refused
//! commands included: each deal's events in order, and the others in order. (The shard defers
//! lease ends and settles them between batches, so a deal's end may come a little later in the
//! stream than a plain engine puts it.)

use std::collections::BTreeMap;
use std::time::Duration;

use ipsx_engine::{
    CommandKind, DealId, DealStatus, Engine, EngineConfig, Event, OfferId, Timestamp,
};
use ipsx_engine_runtime::workload::{EPOCH, MarketShape, mixed_stream};
use ipsx_engine_runtime::{Followed, Follower, ShardConfig, ShardHandle, StoreConfig};

fn shard(dir: &std::path::Path) -> ShardHandle {
    let mut config = ShardConfig::new(StoreConfig::new(dir));
    // Time moves only with the commands the test sends.
    config.tick_every = None;
    ShardHandle::start(config).expect("shard")
}

/// Everything followed until a batch at or past `seq` arrives (the test's last command).
fn drain(follower: &Follower, until_at: Timestamp) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match follower.recv_timeout(Duration::from_secs(10)) {
            Some(Followed::Batch(batch)) => {
                events.extend(batch.events.iter().cloned());
                if batch.at >= until_at {
                    return events;
                }
            }
            Some(Followed::Lagged) => panic!("the follower lagged"),
            None => panic!("no batch within 10 s"),
        }
    }
}

/// Each deal's events in order, and the other events in order.
fn by_deal(events: &[Event]) -> (BTreeMap<DealId, Vec<Event>>, Vec<Event>) {
    let mut deals: BTreeMap<DealId, Vec<Event>> = BTreeMap::new();
    let mut others = Vec::new();
    for event in events {
        match event {
            Event::DealMade { deal, .. }
            | Event::DealStatusChanged { deal, .. }
            | Event::Rated { deal, .. } => deals.entry(*deal).or_default().push(event.clone()),
            _ => others.push(event.clone()),
        }
    }
    (deals, others)
}

#[test]
fn a_follower_sees_what_a_plain_engine_does_refusals_and_timers_included() {
    let dir = tempfile::tempdir().expect("dir");
    let shard = shard(dir.path());
    let follower = shard.follow(1 << 16).expect("follow");
    let mut engine = Engine::new(EngineConfig::default());
    let mut expected = Vec::new();
    let count = 3_000;
    for index in 0..count {
        let command = mixed_stream(index);
        let _ = engine.apply(&command, &mut expected);
        let _ = shard.submit_at(Some(command.at), command.kind);
    }
    // One last command far ahead, refused, so every lease ends and every timer fires.
    let end = Timestamp(EPOCH.0 + count / 20 + 10_000);
    let cancel_nothing = CommandKind::CancelOffer {
        offer: OfferId(u64::MAX >> 16),
        provider: ipsx_engine::Address::from_low_u64(1),
    };
    let _ = engine.apply(
        &ipsx_engine::Command {
            at: end,
            kind: cancel_nothing.clone(),
        },
        &mut expected,
    );
    let outcome = shard.submit_at(Some(end), cancel_nothing).expect("submit");
    assert!(outcome.result.is_err(), "the last command is refused");

    let followed = drain(&follower, end);
    let deals_made = followed
        .iter()
        .filter(|e| matches!(e, Event::DealMade { .. }))
        .count();
    let timed_out = followed
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::DealStatusChanged {
                    to: DealStatus::Completed | DealStatus::Voided,
                    ..
                }
            )
        })
        .count();
    assert!(deals_made > 100, "{deals_made} deals made");
    assert!(timed_out > 100, "{timed_out} deals ended by timers");
    assert_eq!(followed.len(), expected.len());
    assert!(
        by_deal(&followed) == by_deal(&expected),
        "the stream differs from the engine's own events"
    );
    shard.shutdown().expect("shutdown");
}

#[test]
fn a_follower_that_stops_reading_is_told_it_lagged_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let shard = shard(dir.path());
    let follower = shard.follow(1).expect("follow");
    let shape = MarketShape {
        countries: 1,
        offers: 10,
        ips_per_offer: 1,
        providers: 10,
    };
    for index in 0..10 {
        let outcome = shard
            .submit_at(Some(EPOCH), CommandKind::PlaceOffer(shape.offer(index)))
            .expect("submit");
        assert!(outcome.result.is_ok());
    }
    assert_eq!(
        follower.recv_timeout(Duration::from_secs(10)),
        Some(Followed::Lagged)
    );
    let Some(Followed::Batch(first)) = follower.recv_timeout(Duration::from_secs(10)) else {
        panic!("the batch queued before the lag is still there");
    };
    assert!(matches!(first.events[0], Event::OfferPlaced { .. }));
    shard.shutdown().expect("shutdown");
}

#[test]
fn a_second_of_lease_ends_settles_between_batches_and_reads_see_every_end() {
    let dir = tempfile::tempdir().expect("dir");
    let shard = shard(dir.path());
    let follower = shard.follow(1 << 16).expect("follow");
    // One country's market of 20 offers of 100 IPs; 2,000 one-IP leases made in one second,
    // whose providers never report ready: all void at their end, in the same second.
    let market = MarketShape {
        countries: 1,
        offers: 20,
        ips_per_offer: 100,
        providers: 4,
    };
    for index in 0..market.offers {
        let outcome = shard
            .submit_at(Some(EPOCH), CommandKind::PlaceOffer(market.offer(index)))
            .expect("submit");
        outcome.result.expect("offer placed");
    }
    let mut deals = Vec::new();
    for index in 0..2_000 {
        let lease = CommandKind::SubmitRequest(market.lease(index, 1, 5));
        let events = shard
            .submit_at(Some(EPOCH), lease)
            .expect("submit")
            .result
            .expect("accepted");
        deals.extend(events.iter().filter_map(|e| match e {
            Event::DealMade { deal, .. } => Some(*deal),
            _ => None,
        }));
    }
    assert_eq!(deals.len(), 2_000);

    // The next second's first command is not held up by the 2,000 ends: it is answered with
    // at most a few of them, and the rest follow between batches.
    let end = Timestamp(EPOCH.0 + 5);
    let tick = shard
        .submit_at(Some(end), CommandKind::Tick)
        .expect("submit")
        .result
        .expect("a tick is accepted");
    assert!(tick.len() < 100, "{} events with the tick", tick.len());

    // A read sees every lease ended, and so does a follower.
    let voided = shard
        .query(move |engine| {
            deals
                .iter()
                .filter(|id| engine.deal(**id).map(|d| d.status()) == Some(DealStatus::Voided))
                .count()
        })
        .expect("query");
    assert_eq!(voided, 2_000);
    let mut ended = 0;
    while ended < 2_000 {
        match follower.recv_timeout(Duration::from_secs(10)) {
            Some(Followed::Batch(batch)) => {
                ended += batch
                    .events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e,
                            Event::DealStatusChanged {
                                to: DealStatus::Voided,
                                ..
                            }
                        )
                    })
                    .count();
            }
            Some(Followed::Lagged) => panic!("the follower lagged"),
            None => panic!("only {ended} ends followed within 10 s"),
        }
    }
    assert_eq!(ended, 2_000);
    shard.shutdown().expect("shutdown");
}
