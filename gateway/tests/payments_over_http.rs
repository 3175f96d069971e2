//! The node's payment endpoints fed bad input, on a real chain (anvil, the real contracts):
//! every refusal is a 4xx (or an `error` event on the stream) with a code, and changes nothing —
//! the wallet state reads the same before and after.

mod common;

use ipsx_api::{StreamEvent, StreamRequest, WalletView};
use ipsx_channels::{ChannelDomain, SigningKey};
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, deploy_local, spawn_anvil};
use ipsx_gateway::PaymentsConfig;
use ipsx_sdk::Client;
use reqwest::StatusCode;
use serde_json::json;

const TOKEN: u128 = 1_000_000_000_000_000_000;

fn anvil_key(anvil: &alloy::node_bindings::AnvilInstance, index: usize) -> SigningKey {
    let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
    SigningKey::from_bytes(&bytes).expect("key")
}

fn wallet_of(key: &SigningKey) -> ipsx_sdk::Wallet {
    ipsx_sdk::Wallet::from_bytes(&key.to_bytes().into()).expect("wallet")
}

async fn post_signed(
    url: String,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_endpoints_refuse_bad_input_and_change_nothing() {
    let anvil = spawn_anvil().expect("anvil (run `npm ci` in contracts/)");
    let rpc = anvil.endpoint();
    let node_key = anvil_key(&anvil, 0);
    let deployment = deploy_local(
        &rpc,
        &node_key,
        DeploySettings {
            commission_bps: 250,
            challenge_period: 3_600,
            treasury: node_key.address(),
        },
    )
    .await
    .expect("deploy");
    let node_chain = ChainClient::connect(&rpc, deployment.centralizer, node_key.clone())
        .await
        .expect("client");
    let fleet_key = anvil_key(&anvil, 1);
    let stranger_key = anvil_key(&anvil, 2);
    for key in [&fleet_key, &stranger_key] {
        node_chain
            .transfer_tokens(key.address(), 10 * TOKEN)
            .await
            .expect("fund");
    }

    // A node that is not the treasury refuses to start.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ipsx_gateway::GatewayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        31337,
        [5; 32],
        dir.path(),
    );
    config.payments = Some(PaymentsConfig::new(
        &rpc,
        deployment.centralizer,
        fleet_key.clone(),
    ));
    let refused = ipsx_gateway::start(config)
        .await
        .expect_err("not the treasury");
    assert!(refused.to_string().contains("treasury"), "{refused}");

    let (node, base, _dir) = common::node(|config| {
        config.payments = Some(PaymentsConfig::new(
            &rpc,
            deployment.centralizer,
            node_key.clone(),
        ));
    })
    .await;
    let fleet_wallet = wallet_of(&fleet_key);
    let token = common::sign_in(&base, &fleet_wallet).await;
    let (status, before) = common::get(format!("{base}/v1/wallet"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let before: WalletView = serde_json::from_value(before).expect("wallet view");
    let payments = before.payments.clone().expect("payments on");
    assert_eq!(payments.node, node_key.address());
    assert_eq!(payments.inbound, None);

    // Leasing without a channel: 402.
    let (status, body) = post_signed(
        format!("{base}/v1/leases"),
        &token,
        json!({"count": 1, "duration": 60, "max_price": "10"}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(common::code(&body), "channel_required");
    // Offering before registering (so before the node opened a channel to us): 409.
    let (status, body) = post_signed(
        format!("{base}/v1/offers"),
        &token,
        json!({"ips": ["127.0.0.2"], "country": "DE", "kind": "residential",
               "protocols": ["socks5"], "until": 4_000_000_000u64, "price": "1", "asn": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(common::code(&body), "provider_not_registered");

    // Channels that are not the caller's to the node.
    let fleet_chain = ChainClient::connect(&rpc, deployment.centralizer, fleet_key.clone())
        .await
        .expect("client");
    fleet_chain
        .deposit_with_permit(10 * TOKEN)
        .await
        .expect("deposit");
    let to_someone_else = fleet_chain
        .open_channel(stranger_key.address(), TOKEN)
        .await
        .expect("open");
    let stranger_chain = ChainClient::connect(&rpc, deployment.centralizer, stranger_key.clone())
        .await
        .expect("client");
    stranger_chain
        .deposit_with_permit(10 * TOKEN)
        .await
        .expect("deposit");
    let strangers = stranger_chain
        .open_channel(node_key.address(), TOKEN)
        .await
        .expect("open");
    let cases = [
        (
            json!({"channel": to_someone_else.0}),
            "bad_channel",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"channel": strangers.0}),
            "bad_channel",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"channel": 999}),
            "bad_channel",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"channel": "one"}),
            "bad_json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"channel": 1, "extra": true}),
            "bad_json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), "bad_json", StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, code, status_wanted) in cases {
        let (status, answer) =
            post_signed(format!("{base}/v1/wallet/channel"), &token, body.clone()).await;
        assert_eq!(
            (status, common::code(&answer)),
            (status_wanted, code),
            "{body}: {answer}"
        );
    }
    let (_, after) = common::get(format!("{base}/v1/wallet"), Some(&token)).await;
    assert_eq!(
        serde_json::from_value::<WalletView>(after).expect("view"),
        before,
        "nothing changed"
    );

    // The right channel registers; another one then conflicts.
    let mine = fleet_chain
        .open_channel(node_key.address(), 5 * TOKEN)
        .await
        .expect("open");
    let (status, body) = post_signed(
        format!("{base}/v1/wallet/channel"),
        &token,
        json!({"channel": mine.0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = fleet_chain
        .open_channel(node_key.address(), TOKEN)
        .await
        .expect("open");
    let (status, body) = post_signed(
        format!("{base}/v1/wallet/channel"),
        &token,
        json!({"channel": second.0}),
    )
    .await;
    assert_eq!(
        (status, common::code(&body)),
        (StatusCode::CONFLICT, "channel_already_registered")
    );

    // The stream: no session is a 401; bad messages are `error` events that change nothing.
    let (status, body) = common::get(format!("{base}/v1/stream"), None).await;
    assert_eq!(
        (status, common::code(&body)),
        (StatusCode::UNAUTHORIZED, "session_required")
    );
    let mut client = Client::new(&base);
    client.sign_in(&fleet_wallet).await.expect("sign in");
    let mut stream = client.stream().await.expect("stream");
    // Every stream opens with where the party stands: nothing folded yet.
    assert_eq!(
        stream.next().await.expect("open").expect("event"),
        StreamEvent::Settled {
            paid: ipsx_api::TokenAmount(0),
            earned: ipsx_api::TokenAmount(0)
        }
    );
    let domain = ChannelDomain::new(31337, deployment.centralizer);
    let forged = domain.sign_balance_proof(&stranger_key, mine, TOKEN);
    let too_much = domain.sign_balance_proof(&fleet_key, mine, 6 * TOKEN);
    let other_channel = domain.sign_balance_proof(&fleet_key, second, TOKEN);
    let hex =
        |proof: ipsx_channels::SignedProof| alloy_primitives::hex::encode_prefixed(proof.encode());
    let bad = [
        (
            r#"{"type":"proof","proof":"0x1234"}"#.to_owned(),
            "bad_proof",
        ),
        (r#"{"type":"proof","proof":"zz"}"#.to_owned(), "bad_proof"),
        (r#"{"type":"tip","amount":1}"#.to_owned(), "bad_json"),
        ("not json".to_owned(), "bad_json"),
        (
            json!({"type": "proof", "proof": hex(forged)}).to_string(),
            "proof_refused",
        ),
        (
            json!({"type": "proof", "proof": hex(too_much)}).to_string(),
            "proof_refused",
        ),
        (
            json!({"type": "proof", "proof": hex(other_channel)}).to_string(),
            "proof_refused",
        ),
    ];
    let (_, registered) = common::get(format!("{base}/v1/wallet"), Some(&token)).await;
    for (message, code) in bad {
        let request: Result<StreamRequest, _> = serde_json::from_str(&message);
        match request {
            Ok(request) => stream.send(&request).await.expect("send"),
            Err(_) => stream.send_text(message.clone()).await.expect("send"),
        }
        loop {
            match stream.next().await.expect("open").expect("event") {
                StreamEvent::Error { code: got, .. } => {
                    assert_eq!(got.as_str(), code, "{message}");
                    break;
                }
                StreamEvent::PaymentDue { .. } => continue,
                other => panic!("{message}: unexpected {other:?}"),
            }
        }
    }
    let (_, after) = common::get(format!("{base}/v1/wallet"), Some(&token)).await;
    assert_eq!(after, registered, "refused proofs changed nothing");

    // A good proof is stored and counted.
    let good = domain.sign_balance_proof(&fleet_key, mine, 1_000);
    stream
        .send(&StreamRequest::Proof { proof: hex(good) })
        .await
        .expect("send");
    loop {
        match stream.next().await.expect("open").expect("event") {
            StreamEvent::ProofAccepted { amount, .. } => {
                assert_eq!(amount.0, 1_000);
                break;
            }
            StreamEvent::PaymentDue { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The node follows the chain: a top-up reaches the hub; a close that admits less than
    // the node's latest proof is challenged with it.
    fleet_chain.top_up(mine, TOKEN).await.expect("top up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, view) = common::get(format!("{base}/v1/wallet"), Some(&token)).await;
        let view: WalletView = serde_json::from_value(view).expect("view");
        let deposit = view.payments.and_then(|p| p.inbound).map(|c| c.deposit.0);
        if deposit == Some(6 * TOKEN) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the top-up reached the node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    fleet_chain
        .start_close(mine, 400)
        .await
        .expect("unilateral close");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let state = node_chain.channel(mine).await.expect("channel");
        if state.closing_amount == 1_000 {
            break;
        }
        assert_eq!(
            state.closing_amount, 400,
            "closing as the sender said, until challenged"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the node challenged the close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    node.shutdown().await.expect("shutdown");
}
