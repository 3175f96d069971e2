//! Helpers for the gateway's HTTP stories: a node on a temporary data directory, wallets,
//! JSON calls, sign-in.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use ipsx_api::{ChallengeResponse, SessionResponse};
use ipsx_gateway::{GatewayConfig, GatewayHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A node keeping its state in `dir` (start it again on the same dir to restart it).
pub async fn node_in(dir: &Path, configure: impl FnOnce(&mut GatewayConfig)) -> GatewayHandle {
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().expect("addr"), 31337, [5; 32], dir);
    configure(&mut config);
    ipsx_gateway::start(config).await.expect("gateway")
}

pub async fn node(
    configure: impl FnOnce(&mut GatewayConfig),
) -> (GatewayHandle, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_in(dir.path(), configure).await;
    let base = format!("http://{}", node.addr);
    (node, base, dir)
}

pub fn wallet(seed: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&[seed; 32].into()).expect("key")
}

/// Posts JSON; returns status and body.
pub async fn post(url: String, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

pub async fn get(url: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

pub async fn challenge(base: &str, wallet: &PrivateKeySigner) -> ChallengeResponse {
    let (status, body) = post(
        format!("{base}/v1/auth/challenge"),
        json!({ "address": wallet.address().to_string() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).expect("challenge")
}

pub fn personal_sign(wallet: &PrivateKeySigner, message: &str) -> String {
    let signature = wallet.sign_message_sync(message.as_bytes()).expect("sign");
    format!("0x{}", alloy_primitives::hex::encode(signature.as_bytes()))
}

/// Signs `wallet` in; returns its bearer token.
pub async fn sign_in(base: &str, wallet: &PrivateKeySigner) -> String {
    let challenge = challenge(base, wallet).await;
    let (status, body) = post(
        format!("{base}/v1/auth/session"),
        json!({ "nonce": challenge.nonce, "signature": personal_sign(wallet, &challenge.message) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).expect("session");
    session.token
}

/// Sends JSON with a bearer token; returns status and body.
pub async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// The wall clock in whole seconds, as the engine stamps commands.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Waits (polling, with a deadline) for the wall clock to reach `second`: the engine's clock
/// is the wall clock's seconds, so a deal served "for a second" needs that second to pass.
pub async fn until_second(second: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while now() < second {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stood still"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
