//! Money through a cluster: three `ipsx node --cluster` processes with payments on anvil
//! (the real contracts), each started with the same node key, over three nats-servers. The
//! leader runs the payment hub and writes every proof it takes and every amount it signs to
//! the cluster's payments log before they count; the followers apply that log to their own
//! book and proof store.
//!
//! A fleet leases through a client that knows the three nodes and pays every second; the
//! provider's daemon knows them too. Mid-lease the leading node is killed with SIGKILL (and
//! kept down). Checked: a follower refuses the event stream and the wallet with `not_leader`
//! naming the leader; the new leader holds every proof the old one acknowledged and the
//! lease's terms as they were fixed; the fleet pays on at the new leader to the lease's end;
//! `ipsx lease` then leases again and pays every second; the next leader is killed under it,
//! and it pays on through the one after by itself. The provider is paid exactly what was
//! metered over both leases, claims it on chain, and the chain credits it that amount minus
//! the commission — to the wei.
//!
//! A second story floods a one-node cluster's leader with wallet reads while it writes each
//! second's signed amounts to the payments log: it must keep answering and paying.

mod common;

use std::time::Duration;

use common::cluster::{Supervised, all_up, leader, story_dir, until};
use common::paying::{Stop, ended, pay_in_background, paying_fleet, provider_settles};
use common::{Chain, Offer, TOKEN, curl, free_port, http_lease, site, wait_for};
use ipsx_engine_cluster::local::LocalNats;
use ipsx_sdk::{ErrorCode, SdkError};

const PRICE: u128 = TOKEN / 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_lease_runs_through_a_leader_kill_and_settles_on_chain_to_the_wei() {
    let chain = Chain::start().await;
    // IPSX_KEEP=1 keeps the nodes' logs and data for a look after a failure.
    let (root, _temp) = story_dir();
    let servers = LocalNats::start(&root.join("nats"), 3).expect("nats-server runs");
    let payments = paying_node(&chain, &root);
    let payments: Vec<&str> = payments.iter().map(String::as_str).collect();
    let rpc = chain.anvil.endpoint();
    let nodes: Vec<Supervised> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Supervised::start(id, &root, &servers.urls(), &payments))
        .collect();
    let http = reqwest::Client::new();
    let first = leader(&http, &nodes, Duration::from_secs(60)).await;
    all_up(&http, &nodes).await;
    let list = nodes
        .iter()
        .map(|node| node.url.as_str())
        .collect::<Vec<_>>()
        .join(",");

    let site = site();
    let port = free_port(&["127.0.0.2"]);
    let (provider_process, provider_lines) = chain.provider(
        &root,
        &list,
        port,
        Offer {
            wallet: 2,
            ips: &["127.0.0.2"],
            country: "DE",
            price: PRICE,
        },
    );
    let (fleet, fleet_wallet, channel) = paying_fleet(&chain, &list).await;

    // A follower serves neither the hub's stream nor the wallet: it names the leader.
    let follower = nodes
        .iter()
        .position(|node| node.url != nodes[first].url)
        .expect("a follower");
    let at_follower = fleet.at(&nodes[follower].url);
    // (A follower learns who leads from the lease, within a renewal or two of starting.)
    until(
        "the follower names the leader",
        Duration::from_secs(10),
        async || {
            let refusals = [
                at_follower.stream().await.map(|_| "stream"),
                at_follower.wallet().await.map(|_| "wallet"),
            ];
            let mut named = 0;
            for refused in refusals {
                match refused {
                    Err(SdkError::Api { code, leader, .. }) => {
                        assert_eq!(code, ErrorCode::NotLeader);
                        named += usize::from(leader.as_deref() == Some(nodes[first].url.as_str()));
                    }
                    other => panic!(
                        "a follower ({}) refuses with not_leader, not {other:?}",
                        nodes[follower].url
                    ),
                }
            }
            (named == 2).then_some(())
        },
    )
    .await;

    let leased = fleet
        .lease(&http_lease(1, 16, "DE", PRICE))
        .await
        .expect("lease");
    assert_eq!(leased.leased, 1);
    let deal = leased.deals[0].deal.deal;
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let terms = paying.ready(deal, Duration::from_secs(15)).await;
    let endpoint = &leased.deals[0].endpoints[0];
    let through = curl(
        endpoint.http.as_deref().expect("http"),
        &format!("http://{site}/"),
    );
    assert_eq!(String::from_utf8_lossy(&through.stdout), "127.0.0.2");

    // A few proofs taken, then the leader dies without warning and stays down.
    for _ in 0..3 {
        paying.accepted(Duration::from_secs(10)).await;
    }
    let acknowledged = paying.end(Stop::Abandon).await.expect("paid so far");
    assert!(acknowledged > 0, "the leader acknowledged proofs");
    nodes[first].hold(true);
    nodes[first].signal("-KILL");
    let second = leader(&http, &nodes, Duration::from_secs(30)).await;
    assert_ne!(second, first, "another node leads");

    // The new leader runs the hub from the payments log: every acknowledged proof, the
    // channel, the deal and its terms.
    let wallet = fleet
        .wallet()
        .await
        .expect("wallet")
        .payments
        .expect("payments");
    let inbound = wallet
        .inbound
        .expect("the channel is known to the new leader");
    assert_eq!(inbound.channel, channel.channel);
    assert!(
        inbound.amount.0 >= acknowledged,
        "every acknowledged proof survived: {} < {acknowledged}",
        inbound.amount.0
    );

    // The fleet pays on at the new leader; the lease runs out; everyone is paid.
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let final_terms = paying.wait(Duration::from_secs(40), ended).await;
    assert_eq!(
        final_terms.start, terms.start,
        "the terms the old leader fixed"
    );
    assert_eq!(final_terms.end, terms.end, "ran to its end, not cut");
    let metered = final_terms.rate.0 * u128::from(final_terms.end - final_terms.start);
    let paid = paying.end(Stop::Finish).await.expect("finish");
    assert_eq!(paid, metered, "the fleet signed exactly what was metered");

    // The old leader comes back and follows. Then `ipsx lease` leases again and pays every
    // second; the leader dies under it too, and it pays on through the next one by itself.
    nodes[first].hold(false);
    let fleet_key = chain.key_file(&root, 1);
    let mut lease = std::process::Command::new(common::IPSX)
        .args([
            "lease",
            "--count",
            "1",
            "--country",
            "DE",
            "--protocol",
            "http",
        ])
        .args(["--duration", "14", "--max-price", &PRICE.to_string()])
        .args([
            "--format",
            "csv",
            "--node",
            &list,
            "--rpc-url",
            &rpc,
            "--key-file",
        ])
        .arg(&fleet_key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ipsx lease runs");
    let stderr = lines_of(lease.stderr.take().expect("stderr"));
    wait_for(&stderr, "paying every second");
    until(
        "the fleet pays for its second lease",
        Duration::from_secs(20),
        async || {
            let paid = fleet.wallet().await.ok()?.payments?.inbound?.amount.0;
            (paid > metered).then_some(())
        },
    )
    .await;
    let third = leader(&http, &nodes, Duration::from_secs(10)).await;
    nodes[third].hold(true);
    nodes[third].signal("-KILL");
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || lease.wait_with_output()),
    )
    .await
    .expect("ipsx lease ends within 90 s")
    .expect("join")
    .expect("ipsx lease ends with its lease");
    let said: Vec<String> = stderr.try_iter().collect();
    assert!(output.status.success(), "{said:#?}");
    assert!(
        said.iter()
            .any(|line| line.starts_with("the payment stream was lost")),
        "it lost its stream at the kill: {said:#?}"
    );
    let done = said
        .iter()
        .find_map(|line| line.strip_prefix("done: paid "))
        .unwrap_or_else(|| panic!("a closing line: {said:#?}"));
    let total: u128 = done
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an amount");
    let second_lease = total - metered;
    assert!(
        second_lease > 0 && second_lease <= 14 * PRICE && second_lease.is_multiple_of(PRICE),
        "whole seconds of the second lease: {done}"
    );
    provider_settles(&chain, &list, 2, provider_process, &provider_lines, total).await;
    nodes[third].hold(false);
}

/// A leader writes each second's signed amounts to the payments log while it holds the hub;
/// the log's round trip is driven by the node's async workers. A flood of wallet reads (each
/// of which looks at the hub) and the fleet's proofs arrive meanwhile. Checked: the node
/// answers every read and `/v1/health` throughout, and the fleet's proofs keep being accepted
/// second after second. (With the hub behind a blocking lock, two reads waiting on it took
/// both workers, the log's answer was never read, and the leader stopped for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_flooded_with_wallet_reads_keeps_answering_and_paying() {
    let chain = Chain::start().await;
    let (root, _temp) = story_dir();
    let servers = LocalNats::start(&root.join("nats"), 1).expect("nats-server runs");
    let mut arguments = paying_node(&chain, &root);
    arguments.extend(["--cluster-replicas".to_owned(), "1".to_owned()]);
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let node = Supervised::start("n1", &root, &servers.urls(), &arguments);
    let http = reqwest::Client::new();
    leader(&http, std::slice::from_ref(&node), Duration::from_secs(60)).await;
    let port = free_port(&["127.0.0.2"]);
    let (mut provider_process, _provider_lines) = chain.provider(
        &root,
        &node.url,
        port,
        Offer {
            wallet: 2,
            ips: &["127.0.0.2"],
            country: "DE",
            price: PRICE,
        },
    );
    let (fleet, fleet_wallet, _channel) = paying_fleet(&chain, &node.url).await;
    let leased = fleet
        .lease(&http_lease(1, 30, "DE", PRICE))
        .await
        .expect("lease");
    let deal = leased.deals[0].deal.deal;
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let terms = paying.ready(deal, Duration::from_secs(15)).await;

    // Readers hammer the wallet until told to stop; each read must answer.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (fleet, stopped) = (fleet.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut reads = 0_u64;
                while !*stopped.borrow() {
                    tokio::time::timeout(Duration::from_secs(10), fleet.wallet())
                        .await
                        .expect("the leader answers a wallet read within 10 s")
                        .expect("wallet");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Eight more seconds of the hub signing and writing to the log under the flood.
    let through = terms.start + 8;
    for second in terms.start + 2..=through {
        paying.paid_through(second, Duration::from_secs(15)).await;
        let health = tokio::time::timeout(
            Duration::from_secs(10),
            http.get(format!("{}/v1/health", node.url)).send(),
        )
        .await
        .expect("the leader answers /v1/health within 10 s")
        .expect("health");
        assert!(health.status().is_success(), "{}", health.status());
    }
    stop.send_replace(true);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads >= 16, "the flood ran: {reads} reads");
    let inbound = common::paying::inbound(&fleet).await;
    assert!(
        inbound.paid_through >= Some(through),
        "paid through {:?}, not {through}",
        inbound.paid_through
    );
    let provider = chain.wallet(2);
    let at_provider = common::paying::signed_in(&node.url, &provider).await;
    let outbound = common::paying::outbound(&at_provider)
        .await
        .expect("the provider's channel");
    assert!(
        outbound.amount.0 >= 6 * PRICE,
        "the hub signed the provider's seconds under the flood: {}",
        outbound.amount.0
    );
    let _ = paying.end(Stop::Abandon).await;
    provider_process.terminate();
}

/// The arguments of a cluster node taking payments on `chain` with the treasury's key.
fn paying_node(chain: &Chain, root: &std::path::Path) -> Vec<String> {
    let key_file = chain.key_file(root, 0);
    [
        "--rpc-url",
        &chain.anvil.endpoint(),
        "--centralizer",
        &chain.deployment.centralizer.to_string(),
        "--node-key-file",
        key_file.to_str().expect("utf-8"),
        "--provider-deposit",
        "100000000000000000000",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A child's stderr as lines, read on a thread of its own.
fn lines_of(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = send.send(line);
        }
    });
    lines
}
