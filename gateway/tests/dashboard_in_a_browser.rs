//! The public dashboard as a visitor sees it, in a real headless Chromium: while a provider
//! offers IPs in two countries and a crawler leases every quarter second, the page served at
//! `/` shows depth for both countries, its deals counter moves, recent deals and the node's
//! health show, and it loads nothing from any host but the node. A screenshot is written
//! under the test's output folder. The page's reads are public and anonymous: they name no
//! party and no IP, and only the embedded assets are served.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use ipsx_sdk::{Client, IpKind, LeaseBody, OfferBody, Protocol, TokenAmount, Wallet};
use reqwest::StatusCode;

fn wallet(seed: u8) -> Wallet {
    Wallet::from_bytes(&[seed; 32].into()).expect("key")
}

fn dashboard_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard")
}

async fn offer(provider: &Client, country: &str, first: u8, price: u128) {
    let ips: Vec<IpAddr> = (first..first + 20)
        .map(|last| format!("127.0.3.{last}").parse().expect("ip"))
        .collect();
    provider
        .place_offer(&OfferBody::new(
            ips,
            country,
            IpKind::Residential,
            [Protocol::Socks5, Protocol::Http],
            common::now() + 3_600,
            TokenAmount(price),
        ))
        .await
        .expect("offer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_dashboard_shows_the_live_market_in_chromium() {
    let dashboard = dashboard_dir();
    assert!(
        dashboard.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in dashboard/ (scripts/test.sh does)"
    );
    let (node, base, _dir) = common::node(|_| {}).await;
    let mut provider = Client::new(&base);
    provider.sign_in(&wallet(1)).await.expect("sign in");
    provider.register_provider(1080).await.expect("register");
    offer(&provider, "DE", 10, 3).await;
    offer(&provider, "FR", 40, 5).await;

    let mut crawler = Client::new(&base);
    crawler.sign_in(&wallet(2)).await.expect("sign in");
    let leasing = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            // Five-second leases: the IPs come back, the market keeps moving.
            let _ = crawler.lease(&LeaseBody::new(1, 5, TokenAmount(10))).await;
        }
    });

    // What the page reads, read as anyone.
    let page = reqwest::get(format!("{base}/")).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(page.text().await.expect("html").contains("/assets/app.js"));
    for path in [
        "/assets/nothing.js",
        "/assets/..%2Fmod.rs",
        "/assets/%2E%2E/%2E%2E/Cargo.toml",
        "/assets/vendor/..%2F..%2Fmod.rs",
    ] {
        let status = reqwest::get(format!("{base}{path}"))
            .await
            .expect("asset")
            .status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let recent = loop {
        let (status, body) = common::get(format!("{base}/v1/market/recent"), None).await;
        assert_eq!(status, StatusCode::OK);
        if body["deals"]
            .as_array()
            .is_some_and(|deals| !deals.is_empty())
        {
            break body.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no deal shows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !recent.contains("0x") && !recent.contains("127.0.3."),
        "recent deals name no party and no IP: {recent}"
    );

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).expect("output folder");
    // The script bounds each of its waits (20 s), so it ends by itself.
    let mut browser = std::process::Command::new("node");
    browser.arg(dashboard.join("tests/public.mjs")).args([
        base.as_str(),
        out.to_str().expect("utf-8"),
        "DE,FR",
    ]);
    let output = tokio::task::spawn_blocking(move || browser.output())
        .await
        .expect("join")
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(out.join("public.png")).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    leasing.abort();
    // A visitor who keeps the live stream open does not hold the node's shutdown.
    let mut live = reqwest::get(format!("{base}/v1/market/live"))
        .await
        .expect("live");
    assert_eq!(
        live.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let first = live.chunk().await.expect("a tick").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("event: tick"));
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("the node stops with a stream open")
        .expect("shutdown");
    drop(live);
}
