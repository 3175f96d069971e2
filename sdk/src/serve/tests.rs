//! The serving state machine, driven by hand: events as the node sends them, both clocks
//! moved by the test.

use std::collections::HashSet;
use std::net::IpAddr;

use ipsx_api::{LeaseTermsView, TokenAmount};
use ipsx_channels::{ChannelId, ReceiverChannel, SigningKey};

use super::*;

const GRACE: u64 = 3;

fn me() -> Address {
    Address::repeat_byte(7)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn node_key() -> SigningKey {
    SigningKey::from_bytes(&[5u8; 32]).expect("key")
}

fn domain() -> ChannelDomain {
    ChannelDomain::new(31337, Address::repeat_byte(1))
}

fn deal(id: u64, provider: Address, ips: &[IpAddr]) -> DealView {
    DealView {
        deal: id,
        request: id,
        offer: 1,
        provider,
        requester: Address::repeat_byte(9),
        ips: ips.to_vec(),
        start: 100,
        end: 200,
        price: TokenAmount(1),
        protocols: vec![ipsx_api::Protocol::Socks5],
        status: DealStatus::Pending,
        closed_at: None,
    }
}

fn terms(id: u64, start: u64, end: u64) -> LeaseTermsView {
    LeaseTermsView {
        deal: id,
        start,
        end,
        rate: TokenAmount(1),
    }
}

fn ready(id: u64, start: u64, end: u64) -> StreamEvent {
    StreamEvent::LeaseReady {
        terms: terms(id, start, end),
        provider: me(),
        requester: Address::repeat_byte(9),
    }
}

fn ended(id: u64, start: u64, end: u64, status: LeaseEnd) -> StreamEvent {
    StreamEvent::LeaseEnded {
        terms: terms(id, start, end),
        status,
        provider: me(),
        requester: Address::repeat_byte(9),
    }
}

fn paid() -> Serving {
    let channel = ReceiverChannel::new(ChannelId(3), node_key().address(), 1_000_000, None);
    Serving::new(
        me(),
        HashSet::from([ip(1), ip(2)]),
        Some(Earning {
            ledger: ProviderLedger::new(channel),
            domain: domain(),
            grace: GRACE,
        }),
    )
}

#[test]
fn it_reports_ready_only_for_its_own_pending_deals_on_its_own_ips() {
    let mut serving = Serving::new(me(), HashSet::from([ip(1)]), None);
    let mine = deal(1, me(), &[ip(1)]);
    assert_eq!(
        serving.on_event(&StreamEvent::DealMade { deal: mine.clone() }),
        vec![Action::Ready(mine)]
    );
    for other in [
        deal(2, Address::repeat_byte(8), &[ip(1)]),
        deal(3, me(), &[ip(1), ip(2)]),
        DealView {
            status: DealStatus::Active,
            ..deal(4, me(), &[ip(1)])
        },
    ] {
        assert!(
            serving
                .on_event(&StreamEvent::DealMade { deal: other })
                .is_empty()
        );
    }
    serving.serve_ips(HashSet::from([ip(2)]));
    assert!(
        !serving.should_ready(&deal(5, me(), &[ip(1)])),
        "no longer its IP"
    );
}

#[test]
fn a_lease_ended_early_is_cut_once_and_forgotten_a_minute_later() {
    let mut serving = Serving::new(me(), HashSet::from([ip(1)]), None);
    assert!(serving.on_event(&ready(1, 100, 200)).is_empty());
    assert!(serving.on_event(&ready(2, 100, 200)).is_empty());
    let cut = Action::Cut {
        deal: 1,
        why: CutReason::Ended(LeaseEnd::Cancelled),
        until: 150,
    };
    assert_eq!(
        serving.on_event(&ended(1, 100, 150, LeaseEnd::Cancelled)),
        vec![cut]
    );
    assert!(
        serving
            .on_event(&ended(1, 100, 150, LeaseEnd::Cancelled))
            .is_empty(),
        "told twice, cut once"
    );
    assert!(
        serving
            .on_event(&ended(2, 100, 200, LeaseEnd::Completed))
            .is_empty(),
        "a lease that ran its course is not cut"
    );
    assert!(serving.on_second(209, 0).is_empty());
    assert_eq!(serving.on_second(210, 1), vec![Action::Forget { deal: 1 }]);
    assert_eq!(serving.on_second(260, 2), vec![Action::Forget { deal: 2 }]);
    assert_eq!(serving.lease_count(), 0);
}

#[test]
fn the_nodes_cut_off_cuts_only_leases_it_serves() {
    let mut serving = Serving::new(me(), HashSet::from([ip(1)]), None);
    serving.on_event(&ready(1, 100, 200));
    let cut_off = |deal| StreamEvent::CutOff { deal, at: 120 };
    assert_eq!(
        serving.on_event(&cut_off(1)),
        vec![Action::Cut {
            deal: 1,
            why: CutReason::NotPaying,
            until: 200
        }]
    );
    assert!(serving.on_event(&cut_off(1)).is_empty());
    assert!(serving.on_event(&cut_off(99)).is_empty(), "not its lease");
}

#[test]
fn an_unpaid_lease_is_cut_after_the_grace_counted_while_running() {
    let mut serving = paid();
    serving.on_event(&ready(1, 100, 200));
    // Paid through 100 at second 100..103: within the grace.
    assert!(serving.on_second(103, 0).is_empty());
    // Unpaid from here: seen at running second 1, cut once another grace of running passed.
    assert!(serving.on_second(104, 1).is_empty());
    assert!(serving.on_second(106, 3).is_empty());
    assert_eq!(
        serving.on_second(107, 4),
        vec![Action::Cut {
            deal: 1,
            why: CutReason::Unpaid,
            until: 200
        }]
    );
    assert!(serving.on_second(108, 5).is_empty(), "cut once");

    // A laptop asleep: the wall clock jumped, the running one did not; the payments queued
    // meanwhile arrive before another grace of running is over.
    serving.on_event(&ready(2, 100, 200));
    assert!(serving.on_second(150, 6).is_empty());
    let proof = domain().sign_balance_proof(&node_key(), ChannelId(3), 50);
    let breakdown = [(2, 150)];
    serving
        .check_payment(&proof, &breakdown)
        .expect("covered by the signed amount");
    serving.accept_payment(proof, &breakdown);
    assert!(serving.on_second(151, 9).is_empty(), "paid: not cut");
}

#[test]
fn a_payment_whose_breakdown_the_signature_does_not_cover_is_refused() {
    let mut serving = paid();
    serving.on_event(&ready(1, 100, 200));
    let proof = domain().sign_balance_proof(&node_key(), ChannelId(3), 10);
    assert!(matches!(
        serving.check_payment(&proof, &[(1, 150)]),
        Err(ProofError::BreakdownNotCovered { .. })
    ));
    let forged = domain().sign_balance_proof(
        &SigningKey::from_bytes(&[6u8; 32]).expect("key"),
        ChannelId(3),
        50,
    );
    assert!(
        serving.check_payment(&forged, &[(1, 150)]).is_err(),
        "not the node's key"
    );
}

#[test]
fn memory_follows_what_runs_not_what_ran() {
    let mut serving = paid();
    let mut most = 0;
    for id in 0..10_000u64 {
        let start = 1_000 + id;
        serving.on_event(&ready(id, start, start + 5));
        serving.on_event(&ended(id, start, start + 5, LeaseEnd::Completed));
        serving.on_second(start, id);
        most = most.max(serving.lease_count());
    }
    assert!(most <= 70, "at most a minute and a bit of leases: {most}");
    let ledger = &serving.earning().expect("paid").ledger;
    assert!(ledger.lease_count() <= 70, "{}", ledger.lease_count());
}
