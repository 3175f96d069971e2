//! A home provider that nobody can connect to serves through the node's relay: real `ipsx node`
//! (with `--relay-quic` / `--relay-listen`) and `ipsx provide` (`relay = true`) processes on a
//! real chain, the provider dialling out over QUIC from its own loopback address (the
//! "public" IP the relay observes), curl as the fleet's client.
//!
//! * The fleet's endpoints point at the relay; HTTP and SOCKS5 both pass; the lease is paid
//!   and settles on chain to the wei, as for a direct provider.
//! * The relay drops credentials it did not seal before any reach the provider.
//! * A relayed provider may offer only the IP the relay sees; one IP serves one provider;
//!   a forged ticket gets nowhere.
//! * Dropped and back within the grace, the lease goes on; gone past it, the deal ends
//!   `provider_dropped` and the fleet pays only up to that end.
//!
//! The same story through a real NAT (network namespaces, masquerade) is
//! `scripts/test-nat.sh`.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::paying::{Stop, ended, pay_in_background, paying_fleet, provider_settles, signed_in};
use common::{Chain, TOKEN, curl, http_lease, site};
use ipsx_credentials::RelayKey;
use ipsx_sdk::{DealStatus, LeaseBody, LeaseEnd, OfferBody, StreamEvent, TokenAmount, Via};

const PRICE: u128 = TOKEN / 1_000;

/// `ipsx node` with payments and a relay on loopback; its URL.
fn node_with_relay(chain: &Chain, dir: &std::path::Path, grace: &str) -> (common::Process, String) {
    let (process, url, _) = chain.node(
        dir,
        "127.0.0.1:0",
        &[
            "--relay-quic",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-grace",
            grace,
        ],
    );
    (process, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_provider_serves_through_the_relay_and_is_paid_to_the_wei() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let (_node_process, node) = node_with_relay(&chain, dir.path(), "10");
    let (provider, provider_lines, _) =
        chain.relayed_provider(dir.path(), &node, 2, "127.0.0.5", "NL", PRICE);

    // The relay's measures reach the provider's profile (read every 10 s) and the engine.
    let provider_address = chain.wallet(2).address();
    let deadline = Instant::now() + Duration::from_secs(25);
    let profile = loop {
        let profile = ipsx_sdk::Client::new(&node)
            .profile(provider_address)
            .await
            .expect("profile");
        if profile.uptime.is_some() {
            break profile;
        }
        assert!(
            Instant::now() < deadline,
            "the relay's uptime reached the profile"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let relay = profile.relay.expect("relay measures");
    assert!(relay.connected && relay.rtt_ms.is_some(), "{relay:?}");
    assert_eq!(profile.uptime, Some(10_000), "connected all along");

    let (fleet, fleet_wallet, _) = paying_fleet(&chain, &node).await;
    let leased = fleet
        .lease(
            &LeaseBody::new(1, 12, TokenAmount(PRICE))
                .countries(["NL"])
                .protocols([ipsx_sdk::Protocol::Http, ipsx_sdk::Protocol::Socks5])
                .min_uptime(9_900),
        )
        .await
        .expect("lease");
    assert_eq!(
        leased.leased, 1,
        "a provider up all along passes min_uptime"
    );
    let deal = leased.deals[0].deal.deal;
    let endpoint = leased.deals[0].endpoints[0].clone();
    assert_eq!(endpoint.via, Via::Relay);
    assert_eq!(endpoint.ip, "127.0.0.5".parse::<IpAddr>().expect("ip"));
    assert_ne!(
        endpoint.proxy.ip(),
        endpoint.ip,
        "requesters dial the relay"
    );
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &leased.deals).await;
    paying
        .wait(Duration::from_secs(30), |event| {
            matches!(event, StreamEvent::LeaseReady { terms, .. } if terms.deal == deal)
                .then_some(())
        })
        .await;

    // Both protocols pass; on loopback there is no NAT, so the site sees the default route.
    for url in [
        endpoint.http.as_deref().expect("http"),
        endpoint.socks5h.as_deref().expect("socks5h"),
    ] {
        let through = curl(url, &format!("http://{site}/"));
        assert_eq!(
            String::from_utf8_lossy(&through.stdout),
            "127.0.0.1",
            "{url}: {}",
            String::from_utf8_lossy(&through.stderr)
        );
    }

    // Credentials the relay did not seal stop at the relay: unsealed, or with a forged seal.
    let (unsealed, _) = endpoint.password.rsplit_once('.').expect("sealed password");
    for password in [unsealed.to_owned(), format!("{unsealed}.AAAAAAAAAAAAAAAA")] {
        let proxy = format!("http://{}:{password}@{}", endpoint.username, endpoint.proxy);
        let refused = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(["-x", &proxy, &format!("http://{site}/")])
            .output()
            .expect("curl");
        assert_eq!(
            refused.stdout, b"407",
            "the relay asks for real credentials"
        );
    }

    let terms = paying.wait(Duration::from_secs(30), ended).await;
    let metered = terms.rate.0 * u128::from(terms.end - terms.start);
    let paid = paying.end(Stop::Finish).await.expect("finish");
    assert_eq!(paid, metered, "the fleet signed exactly what was metered");
    provider_settles(&chain, &node, 2, provider, &provider_lines, metered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_provider_may_offer_only_the_ip_the_relay_sees() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node_process, node) = node_with_relay(&chain, dir.path(), "10");
    let provider = signed_in(&node, &chain.wallet(3)).await;
    provider
        .register_relayed_provider()
        .await
        .expect("register relayed");
    let offer = |ip: &str| {
        OfferBody::new(
            vec![ip.parse().expect("ip")],
            "NL",
            ipsx_sdk::IpKind::Residential,
            vec![ipsx_sdk::Protocol::Http],
            ipsx_sdk_now() + 3600,
            TokenAmount(PRICE),
        )
    };
    let refused = provider
        .place_offer(&offer("127.0.0.6"))
        .await
        .expect_err("not connected yet");
    assert!(
        refused.to_string().contains("relay_not_connected"),
        "{refused}"
    );

    // Dial the relay as the daemon does, from 127.0.0.6.
    let link = dial(&provider, "127.0.0.6").await.expect("welcomed");
    assert_eq!(
        link.welcomed.observed,
        "127.0.0.6".parse::<IpAddr>().expect("ip")
    );
    assert!(!link.welcomed.resumed);
    let refused = provider
        .place_offer(&offer("127.0.0.7"))
        .await
        .expect_err("another IP");
    assert!(refused.to_string().contains("ip_not_observed"), "{refused}");
    provider
        .place_offer(&offer("127.0.0.6"))
        .await
        .expect("the observed IP is offered");

    // One public IP, one provider: a second provider behind the same address is refused.
    let other = signed_in(&node, &chain.wallet(4)).await;
    other.register_relayed_provider().await.expect("register");
    let error = dial(&other, "127.0.0.6").await.expect_err("IP in use");
    assert!(
        matches!(
            error,
            ipsx_relay::LinkError::Refused(ipsx_relay::wire::RefusalCode::IpInUse)
        ),
        "{error}"
    );
    // A ticket edited to name another provider does not verify.
    let mut access = access(&other).await;
    access.ticket.replace_range(
        0..2,
        if access.ticket.starts_with("AA") {
            "BB"
        } else {
            "AA"
        },
    );
    let error = ipsx_relay::Link::connect(&access, &link_config("127.0.0.8"))
        .await
        .expect_err("forged ticket");
    assert!(
        matches!(
            error,
            ipsx_relay::LinkError::Refused(ipsx_relay::wire::RefusalCode::BadTicket)
        ),
        "{error}"
    );
    link.close();
}

fn ipsx_sdk_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn access(provider: &ipsx_sdk::Client) -> ipsx_relay::Access {
    let access = provider.relay_access().await.expect("relay access");
    ipsx_relay::Access {
        relay: access.relay,
        certificate: alloy_primitives::hex::decode(&access.certificate).expect("hex"),
        ticket: access.ticket,
    }
}

fn link_config(bind: &str) -> ipsx_relay::LinkConfig {
    let mut config = ipsx_relay::LinkConfig::new("127.0.0.1:9".parse().expect("addr"));
    config.bind = format!("{bind}:0").parse().expect("bind");
    config
}

async fn dial(
    provider: &ipsx_sdk::Client,
    bind: &str,
) -> Result<ipsx_relay::Link, ipsx_relay::LinkError> {
    ipsx_relay::Link::connect(&access(provider).await, &link_config(bind)).await
}

/// Freezes a process (its QUIC connection goes silent, as when a home router drops off).
fn signal(process: &common::Process, signal: &str) {
    Command::new("kill")
        .args([signal, &process.0.id().to_string()])
        .status()
        .expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_back_within_the_grace_serves_on_and_one_gone_past_it_is_dropped() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    // The relay notices a silent provider after its 20 s idle timeout; a 30 s grace covers a
    // short outage of the first provider, not the long one of the second.
    let (_node_process, node) = node_with_relay(&chain, dir.path(), "30");
    let (back, back_lines, _) =
        chain.relayed_provider(dir.path(), &node, 2, "127.0.0.10", "BE", PRICE);
    let (gone, _gone_lines, _) =
        chain.relayed_provider(dir.path(), &node, 3, "127.0.0.11", "LU", PRICE);
    let (fleet, fleet_wallet, _) = paying_fleet(&chain, &node).await;
    let mut deals = Vec::new();
    for country in ["BE", "LU"] {
        let leased = fleet
            .lease(
                &LeaseBody::new(1, 600, TokenAmount(PRICE))
                    .countries([country])
                    .protocols([ipsx_sdk::Protocol::Http]),
            )
            .await
            .expect("lease");
        deals.push(leased.deals[0].clone());
    }
    let mut paying = pay_in_background(&fleet, &fleet_wallet, &deals).await;
    // Both providers report ready (the first may do so before the payer's stream is up, so
    // the deal book is asked rather than the stream awaited).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fleet
        .deals()
        .await
        .expect("deals")
        .iter()
        .all(|view| view.deal.status == DealStatus::Active)
    {
        assert!(Instant::now() < deadline, "both providers reported ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = |index: usize| deals[index].endpoints[0].http.clone().expect("http");
    assert_eq!(
        curl(&url(0), &format!("http://{site}/")).stdout,
        b"127.0.0.1"
    );

    // Both go silent. A request meanwhile fails cleanly, with an answer, not a hang.
    signal(&back, "-STOP");
    signal(&gone, "-STOP");
    let during = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "40",
        ])
        .args(["-x", &url(1), &format!("http://{site}/")])
        .output()
        .expect("curl");
    assert_ne!(during.stdout, b"200");
    assert_ne!(
        during.status.code(),
        Some(28),
        "the request in flight ends when the relay gives the connection up, not at curl's limit"
    );

    // The first comes back within the grace: it reconnects and serves the same lease.
    signal(&back, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&url(0), &format!("http://{site}/")).stdout != b"127.0.0.1" {
        if Instant::now() > deadline {
            let said: Vec<String> = back_lines.try_iter().collect();
            panic!("the provider serves again after reconnecting; it said {said:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The second stays away past the grace: its deal ends as dropped, billed up to its end.
    let dropped = deals[1].deal.deal;
    let terms = paying
        .wait(Duration::from_secs(60), |event| match event {
            StreamEvent::LeaseEnded { terms, status, .. } if terms.deal == dropped => {
                Some((*terms, *status))
            }
            _ => None,
        })
        .await;
    assert_eq!(terms.1, LeaseEnd::ProviderDropped);
    let views = fleet.deals().await.expect("deals");
    let status = |id| {
        views
            .iter()
            .find(|v| v.deal.deal == id)
            .map(|v| v.deal.status)
    };
    assert_eq!(status(dropped), Some(DealStatus::ProviderDropped));
    assert_eq!(status(deals[0].deal.deal), Some(DealStatus::Active));
    let paid = paying.end(Stop::Finish).await.expect("finish");
    let now = ipsx_sdk_now();
    let dropped_bill = terms.0.rate.0 * u128::from(terms.0.end - terms.0.start);
    let running = deals[0].deal.price.0 * u128::from(now + 1 - deals[0].deal.start);
    assert!(
        paid >= dropped_bill && paid <= dropped_bill + running,
        "paid {paid}: the dropped deal up to its end ({dropped_bill}) and the running one"
    );
    signal(&gone, "-CONT");
}

/// A direct provider proves every IP before its offer goes live: the node fetches its own echo
/// endpoint through the provider's proxy on that IP, with a credential only that provider's
/// proxy accepts, and the echo must see the IP itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_provider_can_offer_only_ips_its_proxy_egresses_from() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &[]);
    let port = common::free_port(&["127.0.0.12", "127.0.0.13", "127.0.0.14"]);
    let provider = signed_in(&node, &chain.wallet(5)).await;
    let registered = provider.register_provider(port).await.expect("register");
    let key = ipsx_proxy::CredentialKey::from_hex(&registered.proxy_key).expect("key");
    let proxy = |ip: &str, behind_nat: bool| {
        let mut config = ipsx_proxy::ProxyConfig::new(
            vec![format!("{ip}:{port}").parse().expect("addr")],
            key.clone(),
        );
        config.guard.allow_loopback = true;
        // Takes connections on the IP but leaves by the default route (127.0.0.1 here).
        config.public_ip = behind_nat.then(|| ip.parse().expect("ip"));
        ipsx_proxy::start(config)
    };
    let offer = |ip: &str| {
        OfferBody::new(
            vec![ip.parse().expect("ip")],
            "CH",
            ipsx_sdk::IpKind::Datacenter,
            vec![ipsx_sdk::Protocol::Socks5],
            ipsx_sdk_now() + 3600,
            TokenAmount(PRICE),
        )
    };
    let refused = |error: ipsx_sdk::SdkError| {
        assert_eq!(
            error.code(),
            Some(ipsx_sdk::ErrorCode::IpNotProven),
            "{error}"
        );
        error.to_string()
    };

    // Its own proxy, leaving from the IP it listens on: proven.
    let _honest = proxy("127.0.0.13", false).await.expect("proxy");
    provider
        .place_offer(&offer("127.0.0.13"))
        .await
        .expect("an IP its proxy leaves from goes live");
    // Nobody's proxy at the IP (an address it merely claims).
    let why = refused(
        provider
            .place_offer(&offer("127.0.0.14"))
            .await
            .expect_err("no proxy"),
    );
    assert!(why.contains("no proxy answered"), "{why}");
    // A proxy that takes connections on the IP but sends from another address.
    let _elsewhere = proxy("127.0.0.12", true).await.expect("proxy");
    let why = refused(
        provider
            .place_offer(&offer("127.0.0.12"))
            .await
            .expect_err("egress elsewhere"),
    );
    assert!(why.contains("leaves from 127.0.0.1"), "{why}");
    // Another provider's proxy on an IP (someone else's address): its key refuses the probe.
    let thief = signed_in(&node, &chain.wallet(6)).await;
    thief.register_provider(port).await.expect("register");
    let why = refused(
        thief
            .place_offer(&offer("127.0.0.13"))
            .await
            .expect_err("not its IP"),
    );
    assert!(why.contains("refused the probe (407)"), "{why}");

    // A direct provider has no relay measure, so a `min_uptime` filter passes it by.
    let (fleet, _, _) = paying_fleet(&chain, &node).await;
    let wanting = |min_uptime: Option<u16>| {
        let mut body = LeaseBody::new(1, 10, TokenAmount(PRICE)).countries(["CH"]);
        body.min_uptime = min_uptime;
        body
    };
    let picky = fleet.lease(&wanting(Some(1))).await.expect("lease");
    assert_eq!(picky.leased, 0, "never relayed: no uptime to pass");
    let plain = fleet.lease(&wanting(None)).await.expect("lease");
    assert_eq!(plain.leased, 1);
}

/// The crawler endpoint needs nothing new for a home provider: it takes the relay endpoints the
/// node hands out and crawls through them, over HTTP and SOCKS5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_crawls_through_the_gate_and_the_relay_to_a_home_provider() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let (_node_process, node) = node_with_relay(&chain, dir.path(), "10");
    let (_provider, _provider_lines, _) =
        chain.relayed_provider(dir.path(), &node, 7, "127.0.0.15", "PT", PRICE);
    let key = chain.key_file(dir.path(), 1);
    let rpc = chain.anvil.endpoint();
    let price = PRICE.to_string();
    let (mut gate, gate_lines) = common::spawn(&[
        "gate",
        "--node",
        &node,
        "--key-file",
        key.to_str().expect("utf-8"),
        "--rpc-url",
        &rpc,
        "--listen",
        "127.0.0.1:0",
        "--deposit",
        "50000000000000000000",
        "--max-price",
        &price,
    ]);
    let gate_addr = common::wait_for(&gate_lines, "listening ")
        .trim_start_matches("listening ")
        .to_owned();
    for scheme in ["http", "socks5h"] {
        let through = curl(
            &format!("{scheme}://fleet-country-pt:x@{gate_addr}"),
            &format!("http://{site}/"),
        );
        assert_eq!(
            String::from_utf8_lossy(&through.stdout),
            "127.0.0.1",
            "{scheme}: {}",
            String::from_utf8_lossy(&through.stderr)
        );
    }
    let deals = signed_in(&node, &chain.wallet(1))
        .await
        .deals()
        .await
        .expect("deals");
    let endpoints: Vec<&ipsx_sdk::Endpoint> =
        deals.iter().flat_map(|view| &view.endpoints).collect();
    assert!(!endpoints.is_empty(), "the gate leased");
    assert!(
        endpoints.iter().all(|endpoint| endpoint.via == Via::Relay),
        "the gate leased the home provider's IP, reached through the relay"
    );
    gate.terminate();
}

/// A relay run apart from the node (`ipsx relay`) reports to it with the shared relay key: a
/// home provider connects to that relay, and the fleet's endpoints point there. Reports not
/// tagged with the key, or copied, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_run_apart_serves_a_home_provider_and_forged_reports_change_nothing() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &["--accept-relays"]);
    let key_file = dir.path().join("node").join("relay.key");
    let relay_dir = dir.path().join("relay");
    let (_relay, relay_lines) = common::spawn(&[
        "relay",
        "--node",
        &node,
        "--key-file",
        key_file.to_str().expect("utf-8"),
        "--quic",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        relay_dir.to_str().expect("utf-8"),
    ]);
    let relay_line = common::wait_for(&relay_lines, "relay quic ");
    let requesters = relay_line.rsplit(' ').next().expect("address").to_owned();
    let (_provider, _provider_lines, _) =
        chain.relayed_provider(dir.path(), &node, 8, "127.0.0.16", "IE", PRICE);

    let (fleet, _, _) = paying_fleet(&chain, &node).await;
    let leased = fleet
        .lease(&http_lease(1, 30, "IE", PRICE))
        .await
        .expect("lease");
    let endpoint = leased.deals[0].endpoints[0].clone();
    assert_eq!(endpoint.via, Via::Relay);
    assert_eq!(endpoint.proxy.to_string(), requesters, "the relay it is on");
    let url = endpoint.http.expect("http");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&url, &format!("http://{site}/")).stdout != b"127.0.0.1" {
        assert!(Instant::now() < deadline, "served through the relay apart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A report that would take the provider's IP away: forged, then replayed.
    let key =
        ipsx_credentials::RelayKey::from_hex(&std::fs::read_to_string(&key_file).expect("key"))
            .expect("relay key");
    let report = |seq: u64| {
        serde_json::to_vec(&ipsx_sdk::RelayReport {
            relay: ipsx_sdk::RelayView {
                providers: "127.0.0.1:9".parse().expect("addr"),
                requesters: "127.0.0.1:9".parse().expect("addr"),
                certificate: String::new(),
            },
            seq,
            sent_at: ipsx_sdk_now(),
            changes: vec![ipsx_sdk::PresenceChange {
                provider: chain.wallet(8).address(),
                ip: "127.0.0.16".parse().expect("ip"),
                present: false,
            }],
            quality: Vec::new(),
        })
        .expect("json")
    };
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>, tag: String| {
        http.post(format!("{node}/v1/relays/report"))
            .header("x-ipsx-relay-tag", tag)
            .body(body)
            .send()
    };
    let forged = post(report(1), RelayKey::new([1; 32]).report_tag(&report(1)))
        .await
        .expect("answer");
    assert_eq!(forged.status(), 401);
    let first = report(7);
    let taken = post(first.clone(), key.report_tag(&first))
        .await
        .expect("answer");
    assert_eq!(taken.status(), 200, "a tagged report is taken");
    let replayed = post(first.clone(), key.report_tag(&first))
        .await
        .expect("answer");
    assert_eq!(replayed.status(), 409, "the same report twice is refused");
}
