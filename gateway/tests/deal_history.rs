//! A fleet that has traded for a long time reads its deals a page at a time: live ones from the
//! engine, finished ones from the node's history on disk once the engine let them go. Bad
//! queries get a typed error.

mod common;

use std::time::Duration;

use common::*;
use ipsx_api::{DealStatus, Deals};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Every page of `query` (a `&`-joined query string), following `next`.
async fn all_pages(base: &str, token: &str, query: &str, limit: u32) -> (Vec<u64>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let url = format!("{base}/v1/deals?limit={limit}&{query}{cursor}");
        let (status, body) = call(Method::GET, url, token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: Deals = serde_json::from_value(body).expect("a page");
        assert!(page.deals.len() <= limit as usize);
        ids.extend(page.deals.iter().map(|view| view.deal.deal));
        pages += 1;
        match page.next {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return (ids, pages),
        }
    }
}

#[tokio::test]
async fn a_long_history_reads_page_by_page_from_memory_and_then_from_disk() {
    let (node, base, _dir) = node(|config| {
        config.deal_retention = 60;
        config.engine_tick = None;
    })
    .await;
    let (provider, fleet) = (wallet(1), wallet(2));
    let provider_token = sign_in(&base, &provider).await;
    let fleet_token = sign_in(&base, &fleet).await;
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/offers"),
        &provider_token,
        Some(json!({
            "ips": ["127.0.0.2"],
            "country": "DE",
            "asn": 64500,
            "kind": "residential",
            "protocols": ["socks5"],
            "until": now() + 86_400,
            "price": "10",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // 25 leases, each cancelled at once: 25 finished deals, one IP reused.
    let mut made = Vec::new();
    for _ in 0..25 {
        let (status, body) = call(
            Method::POST,
            format!("{base}/v1/leases"),
            &fleet_token,
            Some(json!({"count": 1, "duration": 60, "max_price": 20})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let deal = body["deals"][0]["deal"].as_u64().expect("a deal");
        let (status, body) = call(
            Method::POST,
            format!("{base}/v1/deals/{deal}/cancel"),
            &fleet_token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        made.push(deal);
    }

    let (ids, pages) = all_pages(&base, &fleet_token, "", 10).await;
    assert_eq!(ids, made, "every deal once, oldest first");
    assert_eq!(pages, 3);
    let (cancelled, _) = all_pages(&base, &fleet_token, "status=cancelled,active", 7).await;
    assert_eq!(cancelled, made);
    let (active, _) = all_pages(&base, &fleet_token, "status=active", 10).await;
    assert!(active.is_empty());
    let (as_provider, _) = all_pages(&base, &fleet_token, "role=provider", 10).await;
    assert!(as_provider.is_empty(), "the fleet serves none of them");
    let (served, _) = all_pages(&base, &provider_token, "role=provider", 100).await;
    assert_eq!(served, made);

    for (query, code) in [
        ("status=finished", "invalid_input"),
        ("limit=0", "invalid_input"),
        ("limit=5000", "invalid_input"),
        ("cursor=abc", "bad_cursor"),
        ("role=landlord", "bad_query"),
        ("since=yesterday", "bad_query"),
        ("color=red", "bad_query"),
    ] {
        let (status, body) = call(
            Method::GET,
            format!("{base}/v1/deals?{query}"),
            &fleet_token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{query}: {body}");
    }

    // Two minutes on: the engine lets the finished deals go (its retention is a minute) ...
    node.advance_engine_clock(now() + 120)
        .await
        .expect("the clock moves");
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/deals/{}/rating", made[0]),
        &fleet_token,
        Some(json!({"score": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone from memory: {body}");
    // ... and the history on disk still answers, page by page (the feed wrote it as the deals
    // ended: poll for it with a deadline).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ids, pages) = all_pages(&base, &fleet_token, "", 10).await;
        if ids == made {
            assert_eq!(pages, 3);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history incomplete: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = call(
        Method::GET,
        format!("{base}/v1/deals?limit=1&cursor={}", made[23]),
        &fleet_token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let last: Deals = serde_json::from_value(body).expect("a page");
    assert_eq!(last.deals.len(), 1);
    assert_eq!(last.deals[0].deal.status, DealStatus::Cancelled);
    assert_eq!(last.next, None);
    node.shutdown().await.expect("shutdown");
}
