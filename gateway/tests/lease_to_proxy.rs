//! From a lease call to traffic leaving the leased IP: a provider registers its proxy with the
//! node and runs it with the key the node gave it; a fleet leases two IPs and gets endpoints;
//! curl through each `socks5h://` and `http://` endpoint reaches a site that sees the leased
//! IP. The provider's proxy never talks to the node.

mod common;

use std::net::SocketAddr;

use common::*;
use ipsx_api::{Leased, ProviderRegistered};
use ipsx_proxy::{CredentialKey, Guard, ProxyConfig};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A site that answers every request with the IP it came from.
async fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

async fn curl(proxy: &str, url: &str) -> String {
    let ran = run(
        "curl",
        vec![
            "-sS".into(),
            "--max-time".into(),
            "5".into(),
            "-x".into(),
            proxy.into(),
            url.into(),
        ],
    )
    .await;
    assert_eq!(ran.0, Some(0), "curl failed: {}", ran.2);
    ran.1
}

async fn run(program: &str, args: Vec<String>) -> (Option<i32>, String, String) {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test.sh does): {e}"));
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn leased_endpoints_carry_traffic_from_the_leased_ips() {
    let site = site().await;
    let (node, base, _dir) = node(|_| {}).await;
    let (provider, fleet) = (wallet(1), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;

    // The provider registers its proxy port and runs the proxy with the node's key.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/providers"),
        &provider_token,
        Some(json!({ "port": port })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let registered: ProviderRegistered = serde_json::from_value(body).expect("registered");
    let (_, again) = call(
        Method::POST,
        format!("{base}/v1/providers"),
        &provider_token,
        Some(json!({ "port": port })),
    )
    .await;
    assert_eq!(
        again["proxy_key"],
        json!(registered.proxy_key),
        "the key is stable"
    );
    let mut config = ProxyConfig::new(
        vec![
            format!("127.0.0.2:{port}").parse().expect("addr"),
            format!("127.0.0.3:{port}").parse().expect("addr"),
        ],
        CredentialKey::from_hex(&registered.proxy_key).expect("key"),
    );
    config.guard = Guard {
        allow_loopback: true,
    };
    let proxy = ipsx_proxy::start(config).await.expect("proxy");

    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(json!({
            "ips": ["127.0.0.2", "127.0.0.3"],
            "country": "NL",
            "asn": 64501,
            "kind": "datacenter",
            "protocols": ["socks5", "http"],
            "until": now() + 3600,
            "price": 3,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/leases"),
        &fleet_token,
        Some(json!({ "count": 2, "protocols": ["socks5"], "duration": 120, "max_price": 5 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let leased: Leased = serde_json::from_value(body).expect("leased");
    let endpoints: Vec<_> = leased
        .deals
        .iter()
        .flat_map(|d| d.endpoints.clone())
        .collect();
    assert_eq!(endpoints.len(), 2);
    let page = format!("http://{site}/");
    for endpoint in &endpoints {
        let socks = endpoint.socks5h.as_deref().expect("socks5h endpoint");
        assert_eq!(curl(socks, &page).await, endpoint.ip.to_string());
        let http = endpoint.http.as_deref().expect("http endpoint");
        assert_eq!(curl(http, &page).await, endpoint.ip.to_string());
    }
    // The offer did not include HTTPS: a CONNECT tunnel is refused by the proxy.
    let ran = run(
        "curl",
        vec![
            "-sS".into(),
            "--max-time".into(),
            "5".into(),
            "-p".into(),
            "-x".into(),
            endpoints[0].http.clone().expect("http"),
            page.clone(),
        ],
    )
    .await;
    assert_ne!(
        ran.0,
        Some(0),
        "CONNECT without HTTPS in the offer must fail"
    );

    // The provider's view has no secrets; its proxy metered the fleet's traffic.
    let (_, body) = call(
        Method::GET,
        format!("{base}/v1/deals"),
        &provider_token,
        None,
    )
    .await;
    assert!(
        body["deals"]
            .as_array()
            .is_some_and(|deals| deals.iter().all(|deal| deal["endpoints"] == json!([])))
    );
    for deal in &leased.deals {
        let usage = proxy.leases.usage(deal.deal.deal).expect("metered");
        assert!(usage.connections >= 2 && usage.bytes_down > 0, "{usage:?}");
    }
    node.shutdown().await.expect("shutdown");
}
