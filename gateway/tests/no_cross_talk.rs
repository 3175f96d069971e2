//! Attacks on the market through the node's API: answers never carry other parties' deals, and a
//! wallet can neither deal with itself nor buy its way past other fleets' rating filters with
//! cheap deals between friends.

mod common;

use common::*;
use ipsx_api::{Deals, Leased, ProfileView};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn offer(ip: &str, price: u64) -> Value {
    json!({
        "ips": [ip],
        "country": "DE",
        "asn": 64500,
        "kind": "residential",
        "protocols": ["socks5", "http"],
        "until": now() + 3600,
        "price": price.to_string(),
        "min_lease": 5,
    })
}

fn lease(count: u32, duration: u64, max_price: u64) -> Value {
    json!({
        "count": count,
        "countries": ["DE"],
        "duration": duration,
        "max_price": max_price,
    })
}

async fn post_as(base: &str, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(Method::POST, format!("{base}{path}"), token, Some(body)).await
}

/// A move on a deal: `ready`, `failed`, `cancel` or `rating`.
async fn on_deal(
    base: &str,
    token: &str,
    deal: u64,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    post_as(base, token, &format!("/v1/deals/{deal}/{action}"), body).await
}

async fn leased(base: &str, token: &str, body: Value) -> Leased {
    let (status, body) = post_as(base, token, "/v1/leases", body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).expect("lease answer")
}

#[tokio::test]
async fn a_lease_answer_holds_only_the_callers_deals_even_when_its_call_fires_others_timers() {
    // The engine's clock moves only with calls, so the test decides which call fires the timer.
    let (_node, base, _dir) = node(|config| {
        config.engine_tick = None;
        config.ready_timeout = 1;
    })
    .await;
    let (slow, spare, alice, bob) = (wallet(1), wallet(2), wallet(3), wallet(4));
    let slow_token = sign_in(&base, &slow).await;
    let spare_token = sign_in(&base, &spare).await;
    let alice_token = sign_in(&base, &alice).await;
    let bob_token = sign_in(&base, &bob).await;
    post_as(&base, &slow_token, "/v1/offers", offer("127.0.0.2", 10)).await;
    post_as(&base, &spare_token, "/v1/offers", offer("127.0.0.3", 20)).await;

    // Alice takes the cheapest IP; its provider never reports ready.
    let alices = leased(&base, &alice_token, lease(1, 60, 50)).await;
    assert_eq!(alices.leased, 1);
    let voided = &alices.deals[0].deal;
    until_second(voided.start + 1).await;

    // Bob's call is the first after Alice's ready deadline: it voids her deal and re-matches
    // her IP on the spare provider inside the same engine command.
    let bobs = leased(&base, &bob_token, lease(1, 60, 50)).await;
    assert_eq!(bobs.leased, 1, "{bobs:?}");
    assert_eq!(bobs.deals.len(), 1, "{bobs:?}");
    for view in &bobs.deals {
        assert_eq!(
            view.deal.requester,
            bob.address(),
            "another party's deal in Bob's answer"
        );
        assert_eq!(view.deal.request, bobs.request);
    }

    // Alice hears of her replacement from the node, not from Bob's answer.
    let (status, body) = call(Method::GET, format!("{base}/v1/deals"), &alice_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hers: Deals = serde_json::from_value(body).expect("deals");
    let replacement = hers
        .deals
        .iter()
        .find(|view| view.deal.provider == spare.address())
        .expect("Alice's deal was re-matched on the spare provider");
    assert_eq!(replacement.deal.requester, alice.address());
    assert!(
        bobs.deals
            .iter()
            .all(|view| view.deal.deal != replacement.deal.deal)
    );
}

#[tokio::test]
async fn a_provider_cannot_lease_its_own_ip() {
    let (_node, base, _dir) = node(|_| {}).await;
    let provider = wallet(1);
    let token = sign_in(&base, &provider).await;
    let (status, body) = post_as(&base, &token, "/v1/offers", offer("127.0.0.2", 10)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let own = leased(&base, &token, lease(1, 60, 50)).await;
    assert_eq!(own.leased, 0, "a wallet on both sides of a deal: {own:?}");
    assert!(own.deals.is_empty());
    // Someone else can.
    let fleet_token = sign_in(&base, &wallet(2)).await;
    assert_eq!(
        leased(&base, &fleet_token, lease(1, 60, 50)).await.leased,
        1
    );
}

#[tokio::test]
async fn a_self_rating_ring_does_not_lift_a_provider_past_min_rating() {
    let (_node, base, _dir) = node(|config| config.engine_tick = None).await;
    let (provider, friend, fleet) = (wallet(1), wallet(2), wallet(3));
    let provider_token = sign_in(&base, &provider).await;
    let friend_token = sign_in(&base, &friend).await;
    let fleet_token = sign_in(&base, &fleet).await;
    post_as(&base, &provider_token, "/v1/offers", offer("127.0.0.2", 10)).await;

    // The ring: the friend leases, the provider reports ready, a second passes, the friend
    // cancels and rates five stars. The deal cost 10 a second.
    let ring = leased(&base, &friend_token, lease(1, 60, 50)).await;
    let deal = ring.deals[0].deal.deal;
    let (status, body) = on_deal(&base, &provider_token, deal, "ready", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_second(now() + 2).await;
    let (status, body) = on_deal(&base, &friend_token, deal, "cancel", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = on_deal(&base, &friend_token, deal, "rating", json!({"score": 5})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Nor can the friend rate the deal twice.
    let (status, body) = on_deal(&base, &friend_token, deal, "rating", json!({"score": 5})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = get(format!("{base}/v1/profiles/{}", provider.address()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let profile: ProfileView = serde_json::from_value(body).expect("profile");
    assert_eq!(profile.ratings_received, 1);
    let average = profile.average_rating.expect("rated");
    assert!(
        average < 310,
        "a few wei of usage bought {average} hundredths of a star"
    );

    // Another fleet asking for 4.5 stars does not get the ring's provider.
    let mut picky = lease(1, 60, 50);
    picky["min_rating"] = json!(450);
    let answer = leased(&base, &fleet_token, picky).await;
    assert_eq!(answer.leased, 0, "{answer:?}");
}

#[tokio::test]
async fn a_deal_never_served_cannot_be_rated() {
    let (_node, base, _dir) = node(|config| config.engine_tick = None).await;
    let (provider, fleet) = (wallet(1), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;
    post_as(&base, &provider_token, "/v1/offers", offer("127.0.0.2", 10)).await;
    let deal = leased(&base, &fleet_token, lease(1, 60, 50)).await.deals[0]
        .deal
        .deal;
    // Cancelled before the provider reported ready: nothing was served or paid.
    let (status, body) = on_deal(&base, &fleet_token, deal, "cancel", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (token, score) in [(&fleet_token, 1), (&provider_token, 5)] {
        let (status, body) = on_deal(&base, token, deal, "rating", json!({ "score": score })).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(code(&body), "nothing_served", "{body}");
    }
}
