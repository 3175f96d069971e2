//! The order book as providers and requesters live it: one story per test.

use std::net::IpAddr;

use ipsx_engine::*;

const T0: u64 = 1_700_000_000;

struct Market {
    engine: Engine,
    events: Vec<Event>,
    now: u64,
    /// Commands run through [`Engine::apply_deferring`], settling nothing beyond what they
    /// look at.
    deferring: bool,
}

fn addr(n: u64) -> Address {
    Address::from_low_u64(n)
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

fn country(code: &str) -> Country {
    Country::parse(code).expect("test country")
}

fn offer(provider: u64, ips: IpSpec, code: &str, price: Amount) -> OfferSpec {
    OfferSpec {
        provider: addr(provider),
        ips,
        country: country(code),
        region: None,
        city: None,
        asn: 64_500,
        kind: IpKind::Residential,
        protocols: ProtocolSet::of(&[Protocol::Http, Protocol::Https, Protocol::Socks5]),
        window: Window {
            from: Timestamp(T0),
            until: Timestamp(T0 + 86_400),
        },
        min_lease: 5,
        max_lease: 86_400,
        price,
        tenants: 1,
    }
}

fn request(requester: u64, count: u32, max_price: Amount, tif: TimeInForce) -> RequestSpec {
    RequestSpec {
        requester: addr(requester),
        count,
        filters: Filters::default(),
        start: Start::Now,
        duration: 60,
        max_price,
        time_in_force: tif,
    }
}

impl Market {
    fn new() -> Market {
        Market {
            engine: Engine::new(EngineConfig {
                ready_timeout: 10,
                shard: 0,
                deal_retention: 3_600,
                rating_prior: 0,
            }),
            events: Vec::new(),
            now: T0,
            deferring: false,
        }
    }

    fn deferring() -> Market {
        Market {
            deferring: true,
            ..Market::new()
        }
    }

    fn at(&mut self, seconds_later: u64) -> &mut Self {
        self.now += seconds_later;
        self
    }

    fn run(&mut self, kind: CommandKind) -> Result<Vec<Event>, EngineError> {
        self.events.clear();
        let command = Command {
            at: Timestamp(self.now),
            kind,
        };
        let applied = if self.deferring {
            self.engine.apply_deferring(&command, 0, &mut self.events)
        } else {
            self.engine.apply(&command, &mut self.events)
        };
        applied.map(|()| self.events.clone())
    }

    fn place(&mut self, spec: OfferSpec) -> OfferId {
        let events = self
            .run(CommandKind::PlaceOffer(spec))
            .expect("offer placed");
        events
            .iter()
            .find_map(|e| match e {
                Event::OfferPlaced { offer, .. } => Some(*offer),
                _ => None,
            })
            .expect("an OfferPlaced event")
    }

    /// Submits a request; returns the deals it made right away.
    fn lease(&mut self, spec: RequestSpec) -> Vec<Deal> {
        let events = self
            .run(CommandKind::SubmitRequest(spec))
            .expect("request accepted");
        self.deals_in(&events)
    }

    fn deals_in(&self, events: &[Event]) -> Vec<Deal> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::DealMade { deal, .. } => self.engine.deal(*deal).cloned(),
                _ => None,
            })
            .collect()
    }

    /// A market of one offer: four IPs in FR at 5 from provider 1.
    fn of_four_ips() -> Market {
        let mut market = Market::new();
        market.place(offer(
            1,
            IpSpec::Cidr {
                network: ip("192.0.2.0"),
                prefix: 30,
            },
            "FR",
            5,
        ));
        market
    }

    /// Requester 7 leases one IP at once.
    fn lease_one_ip(&mut self) -> Deal {
        self.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0)
    }

    fn ready(&mut self, deal: &Deal) {
        self.run(CommandKind::ProviderReady {
            deal: deal.id,
            provider: deal.provider,
        })
        .expect("provider ready");
    }
}

#[test]
fn cheapest_offer_first_then_oldest_and_a_request_splits_across_providers() {
    let mut market = Market::new();
    let dear = market.place(offer(1, IpSpec::Single(ip("203.0.113.1")), "FR", 30));
    let old_cheap = market.place(offer(2, IpSpec::Single(ip("203.0.113.2")), "FR", 10));
    let new_cheap = market.place(offer(3, IpSpec::Single(ip("203.0.113.3")), "FR", 10));

    let deals = market.lease(request(9, 2, 100, TimeInForce::Ioc));
    let taken: Vec<(OfferId, Amount)> = deals.iter().map(|d| (d.offer, d.price)).collect();
    assert_eq!(taken, [(old_cheap, 10), (new_cheap, 10)]);
    assert_eq!(deals[0].provider, addr(2));
    assert_eq!(deals[1].provider, addr(3));

    // The expensive one is left, and only for a request that accepts its price.
    assert!(market.lease(request(9, 1, 29, TimeInForce::Ioc)).is_empty());
    let deals = market.lease(request(9, 1, 30, TimeInForce::Ioc));
    assert_eq!(deals[0].offer, dear);
    assert_eq!(deals[0].ips[..], [ip("203.0.113.1")]);
}

#[test]
fn ioc_takes_what_is_there_fok_takes_all_or_nothing() {
    let mut market = Market::new();
    market.place(offer(
        1,
        IpSpec::Cidr {
            network: ip("198.51.100.0"),
            prefix: 30,
        },
        "DE",
        5,
    ));

    let events = market
        .run(CommandKind::SubmitRequest(request(
            7,
            5,
            5,
            TimeInForce::Fok,
        )))
        .expect("accepted");
    assert!(market.deals_in(&events).is_empty());
    assert!(events.contains(&Event::RequestClosed {
        request: RequestId(1),
        filled: 0,
        end: RequestEnd::Killed,
    }));

    let events = market
        .run(CommandKind::SubmitRequest(request(
            7,
            5,
            5,
            TimeInForce::Ioc,
        )))
        .expect("accepted");
    assert_eq!(market.deals_in(&events)[0].ips.len(), 4);
    assert!(events.contains(&Event::RequestClosed {
        request: RequestId(2),
        filled: 4,
        end: RequestEnd::Unfilled,
    }));
}

#[test]
fn gtc_rests_fills_as_offers_arrive_and_expires() {
    let mut market = Market::new();
    let expires_at = Timestamp(T0 + 100);
    let events = market
        .run(CommandKind::SubmitRequest(request(
            7,
            3,
            50,
            TimeInForce::Gtc { expires_at },
        )))
        .expect("accepted");
    assert!(events.contains(&Event::RequestResting {
        request: RequestId(1),
        remaining: 3,
    }));

    market.at(10);
    let events = market
        .run(CommandKind::PlaceOffer(offer(
            1,
            IpSpec::List(vec![ip("192.0.2.1"), ip("192.0.2.2")]),
            "US",
            40,
        )))
        .expect("placed");
    let deals = market.deals_in(&events);
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].ips.len(), 2);
    assert_eq!(deals[0].start, Timestamp(T0 + 10));
    assert_eq!(
        market.engine.request(RequestId(1)).map(|r| r.remaining),
        Some(1)
    );
    market.ready(&deals[0]);

    // Too expensive for it: nothing happens.
    market.at(10);
    let events = market
        .run(CommandKind::PlaceOffer(offer(
            2,
            IpSpec::Single(ip("192.0.2.9")),
            "US",
            60,
        )))
        .expect("placed");
    assert!(market.deals_in(&events).is_empty());

    market.at(80);
    let events = market.run(CommandKind::Tick).expect("tick");
    assert!(events.contains(&Event::RequestClosed {
        request: RequestId(1),
        filled: 2,
        end: RequestEnd::Expired,
    }));
    assert_eq!(market.engine.resting_requests().count(), 0);
}

#[test]
fn a_calendar_lets_an_ip_serve_disjoint_windows_and_shared_ips_honour_their_cap() {
    let mut market = Market::new();
    market.place(offer(1, IpSpec::Single(ip("192.0.2.10")), "FR", 5));
    let mut shared = offer(2, IpSpec::Single(ip("192.0.2.20")), "DE", 5);
    shared.tenants = 2;
    market.place(shared);

    let mut later = request(7, 1, 5, TimeInForce::Ioc);
    later.filters.countries = CountrySet::of(&[country("FR")]);
    later.start = Start::At(Timestamp(T0 + 1_000));
    assert_eq!(market.lease(later.clone()).len(), 1);

    // Now, for 60 s: free before the later lease, so the same IP serves.
    let mut now = later.clone();
    now.start = Start::Now;
    let deals = market.lease(now.clone());
    assert_eq!(deals[0].ips[..], [ip("192.0.2.10")]);
    // Overlapping either booking: refused.
    let mut overlapping = later.clone();
    overlapping.start = Start::At(Timestamp(T0 + 990));
    assert!(market.lease(overlapping).is_empty());

    let mut german = request(8, 1, 5, TimeInForce::Ioc);
    german.filters.countries = CountrySet::of(&[country("DE")]);
    assert_eq!(market.lease(german.clone()).len(), 1);
    german.requester = addr(9);
    assert_eq!(market.lease(german.clone()).len(), 1);
    german.requester = addr(10);
    assert!(
        market.lease(german).is_empty(),
        "a third tenant is over the cap"
    );
    assert_eq!(
        market
            .engine
            .calendar(ip("192.0.2.20"))
            .map(<[Booking]>::len),
        Some(2)
    );
}

#[test]
fn an_ip_booked_from_a_few_seconds_ahead_serves_the_shortest_lease_before_it() {
    for mut market in [Market::new(), Market::deferring()] {
        market.place(offer(1, IpSpec::Single(ip("192.0.2.10")), "FR", 5));
        let mut ahead = request(7, 1, 5, TimeInForce::Ioc);
        ahead.start = Start::At(Timestamp(T0 + MIN_LEASE_SECONDS));
        assert_eq!(market.lease(ahead).len(), 1);

        // The shortest lease, from now, ends as the booked one starts: the same IP serves it.
        let mut now = request(8, 1, 5, TimeInForce::Ioc);
        now.duration = MIN_LEASE_SECONDS;
        let deals = market.lease(now.clone());
        assert_eq!(deals.len(), 1, "deferring: {}", market.deferring);
        assert_eq!(deals[0].ips[..], [ip("192.0.2.10")]);
        // A third overlaps one of the two.
        now.requester = addr(9);
        assert!(market.lease(now).is_empty());
    }
}

#[test]
fn filters_pick_only_matching_ips() {
    let mut market = Market::new();
    let mut mobile_paris = offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5);
    mobile_paris.kind = IpKind::Mobile;
    mobile_paris.city = Some("Paris".into());
    mobile_paris.asn = 3215;
    let mut smtp_dc = offer(2, IpSpec::Single(ip("192.0.2.2")), "FR", 5);
    smtp_dc.kind = IpKind::Datacenter;
    smtp_dc.protocols = ProtocolSet::of(&[Protocol::Smtp]);
    smtp_dc.asn = 16_276;
    let mut short_only = offer(3, IpSpec::Single(ip("192.0.2.3")), "FR", 5);
    short_only.max_lease = 30;
    market.place(mobile_paris);
    market.place(smtp_dc);
    market.place(short_only);

    let ask = |filters: Filters| {
        let mut spec = request(7, 3, 5, TimeInForce::Ioc);
        spec.filters = filters;
        spec
    };
    let leased = |market: &mut Market, filters: Filters| -> Vec<IpAddr> {
        let deals = market.lease(ask(filters));
        let ips = deals.iter().flat_map(|d| d.ips.clone()).collect();
        for deal in deals {
            market
                .run(CommandKind::CancelDeal {
                    deal: deal.id,
                    requester: deal.requester,
                })
                .expect("cancel");
        }
        ips
    };

    let city = Filters {
        city: Some("PARIS".into()),
        ..Filters::default()
    };
    assert_eq!(leased(&mut market, city), [ip("192.0.2.1")]);
    let kinds = Filters {
        kinds: KindSet::of(&[IpKind::Datacenter]),
        ..Filters::default()
    };
    assert_eq!(leased(&mut market, kinds), [ip("192.0.2.2")]);
    let smtp = Filters {
        protocols: ProtocolSet::of(&[Protocol::Smtp]),
        ..Filters::default()
    };
    assert_eq!(leased(&mut market, smtp), [ip("192.0.2.2")]);
    let asn = Filters {
        asn_include: vec![3215, 16_276],
        asn_exclude: vec![16_276],
        ..Filters::default()
    };
    assert_eq!(leased(&mut market, asn), [ip("192.0.2.1")]);
    let elsewhere = Filters {
        countries: CountrySet::of(&[country("DE"), country("US")]),
        ..Filters::default()
    };
    assert!(leased(&mut market, elsewhere).is_empty());
    // 60 s leases: the offer capped at 30 s is never taken.
    let any = leased(&mut market, Filters::default());
    assert_eq!(any, [ip("192.0.2.1"), ip("192.0.2.2")]);
}

#[test]
fn distinct_subnets_take_one_ip_per_24_and_per_48() {
    let mut market = Market::new();
    market.place(offer(
        1,
        IpSpec::List(vec![
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("198.51.100.1"),
            ip("2001:db8:1::1"),
            ip("2001:db8:1:2::1"),
            ip("2001:db8:2::1"),
        ]),
        "NL",
        5,
    ));
    let mut spec = request(7, 6, 5, TimeInForce::Ioc);
    spec.filters.distinct_subnets = true;
    let deals = market.lease(spec);
    assert_eq!(
        deals[0].ips[..],
        [
            ip("192.0.2.1"),
            ip("198.51.100.1"),
            ip("2001:db8:1::1"),
            ip("2001:db8:2::1")
        ]
    );
}

#[test]
fn cancelling_an_offer_withdraws_free_ips_while_deals_run_on() {
    let mut market = Market::new();
    let id = market.place(offer(
        1,
        IpSpec::List(vec![ip("192.0.2.1"), ip("192.0.2.2")]),
        "FR",
        5,
    ));
    let deal = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    market.ready(&deal);

    let refused = market.run(CommandKind::CancelOffer {
        offer: id,
        provider: addr(2),
    });
    assert_eq!(refused, Err(EngineError::NotOwner { party: addr(2) }));
    market
        .run(CommandKind::CancelOffer {
            offer: id,
            provider: addr(1),
        })
        .expect("cancelled");
    assert!(market.engine.offer(id).is_none());
    assert!(market.lease(request(8, 1, 5, TimeInForce::Ioc)).is_empty());
    assert_eq!(
        market.engine.deal(deal.id).map(Deal::status),
        Some(DealStatus::Active)
    );
    // The leased IP stays its provider's: another cannot offer it meanwhile.
    let theft = market.run(CommandKind::PlaceOffer(offer(
        2,
        IpSpec::Single(ip("192.0.2.1")),
        "FR",
        1,
    )));
    assert!(matches!(theft, Err(EngineError::IpOwnedByOther { .. })));
    market.at(60);
    let events = market.run(CommandKind::Tick).expect("tick");
    assert!(events.contains(&Event::DealStatusChanged {
        deal: deal.id,
        from: DealStatus::Active,
        to: DealStatus::Completed,
    }));
}

#[test]
fn a_provider_lists_its_live_offers_oldest_first_and_only_its_own() {
    let mut market = Market::new();
    let mut placed = Vec::new();
    for (n, provider) in [1, 2, 1, 1, 2, 1].into_iter().enumerate() {
        let ip = IpAddr::from([192, 0, 2, 10 + n as u8]);
        placed.push((
            provider,
            market.place(offer(provider, IpSpec::Single(ip), "FR", 5)),
        ));
    }
    let listed = |market: &Market, provider| -> Vec<OfferId> {
        market
            .engine
            .offers_of(addr(provider))
            .map(|o| o.id)
            .collect()
    };
    let of = |provider| -> Vec<OfferId> {
        placed
            .iter()
            .filter(|(p, _)| *p == provider)
            .map(|(_, id)| *id)
            .collect()
    };
    assert_eq!(listed(&market, 1), of(1));
    assert_eq!(listed(&market, 2), of(2));
    // A cancelled offer leaves its provider's list, wherever it stood in it.
    let (middle, last) = (of(1)[1], of(1)[3]);
    for offer in [middle, last] {
        market
            .run(CommandKind::CancelOffer {
                offer,
                provider: addr(1),
            })
            .expect("cancelled");
    }
    assert_eq!(listed(&market, 1), vec![of(1)[0], of(1)[2]]);
    assert_eq!(listed(&market, 2), of(2));
    assert!(
        listed(&market, 9).is_empty(),
        "a wallet never seen has none"
    );
    // A snapshot rebuilds the lists.
    let restored = Engine::restore(market.engine.snapshot());
    assert_eq!(
        restored
            .offers_of(addr(1))
            .map(|o| o.id)
            .collect::<Vec<_>>(),
        vec![of(1)[0], of(1)[2]]
    );
}

#[test]
fn amending_an_offer_changes_price_window_and_size_but_not_its_age() {
    let mut market = Market::new();
    let first = market.place(offer(
        1,
        IpSpec::List(vec![ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")]),
        "FR",
        9,
    ));
    let second = market.place(offer(2, IpSpec::Single(ip("192.0.2.9")), "FR", 5));
    let deal = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    assert_eq!(deal.offer, second);

    market
        .run(CommandKind::AmendOffer {
            offer: first,
            provider: addr(1),
            price: Some(5),
            window: None,
            max_ips: Some(2),
        })
        .expect("amended");
    assert_eq!(market.engine.offer_ips(first).map(|ips| ips.len()), Some(2));
    let deals = market.lease(request(7, 5, 5, TimeInForce::Ioc));
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].ips[..], [ip("192.0.2.1"), ip("192.0.2.2")]);

    let shrink = market.run(CommandKind::AmendOffer {
        offer: first,
        provider: addr(1),
        price: None,
        window: None,
        max_ips: Some(1),
    });
    assert_eq!(
        shrink,
        Err(EngineError::ShrinkBelowBooked {
            booked: 2,
            requested: 1
        })
    );

    market
        .run(CommandKind::AmendOffer {
            offer: second,
            provider: addr(2),
            price: None,
            window: Some(Window {
                from: Timestamp(T0),
                until: Timestamp(T0 + 30),
            }),
            max_ips: None,
        })
        .expect("window amended");
    market.at(30);
    let events = market.run(CommandKind::Tick).expect("tick");
    assert!(events.contains(&Event::OfferClosed { offer: second }));
}

#[test]
fn a_provider_that_never_gets_ready_is_voided_and_replaced() {
    let mut market = Market::new();
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    market.place(offer(2, IpSpec::Single(ip("192.0.2.2")), "FR", 6));
    let deal = market.lease(request(7, 1, 10, TimeInForce::Ioc)).remove(0);
    assert_eq!(deal.provider, addr(1));

    market.at(10);
    let events = market.run(CommandKind::Tick).expect("tick");
    assert!(events.contains(&Event::DealStatusChanged {
        deal: deal.id,
        from: DealStatus::Pending,
        to: DealStatus::Voided,
    }));
    let replacement = market.deals_in(&events).remove(0);
    assert_eq!(replacement.provider, addr(2));
    assert_eq!(replacement.request, deal.request);
    assert_eq!(
        (replacement.start, replacement.end),
        (Timestamp(T0 + 10), deal.end)
    );
    assert_eq!(market.engine.profile(addr(1)).no_shows, 1);
    // The failed provider's IP is free again for others.
    assert_eq!(market.lease(request(8, 1, 5, TimeInForce::Ioc)).len(), 1);
}

#[test]
fn deals_follow_the_agreement_protocol_and_refuse_illegal_moves() {
    let mut market = Market::of_four_ips();
    let [lapsing, dropping, cancelled] = [(); 3].map(|()| market.lease_one_ip());
    for deal in [&lapsing, &dropping] {
        market.ready(deal);
    }

    let early = market.run(CommandKind::PaymentLapsed {
        deal: cancelled.id,
        at: None,
    });
    assert_eq!(
        early,
        Err(EngineError::IllegalTransition {
            deal: cancelled.id,
            status: DealStatus::Pending,
            input: DealInput::PaymentLapsed,
        })
    );
    market
        .run(CommandKind::PaymentLapsed {
            deal: lapsing.id,
            at: None,
        })
        .expect("lapse");
    market
        .run(CommandKind::ProviderFailed {
            deal: dropping.id,
            provider: addr(1),
        })
        .expect("drop");
    market
        .run(CommandKind::CancelDeal {
            deal: cancelled.id,
            requester: addr(7),
        })
        .expect("cancel");
    let status = |m: &Market, d: &Deal| m.engine.deal(d.id).map(Deal::status);
    assert_eq!(status(&market, &lapsing), Some(DealStatus::PaymentLapsed));
    assert_eq!(
        status(&market, &dropping),
        Some(DealStatus::ProviderDropped)
    );
    assert_eq!(status(&market, &cancelled), Some(DealStatus::Cancelled));
    assert_eq!(
        market.run(CommandKind::ProviderReady {
            deal: lapsing.id,
            provider: addr(1)
        }),
        Err(EngineError::IllegalTransition {
            deal: lapsing.id,
            status: DealStatus::PaymentLapsed,
            input: DealInput::ProviderReady,
        })
    );
    // All three ended early, so every IP is free again.
    assert_eq!(
        market.lease(request(8, 4, 5, TimeInForce::Ioc))[0]
            .ips
            .len(),
        4
    );
    let profile = market.engine.profile(addr(7));
    assert_eq!((profile.lapsed, profile.cancelled), (1, 1));
    assert_eq!(market.engine.profile(addr(1)).dropped, 1);
}

#[test]
fn a_cut_off_closes_the_deal_at_the_second_billing_stopped_not_when_it_arrived() {
    let mut market = Market::of_four_ips();
    let [cut, late, early] = [(); 3].map(|()| market.lease_one_ip());
    market.at(2);
    for deal in [&cut, &late, &early] {
        market.ready(deal);
    }
    // The payments side cut all three at T0 + 10; the cut-offs reach the engine at T0 + 12.
    market.at(10);
    let closes = [(cut.id, T0 + 10), (late.id, T0 + 20), (early.id, T0)];
    for (deal, at) in closes {
        market
            .run(CommandKind::PaymentLapsed {
                deal,
                at: Some(Timestamp(at)),
            })
            .expect("lapse");
    }
    let closed = |deal| market.engine.deal(deal).and_then(|d| d.closed_at);
    // Where billing stopped; a second later than now is taken as now; one before the
    // provider served as the second it began to.
    assert_eq!(closed(cut.id), Some(Timestamp(T0 + 10)));
    assert_eq!(closed(late.id), Some(Timestamp(T0 + 12)));
    assert_eq!(closed(early.id), Some(Timestamp(T0 + 2)));
    let served = |deal| market.engine.deal(deal).map(Deal::served_value);
    assert_eq!(served(cut.id), Some(5 * 8), "8 seconds billed, 8 served");
    assert_eq!(served(early.id), Some(0));
}

#[test]
fn ratings_build_profiles_that_later_requests_filter_on() {
    let mut market = Market::new();
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    market.place(offer(2, IpSpec::Single(ip("192.0.2.2")), "FR", 6));
    let first = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    market.ready(&first);

    let too_soon = market.run(CommandKind::Rate {
        deal: first.id,
        rater: addr(7),
        score: 5,
    });
    assert_eq!(too_soon, Err(EngineError::NotFinished { deal: first.id }));
    market.at(60);
    market
        .run(CommandKind::Rate {
            deal: first.id,
            rater: addr(7),
            score: 2,
        })
        .expect("rated");
    market
        .run(CommandKind::Rate {
            deal: first.id,
            rater: addr(1),
            score: 5,
        })
        .expect("rated back");
    assert_eq!(
        market.run(CommandKind::Rate {
            deal: first.id,
            rater: addr(7),
            score: 4
        }),
        Err(EngineError::AlreadyRated { deal: first.id })
    );
    assert_eq!(
        market.run(CommandKind::Rate {
            deal: first.id,
            rater: addr(3),
            score: 4
        }),
        Err(EngineError::NotOwner { party: addr(3) })
    );
    assert_eq!(market.engine.rating(addr(1)), Some(200));
    assert_eq!(market.engine.rating(addr(7)), Some(500));

    // Provider 1 (2 stars) is skipped for a 3-star minimum; provider 2 (unrated) too.
    let mut picky = request(8, 2, 10, TimeInForce::Ioc);
    picky.filters.min_rating = Some(300);
    assert!(market.lease(picky).is_empty());
    let mut lenient = request(8, 2, 10, TimeInForce::Ioc);
    lenient.filters.min_rating = Some(150);
    let deals = market.lease(lenient);
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].provider, addr(1));
}

#[test]
fn a_wallet_is_never_matched_with_its_own_offer() {
    let mut market = Market::new();
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    assert!(
        market.lease(request(1, 1, 10, TimeInForce::Ioc)).is_empty(),
        "its own offer is the only one: nothing is leased"
    );
    // Wallet 3 rests a request for two IPs: one comes from wallet 1 at once.
    let gtc = TimeInForce::Gtc {
        expires_at: Timestamp(T0 + 600),
    };
    let first = market.lease(request(3, 2, 10, gtc));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].provider, addr(1));
    // Its own offer placed later does not fill the rest ...
    market.place(offer(3, IpSpec::Single(ip("192.0.2.3")), "FR", 5));
    let providers = |m: &Market| -> Vec<Address> {
        m.engine
            .deals()
            .filter(|d| d.requester == addr(3))
            .map(|d| d.provider)
            .collect()
    };
    assert_eq!(providers(&market), vec![addr(1)]);
    // ... another wallet's offer does.
    market.place(offer(4, IpSpec::Single(ip("192.0.2.4")), "FR", 5));
    assert_eq!(providers(&market), vec![addr(1), addr(4)]);
    assert!(market.engine.deals().all(|d| d.provider != d.requester));
}

#[test]
fn stars_weigh_what_the_rated_deal_cost_and_unserved_deals_cannot_be_rated() {
    let mut market = Market::new();
    market.engine = Engine::new(EngineConfig {
        ready_timeout: 10,
        shard: 0,
        deal_retention: 3_600,
        rating_prior: 100_000,
    });
    // A provider (1) and its friend (9) run a cheap ring: a 5-second deal at price 1.
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 1));
    let mut cheap = request(9, 1, 1, TimeInForce::Ioc);
    cheap.duration = 5;
    let ring = market.lease(cheap).remove(0);
    market.ready(&ring);
    market.at(5);
    market.run(CommandKind::Tick).expect("tick");
    market
        .run(CommandKind::Rate {
            deal: ring.id,
            rater: addr(9),
            score: 5,
        })
        .expect("the friend rates");
    let lifted = market.engine.rating(addr(1)).expect("rated");
    assert!(
        lifted < 310,
        "five stars on a deal worth 5 barely move a prior of 100,000: {lifted}"
    );
    let mut picky = request(8, 1, 10, TimeInForce::Ioc);
    picky.filters.min_rating = Some(450);
    assert!(
        market.lease(picky).is_empty(),
        "the ring does not get past a 4.5-star filter"
    );

    // A deal that was never served cannot be rated: the provider never reported ready.
    market.place(offer(2, IpSpec::Single(ip("192.0.2.2")), "DE", 1));
    let mut other = request(8, 1, 1, TimeInForce::Ioc);
    other.filters.countries = CountrySet::of(&[country("DE")]);
    let no_show = market
        .lease(other)
        .into_iter()
        .find(|d| d.provider == addr(2))
        .expect("a deal with provider 2");
    market.at(20);
    market.run(CommandKind::Tick).expect("tick");
    assert_eq!(
        market.run(CommandKind::Rate {
            deal: no_show.id,
            rater: addr(8),
            score: 1,
        }),
        Err(EngineError::NothingServed { deal: no_show.id })
    );

    // Real usage at full price does move the rating: 30 IP-seconds at 5,000 = 150,000.
    market.place(offer(1, IpSpec::Single(ip("192.0.2.5")), "NL", 5_000));
    let mut big = request(7, 1, 5_000, TimeInForce::Ioc);
    big.filters.countries = CountrySet::of(&[country("NL")]);
    big.duration = 30;
    let paid = market
        .lease(big)
        .into_iter()
        .find(|d| d.provider == addr(1))
        .expect("a deal with provider 1");
    market.ready(&paid);
    market.at(30);
    market.run(CommandKind::Tick).expect("tick");
    market
        .run(CommandKind::Rate {
            deal: paid.id,
            rater: addr(7),
            score: 5,
        })
        .expect("rated");
    // (3 x 100,000 + 5 x 5 + 5 x 150,000) / 250,005 = 4.20 stars.
    assert_eq!(market.engine.rating(addr(1)), Some(420));
}

#[test]
fn depth_counts_unleased_ips_per_country_protocol_kind_and_price() {
    let mut market = Market::new();
    market.place(offer(
        1,
        IpSpec::Cidr {
            network: ip("192.0.2.0"),
            prefix: 29,
        },
        "FR",
        5,
    ));
    market.place(offer(2, IpSpec::Single(ip("192.0.2.99")), "FR", 7));
    market.lease(request(7, 3, 5, TimeInForce::Ioc));
    let depth = market.engine.depth();
    assert_eq!(depth.ips(country("FR"), Protocol::Socks5), 6);
    assert_eq!(depth.ips(country("FR"), Protocol::Smtp), 0);
    let levels: Vec<(Amount, u64)> = depth
        .levels
        .iter()
        .filter(|l| l.protocol == Protocol::Http)
        .map(|l| (l.price, l.ips))
        .collect();
    assert_eq!(levels, [(5, 5), (7, 1)]);
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let mut market = Market::new();
    let id = market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    market.lease(request(7, 1, 5, TimeInForce::Ioc));
    let before = market.engine.state_hash();

    type Expect = fn(&EngineError) -> bool;
    let mut cases: Vec<(CommandKind, Expect)> = Vec::new();
    let mut empty = offer(1, IpSpec::List(vec![]), "FR", 5);
    cases.push((CommandKind::PlaceOffer(empty.clone()), |e| {
        *e == EngineError::Input(InputError::NoIps)
    }));
    empty.ips = IpSpec::Cidr {
        network: ip("10.0.0.0"),
        prefix: 8,
    };
    cases.push((CommandKind::PlaceOffer(empty.clone()), |e| {
        matches!(e, EngineError::Input(InputError::TooManyIps { .. }))
    }));
    let mut zero_price = offer(1, IpSpec::Single(ip("192.0.2.5")), "FR", 0);
    cases.push((CommandKind::PlaceOffer(zero_price.clone()), |e| {
        *e == EngineError::Input(InputError::ZeroPrice)
    }));
    zero_price.price = 1;
    zero_price.window.until = Timestamp(T0 - 1);
    cases.push((CommandKind::PlaceOffer(zero_price.clone()), |e| {
        *e == EngineError::Input(InputError::EmptyWindow)
    }));
    cases.push((
        CommandKind::PlaceOffer(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5)),
        |e| matches!(e, EngineError::IpAlreadyOffered { .. }),
    ));
    let mut zero = request(7, 0, 5, TimeInForce::Ioc);
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        *e == EngineError::Input(InputError::ZeroCount)
    }));
    zero.count = 1;
    zero.duration = 4;
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        *e == EngineError::Input(InputError::DurationOutOfRange(4))
    }));
    zero.duration = MAX_LEASE_SECONDS + 1;
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        matches!(e, EngineError::Input(InputError::DurationOutOfRange(_)))
    }));
    zero.duration = 60;
    zero.start = Start::At(Timestamp(T0 - 1));
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        matches!(e, EngineError::Input(InputError::StartInPast { .. }))
    }));
    zero.start = Start::Now;
    zero.max_price = Amount::MAX;
    zero.count = 2;
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        *e == EngineError::Input(InputError::Overflow)
    }));
    zero.max_price = 5;
    zero.time_in_force = TimeInForce::Gtc {
        expires_at: Timestamp(T0),
    };
    cases.push((CommandKind::SubmitRequest(zero.clone()), |e| {
        matches!(e, EngineError::Input(InputError::ExpiryNotInFuture { .. }))
    }));
    cases.push((
        CommandKind::CancelOffer {
            offer: OfferId(99),
            provider: addr(1),
        },
        |e| *e == EngineError::UnknownOffer(OfferId(99)),
    ));
    cases.push((
        CommandKind::CancelRequest {
            request: RequestId(1),
            requester: addr(7),
        },
        |e| *e == EngineError::UnknownRequest(RequestId(1)),
    ));
    cases.push((
        CommandKind::ProviderReady {
            deal: DealId(42),
            provider: addr(1),
        },
        |e| *e == EngineError::UnknownDeal(DealId(42)),
    ));
    cases.push((
        CommandKind::ProviderReady {
            deal: DealId(1),
            provider: addr(7),
        },
        |e| *e == EngineError::NotOwner { party: addr(7) },
    ));
    cases.push((
        CommandKind::AmendOffer {
            offer: id,
            provider: addr(1),
            price: None,
            window: None,
            max_ips: None,
        },
        |e| *e == EngineError::Input(InputError::NothingToAmend),
    ));
    cases.push((
        CommandKind::Rate {
            deal: DealId(1),
            rater: addr(7),
            score: 6,
        },
        |e| *e == EngineError::Input(InputError::BadScore(6)),
    ));
    for (kind, expected) in cases {
        let result = market.run(kind.clone());
        let error = result.expect_err("bad input must be refused");
        assert!(expected(&error), "{kind:?} gave {error:?}");
        assert!(!error.to_string().is_empty());
        assert_eq!(
            market.engine.state_hash(),
            before,
            "{kind:?} changed the state"
        );
    }

    let backwards = market
        .engine
        .apply(&Command::tick(Timestamp(T0 - 5)), &mut Vec::new());
    assert!(matches!(
        backwards,
        Err(EngineError::ClockWentBackwards { .. })
    ));
    assert_eq!(market.engine.state_hash(), before);
}

#[test]
fn a_snapshot_restores_an_identical_engine() {
    let mut market = Market::new();
    market.place(offer(
        1,
        IpSpec::Cidr {
            network: ip("2001:db8::"),
            prefix: 124,
        },
        "JP",
        3,
    ));
    let deal = market.lease(request(7, 5, 5, TimeInForce::Ioc)).remove(0);
    market.ready(&deal);
    let events = market
        .run(CommandKind::SubmitRequest(request(
            8,
            20,
            5,
            TimeInForce::Gtc {
                expires_at: Timestamp(T0 + 500),
            },
        )))
        .expect("rests");
    let rest = market.deals_in(&events).remove(0);
    assert_eq!(rest.ips.len(), 11);
    market.ready(&rest);

    let bytes = market.engine.snapshot().to_bytes();
    let restored = Engine::restore(Snapshot::from_bytes(&bytes).expect("reads back"));
    assert_eq!(restored.state_hash(), market.engine.state_hash());
    assert_eq!(restored.depth(), market.engine.depth());
    assert!(Snapshot::from_bytes(&bytes[..bytes.len() / 2]).is_err());

    // Both go on identically: both leases end, the resting request takes the 9 IPs it still wants.
    let mut original = market.engine.clone();
    let mut copy = restored;
    let later = Command::tick(Timestamp(T0 + 60));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    original.apply(&later, &mut a).expect("tick");
    copy.apply(&later, &mut b).expect("tick");
    assert_eq!(a, b);
    assert!(
        a.iter()
            .any(|e| matches!(e, Event::DealMade { ips: 9, .. }))
    );
    assert_eq!(original.state_hash(), copy.state_hash());
}

#[test]
fn finished_deals_leave_the_book_after_the_retention() {
    let mut market = Market::new();
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    let deal = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    market.ready(&deal);
    market.at(60);
    market.run(CommandKind::Tick).expect("lease ends");
    assert_eq!(market.engine.deals_of(addr(7)).count(), 1);
    market.at(3_599);
    market.run(CommandKind::Tick).expect("tick");
    assert!(market.engine.deal(deal.id).is_some());
    market.at(1);
    market.run(CommandKind::Tick).expect("tick");
    assert!(market.engine.deal(deal.id).is_none());
    assert_eq!(market.engine.deals_of(addr(7)).count(), 0);
    assert_eq!(
        market.run(CommandKind::Rate {
            deal: deal.id,
            rater: addr(7),
            score: 5
        }),
        Err(EngineError::UnknownDeal(deal.id))
    );
    // Ids keep counting; the profile keeps the history.
    let next = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    assert_eq!(next.id, DealId(deal.id.0 + 1));
    assert_eq!(market.engine.profile(addr(7)).completed, 1);
}

#[test]
fn a_long_lease_does_not_keep_every_short_deal_after_it_in_memory() {
    let mut market = Market::new();
    // A day-long lease first, then 500 5-second ones on another IP.
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    let mut long = request(2, 1, 10, TimeInForce::Ioc);
    long.duration = 80_000;
    let long = market.lease(long).remove(0);
    market.ready(&long);
    let mut other = offer(1, IpSpec::Single(ip("192.0.2.2")), "FR", 5);
    other.min_lease = 5;
    market.place(other);
    for _ in 0..500 {
        let mut short = request(2, 1, 10, TimeInForce::Ioc);
        short.duration = 5;
        let deal = market.lease(short).remove(0);
        market.ready(&deal);
        market.at(5);
        market.run(CommandKind::Tick).expect("tick");
    }
    assert_eq!(
        market.engine.deal_count(),
        501,
        "all within the hour's retention"
    );
    // An hour later every short deal left the book; the long one still runs.
    market.at(3_600);
    market.run(CommandKind::Tick).expect("tick");
    assert_eq!(market.engine.deal_count(), 1);
    assert_eq!(
        market
            .engine
            .deals_of(addr(2))
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![long.id]
    );
    // Ids go on from where they were.
    let mut next = request(2, 1, 10, TimeInForce::Ioc);
    next.duration = 5;
    let next = market.lease(next).remove(0);
    assert_eq!(next.id.0, long.id.0 + 501);
    // The snapshot keeps the same book, and so does a restore.
    let restored = Engine::restore(market.engine.snapshot());
    assert_eq!(restored.state_hash(), market.engine.state_hash());
    assert_eq!(restored.deal_count(), 2);
}

#[test]
fn the_retention_is_a_journaled_setting_and_too_short_a_one_is_refused() {
    let mut market = Market::new();
    assert_eq!(
        market.run(CommandKind::SetDealRetention { seconds: 10 }),
        Err(EngineError::Input(InputError::RetentionTooShort(10)))
    );
    assert_eq!(market.engine.config().deal_retention, 3_600, "unchanged");
    market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    let mut short = request(2, 1, 10, TimeInForce::Ioc);
    short.duration = 5;
    let deal = market.lease(short).remove(0);
    market.ready(&deal);
    market.at(5);
    market.run(CommandKind::Tick).expect("the lease ends");
    market.at(70);
    market.run(CommandKind::Tick).expect("tick");
    assert!(market.engine.deal(deal.id).is_some(), "kept an hour");
    market
        .run(CommandKind::SetDealRetention { seconds: 60 })
        .expect("a minute is enough");
    assert!(
        market.engine.deal(deal.id).is_none(),
        "finished 70 s ago: gone"
    );
}

#[test]
fn deferred_ends_settle_as_they_are_looked_at_and_a_freed_ip_can_change_hands() {
    let mut market = Market::deferring();
    let id = market.place(offer(1, IpSpec::Single(ip("192.0.2.1")), "FR", 5));
    let deal = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    market.ready(&deal);
    market
        .run(CommandKind::CancelOffer {
            offer: id,
            provider: addr(1),
        })
        .expect("cancelled while leased");

    // The lease's end falls due at a tick and is left for later: nothing looked at it.
    market.at(60);
    let events = market.run(CommandKind::Tick).expect("tick");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(market.engine.unsettled(), 1);

    // Another provider offers the IP: its last lease is settled first, so the IP is free to
    // change hands, as it would have been had the end been processed on time.
    let placed = market
        .run(CommandKind::PlaceOffer(offer(
            2,
            IpSpec::Single(ip("192.0.2.1")),
            "FR",
            1,
        )))
        .expect("the IP is free");
    assert!(placed.contains(&Event::DealStatusChanged {
        deal: deal.id,
        from: DealStatus::Active,
        to: DealStatus::Completed,
    }));
    let closed = market.engine.deal(deal.id).and_then(|d| d.closed_at);
    assert_eq!(closed, Some(Timestamp(T0 + 60)), "closed when it fell due");
}

#[test]
fn a_second_of_many_ends_costs_one_deferring_command_only_what_it_looks_at() {
    let mut market = Market::deferring();
    for n in 0..1_000u32 {
        let [a, b] = (n as u16).to_be_bytes();
        market.place(offer(
            1 + u64::from(n % 6),
            IpSpec::Single(IpAddr::from([198, 51, a, b])),
            "FR",
            5,
        ));
    }
    let deals = market.lease(request(7, 1_000, 5, TimeInForce::Ioc));
    assert_eq!(deals.len(), 1_000);
    for deal in &deals {
        market.ready(deal);
    }

    // All 1,000 leases end in the same second; the next lease request settles only the offer
    // it takes, the cheapest and oldest, and leaves the rest deferred.
    market.at(60);
    let events = market
        .run(CommandKind::SubmitRequest(request(
            8,
            1,
            5,
            TimeInForce::Ioc,
        )))
        .expect("accepted");
    let ended = events
        .iter()
        .filter(|e| matches!(e, Event::DealStatusChanged { .. }))
        .count();
    assert_eq!(ended, 1, "{events:?}");
    assert_eq!(
        market.deals_in(&events)[0].ips.as_slice(),
        [ip("198.51.0.0")]
    );
    assert_eq!(market.engine.unsettled(), 999);

    // Settled, the book is what eager expiry leaves: every lease completed.
    market.engine.settle_all(&mut market.events);
    assert_eq!(market.engine.unsettled(), 0);
    assert!(
        deals
            .iter()
            .all(|d| market.engine.deal(d.id).map(Deal::status) == Some(DealStatus::Completed))
    );
}

#[test]
fn an_idle_ip_listed_first_is_leased_without_settling_the_ends_behind_it() {
    let mut market = Market::deferring();
    market.place(offer(
        1,
        IpSpec::List(vec![ip("192.0.2.1"), ip("192.0.2.2")]),
        "FR",
        5,
    ));
    let first = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    let second = market.lease(request(7, 1, 5, TimeInForce::Ioc)).remove(0);
    assert_eq!(second.ips.as_slice(), [ip("192.0.2.2")]);
    market
        .run(CommandKind::CancelDeal {
            deal: first.id,
            requester: addr(7),
        })
        .expect("cancelled");
    market.ready(&second);

    // The second lease ends unsettled; the first IP, idle and listed first, is what eager
    // expiry would lease next too, so the matcher takes it and leaves the end to the queue.
    market.at(60);
    let events = market
        .run(CommandKind::SubmitRequest(request(
            8,
            1,
            5,
            TimeInForce::Ioc,
        )))
        .expect("accepted");
    assert_eq!(
        market.deals_in(&events)[0].ips.as_slice(),
        [ip("192.0.2.1")]
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DealStatusChanged { .. })),
        "{events:?}"
    );
    assert_eq!(market.engine.unsettled(), 1);

    // Nothing idle is left: the next lease settles the ended one, as of when it fell due, and
    // takes its IP.
    let events = market
        .run(CommandKind::SubmitRequest(request(
            9,
            1,
            5,
            TimeInForce::Ioc,
        )))
        .expect("accepted");
    assert!(events.contains(&Event::DealStatusChanged {
        deal: second.id,
        from: DealStatus::Active,
        to: DealStatus::Completed,
    }));
    assert_eq!(
        market.deals_in(&events)[0].ips.as_slice(),
        [ip("192.0.2.2")]
    );
    let closed = market.engine.deal(second.id).and_then(|d| d.closed_at);
    assert_eq!(closed, Some(Timestamp(T0 + 60)));
    assert_eq!(market.engine.unsettled(), 0);
}
