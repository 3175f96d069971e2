//! The OpenAPI document a node serves lists operations that exist: each one, called on a
//! running node, is routed (it may refuse the empty call, but never with "no such endpoint").

mod common;

use ipsx_gateway::openapi::OPERATIONS;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn every_documented_operation_is_served() {
    let (node, base, _dir) = common::node(|_| {}).await;
    let (status, document) = common::get(format!("{base}/openapi.json"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["info"]["title"], "IPSX node");
    let token = common::sign_in(&base, &common::wallet(9)).await;
    for operation in OPERATIONS {
        assert!(
            document["paths"][operation.path][operation.method.to_lowercase()].is_object(),
            "{} {} is in the document",
            operation.method,
            operation.path
        );
        let path = operation
            .path
            .replace("{id}", "1")
            .replace("{address}", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        let method = Method::from_bytes(operation.method.as_bytes()).expect("method");
        let response = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let streams = response
            .headers()
            .get("content-type")
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        // An event stream never ends: that it answered as one is enough.
        let body = if streams {
            String::new()
        } else {
            response.text().await.unwrap_or_default()
        };
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {path}",
            operation.method
        );
        assert!(
            !body.contains("no such endpoint"),
            "{} {path} is not routed: {status} {body}",
            operation.method
        );
    }
    node.shutdown().await.expect("shutdown");
}
