//! A requester's wallet signs in to a node over HTTP: challenge, `personal_sign`, session,
//! then an authenticated call. Every bad input answers 4xx with a code and a message, and
//! changes nothing (the challenge stays usable after a forged answer).

mod common;

use common::*;
use ipsx_api::SessionResponse;
use ipsx_gateway::rate::Rate;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_wallet_signs_in_and_calls_as_itself() {
    let (node, base, _dir) = node(|_| {}).await;
    let alice = wallet(1);
    let challenge = challenge(&base, &alice).await;
    assert!(challenge.message.contains(&alice.address().to_string()));
    assert!(challenge.message.contains("Chain ID: 31337"));
    let (status, body) = post(
        format!("{base}/v1/auth/session"),
        json!({ "nonce": challenge.nonce, "signature": personal_sign(&alice, &challenge.message) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).expect("session");
    assert_eq!(session.address, alice.address());

    let (status, body) = get(format!("{base}/v1/me"), Some(&session.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["address"], json!(alice.address()));
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_input_answers_4xx_with_a_code_and_changes_nothing() {
    let (node, base, _dir) = node(|config| config.max_body = 1024).await;
    let (alice, mallory) = (wallet(1), wallet(2));
    let challenge = challenge(&base, &alice).await;

    let cases = [
        (
            "/v1/auth/challenge",
            json!({ "address": "0x1234" }),
            400,
            "bad_address",
        ),
        (
            "/v1/auth/challenge",
            json!({ "addr": "0x1234" }),
            422,
            "bad_json",
        ),
        (
            "/v1/auth/challenge",
            json!({ "address": "x".repeat(2000) }),
            413,
            "body_too_large",
        ),
        (
            "/v1/auth/session",
            json!({ "nonce": challenge.nonce, "signature": personal_sign(&mallory, &challenge.message) }),
            401,
            "wrong_signer",
        ),
        (
            "/v1/auth/session",
            json!({ "nonce": challenge.nonce, "signature": "0xzz" }),
            400,
            "bad_signature",
        ),
        (
            "/v1/auth/session",
            json!({ "nonce": challenge.nonce, "signature": "0x1234" }),
            401,
            "bad_signature",
        ),
        (
            "/v1/auth/session",
            json!({ "nonce": "feedbeef", "signature": personal_sign(&alice, &challenge.message) }),
            400,
            "unknown_nonce",
        ),
    ];
    for (path, body, status, expected) in cases {
        let (got, answer) = post(format!("{base}{path}"), body).await;
        assert_eq!(got.as_u16(), status, "{path}: {answer}");
        assert_eq!(code(&answer), expected, "{path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    // Not JSON at all, and not declared as JSON.
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/auth/challenge"))
        .body("address=0x1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(code(&answer), "json_required");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/auth/challenge"))
        .header("content-type", "application/json")
        .body("{\"address\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Sessions: none, malformed, forged, unknown endpoint.
    let (status, answer) = get(format!("{base}/v1/me"), None).await;
    assert_eq!((status.as_u16(), code(&answer)), (401, "session_required"));
    let (status, answer) = get(format!("{base}/v1/me"), Some("forged")).await;
    assert_eq!((status.as_u16(), code(&answer)), (401, "invalid_session"));
    let (status, answer) = get(format!("{base}/v1/nothing"), None).await;
    assert_eq!((status.as_u16(), code(&answer)), (404, "not_found"));

    // After all that, Alice's challenge still works.
    let (status, answer) = post(
        format!("{base}/v1/auth/session"),
        json!({ "nonce": challenge.nonce, "signature": personal_sign(&alice, &challenge.message) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sessions_and_anonymous_callers_are_rate_limited() {
    let (node, base, _dir) = node(|config| {
        config.session_rate = Rate {
            per_second: 1.0,
            burst: 3.0,
        };
        config.anonymous_rate = Rate {
            per_second: 1.0,
            burst: 4.0,
        };
    })
    .await;
    let alice = wallet(1);
    let challenge = challenge(&base, &alice).await;
    let (_, body) = post(
        format!("{base}/v1/auth/session"),
        json!({ "nonce": challenge.nonce, "signature": personal_sign(&alice, &challenge.message) }),
    )
    .await;
    let session: SessionResponse = serde_json::from_value(body).expect("session");
    for _ in 0..3 {
        let (status, _) = get(format!("{base}/v1/me"), Some(&session.token)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/me"))
        .bearer_auth(&session.token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Two anonymous calls were spent signing in; two more pass, the fifth does not.
    for _ in 0..2 {
        let (status, _) = post(
            format!("{base}/v1/auth/challenge"),
            json!({ "address": alice.address().to_string() }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, answer) = post(
        format!("{base}/v1/auth/challenge"),
        json!({ "address": alice.address().to_string() }),
    )
    .await;
    assert_eq!((status.as_u16(), code(&answer)), (429, "rate_limited"));
    node.shutdown().await.expect("shutdown");
}

/// An attacker with many addresses asks for challenges as fast as the node answers, more than
/// the old table of pending challenges held; a new user still signs in, and the node kept no
/// state for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_flood_locks_nobody_out() {
    // The per-IP limit stands in for the attacker's hundreds of addresses.
    let (node, base, _dir) = node(|config| {
        config.anonymous_rate = Rate {
            per_second: 1e9,
            burst: 1e9,
        }
    })
    .await;
    const FLOOD: usize = 110_000;
    const CONNECTIONS: usize = 32;
    let mut attackers = Vec::new();
    for connection in 0..CONNECTIONS {
        let base = base.clone();
        attackers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 3, connection as u8 + 1]))
                .build()
                .expect("client");
            let mut refused = 0usize;
            for n in 0..FLOOD / CONNECTIONS {
                let address = format!("0x{:040x}", connection * 1_000_000 + n + 1);
                let response = client
                    .post(format!("{base}/v1/auth/challenge"))
                    .json(&json!({ "address": address }))
                    .send()
                    .await
                    .expect("send");
                refused += usize::from(!response.status().is_success());
            }
            refused
        }));
    }
    let mut refused = 0;
    for attacker in attackers {
        refused += attacker.await.expect("attacker");
    }
    assert_eq!(refused, 0, "every challenge was answered");
    // Alice, new, signs in at once.
    let alice = wallet(1);
    let token = sign_in(&base, &alice).await;
    let (status, body) = get(format!("{base}/v1/me"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.shutdown().await.expect("shutdown");
}

/// A node asked to listen on port 0 names the port it got in sign-in messages (EIP-4361
/// verifiers compare the domain with the host they reached), or its public URL when it has
/// one; mixed-case addresses must carry a valid checksum.
#[tokio::test]
async fn sign_in_messages_name_the_address_clients_reach() {
    let (bound, base, _dir) = node(|_| {}).await;
    let alice = wallet(1);
    let issued = challenge(&base, &alice).await;
    let first_line = issued.message.lines().next().expect("a line");
    assert_eq!(
        first_line,
        format!(
            "{} wants you to sign in with your Ethereum account:",
            bound.addr
        )
    );
    assert!(
        issued
            .message
            .contains(&format!("\nURI: http://{}\n", bound.addr))
    );
    let (status, body) = post(
        format!("{base}/v1/auth/challenge"),
        json!({ "address": "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "bad_address");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("checksum")
    );
    bound.shutdown().await.expect("shutdown");

    let (public, base, _dir) = node(|config| {
        config.public_url = Some("https://ipsx.example:8443".into());
    })
    .await;
    let issued = challenge(&base, &alice).await;
    assert!(
        issued
            .message
            .starts_with("ipsx.example:8443 wants you to sign in")
    );
    assert!(
        issued
            .message
            .contains("\nURI: https://ipsx.example:8443\n")
    );
    public.shutdown().await.expect("shutdown");
}

/// Some wallets and libraries send `v` as 0/1 rather than 27/28.
#[tokio::test]
async fn signatures_with_v_0_or_1_sign_in() {
    let (node, base, _dir) = node(|_| {}).await;
    let alice = wallet(1);
    let challenge = challenge(&base, &alice).await;
    let mut signature =
        alloy_primitives::hex::decode(personal_sign(&alice, &challenge.message)).expect("hex");
    signature[64] -= 27;
    let (status, body) = post(
        format!("{base}/v1/auth/session"),
        json!({ "nonce": challenge.nonce, "signature": alloy_primitives::hex::encode_prefixed(&signature) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.shutdown().await.expect("shutdown");
}

/// Runs the npm `siwe` verifier (pinned in `gateway/tests/siwe`, installed by the test
/// command) on a message and signature, expecting `domain`.
fn siwe_verify(message: &str, signature: &str, domain: &str, nonce: &str) -> Value {
    use std::io::Write as _;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siwe");
    assert!(
        dir.join("node_modules/siwe").exists(),
        "run `npm ci` in {} (scripts/test.sh does)",
        dir.display()
    );
    let mut child = std::process::Command::new("node")
        .arg("verify.mjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            json!({ "message": message, "signature": signature, "domain": domain, "nonce": nonce })
                .to_string()
                .as_bytes(),
        )
        .expect("write");
    let output = child.wait_with_output().expect("verifier");
    serde_json::from_slice(&output.stdout).expect("the verifier's JSON")
}

/// A dapp verifying our sign-in message with the npm `siwe` library accepts it for the host it
/// reached (the node listened on port 0), and refuses it for any other.
#[tokio::test]
async fn the_npm_siwe_verifier_accepts_the_nodes_messages() {
    let (node, base, _dir) = node(|_| {}).await;
    let alice = wallet(1);
    let issued = challenge(&base, &alice).await;
    let signature = personal_sign(&alice, &issued.message);
    let host = node.addr.to_string();
    let verdict = siwe_verify(&issued.message, &signature, &host, &issued.nonce);
    assert_eq!(verdict["ok"], json!(true), "{verdict}");
    assert_eq!(verdict["address"], json!(alice.address().to_checksum(None)));
    let elsewhere = siwe_verify(&issued.message, &signature, "127.0.0.1:0", &issued.nonce);
    assert_eq!(elsewhere["ok"], json!(false), "{elsewhere}");
    node.shutdown().await.expect("shutdown");
}
