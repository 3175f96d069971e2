//! A provider runs `ipsx provide` on two loopback aliases; a fleet leases with `ipsx lease`,
//! the daemon reports ready on its own, curl through the returned endpoints reaches a site
//! that sees the leased IPs, and cancelling the deal cuts the endpoints off.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{IPSX, curl, site, spawn, wait_for};
use serde_json::Value;

fn ipsx(node: &str, key: &Path, args: &[&str]) -> String {
    let output = Command::new(IPSX)
        .args(args)
        .args(["--node", node, "--key-file"])
        .arg(key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ipsx runs");
    assert!(
        output.status.success(),
        "ipsx {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn deals(node: &str, key: &Path) -> Vec<Value> {
    let json = ipsx(node, key, &["deals", "--format", "json"]);
    serde_json::from_str::<Value>(&json)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_provider_daemon_serves_what_the_fleet_leases_until_it_is_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site();
    let (_node, node_lines) = spawn(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("node").to_str().expect("utf-8 path"),
    ]);
    let node = format!(
        "http://{}",
        wait_for(&node_lines, "listening ").trim_start_matches("listening ")
    );

    let port = TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(dir.path().join("provider.key"), "33".repeat(32)).expect("key");
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"{node}\"\nkey_file = \"provider.key\"\nport = {port}\nallow_loopback = true\n\
             [[offer]]\nips = [\"127.0.0.2\", \"127.0.0.3\"]\ncountry = \"NL\"\nkind = \"datacenter\"\n\
             protocols = [\"socks5\", \"http\"]\nprice = 2\nhours = 1\n"
        ),
    )
    .expect("config");
    let (_provider, provider_lines) =
        spawn(&["provide", "--config", config.to_str().expect("utf-8 path")]);
    wait_for(&provider_lines, "serving 2 IPs");
    wait_for(&provider_lines, "offer ");

    let fleet_key = dir.path().join("fleet.key");
    std::fs::write(&fleet_key, "44".repeat(32)).expect("key");
    let leased = ipsx(
        &node,
        &fleet_key,
        &[
            "lease",
            "--count",
            "2",
            "--country",
            "NL",
            "--duration",
            "300",
            "--max-price",
            "3",
            "--format",
            "json",
        ],
    );
    let leased: Value = serde_json::from_str(&leased).expect("JSON");
    let deal = leased[0]["deal"].as_u64().expect("a deal");
    wait_for(&provider_lines, &format!("deal {deal} ready"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while deals(&node, &fleet_key)[0]["status"] != "active" {
        assert!(Instant::now() < deadline, "the deal never became active");
        std::thread::sleep(Duration::from_millis(200));
    }

    let page = format!("http://{site}/");
    let endpoints = leased[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    assert_eq!(endpoints.len(), 2);
    for endpoint in &endpoints {
        let ip = endpoint["ip"].as_str().expect("ip");
        for url in ["socks5h", "http"] {
            let through = curl(endpoint[url].as_str().expect("endpoint url"), &page);
            assert_eq!(
                String::from_utf8_lossy(&through.stdout),
                ip,
                "{url} via {ip}: {}",
                String::from_utf8_lossy(&through.stderr)
            );
        }
    }

    let cancelled = ipsx(&node, &fleet_key, &["cancel", &deal.to_string()]);
    assert!(cancelled.ends_with("cancelled\n"), "{cancelled}");
    wait_for(&provider_lines, &format!("deal {deal} cancelled: cut"));
    let refused = curl(endpoints[0]["socks5h"].as_str().expect("url"), &page);
    assert!(!refused.status.success(), "a cancelled lease is cut off");
}
