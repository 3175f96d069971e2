//! The signed-in dashboard, as its users reach it: `ipsx dashboard` prints a one-time link for
//! the wallet; opened in a real headless Chromium during a paid exchange on anvil, a provider
//! sees its offers, its running leases and its earnings growing — and nothing of another
//! provider's deals, nor any credentials; the fleet sees its leases with endpoints to copy, its
//! spending and its channel. A link works once. A browser wallet (EIP-1193) signs the fleet in
//! through the node's EIP-4361 challenge as well.

mod common;

use std::time::Duration;

use common::paying::{Stop, pay_in_background, paying_fleet};
use common::{Chain, Offer, free_port};
use ipsx_sdk::{LeaseBody, TokenAmount};

const PRICE: u128 = common::TOKEN / 1_000;

/// `ipsx dashboard` for wallet `index`: the link it prints.
fn login_link(chain: &Chain, dir: &std::path::Path, node: &str, index: usize) -> String {
    let key = chain.key_file(dir, index);
    let output = std::process::Command::new(common::IPSX)
        .args(["dashboard", "--node", node, "--key-file"])
        .arg(&key)
        .output()
        .expect("ipsx dashboard runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(url.starts_with(&format!("{node}/#login=")), "{url}");
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_fleets_see_their_own_market_in_the_browser() {
    let dashboard = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard");
    assert!(
        dashboard.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in dashboard/ (scripts/test.sh does)"
    );
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node_process, node, _) = chain.node(dir.path(), "127.0.0.1:0", &[]);
    let port = free_port(&["127.0.0.21", "127.0.0.22", "127.0.0.23"]);
    let (_provider_a, _) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 2,
            ips: &["127.0.0.21", "127.0.0.22"],
            country: "DE",
            price: PRICE,
        },
    );
    let (_provider_b, _) = chain.provider(
        dir.path(),
        &node,
        port,
        Offer {
            wallet: 3,
            ips: &["127.0.0.23"],
            country: "FR",
            price: PRICE,
        },
    );
    let (fleet, fleet_wallet, _) = paying_fleet(&chain, &node).await;
    let mut deals = Vec::new();
    for country in ["DE", "FR"] {
        let leased = fleet
            .lease(&LeaseBody::new(1, 120, TokenAmount(PRICE)).countries([country]))
            .await
            .expect("lease");
        deals.push(leased.deals[0].clone());
    }
    let paying = pay_in_background(&fleet, &fleet_wallet, &deals).await;
    let (of_a, of_b) = (&deals[0].deal, &deals[1].deal);

    let expectations = serde_json::json!({
        "provider": {
            "url": login_link(&chain, dir.path(), &node, 2),
            "deals": [of_a.deal],
            "ips": of_a.ips,
        },
        "requester": {
            "url": login_link(&chain, dir.path(), &node, 1),
            "deals": [of_a.deal, of_b.deal],
        },
        "stranger": { "deals": [of_b.deal], "ips": of_b.ips },
        "wallet": {
            "key": format!("0x{}", alloy_primitives::hex::encode(chain.anvil.keys()[1].to_bytes())),
            "deals": [of_a.deal, of_b.deal],
        },
    });
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).expect("output folder");
    let file = out.join("account-expectations.json");
    std::fs::write(&file, expectations.to_string()).expect("expectations");
    // The script bounds each of its waits (30 s), so it ends by itself.
    let mut browser = std::process::Command::new("node");
    browser
        .arg(dashboard.join("tests/account.mjs"))
        .arg(&file)
        .arg(&out);
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
    for picture in ["provider.png", "requester.png"] {
        let png = std::fs::read(out.join(picture)).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{picture}");
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), paying.end(Stop::Abandon)).await;
}
