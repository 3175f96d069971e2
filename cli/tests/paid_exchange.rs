//! The exchange with money in it, as real processes on a real chain: an `ipsx node` settling on
//! anvil with the real contracts, `ipsx provide` daemons on loopback aliases, and a fleet using
//! the SDK to open a channel, lease, crawl through the endpoints and pay every second.
//!
//! * A lease runs through a `kill -9` of the node: nothing acknowledged is lost, the fleet
//!   reconnects and pays on, and the chain ends up with exactly the metered amounts.
//! * Settled leases fold into per-party sums; new payers and a restarted node start from them.
//! * A fleet that stops paying is cut off within the grace, by the node and the proxy.
//! * A provider that went offline has its deal voided, and the fleet gets other IPs.
//! * `ipsx lease` deposits, opens the channel, prints the endpoints and pays until the lease
//!   ends; the provider, paid, stops (claiming on chain), reads `ipsx balance` and withdraws.
//! * The demo (`ipsx demo`) checks itself to the wei.

mod common;

use std::time::{Duration, Instant};

use common::cluster::until;
use common::paying::{
    Stop, ended, holds_proof_for, inbound, node_paid, pay_in_background, paying_fleet,
    proven_on_chain, provider_settles, signed_in,
};
use common::{Chain, Offer, TOKEN, curl, free_port, http_lease, site, unix_now, wait_for};
use ipsx_sdk::{ErrorCode, LeaseBody, SdkError, StreamEvent, TokenAmount};

const PRICE: u128 = TOKEN / 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_lease_survives_a_node_kill_and_settles_on_chain_to_the_wei() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let listen = format!("127.0.0.1:{}", free_port(&["127.0.0.1"]));
    let (mut node_process, node, _) = chain.node(dir.path(), &listen, &["--anchor-every", "1"]);
    let port = free_port(&["127.0.0.2", "127.0.0.3"]);
    let (provider_process, provider_lines) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 2,
            ips: &["127.0.0.2", "127.0.0.3"],
            country: "DE",
            price: PRICE,
        },
    );
    let (fleet, fleet_wallet, channel) = paying_fleet(&chain, &node).await;
    let leased = fleet
        .lease(&http_lease(2, 14, "DE", PRICE))
        .await
        .expect("lease");
    assert_eq!(leased.leased, 2);
    let deal = leased.deals[0].deal.deal;
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let terms = paying.ready(deal, Duration::from_secs(10)).await;
    assert_eq!(terms.rate.0, 2 * PRICE, "rate = price × IPs");
    for endpoint in &leased.deals[0].endpoints {
        let through = curl(
            endpoint.http.as_deref().expect("http"),
            &format!("http://{site}/"),
        );
        assert_eq!(
            String::from_utf8_lossy(&through.stdout),
            endpoint.ip.to_string()
        );
    }

    // Paid for a few seconds, then the node dies without warning.
    paying
        .paid_through(terms.start + 3, Duration::from_secs(15))
        .await;
    let acknowledged = paying.end(Stop::Abandon).await.expect("paid so far");
    assert!(acknowledged > 0, "the node acknowledged proofs");
    let _ = node_process.0.kill();
    let _ = node_process.0.wait();
    // Same data directory, key and address: the provider's daemon reconnects on its own.
    let (node_again_process, node_again, _) =
        chain.node(dir.path(), &listen, &["--anchor-every", "1"]);
    assert_eq!(node_again, node);
    let fleet = signed_in(&node_again, &fleet_wallet).await;
    let wallet = fleet
        .wallet()
        .await
        .expect("wallet")
        .payments
        .expect("payments");
    let inbound = wallet.inbound.expect("the channel is remembered");
    assert_eq!(inbound.channel, channel.channel);
    assert!(
        inbound.amount.0 >= acknowledged,
        "every acknowledged proof survived: {} < {acknowledged}",
        inbound.amount.0
    );
    let deals = fleet.deals().await.expect("deals");
    assert_eq!(deals.len(), 1, "the acknowledged deal survived");
    assert_eq!(deals[0].deal.status, ipsx_sdk::DealStatus::Active);

    // The fleet reconnects and pays on; the lease runs out; everyone is paid.
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let final_terms = paying.wait(Duration::from_secs(30), ended).await;
    assert_eq!(final_terms.start, terms.start);
    assert_eq!(final_terms.end, terms.end, "ran to its end, not cut");
    let metered = final_terms.rate.0 * u128::from(final_terms.end - final_terms.start);
    let paid = paying.end(Stop::Finish).await.expect("finish");
    assert_eq!(paid, metered, "the fleet signed exactly what was metered");

    provider_settles(
        &chain,
        &node_again,
        2,
        provider_process,
        &provider_lines,
        metered,
    )
    .await;
    // The deal book was anchored across the kill: each change once, every one proven, and
    // the anchored amount is what the fleet paid.
    let report = proven_on_chain(
        &fleet,
        deal,
        &chain.anvil.endpoint(),
        chain.deployment.anchor,
    )
    .await;
    assert_eq!(report.entries.len(), 3, "{report:?}");
    let ended = report
        .entries
        .iter()
        .find(|check| check.entry.kind == ipsx_sdk::AnchorEntryKind::Ended)
        .expect("ended");
    assert_eq!(ended.entry.amount.0, metered, "{report:?}");
    drop(node_again_process);
}

/// What a new stream of the fleet opens with: the sum its folded leases came to.
async fn settled(fleet: &ipsx_sdk::Client) -> u128 {
    let mut stream = fleet.stream().await.expect("stream");
    let first = stream.next().await.expect("open").expect("event");
    stream.close().await;
    match first {
        StreamEvent::Settled { paid, .. } => paid.0,
        other => panic!("a stream opens with `settled`, not {other:?}"),
    }
}

/// Waits (20 s at most) until the node has folded `amount` of the fleet's leases.
async fn folded(fleet: &ipsx_sdk::Client, amount: u128) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = settled(fleet).await;
        if now == amount {
            return;
        }
        assert!(now < amount, "folded {now}, more than the {amount} metered");
        assert!(Instant::now() < deadline, "only {now} of {amount} folded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Settled leases leave the node's memory and book one by one and live on as per-party sums;
/// a payer that connects anew — and a node back from `kill -9` — starts from those sums, so
/// every second is paid exactly once. The restarted node's book still holds an older lease
/// (a requester that never paid), so its hub's clock starts before the folded leases: they are
/// read again from the engine's deal book, and must not be billed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_leases_fold_into_sums_that_new_payers_and_a_restarted_node_start_from() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port(&["127.0.0.1"]));
    let (node_process, node, _) = chain.node(dir.path(), &listen, &[]);
    let port = free_port(&["127.0.0.2", "127.0.0.3"]);
    let (provider_process, provider_lines) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 2,
            ips: &["127.0.0.2", "127.0.0.3"],
            country: "DE",
            price: PRICE,
        },
    );
    // A requester that leases and never pays: its lease is served, cut, and stays in the
    // book unpaid, older than every lease below.
    let deadbeat_wallet = chain.wallet(3);
    chain
        .node
        .transfer_tokens(deadbeat_wallet.address(), 10 * TOKEN)
        .await
        .expect("fund");
    let deadbeat = signed_in(&node, &deadbeat_wallet).await;
    ipsx_sdk::ensure_channel(
        &deadbeat,
        &deadbeat_wallet,
        &chain.anvil.endpoint(),
        5 * TOKEN,
    )
    .await
    .expect("channel");
    let unpaid = deadbeat
        .lease(&http_lease(1, 60, "DE", PRICE))
        .await
        .expect("lease");
    assert_eq!(unpaid.leased, 1);
    until(
        "the unpaid lease was served",
        Duration::from_secs(20),
        async || {
            let status = deadbeat.deals().await.expect("deals")[0].deal.status;
            (status == ipsx_sdk::DealStatus::Active).then_some(())
        },
    )
    .await;
    let (fleet, fleet_wallet, _) = paying_fleet(&chain, &node).await;
    assert_eq!(settled(&fleet).await, 0, "nothing settled yet");
    let lease = http_lease(1, 5, "DE", PRICE);
    let mut metered = 0;
    for round in 0..2 {
        // Each round a new payer: it knows only what the node tells it.
        // The provider's offer (round 0), or its IP back free (round 1): poll with a deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        let leased = loop {
            let leased = fleet.lease(&lease).await.expect("lease");
            if leased.leased == 1 {
                break leased;
            }
            assert!(Instant::now() < deadline, "round {round}: nothing to lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
        let terms = paying.wait(Duration::from_secs(30), ended).await;
        assert!(terms.end > terms.start, "round {round}: served");
        metered += terms.rate.0 * u128::from(terms.end - terms.start);
        let paid = paying.end(Stop::Finish).await.expect("finish");
        assert_eq!(paid, metered, "round {round}: every second paid once");
        folded(&fleet, metered).await;
    }

    // The node dies; it comes back from the sums and the empty book of running leases.
    let mut node_process = node_process;
    let _ = node_process.0.kill();
    let _ = node_process.0.wait();
    let restarted = unix_now();
    let (node_again_process, node_again, _) = chain.node(dir.path(), &listen, &[]);
    let fleet = signed_in(&node_again, &fleet_wallet).await;
    assert_eq!(settled(&fleet).await, metered, "the sums survived");
    // Paid in full before the kill, the fleet stays paid through the node's clock: no folded
    // lease is billed twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inbound = inbound(&fleet).await;
        if inbound.paid_through >= Some(restarted) {
            assert_eq!(inbound.owed.0, metered, "owes what was metered, once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node bills the fleet {} for {metered} metered, paid through {:?}",
            inbound.owed.0,
            inbound.paid_through
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    provider_settles(
        &chain,
        &node_again,
        2,
        provider_process,
        &provider_lines,
        metered,
    )
    .await;
    drop(node_again_process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_stops_paying_is_cut_off_within_the_grace() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &["--grace", "3"]);
    let port = free_port(&["127.0.0.4"]);
    let (_provider, provider_lines) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 3,
            ips: &["127.0.0.4"],
            country: "FR",
            price: PRICE,
        },
    );
    let (fleet, fleet_wallet, _) = paying_fleet(&chain, &node).await;
    let leased = fleet
        .lease(&http_lease(1, 120, "FR", PRICE))
        .await
        .expect("lease");
    let deal = leased.deals[0].deal.deal;
    let endpoint = leased.deals[0].endpoints[0].http.clone().expect("http");
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    let terms = paying.ready(deal, Duration::from_secs(10)).await;
    // Served and paid for a couple of seconds first.
    paying
        .paid_through(terms.start + 2, Duration::from_secs(15))
        .await;
    assert_eq!(
        curl(&endpoint, &format!("http://{site}/")).stdout,
        b"127.0.0.4"
    );

    let (stream_events, stopped_at) = {
        let mut events = fleet.stream().await.expect("a second stream to watch");
        let paid = paying.end(Stop::Abandon).await.expect("paid so far");
        assert!(paid > 0);
        (
            async move {
                loop {
                    match events.next().await {
                        Some(Ok(StreamEvent::CutOff { deal: cut, at })) if cut == deal => {
                            return at;
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("stream ended before the cut-off: {other:?}"),
                    }
                }
            },
            Instant::now(),
        )
    };
    let cut_at = tokio::time::timeout(Duration::from_secs(10), stream_events)
        .await
        .expect("cut off in time");
    let waited = stopped_at.elapsed();
    assert!(
        waited <= Duration::from_secs(3 + 3),
        "cut {waited:?} after the last payment (grace 3 s)"
    );
    wait_for(&provider_lines, &format!("deal {deal}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    // A refused forward is a 4xx answer from the proxy, not the site's page with our IP.
    while curl(&endpoint, &format!("http://{site}/")).stdout == b"127.0.0.4" {
        assert!(
            Instant::now() < deadline,
            "the proxy still serves a lapsed lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = fleet.deals().await.expect("deals");
    assert_eq!(view[0].deal.status, ipsx_sdk::DealStatus::PaymentLapsed);
    // The deal book closes it where billing stopped, not when the cut-off reached the engine.
    assert_eq!(view[0].deal.closed_at, Some(cut_at));

    // No new lease, and so no more free seconds, until the fleet pays what it owes.
    let again = http_lease(1, 10, "FR", PRICE);
    match fleet.lease(&again).await {
        Err(SdkError::Api { code, .. }) => assert_eq!(code, ErrorCode::PaymentOverdue),
        other => panic!("an overdue fleet is refused a lease, not {other:?}"),
    }
    let owed = terms.rate.0 * u128::from(cut_at - terms.start);
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &[]).await;
    // It learns of the cut lease from its stream's greeting, then pays for it.
    paying
        .wait(Duration::from_secs(15), |event| match event {
            StreamEvent::ProofAccepted { amount, .. } if amount.0 >= owed => Some(()),
            _ => None,
        })
        .await;
    let paid = paying.end(Stop::Finish).await.expect("pays up");
    assert_eq!(paid, owed, "every second served up to the cut, once");
    let leased = fleet.lease(&again).await.expect("paid up, it leases again");
    assert_eq!(leased.leased, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_gone_offline_has_its_deal_voided_and_the_ips_replaced() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &["--ready-timeout", "3"]);
    let port = free_port(&["127.0.0.5", "127.0.0.6"]);
    // The cheaper provider offers, then its machine dies.
    let (mut gone, _) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 4,
            ips: &["127.0.0.5"],
            country: "JP",
            price: PRICE,
        },
    );
    let _ = gone.0.kill();
    let _ = gone.0.wait();
    let (_online, online_lines) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 5,
            ips: &["127.0.0.6"],
            country: "JP",
            price: 2 * PRICE,
        },
    );
    let (fleet, _, _) = paying_fleet(&chain, &node).await;
    let leased = fleet
        .lease(
            &LeaseBody::new(1, 60, TokenAmount(2 * PRICE))
                .countries(["JP"])
                .protocols([ipsx_sdk::Protocol::Http]),
        )
        .await
        .expect("lease");
    assert_eq!(
        leased.deals[0].deal.ips[0].to_string(),
        "127.0.0.5",
        "cheapest first"
    );
    let first = leased.deals[0].deal.deal;
    let mut events = fleet.stream().await.expect("stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (mut voided, mut replacement) = (false, None);
    while !(voided && replacement.is_some()) {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("voided and replaced in time")
            .expect("stream open")
            .expect("event");
        match event {
            StreamEvent::LeaseEnded { terms, status, .. } if terms.deal == first => {
                assert_eq!(status, ipsx_sdk::LeaseEnd::Voided);
                assert_eq!(
                    terms.end, terms.start,
                    "nothing charged for a deal never served"
                );
                voided = true;
            }
            StreamEvent::LeaseReady {
                terms, provider, ..
            } if terms.deal != first => {
                assert_eq!(provider, chain.wallet(5).address());
                replacement = Some(terms.deal);
            }
            _ => {}
        }
    }
    let replacement = replacement.expect("replaced");
    wait_for(&online_lines, &format!("deal {replacement} ready"));
    let deals = fleet.deals().await.expect("deals");
    let again = deals
        .iter()
        .find(|d| d.deal.deal == replacement)
        .expect("the replacement deal");
    assert_eq!(again.deal.ips[0].to_string(), "127.0.0.6");
    assert_eq!(again.deal.status, ipsx_sdk::DealStatus::Active);
}

#[test]
fn the_demo_checks_itself_to_the_wei() {
    let output = std::process::Command::new(common::IPSX)
        .args([
            "demo",
            "--seconds",
            "8",
            "--providers",
            "3",
            "--ips-per-provider",
            "2",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("ipsx demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("balances equal metered usage minus commission, to the wei: OK"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches('✓').count(),
        6,
        "3 providers, the fleet, the node, the node's provider channels: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deposits_leases_pays_and_the_provider_withdraws() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &["--anchor-every", "1"]);
    let port = free_port(&["127.0.0.11"]);
    let (mut provider, provider_lines) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 6,
            ips: &["127.0.0.11"],
            country: "NL",
            price: PRICE,
        },
    );
    let rpc = chain.anvil.endpoint();
    let fleet_key = chain.key_file(dir.path(), 1);
    let provider_key = chain.key_file(dir.path(), 6);
    let ipsx = |key: &std::path::Path, args: &[&str]| {
        std::process::Command::new(common::IPSX)
            .args(args)
            .args(["--node", &node, "--rpc-url", &rpc, "--key-file"])
            .arg(key)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ipsx runs")
    };
    // `ipsx lease` deposits, opens the channel, prints the endpoints, pays until the end.
    let lease = ipsx(
        &fleet_key,
        &[
            "lease",
            "--count",
            "1",
            "--country",
            "NL",
            "--protocol",
            "http",
            "--duration",
            "6",
            "--max-price",
            &PRICE.to_string(),
            "--deposit",
            &(10 * TOKEN).to_string(),
            "--format",
            "csv",
        ],
    );
    let output = tokio::task::spawn_blocking(move || lease.wait_with_output())
        .await
        .expect("join")
        .expect("ipsx lease finishes when the lease ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let deal = stdout
        .lines()
        .nth(1)
        .and_then(|row| row.split(',').next())
        .unwrap_or_else(|| panic!("a CSV row: {stdout}"))
        .to_owned();
    let endpoint = stdout
        .lines()
        .nth(1)
        .and_then(|row| row.split(',').find(|field| field.starts_with("http://")))
        .unwrap_or_else(|| panic!("a CSV row with an http endpoint: {stdout}"))
        .to_owned();
    assert!(
        endpoint.ends_with(&format!("@127.0.0.11:{port}")),
        "{endpoint}"
    );
    let metered = 6 * PRICE;
    let paid_line = stderr
        .lines()
        .find(|line| line.starts_with("done: paid "))
        .unwrap_or_else(|| panic!("a closing line: {stderr}"));
    // The charged window starts when the provider reports ready, within the lease's 6 s.
    let paid: u128 = paid_line
        .trim_start_matches("done: paid ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an amount");
    assert!(paid > 0 && paid <= metered, "{paid_line}");
    assert_eq!(paid % PRICE, 0, "whole seconds: {paid_line}");

    // The provider is paid, stops (claiming on chain), and withdraws to its wallet.
    let client = signed_in(&node, &chain.wallet(6)).await;
    node_paid(&client, paid).await;
    holds_proof_for(&provider_lines, paid);
    provider.terminate();
    wait_for(&provider_lines, "earned ");
    let credited = paid - chain.node.commission_on(paid).await.expect("commission");
    let run = |args: &[&str]| {
        let output = ipsx(&provider_key, args).wait_with_output().expect("runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let balance = run(&["balance"]);
    assert!(
        balance.contains(&format!("free        {credited}")),
        "{balance}"
    );
    let withdrew = run(&["withdraw", "all"]);
    assert_eq!(withdrew.trim(), format!("withdrew {credited}; 0 left free"));
    let tokens = chain
        .node
        .token_balance(chain.wallet(6).address())
        .await
        .expect("tokens");
    assert_eq!(
        tokens, credited,
        "the provider's wallet holds what it earned"
    );
    let refused = ipsx(&provider_key, &["withdraw", "1"])
        .wait_with_output()
        .expect("runs");
    assert!(!refused.status.success(), "nothing left to withdraw");

    // The provider checks the deal against the chain: made, ready and ended, each proven by
    // the root the node anchored (the node anchors a second-long epoch once it closes).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let checked = loop {
        let output = ipsx(&provider_key, &["deals", "--proof", &deal])
            .wait_with_output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            break stdout;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not everything is anchored yet"),
            "only waiting may fail: {stdout}\n{stderr}"
        );
        assert!(std::time::Instant::now() < deadline, "{stdout}\n{stderr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(checked.matches("proven on chain").count(), 3, "{checked}");
    assert!(
        checked.contains(&chain.deployment.anchor.to_string()),
        "{checked}"
    );
    let stranger = ipsx(&fleet_key, &["deals", "--proof", "999999"])
        .wait_with_output()
        .expect("runs");
    assert!(!stranger.status.success(), "no such deal of the fleet's");
}
