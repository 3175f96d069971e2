//! Three `ipsx node --cluster` processes over three nats-servers on loopback, run the way an
//! operator runs them: a supervisor starts a node again when it exits. A provider registers and
//! offers, and a fleet leases single IPs from two tasks, each through one SDK client that
//! knows all three nodes. Then a nats-server is killed with SIGKILL, then the leading node:
//! the fleet's client finds the new leader by itself and leasing goes on.
//!
//! Checked at the end: a follower refuses writes with `not_leader` naming the leader, and
//! serves the event stream and the market's depth; a session made on one node is good on the
//! others; every deal any leader acknowledged is read
//! back from every node; the provider's proxy key is the same on every node; and once all
//! nodes stopped, each brought to the log's end holds the same state hash, every acknowledged
//! deal, and no IP held by two deals at once.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Supervised, all_up, leader, story_dir, until};
use ipsx_engine::DealId;
use ipsx_engine_cluster::check;
use ipsx_engine_cluster::local::LocalNats;
use ipsx_sdk::{
    Client, ErrorBody, ErrorCode, IpKind, LeaseBody, MarketDepthView, OfferBody, Protocol,
    StreamEvent, TokenAmount, Wallet,
};

const PRICE: u128 = 1_000;

/// What the fleet saw: deals acknowledged (id → IP, start and proxy password) and calls that
/// failed.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<u64, (IpAddr, u64, String)>,
    failures: BTreeMap<String, usize>,
}

async fn lease_until(fleet: Client, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let want = LeaseBody::new(1, 5, TokenAmount(PRICE)).countries(["DE"]);
    while !stop.load(Ordering::SeqCst) {
        match fleet.lease(&want).await {
            Ok(leased) => {
                let mut seen = seen.lock().expect("seen");
                for lease in leased.deals {
                    let password = lease
                        .endpoints
                        .first()
                        .map(|endpoint| endpoint.password.clone())
                        .unwrap_or_default();
                    let deal = lease.deal;
                    let again = seen
                        .acked
                        .insert(deal.deal, (deal.ips[0], deal.start, password));
                    assert!(again.is_none(), "deal {} acknowledged twice", deal.deal);
                }
            }
            // A write whose answer was lost (the leader died mid-call) comes back as an error:
            // it may or may not have been applied, and the fleet goes on.
            Err(error) => {
                let kind = match error.code() {
                    Some(code) => code.to_string(),
                    None => "transport".to_owned(),
                };
                *seen.lock().expect("seen").failures.entry(kind).or_default() += 1;
            }
        }
    }
}

fn acked(seen: &Mutex<Seen>) -> usize {
    seen.lock().expect("seen").acked.len()
}

async fn more_acks(seen: &Mutex<Seen>, count: usize, what: &str) {
    let target = acked(seen) + count;
    until(what, Duration::from_secs(90), async || {
        (acked(seen) >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_no_acknowledged_deal_when_a_nats_server_and_the_leader_die() {
    // IPSX_KEEP=1 keeps the nodes' logs and data for a look after a failure.
    let (root, _temp) = story_dir();
    let mut servers = LocalNats::start(&root.join("nats"), 3).expect("nats-server runs");
    let nats = servers.urls();
    let mut nodes: Vec<Supervised> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Supervised::start(id, &root, &nats, &[]))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|node| node.url.clone()).collect();
    let http = reqwest::Client::new();
    let first = leader(&http, &nodes, Duration::from_secs(60)).await;
    all_up(&http, &nodes).await;

    // The provider and the fleet each know every node; the provider's calls start at a
    // follower on purpose.
    let mut provider = Client::with_nodes(urls.iter().rev());
    provider.sign_in(&Wallet::random()).await.expect("sign in");
    let registered = provider.register_provider(1080).await.expect("register");
    let offer = OfferBody {
        cidr: Some("198.18.0.0/22".into()),
        ..OfferBody::new(
            Vec::new(),
            "DE",
            IpKind::Datacenter,
            [Protocol::Socks5],
            ipsx_sdk_now() + 3_600,
            TokenAmount(PRICE),
        )
    };
    provider.place_offer(&offer).await.expect("offer");
    let mut fleet = Client::with_nodes(&urls);
    fleet.sign_in(&Wallet::random()).await.expect("sign in");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(lease_until(
                fleet.clone(),
                Arc::clone(&seen),
                Arc::clone(&stop),
            ))
        })
        .collect();
    more_acks(&seen, 100, "leases on the first leader").await;

    // A nats-server dies: JetStream elects new stream leaders, and leasing goes on (the
    // leading node may lose its lease on the way, stop, and be restarted).
    servers.kill(0).expect("kill a nats-server");
    more_acks(&seen, 100, "leases with a nats-server dead").await;

    // The leading node dies.
    let old = leader(&http, &nodes, Duration::from_secs(60)).await;
    // Its machine stays down until another node leads (restarted at once, it could win the
    // lease again).
    nodes[old].hold(true);
    let killed = Instant::now();
    nodes[old].signal("-KILL");
    let new = leader(&http, &nodes, Duration::from_secs(60)).await;
    let failover = killed.elapsed();
    assert_ne!(new, old);
    nodes[old].hold(false);
    more_acks(&seen, 100, "leases on the new leader").await;
    servers.restart(0).expect("the nats-server comes back");
    more_acks(&seen, 50, "leases with every server back").await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("the fleet's task");
    }
    eprintln!(
        "first leader n{}, then n{} after n{} was killed; another led {:?} after the kill; \
         {} deals acknowledged; failed calls {:?}",
        first + 1,
        new + 1,
        old + 1,
        failover,
        acked(&seen),
        seen.lock().expect("seen").failures
    );

    // A follower refuses a write, names the leader, and takes the fleet's session (made
    // wherever the fleet signed in).
    let token = fleet.session().expect("signed in").token.clone();
    // Leadership may move again meanwhile (the restarted nats-server): each try reads who
    // leads now.
    let follower = until(
        "a follower naming the leader",
        Duration::from_secs(30),
        async || {
            let now = leader(&http, &nodes, Duration::from_secs(30)).await;
            let follower = (0..3).find(|&at| at != now && at != old)?;
            let response = http
                .post(format!("{}/v1/leases", urls[follower]))
                .bearer_auth(&token)
                .json(&LeaseBody::new(1, 5, TokenAmount(PRICE)))
                .send()
                .await
                .ok()?;
            if response.status().is_success() {
                return None; // it became the leader in between
            }
            assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
            let body: ErrorBody = response.json().await.ok()?;
            assert_eq!(body.error.code, ErrorCode::NotLeader);
            (body.error.leader.as_deref() == Some(urls[now].as_str())).then_some(follower)
        },
    )
    .await;

    // A follower serves the event stream and the market's depth: a deal the leader makes
    // reaches the fleet's stream opened on the follower.
    let on_follower = fleet.at(&urls[follower]);
    let mut events = until(
        "a stream on the follower",
        Duration::from_secs(30),
        async || on_follower.stream().await.ok(),
    )
    .await;
    let want = LeaseBody::new(1, 5, TokenAmount(PRICE)).countries(["DE"]);
    let made = until(
        "a lease on the leader",
        Duration::from_secs(30),
        async || fleet.lease(&want).await.ok(),
    )
    .await;
    let made = made.deals.first().expect("a deal").deal.deal;
    until(
        "the deal on the follower's stream",
        Duration::from_secs(30),
        async || {
            let event = tokio::time::timeout(Duration::from_secs(1), events.next())
                .await
                .ok()??
                .expect("a readable event");
            matches!(event, StreamEvent::DealMade { deal } if deal.deal == made).then_some(())
        },
    )
    .await;
    let depth: MarketDepthView = until(
        "the follower's depth",
        Duration::from_secs(30),
        async || {
            let response = http
                .get(format!("{}/v1/market/depth", urls[follower]))
                .send()
                .await
                .ok()?;
            response.json().await.ok()
        },
    )
    .await;
    assert!(
        depth.levels.iter().any(|level| level.country == "DE"),
        "the follower shows the offer's depth: {depth:?}"
    );

    // Every acknowledged deal is read back from every node, with the session made elsewhere,
    // and with the same proxy credentials: every leader issued them with the key the provider
    // got when it registered.
    let acked_deals = seen.lock().expect("seen").acked.clone();
    let key = ipsx_credentials::CredentialKey::from_hex(&registered.proxy_key).expect("a key");
    for (deal, (ip, start, password)) in &acked_deals {
        let grant = key
            .verify(
                deal.to_string().as_bytes(),
                password.as_bytes(),
                *ip,
                *start,
            )
            .unwrap_or_else(|e| panic!("deal {deal}'s credentials: {e}"));
        assert_eq!(grant.lease, *deal);
    }
    for url in &urls {
        // A node may be restarting (a leader that lost its lease exits): ask until it answers.
        let me = until(
            &format!("{url} to answer"),
            Duration::from_secs(30),
            async || {
                http.get(format!("{url}/v1/me"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .ok()
            },
        )
        .await;
        assert!(me.status().is_success(), "{url} takes the fleet's session");
        let fleet_here = fleet.at(url);
        let read = until(
            &format!("every acknowledged deal on {url}"),
            Duration::from_secs(30),
            async || {
                let deals = fleet_here.deals().await.ok()?;
                let held: BTreeMap<u64, String> = deals
                    .into_iter()
                    .map(|lease| {
                        let password = lease
                            .endpoints
                            .first()
                            .map(|endpoint| endpoint.password.clone())
                            .unwrap_or_default();
                        (lease.deal.deal, password)
                    })
                    .collect();
                acked_deals
                    .keys()
                    .all(|deal| held.contains_key(deal))
                    .then_some(held)
            },
        )
        .await;
        for (deal, (_, _, password)) in &acked_deals {
            assert_eq!(&read[deal], password, "deal {deal}'s credentials on {url}");
        }
    }

    // Stopped, every node brought to the log's end holds the same market.
    let datas: Vec<PathBuf> = nodes.iter().map(|node| node.data.join("engine")).collect();
    let restarts: Vec<usize> = nodes
        .iter()
        .map(|node| node.starts.load(Ordering::SeqCst))
        .collect();
    for node in &mut nodes {
        node.stop();
    }
    let states: Vec<_> = tokio::task::spawn_blocking(move || {
        datas
            .iter()
            .map(|data| {
                check::caught_up(data, &nats, "ipsx", Duration::from_secs(60))
                    .expect("a stopped node catches up with the log")
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the checks");
    let (end, hash, engine) = &states[0];
    for (other_end, other_hash, _) in &states[1..] {
        assert_eq!(other_end, end);
        assert_eq!(other_hash, hash, "every node reaches the same state");
    }
    for (deal, (ip, _, _)) in &acked_deals {
        let held = engine
            .deal(DealId(*deal))
            .unwrap_or_else(|| panic!("acknowledged deal {deal} is in the market"));
        assert_eq!(
            held.ips.as_slice(),
            &[*ip],
            "deal {deal} holds the IP acknowledged"
        );
    }
    assert_eq!(
        check::double_booked(engine),
        None,
        "no IP held twice at once"
    );
    assert!(
        restarts[old] >= 2,
        "the killed node was started again: {restarts:?}"
    );
}

fn ipsx_sdk_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
