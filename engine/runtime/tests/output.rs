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
fn a_follower_sees_the_clock_move_when_nothing_else_happens() {
    let dir = tempfile::tempdir().expect("dir");
    let shard = shard(dir.path());
    let follower = shard.follow(1 << 16).expect("follow");
    let tick = |at: u64| {
        let outcome = shard
            .submit_at(Some(Timestamp(at)), CommandKind::Tick)
            .expect("submit");
        assert_eq!(outcome.result.map(|events| events.len()), Ok(0));
    };
    let next = || match follower.recv_timeout(Duration::from_secs(10)) {
        Some(Followed::Batch(batch)) => batch,
        other => panic!("no batch: {other:?}"),
    };
    // An empty market: ticks make no events, yet each one that moves the clock is published,
    // so a follower that acts on time (the payment hub) knows how far the engine has gone.
    tick(EPOCH.0);
    let first = next();
    assert_eq!((first.at, first.events.len()), (EPOCH, 0));
    // The same second again is no news; the next one is.
    tick(EPOCH.0);
    tick(EPOCH.0 + 5);
    let second = next();
    assert_eq!(
        (second.at, second.events.len()),
        (Timestamp(EPOCH.0 + 5), 0)
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

/// Answers leave a batch sharing one buffer of its events: each submitter must still get
/// exactly its own command's events, and a follower joining mid-batch only what came after.
#[test]
fn commands_answered_in_one_batch_each_get_their_own_events() {
    let dir = tempfile::tempdir().expect("dir");
    let shard = shard(dir.path());
    let shape = MarketShape {
        countries: 3,
        offers: 300,
        ips_per_offer: 4,
        providers: 30,
    };
    let mut engine = Engine::new(EngineConfig::default());
    let mut commands: Vec<ipsx_engine::Command> = (0..shape.offers)
        .map(|index| ipsx_engine::Command {
            at: EPOCH,
            kind: CommandKind::PlaceOffer(shape.offer(index)),
        })
        .collect();
    // Leases, some refused (a lease that finds no IP is accepted with no deal; one asking
    // for more IPs than a request may is refused): refusals have no events to share.
    commands.extend((0..2_000).map(|index| ipsx_engine::Command {
        at: EPOCH,
        kind: CommandKind::SubmitRequest(shape.lease(
            index,
            if index % 97 == 0 {
                u32::MAX
            } else {
                1 + (index % 3) as u32
            },
            30,
        )),
    }));
    let expected: Vec<Result<Vec<Event>, ipsx_engine::EngineError>> = commands
        .iter()
        .map(|command| {
            let mut events = Vec::new();
            engine.apply(command, &mut events).map(|()| events)
        })
        .collect();

    // Hold the writer inside a read while everything is queued, so that it all arrives as one
    // batch, the follower joining in the middle of it.
    let (held, writer_held) = crossbeam_channel::bounded(1);
    let (release, gate) = crossbeam_channel::bounded::<()>(1);
    shard
        .query_then(
            move |_| {
                let _ = held.send(());
                let _ = gate.recv_timeout(Duration::from_secs(30));
            },
            |()| {},
        )
        .expect("query");
    writer_held
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer runs the read");
    let (replies, answers) = crossbeam_channel::unbounded();
    let join_after = 1_000;
    let mut follower = None;
    for (tag, command) in commands.into_iter().enumerate() {
        if tag == join_after {
            follower = Some(shard.follow(1 << 16).expect("follow"));
        }
        shard
            .send(ipsx_engine_runtime::Submission {
                at: Some(command.at),
                kind: command.kind,
                reply: Some(replies.clone()),
                tag: tag as u64,
            })
            .expect("send");
    }
    release.send(()).expect("release the writer");
    let mut outcomes: Vec<_> = (0..expected.len())
        .map(|_| {
            answers
                .recv_timeout(Duration::from_secs(30))
                .expect("answer")
        })
        .collect();
    outcomes.sort_by_key(|outcome| outcome.tag);
    let batches = shard
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches <= 3,
        "{batches} batches: the commands should share one"
    );
    // The writer counts a batch's commands once per batch, before its answers leave.
    let handled = shard
        .stats()
        .commands
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        handled,
        expected.len() as u64,
        "every command, refused or not, is counted"
    );
    for (outcome, expected) in outcomes.iter().zip(&expected) {
        let got = outcome.result.as_ref().map(|events| events.to_vec());
        assert_eq!(got, expected.as_ref().cloned(), "command {}", outcome.tag);
    }
    assert!(expected.iter().any(Result::is_err), "some are refused");

    let after_join: Vec<Event> = expected[join_after..]
        .iter()
        .flat_map(|result| result.iter().flatten().cloned())
        .collect();
    let follower = follower.expect("joined");
    let mut followed = Vec::new();
    while followed.len() < after_join.len() {
        match follower.recv_timeout(Duration::from_secs(10)) {
            Some(Followed::Batch(batch)) => followed.extend(batch.events.iter().cloned()),
            other => panic!("{other:?} after {} events", followed.len()),
        }
    }
    assert_eq!(
        followed, after_join,
        "the follower sees what came after it joined"
    );
    shard.shutdown().expect("shutdown");
}
