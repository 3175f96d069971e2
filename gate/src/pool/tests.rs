//! The pool's rules under a hand-driven clock.

use super::*;
use crate::target::Target;

const SEC: u64 = 1_000;
const T0: u64 = 1_800_000_000 * SEC;

fn config() -> PoolConfig {
    PoolConfig {
        warm: 2,
        batch: 3,
        lease_secs: 600,
        renew_margin_secs: 10,
        pool_idle_secs: 60,
        retry_after_secs: 2,
        max_ips: 10,
        max_spend_per_minute: None,
        max_price: 100,
        judge_after: 4,
        min_success_percent: 50,
        slow_factor: 5,
    }
}

fn target(username: &str) -> Target {
    Target::parse(username, "").expect("target")
}

fn exits(deal: u64, first_ip: u8, count: u8, end_s: u64, price: u128) -> Vec<NewExit> {
    (0..count)
        .map(|i| {
            let ip: IpAddr = format!("127.0.0.{}", first_ip + i).parse().expect("ip");
            NewExit {
                deal,
                upstream: Upstream::new(ip, SocketAddr::new(ip, 1080), &deal.to_string(), "secret"),
                end: end_s,
                price,
            }
        })
        .collect()
}

fn ready(pick: Result<Pick, Refusal>) -> Exit {
    match pick {
        Ok(Pick::Ready(exit)) => exit,
        other => panic!("expected an exit, got {other:?}"),
    }
}

fn leases(actions: &[Action]) -> Vec<(Filter, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Lease { filter, count, .. } => Some((filter.clone(), *count)),
            Action::Cancel { .. } => None,
        })
        .collect()
}

fn cancels(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { deal, .. } => Some(*deal),
            Action::Lease { .. } => None,
        })
        .collect()
}

/// A pool with one lease of `n` exits for `username`'s filter in hand.
fn stocked(username: &str, n: u8) -> (Pools, Filter) {
    let mut pools = Pools::new(config());
    let target = target(username);
    assert!(matches!(pools.pick(&target, 1, T0), Ok(Pick::Wait)));
    let asked = leases(&pools.take_actions());
    assert_eq!(
        asked,
        [(target.filter.clone(), 3)],
        "one batch is asked for"
    );
    pools.leased(&target.filter, exits(1, 2, n, T0 / SEC + 600, 10), T0);
    (pools, target.filter)
}

#[test]
fn the_first_request_leases_a_batch_and_waits_then_spreads_over_the_exits() {
    let (mut pools, _) = stocked("u-country-de", 3);
    let target = target("u-country-de");
    let ips: Vec<IpAddr> = (0..6)
        .map(|i| ready(pools.pick(&target, i, T0 + SEC)).upstream.ip)
        .collect();
    assert_eq!(ips[..3], ips[3..], "least recently used first, in turn");
    assert_eq!(
        ips[..3]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    assert!(pools.take_actions().is_empty(), "the pool is warm enough");
    assert_eq!(pools.held_ips(), 3);
    assert_eq!(pools.held_rate(), 30);
}

#[test]
fn a_session_sticks_to_one_exit_and_others_get_their_own() {
    let (mut pools, _) = stocked("u", 3);
    let a = target("u-session-a");
    let first = ready(pools.pick(&a, 1, T0)).key;
    for i in 0..5 {
        assert_eq!(ready(pools.pick(&a, 10 + i, T0 + i * SEC)).key, first);
    }
    let b = ready(pools.pick(&target("u-session-b"), 2, T0)).key;
    assert_ne!(b, first, "another session claims another exit");
    // One exit without a session left, below `warm`: a refill is asked for.
    assert_eq!(leases(&pools.take_actions()).len(), 1);
}

#[test]
fn more_sessions_than_exits_share_them_evenly_without_waiting() {
    let (mut pools, _) = stocked("u", 3);
    let mut per_exit: HashMap<ExitKey, usize> = HashMap::default();
    for n in 0..30u64 {
        let exit = ready(pools.pick(&target(&format!("u-session-s{n}")), n, T0)).key;
        *per_exit.entry(exit).or_default() += 1;
    }
    assert_eq!(per_exit.len(), 3);
    assert!(per_exit.values().all(|&n| n == 10), "{per_exit:?}");
    assert_eq!(pools.sessions(), 30);
    for n in 0..30u64 {
        let session = target(&format!("u-session-s{n}"));
        let again = ready(pools.pick(&session, 100 + n, T0 + SEC)).key;
        assert_eq!(per_exit.get(&again).copied(), Some(10), "still on its exit");
    }
}

#[test]
fn a_session_idle_past_its_time_gives_its_exit_back_and_the_deal_is_cancelled() {
    let mut pools = Pools::new(PoolConfig {
        warm: 1,
        batch: 1,
        ..config()
    });
    let s = target("u-session-a-sesstime-1");
    assert!(matches!(pools.pick(&s, 1, T0), Ok(Pick::Wait)));
    pools.take_actions();
    pools.leased(&s.filter, exits(7, 2, 1, T0 / SEC + 600, 10), T0);
    ready(pools.pick(&s, 1, T0));
    pools.take_actions();
    pools.tick(T0 + 59 * SEC);
    assert!(
        cancels(&pools.take_actions()).is_empty(),
        "still within its time"
    );
    pools.tick(T0 + 60 * SEC);
    assert_eq!(cancels(&pools.take_actions()), [7]);
    assert_eq!(pools.held_ips(), 0);
}

#[test]
fn a_session_whose_exit_fails_is_gone_until_a_new_session_is_started() {
    let (mut pools, _) = stocked("u", 3);
    let s = target("u-session-a");
    let exit = ready(pools.pick(&s, 1, T0)).key;
    assert!(pools.failed(exit, true, "connection refused"));
    match pools.pick(&s, 1, T0 + SEC) {
        Err(Refusal::SessionGone { session, reason }) => {
            assert_eq!(session, "a");
            assert_eq!(reason, "connection refused");
        }
        other => panic!("expected the session to be gone, got {other:?}"),
    }
    // The whole deal was the dead provider's: it is cancelled, and a new session waits for
    // a new lease.
    assert_eq!(cancels(&pools.take_actions()), [1]);
    assert!(matches!(
        pools.pick(&target("u-session-b"), 2, T0 + SEC),
        Ok(Pick::Wait)
    ));
}

#[test]
fn a_lease_ended_by_the_node_ends_its_sessions_without_cancelling() {
    let (mut pools, _) = stocked("u", 2);
    let s = target("u-session-a");
    ready(pools.pick(&s, 1, T0));
    pools.take_actions();
    pools.ended(1, "payment_lapsed");
    assert!(matches!(
        pools.pick(&s, 1, T0),
        Err(Refusal::SessionGone { reason, .. }) if reason == "payment_lapsed"
    ));
    assert!(cancels(&pools.take_actions()).is_empty());
    assert_eq!(pools.held_ips(), 0);
}

#[test]
fn rotate_gives_every_connection_a_fresh_exit_and_retires_it_after() {
    let (mut pools, _) = stocked("u", 3);
    let r = target("u-rotate");
    let a = ready(pools.pick(&r, 1, T0)).key;
    assert_eq!(
        ready(pools.pick(&r, 1, T0)).key,
        a,
        "same connection, same exit"
    );
    let b = ready(pools.pick(&r, 2, T0)).key;
    assert_ne!(a, b);
    pools.release(1);
    pools.release(2);
    let c = ready(pools.pick(&r, 3, T0)).key;
    assert!(c != a && c != b, "retired exits are never handed out again");
    pools.release(3);
    assert_eq!(
        cancels(&pools.take_actions()),
        [1],
        "all three retired: deal cancelled"
    );
}

#[test]
fn exits_near_their_end_are_replaced_before_it() {
    let (mut pools, filter) = stocked("u", 3);
    let s = target("u-session-a");
    let end = T0 + 600 * SEC;
    let old = ready(pools.pick(&s, 1, end - 20 * SEC)).key;
    assert!(
        pools.take_actions().is_empty(),
        "two free exits: warm enough"
    );
    // Inside the margin: not picked any more; the tick leases replacements in time.
    pools.tick(end - 9 * SEC);
    assert_eq!(leases(&pools.take_actions()), [(filter.clone(), 3)]);
    pools.leased(
        &filter,
        exits(2, 10, 3, T0 / SEC + 1_200, 10),
        end - 9 * SEC,
    );
    let moved = ready(pools.pick(&s, 1, end - 8 * SEC)).key;
    assert_ne!(moved, old, "the session moved to a fresh exit");
    assert_eq!(moved.deal, 2);
    let spread = ready(pools.pick(&target("u"), 2, end - 8 * SEC)).key;
    assert_eq!(spread.deal, 2, "spread traffic avoids the ending lease");
    pools.tick(end);
    assert_eq!(
        pools.held_ips(),
        3,
        "the old lease ran out and is forgotten"
    );
}

#[test]
fn limits_are_never_passed_and_say_which_one_stands() {
    let mut pools = Pools::new(PoolConfig {
        max_ips: 4,
        ..config()
    });
    let de = target("u-country-de-rotate");
    assert!(matches!(pools.pick(&de, 1, T0), Ok(Pick::Wait)));
    assert_eq!(leases(&pools.take_actions())[0].1, 3);
    pools.leased(&de.filter, exits(1, 2, 3, T0 / SEC + 600, 10), T0);
    for conn in 1..=3 {
        ready(pools.pick(&de, conn, T0));
    }
    // One IP of room left: the refill asks for exactly one.
    assert_eq!(leases(&pools.take_actions())[0].1, 1);
    pools.leased(&de.filter, exits(2, 9, 1, T0 / SEC + 600, 10), T0);
    ready(pools.pick(&de, 4, T0));
    assert!(matches!(
        pools.pick(&de, 5, T0),
        Err(Refusal::MaxIps { held: 4 })
    ));
    assert!(
        pools.take_actions().is_empty(),
        "nothing leased beyond the limit"
    );

    // Spend: 100 a minute at a max price of 1 per IP-second = 1 IP (60 a minute).
    let mut pools = Pools::new(PoolConfig {
        max_spend_per_minute: Some(100),
        max_price: 1,
        ..config()
    });
    let any = target("u-rotate");
    assert!(matches!(pools.pick(&any, 1, T0), Ok(Pick::Wait)));
    assert_eq!(leases(&pools.take_actions())[0].1, 1);
    pools.leased(&any.filter, exits(1, 2, 1, T0 / SEC + 600, 1), T0);
    ready(pools.pick(&any, 1, T0));
    assert!(matches!(
        pools.pick(&any, 2, T0),
        Err(Refusal::SpendLimit {
            per_minute: 60,
            limit: 100
        })
    ));
}

#[test]
fn a_crawlers_max_price_is_capped_by_the_fleets() {
    let mut pools = Pools::new(config());
    let cheap = target("u-maxprice-7");
    let dear = target("u-maxprice-1000");
    pools.pick(&cheap, 1, T0).expect("waits");
    pools.pick(&dear, 1, T0).expect("waits");
    let prices: Vec<u128> = pools
        .take_actions()
        .iter()
        .filter_map(|a| match a {
            Action::Lease { max_price, .. } => Some(*max_price),
            Action::Cancel { .. } => None,
        })
        .collect();
    assert_eq!(prices, [7, 100]);
}

#[test]
fn a_lease_that_finds_nothing_is_not_retried_at_once() {
    let mut pools = Pools::new(config());
    let jp = target("u-country-jp");
    pools.pick(&jp, 1, T0).expect("waits");
    pools.take_actions();
    pools.leased(&jp.filter, Vec::new(), T0);
    assert!(matches!(
        pools.pick(&jp, 1, T0 + SEC),
        Err(Refusal::NoExits { .. })
    ));
    assert!(pools.take_actions().is_empty());
    assert!(matches!(pools.pick(&jp, 1, T0 + 2 * SEC), Ok(Pick::Wait)));
    assert_eq!(leases(&pools.take_actions()).len(), 1, "tried again later");
}

#[test]
fn a_persistently_failing_exit_is_dropped_and_its_deal_flagged() {
    let mut pools = Pools::new(PoolConfig {
        warm: 1,
        batch: 1,
        ..config()
    });
    let any = target("u");
    pools.pick(&any, 1, T0).expect("waits");
    pools.take_actions();
    pools.leased(&any.filter, exits(5, 2, 1, T0 / SEC + 600, 10), T0);
    let exit = ready(pools.pick(&any, 1, T0)).key;
    pools.succeeded(exit, 1_000);
    assert!(!pools.failed(exit, false, "slow"));
    assert!(!pools.failed(exit, false, "slow"));
    assert!(pools.failed(exit, false, "slow"), "1 of 4 succeeded");
    assert_eq!(
        pools.take_actions(),
        [Action::Cancel { deal: 5, bad: true }]
    );
}

#[test]
fn an_unused_pool_gives_everything_back() {
    let (mut pools, _) = stocked("u-country-de", 3);
    pools.take_actions();
    pools.tick(T0 + 59 * SEC);
    assert!(pools.take_actions().is_empty());
    pools.tick(T0 + 60 * SEC);
    assert_eq!(cancels(&pools.take_actions()), [1]);
    assert_eq!(pools.held_ips(), 0);
}

#[test]
fn an_exit_far_slower_than_its_pool_is_dropped_unless_a_session_holds_it() {
    let (mut pools, _) = stocked("u", 3);
    pools.take_actions();
    let keys: Vec<ExitKey> = (0..3)
        .map(|conn| ready(pools.pick(&target("u"), conn, T0)).key)
        .collect();
    for _ in 0..4 {
        assert!(!pools.succeeded(keys[0], 1_000));
        assert!(!pools.succeeded(keys[1], 1_200));
    }
    for _ in 0..3 {
        assert!(!pools.succeeded(keys[2], 9_000), "not judged yet");
    }
    assert!(
        pools.succeeded(keys[2], 9_000),
        "9 ms against a 1.2 ms median"
    );
    let spread: std::collections::HashSet<ExitKey> = (0..6)
        .map(|conn| ready(pools.pick(&target("u"), conn, T0)).key)
        .collect();
    assert!(!spread.contains(&keys[2]), "dropped exits are not picked");

    // A slow exit a session sticks to stays: the session would break otherwise.
    let (mut pools, _) = stocked("u", 3);
    let session = target("u-session-s");
    let held = ready(pools.pick(&session, 1, T0)).key;
    let others: Vec<ExitKey> = (0..2)
        .map(|conn| ready(pools.pick(&target("u"), 10 + conn, T0)).key)
        .filter(|key| *key != held)
        .collect();
    for key in &others {
        for _ in 0..4 {
            pools.succeeded(*key, 1_000);
        }
    }
    for _ in 0..4 {
        assert!(!pools.succeeded(held, 50_000));
    }
    assert_eq!(ready(pools.pick(&session, 1, T0)).key, held);
}
