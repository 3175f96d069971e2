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
