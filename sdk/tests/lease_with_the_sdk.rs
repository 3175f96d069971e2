//! A crawler's whole use of the SDK against a real node: sign in with a local wallet, lease by
//! filter, read the endpoints, see its deals, cancel, rate; and the provider's side through the
//! same client. Refusals come back with the node's code.

use std::net::IpAddr;

use ipsx_sdk::{Client, LeaseBody, OfferBody, SdkError, TokenAmount, Wallet};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn wallet(seed: u8) -> Wallet {
    Wallet::from_bytes(&[seed; 32].into()).expect("key")
}

#[tokio::test]
async fn a_crawler_leases_through_the_sdk_and_a_provider_serves_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ipsx_gateway::GatewayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        31337,
        [3; 32],
        dir.path(),
    );
    // Ratings weigh what their deals cost; with no prior one rating is the average.
    config.rating_prior = 0;
    let node = ipsx_gateway::start(config).await.expect("node");
    let base = format!("http://{}", node.addr);

    let mut provider = Client::new(&base);
    let not_yet = provider.register_provider(1080).await;
    assert!(matches!(not_yet, Err(SdkError::NotSignedIn)), "{not_yet:?}");
    provider
        .sign_in(&wallet(1))
        .await
        .expect("provider signs in");
    let registered = provider.register_provider(1080).await.expect("register");
    assert_eq!(registered.proxy_key.len(), 64);
    let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| ip.parse().expect("ip"))
        .collect();
    let offer = OfferBody::new(
        ips,
        "DE",
        ipsx_sdk::IpKind::Residential,
        [ipsx_sdk::Protocol::Socks5, ipsx_sdk::Protocol::Http],
        now() + 3600,
        TokenAmount(2),
    );
    let placed = provider.place_offer(&offer).await.expect("offer");
    assert_eq!(placed.ips, 3);

    let mut crawler = Client::new(format!("{base}/"));
    let session = crawler.sign_in(&wallet(2)).await.expect("crawler signs in");
    assert_eq!(session.address, wallet(2).address());
    let leased = crawler
        .lease(
            &LeaseBody::new(2, 30, TokenAmount(5))
                .countries(["DE"])
                .protocols([ipsx_sdk::Protocol::Socks5])
                .all_or_nothing(),
        )
        .await
        .expect("lease");
    assert_eq!(leased.leased, 2);
    let endpoints: Vec<_> = leased.deals.iter().flat_map(|d| &d.endpoints).collect();
    assert_eq!(endpoints.len(), 2);
    assert!(endpoints.iter().all(|e| {
        e.socks5h
            .as_deref()
            .is_some_and(|url| url.starts_with("socks5h://"))
    }));

    // Too many, all or nothing: nothing leased, nothing refused.
    let none = crawler
        .lease(&LeaseBody::new(5, 30, TokenAmount(5)).all_or_nothing())
        .await
        .expect("answered");
    assert_eq!(none.leased, 0);
    // A bad filter: the node's code comes through.
    let refused = crawler
        .lease(&LeaseBody::new(1, 30, TokenAmount(5)).countries(["QQ"]))
        .await
        .expect_err("unknown country");
    assert_eq!(
        refused.code(),
        Some(ipsx_sdk::ErrorCode::UnknownCountry),
        "{refused}"
    );

    let deal = leased.deals[0].deal.deal;
    assert_eq!(
        provider.ready(deal).await.expect("ready").deal.status,
        ipsx_sdk::DealStatus::Active
    );
    assert_eq!(
        crawler.deals().await.expect("deals").len(),
        leased.deals.len()
    );
    // Served for a second at least, so there is something to rate.
    let served_from = now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while now() <= served_from {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stood still"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        crawler.cancel_deal(deal).await.expect("cancel").deal.status,
        ipsx_sdk::DealStatus::Cancelled
    );
    crawler.rate(deal, 5).await.expect("rate");
    let profile = crawler.profile(wallet(1).address()).await.expect("profile");
    assert_eq!(profile.average_rating, Some(500));
    let not_owner = provider
        .cancel_deal(deal)
        .await
        .expect_err("not the requester");
    assert_eq!(not_owner.code(), Some(ipsx_sdk::ErrorCode::NotOwner));
    node.shutdown().await.expect("shutdown");
}
