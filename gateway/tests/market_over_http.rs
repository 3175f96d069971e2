//! A provider offers two IPs in Germany and one in France; a fleet signs in and leases IPs by
//! filter in one call, and sees its deals with their IPs. Bad market input answers 4xx and
//! changes nothing; what the node acknowledged is still there after a restart.

mod common;

use common::*;
use ipsx_api::{Deals, LeaseView, Leased, OfferPlaced};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn offer(ips: &[&str], country: &str, price: u64) -> Value {
    json!({
        "ips": ips,
        "country": country,
        "asn": 64500,
        "kind": "residential",
        "protocols": ["socks5", "http", "https"],
        "until": now() + 3600,
        "price": price.to_string(),
    })
}

fn lease(count: u32, countries: &[&str], max_price: u64) -> Value {
    json!({
        "count": count,
        "countries": countries,
        "protocols": ["socks5"],
        "duration": 60,
        "max_price": max_price,
    })
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_fleet_leases_ips_by_filter_and_the_deals_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_in(dir.path(), |_| {}).await;
    let base = format!("http://{}", node.addr);
    let (provider, fleet) = (wallet(1), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;

    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(offer(&["127.0.0.2", "127.0.0.3"], "DE", 10)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let german: OfferPlaced = serde_json::from_value(body).expect("offer");
    assert_eq!(german.ips, 2);
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(offer(&["127.0.0.4"], "FR", 10)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Two IPs in Germany, in one call.
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/leases"),
        &fleet_token,
        Some(lease(2, &["DE"], 20)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let leased: Leased = serde_json::from_value(body).expect("leased");
    assert_eq!(leased.leased, 2);
    let mut ips: Vec<String> = leased
        .deals
        .iter()
        .flat_map(|view| view.deal.ips.iter().map(ToString::to_string))
        .collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.2", "127.0.0.3"]);
    let deal = &leased.deals[0].deal;
    assert_eq!(
        (deal.provider, deal.requester),
        (provider.address(), fleet.address())
    );
    assert_eq!(deal.end - deal.start, 60);
    assert_eq!(deal.status, ipsx_api::DealStatus::Pending);

    // Germany is now full; France is not asked for, so nothing more is leased.
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/leases"),
        &fleet_token,
        Some(lease(1, &["DE"], 20)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leased"], json!(0));

    // Both parties see the deals.
    let (_, body) = call(
        Method::GET,
        format!("{base}/v1/deals"),
        &provider_token,
        None,
    )
    .await;
    let as_provider: Deals = serde_json::from_value(body).expect("deals");
    let (_, body) = call(Method::GET, format!("{base}/v1/deals"), &fleet_token, None).await;
    let as_fleet: Deals = serde_json::from_value(body).expect("deals");
    assert_eq!(as_provider.deals, as_fleet.deals);
    assert_eq!(as_fleet.deals.len(), leased.deals.len());

    // Acknowledged means durable: a restarted node on the same data still has them.
    node.shutdown().await.expect("shutdown");
    let node = node_in(dir.path(), |_| {}).await;
    let base = format!("http://{}", node.addr);
    let (status, body) = call(Method::GET, format!("{base}/v1/deals"), &fleet_token, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sessions survive the restart too: {body}"
    );
    let after: Deals = serde_json::from_value(body).expect("deals");
    let before: Vec<LeaseView> = as_fleet.deals;
    assert_eq!(after.deals, before);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_market_input_answers_4xx_and_changes_nothing() {
    let (node, base, _dir) = node(|_| {}).await;
    let (provider, stranger, fleet) = (wallet(1), wallet(3), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let stranger_token = sign_in(&base, &stranger).await;
    let fleet_token = sign_in(&base, &fleet).await;
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(offer(&["127.0.0.2"], "DE", 10)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let placed: OfferPlaced = serde_json::from_value(body).expect("offer");

    let mut bad_price = offer(&["127.0.0.5"], "DE", 10);
    bad_price["price"] = json!("ten");
    let mut zero_price = offer(&["127.0.0.5"], "DE", 10);
    zero_price["price"] = json!("0");
    let mut past = offer(&["127.0.0.5"], "DE", 10);
    past["until"] = json!(1);
    // method, path, caller, body, expected status, expected code
    type Case<'a> = (Method, String, &'a str, Option<Value>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            "/v1/offers".into(),
            &provider_token,
            Some(offer(&["127.0.0.5"], "XX", 10)),
            400,
            "unknown_country",
        ),
        (
            Method::POST,
            "/v1/offers".into(),
            &provider_token,
            Some(bad_price),
            422,
            "bad_json",
        ),
        (
            Method::POST,
            "/v1/offers".into(),
            &provider_token,
            Some(zero_price),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/offers".into(),
            &provider_token,
            Some(past),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/offers".into(),
            &stranger_token,
            Some(offer(&["127.0.0.2"], "DE", 10)),
            409,
            "ip_taken",
        ),
        (
            Method::DELETE,
            format!("/v1/offers/{}", placed.offer),
            &stranger_token,
            None,
            403,
            "not_owner",
        ),
        (
            Method::DELETE,
            "/v1/offers/999999".into(),
            &provider_token,
            None,
            404,
            "unknown_offer",
        ),
        (
            Method::DELETE,
            "/v1/offers/abc".into(),
            &provider_token,
            None,
            400,
            "bad_path",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(lease(0, &["DE"], 20)),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 1, "max_price": 5})),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 5, "mode": "gtc"})),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 5, "countries": ["ZZ"]})),
            400,
            "unknown_country",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 5, "protocols": ["ftp"]})),
            422,
            "bad_json",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 5, "mode": "later"})),
            422,
            "bad_json",
        ),
        (
            Method::POST,
            "/v1/leases".into(),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 5, "kinds": ["cloud"]})),
            422,
            "bad_json",
        ),
    ];
    for (method, path, token, body, status, expected) in cases {
        let (got, answer) = call(method.clone(), format!("{base}{path}"), token, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {answer}");
        assert_eq!(code(&answer), expected, "{method} {path}: {answer}");
    }
    // Nothing changed: the one offer still leases, to the one fleet that asks.
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/leases"),
        &fleet_token,
        Some(lease(5, &[], 20)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leased"], json!(1));
    // The owner may cancel its offer.
    let (status, body) = call(
        Method::DELETE,
        format!("{base}/v1/offers/{}", placed.offer),
        &provider_token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_deal_goes_ready_then_cancelled_then_rated_and_profiles_show_it() {
    // No rating prior: one rating is the average.
    let (node, base, _dir) = node(|config| config.rating_prior = 0).await;
    let (provider, fleet, stranger) = (wallet(1), wallet(2), wallet(3));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;
    let stranger_token = sign_in(&base, &stranger).await;
    call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(offer(&["127.0.0.2"], "DE", 10)),
    )
    .await;
    let (_, body) = call(
        Method::POST,
        format!("{base}/v1/leases"),
        &fleet_token,
        Some(lease(1, &["DE"], 20)),
    )
    .await;
    let leased: Leased = serde_json::from_value(body).expect("leased");
    let deal = leased.deals[0].deal.deal;
    let url = |action: &str| format!("{base}/v1/deals/{deal}/{action}");

    let (status, body) = call(Method::POST, url("ready"), &stranger_token, None).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "not_owner"), "{body}");
    let (status, body) = call(Method::POST, url("ready"), &provider_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!("active"));
    let (status, body) = call(
        Method::POST,
        url("rating"),
        &fleet_token,
        Some(json!({"score": 5})),
    )
    .await;
    assert_eq!(status.as_u16(), 409, "not rateable while running: {body}");
    let (status, body) = call(Method::POST, url("cancel"), &provider_token, None).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "not_owner"), "{body}");
    // Served for a second at least: only served deals can be rated.
    until_second(now() + 1).await;
    let (status, body) = call(Method::POST, url("cancel"), &fleet_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!("cancelled"));
    let (status, body) = call(
        Method::POST,
        url("rating"),
        &fleet_token,
        Some(json!({"score": 9})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (400, "invalid_input"),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        url("rating"),
        &fleet_token,
        Some(json!({"score": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(
        Method::POST,
        url("rating"),
        &fleet_token,
        Some(json!({"score": 5})),
    )
    .await;
    assert_eq!(status.as_u16(), 409, "rated once");
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/deals/77/ready"),
        &provider_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (404, "unknown_deal"),
        "{body}"
    );

    let (status, body) = call(
        Method::GET,
        format!("{base}/v1/profiles/{}", provider.address()),
        &fleet_token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deals_as_provider"], json!(1));
    assert_eq!(body["average_rating"], json!(400));
    let (status, body) = call(
        Method::GET,
        format!("{base}/v1/profiles/nobody"),
        &fleet_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (400, "bad_address"),
        "{body}"
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn metrics_count_the_market_and_every_call_by_route() {
    let (node, base, _dir) = node(|_| {}).await;
    let (provider, fleet) = (wallet(1), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;
    call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(offer(&["127.0.0.2", "127.0.0.3", "127.0.0.4"], "DE", 10)),
    )
    .await;
    for _ in 0..2 {
        call(
            Method::POST,
            format!("{base}/v1/leases"),
            &fleet_token,
            Some(lease(1, &["DE"], 20)),
        )
        .await;
    }
    call(
        Method::DELETE,
        format!("{base}/v1/offers/4242"),
        &provider_token,
        None,
    )
    .await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "ipsx_offers_placed_total 1",
        "ipsx_lease_requests_total 2",
        "ipsx_ips_leased_total 2",
        "ipsx_deals_made_total 2",
        "ipsx_api_calls_total{route=\"/v1/leases\",status=\"200\"} 2",
        "ipsx_api_calls_total{route=\"/v1/offers/{offer}\",status=\"404\"} 1",
        "ipsx_api_call_seconds_count{route=\"/v1/leases\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("4242"), "ids never become labels");
    node.shutdown().await.expect("shutdown");
}
