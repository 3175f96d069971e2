//! The tracker follows a real engine whose clock the tests move by hand.

use std::collections::{BTreeMap, BTreeSet};

use ipsx_engine::{Command, CommandKind, DealId, DealStatus, Engine, EngineConfig, Event};
use ipsx_engine_runtime::workload::{EPOCH, MarketShape, mixed_stream};
use proptest::prelude::*;

use super::{Scanned, Step, Tracker};

/// A market of one country, so every lease matches.
const SHAPE: MarketShape = MarketShape {
    countries: 1,
    offers: 4,
    ips_per_offer: 4,
    providers: 4,
};

struct Market {
    engine: Engine,
    tracker: Tracker,
}

impl Market {
    fn new(config: EngineConfig) -> Market {
        Market {
            engine: Engine::new(config),
            tracker: Tracker::default(),
        }
    }

    /// Applies a command at `EPOCH + second` and follows its events as the feed does.
    fn at(&mut self, second: u64, kind: CommandKind) -> Vec<Step> {
        let mut events = Vec::new();
        let command = Command {
            at: ipsx_engine::Timestamp(EPOCH.0 + second),
            kind,
        };
        let _ = self.engine.apply(&command, &mut events);
        self.follow(&events)
    }

    fn follow(&mut self, events: &[Event]) -> Vec<Step> {
        let ids = self.tracker.reads_after(events);
        let read = self.read(ids);
        self.tracker.take(read, self.engine.now().0)
    }

    /// What the feed does after it fell behind.
    fn reread(&mut self) -> Vec<Step> {
        let (last, mut ids) = self.tracker.reads_to_catch_up();
        ids.extend(
            self.engine
                .deals()
                .map(|deal| deal.id.0)
                .filter(|id| *id > last),
        );
        let read = self.read(ids);
        self.tracker.take(read, self.engine.now().0)
    }

    fn read(&self, ids: Vec<u64>) -> Vec<(u64, Option<Scanned>)> {
        ids.into_iter()
            .map(|id| (id, self.engine.deal(DealId(id)).map(Scanned::of)))
            .collect()
    }

    fn lease(&mut self, second: u64, duration: u64) -> (Vec<Step>, DealId) {
        let steps = self.at(
            second,
            CommandKind::SubmitRequest(SHAPE.lease(0, 1, duration)),
        );
        let deal = match steps.first() {
            Some(Step::Made(view)) => DealId(view.deal),
            other => panic!("no deal made: {other:?}"),
        };
        (steps, deal)
    }

    fn ready(&mut self, second: u64, deal: DealId) -> Vec<Step> {
        let provider = self.engine.deal(deal).expect("deal").provider;
        self.at(second, CommandKind::ProviderReady { deal, provider })
    }
}

fn market() -> Market {
    let mut market = Market::new(EngineConfig::default());
    for index in 0..SHAPE.offers {
        market.at(0, CommandKind::PlaceOffer(SHAPE.offer(index)));
    }
    market
}

fn kinds(steps: &[Step]) -> Vec<(&'static str, u64)> {
    steps
        .iter()
        .map(|step| match step {
            Step::Made(view) => ("made", view.deal),
            Step::Meter { view, .. } => ("meter", view.deal),
            Step::End { at, .. } => ("end", *at),
        })
        .collect()
}

#[test]
fn a_lease_is_made_metered_and_ended_at_its_end_by_the_engines_own_timer() {
    let mut market = market();
    let (steps, deal) = market.lease(10, 30);
    assert_eq!(kinds(&steps), [("made", deal.0)]);
    assert_eq!(kinds(&market.ready(11, deal)), [("meter", deal.0)]);
    assert!(market.at(20, CommandKind::Tick).is_empty(), "nothing new");
    // The lease runs 10..40; the engine's tick past its end completes it.
    assert_eq!(
        kinds(&market.at(41, CommandKind::Tick)),
        [("end", EPOCH.0 + 40)]
    );
    assert_eq!(market.tracker.open(), 0, "nothing finished is remembered");
}

/// What the hub charges for a deal the tracker metered from `from` and ended at `at`.
fn metered(view: &ipsx_api::DealView, from: u64, at: u64) -> u128 {
    let seconds = at.min(view.end).saturating_sub(from);
    crate::feed::rate_of(view) * u128::from(seconds)
}

#[test]
fn a_late_ready_report_is_metered_from_the_second_the_engine_stamped_on_it() {
    let mut market = market();
    let (_, deal) = market.lease(10, 30);
    // The provider reports ready three seconds into the lease, and the feed reads it while
    // its own clock still reads an earlier second: the requester pays from the report.
    let steps = market.ready(13, deal);
    let [Step::Meter { view, from }] = steps.as_slice() else {
        panic!("not metered: {steps:?}");
    };
    assert_eq!(*from, EPOCH.0 + 13);
    assert_eq!(view.start, EPOCH.0 + 10);
    let steps = market.at(41, CommandKind::Tick);
    let [Step::End { at, .. }] = steps.as_slice() else {
        panic!("not ended: {steps:?}");
    };
    let served = market.engine.deal(deal).expect("deal").served_value();
    assert_eq!(
        metered(view, *from, *at),
        served,
        "metered = what the anchor proves"
    );
}

#[test]
fn a_provider_that_never_reports_ready_ends_the_deal_at_the_deadline_unmetered() {
    let mut market = market();
    let (_, deal) = market.lease(10, 300);
    let steps = market.at(45, CommandKind::Tick);
    // Voided when the timer fired; its request then takes another IP: a new deal.
    assert_eq!(kinds(&steps)[0], ("end", EPOCH.0 + 45));
    assert!(matches!(&steps[1..], [Step::Made(view)] if view.deal != deal.0));
    assert_eq!(
        market.engine.deal(deal).map(|d| d.status()),
        Some(DealStatus::Voided)
    );
}

#[test]
fn a_deal_active_and_over_before_it_is_read_is_still_metered() {
    let mut market = market();
    let (_, deal) = market.lease(10, 30);
    let provider = market.engine.deal(deal).expect("deal").provider;
    // Ready, then cancelled, in one batch the feed reads only afterwards.
    let mut events = Vec::new();
    for (second, kind) in [
        (11, CommandKind::ProviderReady { deal, provider }),
        (
            15,
            CommandKind::CancelDeal {
                deal,
                requester: market.engine.deal(deal).expect("deal").requester,
            },
        ),
    ] {
        let command = Command {
            at: ipsx_engine::Timestamp(EPOCH.0 + second),
            kind,
        };
        market.engine.apply(&command, &mut events).expect("applied");
    }
    let steps = market.follow(&events);
    assert_eq!(kinds(&steps), [("meter", deal.0), ("end", EPOCH.0 + 15)]);
}

#[test]
fn a_failed_metering_is_read_again_at_the_next_chance() {
    let mut market = market();
    let (_, deal) = market.lease(10, 30);
    let steps = market.ready(11, deal);
    assert_eq!(kinds(&steps), [("meter", deal.0)]);
    market.tracker.followed_to(EPOCH.0 + 14);
    market.tracker.booking(steps[0].clone(), false);
    assert!(market.tracker.has_retries());
    assert_eq!(
        market.tracker.hub_clock(EPOCH.0 + 20),
        Some(EPOCH.0 + 11),
        "the hub holds at the second the lease is to bill from"
    );
    // The read meant to retry it fails too: the feed falls back to a full re-read.
    assert_eq!(market.tracker.reads_after(&[]), [deal.0]);
    assert_eq!(market.tracker.hub_clock(EPOCH.0 + 20), Some(EPOCH.0 + 11));
    let again = market.reread();
    assert_eq!(kinds(&again), [("meter", deal.0)]);
    assert!(!market.tracker.has_retries());
    assert_eq!(
        market.tracker.hub_clock(EPOCH.0 + 20),
        Some(EPOCH.0 + 11),
        "handed out again, not booked yet"
    );
    market.tracker.booking(again[0].clone(), true);
    assert_eq!(market.tracker.hub_clock(EPOCH.0 + 20), Some(EPOCH.0 + 14));
    assert!(market.follow(&[]).is_empty());
}

#[test]
fn a_failed_end_is_handed_out_again_and_holds_the_hub_at_its_second() {
    let mut market = market();
    let (_, deal) = market.lease(10, 30);
    market.ready(11, deal);
    let requester = market.engine.deal(deal).expect("deal").requester;
    let steps = market.at(15, CommandKind::CancelDeal { deal, requester });
    assert_eq!(kinds(&steps), [("end", EPOCH.0 + 15)]);
    market.tracker.followed_to(EPOCH.0 + 18);
    market.tracker.booking(steps[0].clone(), false);
    assert_eq!(market.tracker.hub_clock(EPOCH.0 + 20), Some(EPOCH.0 + 15));
    assert_eq!(market.tracker.take_unended(), steps);
    assert_eq!(market.tracker.hub_clock(EPOCH.0 + 20), Some(EPOCH.0 + 18));
}

#[test]
fn a_deal_pruned_from_the_book_is_forgotten() {
    let mut market = Market::new(EngineConfig {
        deal_retention: 60,
        ..EngineConfig::default()
    });
    market.at(0, CommandKind::PlaceOffer(SHAPE.offer(0)));
    let (_, deal) = market.lease(10, 30);
    market.ready(11, deal);
    market.at(41, CommandKind::Tick);
    market.at(200, CommandKind::Tick);
    assert!(market.engine.deal(deal).is_none(), "pruned");
    assert_eq!(market.tracker.open(), 0);
}

/// Per deal, what the tracker said, in order.
fn story(steps: &[Step], stories: &mut BTreeMap<u64, Vec<&'static str>>) {
    for step in steps {
        let (id, what) = match step {
            Step::Made(view) => (view.deal, "made"),
            Step::Meter { view, .. } => (view.deal, "meter"),
            Step::End { view, .. } => (view.deal, "end"),
        };
        stories.entry(id).or_default().push(what);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the traffic, and however often the feed falls behind and re-reads the engine,
    /// every deal is ended exactly once; every deal that was served is metered exactly once and
    /// before its end, and charged what the engine says it served; nothing is remembered once everything is over.
    #[test]
    fn every_deal_ends_once_and_every_served_one_is_metered_once(
        count in 200u64..1_500,
        batch in 1usize..40,
        lag_every in prop::option::of(2usize..20),
    ) {
        let mut market = Market::new(EngineConfig::default());
        let mut stories = BTreeMap::new();
        let mut meters = Vec::new();
        let mut served = BTreeSet::new();
        let mut events = Vec::new();
        let commands: Vec<Command> = (0..count).map(mixed_stream).collect();
        for (batches, chunk) in commands.chunks(batch).enumerate() {
            for command in chunk {
                let _ = market.engine.apply(command, &mut events);
            }
            for event in &events {
                if let Event::DealStatusChanged { deal, to: DealStatus::Active, .. } = event {
                    served.insert(deal.0);
                }
            }
            let steps = if lag_every.is_some_and(|every| (batches + 1) % every == 0) {
                events.clear();
                market.reread()
            } else {
                let steps = market.follow(&events);
                events.clear();
                steps
            };
            story(&steps, &mut stories);
            meters.extend(steps);
        }
        // Far ahead: every lease is over.
        let end = Command {
            at: ipsx_engine::Timestamp(EPOCH.0 + count / 20 + 10_000),
            kind: CommandKind::Tick,
        };
        let _ = market.engine.apply(&end, &mut events);
        let steps = market.follow(&events);
        story(&steps, &mut stories);
        meters.extend(steps);

        prop_assert_eq!(market.tracker.open(), 0);
        // What each metered deal is charged is what the engine says it served (the amount
        // its anchored `Ended` entry carries).
        let mut from = BTreeMap::new();
        for step in &meters {
            match step {
                Step::Meter { view, from: second } => {
                    from.insert(view.deal, *second);
                }
                Step::End { view, at } => {
                    if let (Some(second), Some(deal)) =
                        (from.get(&view.deal), market.engine.deal(DealId(view.deal)))
                    {
                        prop_assert_eq!(
                            metered(view, *second, *at),
                            deal.served_value(),
                            "deal {}",
                            view.deal
                        );
                    }
                }
                Step::Made(_) => {}
            }
        }
        let made: BTreeSet<u64> = market.engine.deals().map(|deal| deal.id.0).collect();
        prop_assert_eq!(stories.keys().copied().collect::<BTreeSet<_>>(), made);
        for (deal, told) in &stories {
            prop_assert_eq!(told.iter().filter(|w| **w == "end").count(), 1, "deal {}", deal);
            prop_assert_eq!(told.last(), Some(&"end"), "deal {}", deal);
            let meters = told.iter().filter(|w| **w == "meter").count();
            let completed = market.engine.deal(DealId(*deal)).map(|d| d.status())
                == Some(DealStatus::Completed);
            if lag_every.is_none() || completed {
                prop_assert_eq!(meters, usize::from(served.contains(deal)), "deal {}", deal);
            } else {
                prop_assert!(meters <= 1, "deal {}", deal);
            }
        }
    }
}

/// The feed and the payment hub as the node runs them, without the I/O: a real engine, the
/// tracker, and a real [`Hub`]. Most requesters have paid ahead, so each has settled every
/// second up to the hub's clock (the case where a hub running ahead would bite); every
/// other one pays nothing and is cut off once past the grace.
mod billing {
    use std::collections::BTreeMap;

    use alloy_primitives::Address;
    use ipsx_channels::{
        ChannelDomain, ChannelId, Hub, HubConfig, HubLease, LeaseTerms, PayerChannel,
        ReceiverChannel, SigningKey,
    };

    use super::*;
    use crate::market::to_alloy;

    const DEPOSIT: u128 = 1_000_000_000_000_000_000_000_000;

    pub(super) struct Billing {
        pub(super) hub: Hub,
        /// Each metered deal's terms as last booked.
        pub(super) terms: BTreeMap<u64, LeaseTerms>,
    }

    impl Billing {
        /// Channels for the workload's 1,000 requesters (every other one paid up front)
        /// and 50 providers.
        pub(super) fn new() -> Billing {
            let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
            let node = SigningKey::from_bytes(&[2u8; 32]).expect("key");
            let payer = SigningKey::from_bytes(&[3u8; 32]).expect("key");
            let config = HubConfig {
                // One proof per provider at most: signing is not what is tested.
                provider_interval: 1 << 40,
                ..HubConfig::default()
            };
            let mut hub = Hub::new(domain.clone(), node, config, EPOCH.0);
            for index in 0..1_000u64 {
                let requester = to_alloy(ipsx_engine::Address::from_low_u64(1_000_000 + index));
                let paid = (index % 2 != 0)
                    .then(|| domain.sign_balance_proof(&payer, ChannelId(index), DEPOSIT));
                hub.add_requester(ReceiverChannel::new(
                    ChannelId(index),
                    requester,
                    DEPOSIT,
                    paid,
                ));
            }
            for index in 1..=50u64 {
                let provider = to_alloy(ipsx_engine::Address::from_low_u64(index));
                hub.add_provider(PayerChannel::new(
                    ChannelId(10_000 + index),
                    provider,
                    DEPOSIT,
                    0,
                ));
            }
            Billing {
                hub,
                terms: BTreeMap::new(),
            }
        }

        /// Ticks the hub to `now`; the leases it cut, each with the second it was cut at.
        pub(super) fn tick(&mut self, now: u64) -> Vec<(u64, u64)> {
            let tick = self.hub.tick(now);
            tick.cuts
                .iter()
                .map(|cut| {
                    if let Some(terms) = self.hub.lease_terms(cut.lease) {
                        self.terms.insert(cut.lease, terms);
                    }
                    (cut.lease, cut.at)
                })
                .collect()
        }

        /// Books `steps` as `Payments::start_lease` and `end_lease` do, except those `fails`
        /// says a disk error stopped (nothing of them booked): each step, and whether it was.
        pub(super) fn book(
            &mut self,
            steps: Vec<Step>,
            mut fails: impl FnMut() -> bool,
        ) -> Vec<(Step, bool)> {
            let mut outcome = Vec::new();
            for step in steps {
                if !matches!(step, Step::Made(_)) && fails() {
                    outcome.push((step, false));
                    continue;
                }
                match &step {
                    Step::Made(_) => {}
                    Step::Meter { view, from } => {
                        let requester = view.requester;
                        let start = self.hub.billable_from(requester, *from);
                        if view.end <= start {
                            outcome.push((step, true));
                            continue;
                        }
                        let terms = LeaseTerms {
                            id: view.deal,
                            rate: crate::feed::rate_of(view),
                            start,
                            end: view.end,
                        };
                        self.hub
                            .add_lease(HubLease {
                                terms,
                                requester,
                                provider: view.provider,
                            })
                            .expect("lease");
                        self.terms.insert(view.deal, terms);
                    }
                    Step::End { view, at } => {
                        // Unknown to the hub: folded (ended and paid), its terms stand.
                        if self.hub.end_lease(view.deal, *at).is_ok()
                            && let Some(terms) = self.hub.lease_terms(view.deal)
                        {
                            self.terms.insert(view.deal, terms);
                        }
                    }
                }
                outcome.push((step, true));
            }
            outcome
        }
    }
}

/// The cut-off the node sends the engine for `deal`, cut at second `at`.
fn lapse(deal: u64, at: u64) -> CommandKind {
    CommandKind::PaymentLapsed {
        deal: DealId(deal),
        at: Some(ipsx_engine::Timestamp(at)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// However the hub's once-a-second tick falls between the engine's batches — even when a
    /// second boundary passes after the engine stamped a batch and before the feed follows
    /// it — however late a cut-off reaches the engine, and whichever bookings a disk error
    /// stops for a while, every lease is billed exactly what the engine says was served (the
    /// amount the anchor proves).
    #[test]
    fn what_the_hub_bills_is_what_the_engine_says_was_served(
        count in 200u64..1_500,
        batch in 1usize..40,
        ticks in prop::collection::vec(any::<bool>(), 64),
        disk_errors in prop::collection::vec(prop::bool::weighted(0.15), 97),
    ) {
        let mut market = Market::new(EngineConfig::default());
        let mut billing = billing::Billing::new();
        let mut events = Vec::new();
        let mut writes = 0usize;
        let mut fails = move || {
            writes += 1;
            disk_errors[writes % disk_errors.len()]
        };
        // Cut-offs on their way to the engine: they arrive with the next batch.
        let mut lapsed = Vec::new();
        // The feed's once-a-second work at wall second `wall`: what failed to book is tried
        // again (ends handed out again, deals not metered read again), then the hub ticks.
        let second = |market: &mut Market,
                          billing: &mut billing::Billing,
                          fails: &mut dyn FnMut() -> bool,
                          wall: u64| {
            let mut retry = market.tracker.take_unended();
            if market.tracker.has_retries() {
                retry.extend(market.follow(&[]));
            }
            for (step, booked) in billing.book(retry, &mut *fails) {
                market.tracker.booking(step, booked);
            }
            market
                .tracker
                .hub_clock(wall)
                .map_or_else(Vec::new, |now| billing.tick(now))
        };
        let commands: Vec<Command> = (0..count).map(mixed_stream).collect();
        for (index, chunk) in commands.chunks(batch).enumerate() {
            // Like the shard, stamp nothing before the engine's clock.
            let stamp = |at: ipsx_engine::Timestamp, engine: &Engine| at.max(engine.now());
            for (deal, cut_at) in lapsed.drain(..) {
                // It reaches the engine a second after the cut when the wall clock turned.
                let late = u64::from(ticks[(index + 1) % ticks.len()]);
                let at = stamp(ipsx_engine::Timestamp(cut_at + late), &market.engine);
                let _ = market.engine.apply(&Command { at, kind: lapse(deal, cut_at) }, &mut events);
            }
            for command in chunk {
                let at = stamp(command.at, &market.engine);
                let command = Command { at, kind: command.kind.clone() };
                let _ = market.engine.apply(&command, &mut events);
            }
            let at = market.engine.now().0;
            if ticks[index % ticks.len()] {
                // The wall clock turned the second before the feed followed this batch.
                lapsed.extend(second(&mut market, &mut billing, &mut fails, at + 1));
            }
            let steps = market.follow(&events);
            events.clear();
            market.tracker.followed_to(at);
            for (step, booked) in billing.book(steps, &mut fails) {
                market.tracker.booking(step, booked);
            }
            lapsed.extend(second(&mut market, &mut billing, &mut fails, at));
        }
        for (deal, cut_at) in lapsed.drain(..) {
            let at = ipsx_engine::Timestamp(cut_at + 1).max(market.engine.now());
            let _ = market.engine.apply(&Command { at, kind: lapse(deal, cut_at) }, &mut events);
        }
        let steps = market.follow(&events);
        events.clear();
        let mut never = || false;
        for (step, booked) in billing.book(steps, &mut never) {
            market.tracker.booking(step, booked);
        }
        // The disk works again: whatever failed is booked before the last tick.
        let end = Command {
            at: ipsx_engine::Timestamp(EPOCH.0 + count / 20 + 10_000),
            kind: CommandKind::Tick,
        };
        second(&mut market, &mut billing, &mut never, end.at.0);
        let _ = market.engine.apply(&end, &mut events);
        let steps = market.follow(&events);
        for (step, booked) in billing.book(steps, &mut never) {
            market.tracker.booking(step, booked);
        }
        // Everything booked: nothing holds the hub back any more.
        prop_assert!(!market.tracker.has_retries());
        market.tracker.followed_to(market.engine.now().0);
        prop_assert_eq!(market.tracker.hub_clock(u64::MAX), Some(market.engine.now().0));

        for deal in market.engine.deals() {
            let billed = billing.terms.get(&deal.id.0).map_or(0, |terms| {
                terms.rate * u128::from(terms.end - terms.start)
            });
            prop_assert_eq!(billed, deal.served_value(), "deal {}", deal.id.0);
        }
    }
}
