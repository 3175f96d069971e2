//! The node's web dashboard, served on the API's port: a page at `/`, its assets under
//! `/assets/`, and the public market reads it draws — `GET /v1/market/depth`,
//! `GET /v1/market/live` (server-sent events, one [`MarketTick`] a second) and
//! `GET /v1/market/recent`.
//!
//! ```text
//!  browser ─► GET /            index.html (embedded)
//!          ─► GET /assets/…    app.js, style.css, vendor/uPlot (embedded, from the pinned npm package)
//!          ─► GET /v1/market/depth   the shard's published depth ─► chart and table
//!          ─► GET /v1/market/live    a tick a second from the node's counters ─► lease rate
//!          ─► GET /v1/market/recent  the last 50 deals the feed saw, without parties or IPs
//! ```
//!
//! Everything the page needs is in the binary: it works with no network but the node's. The
//! assets are served from a fixed table (a path that is not in it is a 404, whatever it
//! holds), with a content security policy that lets the page load nothing from elsewhere.
//! uPlot's files are copied from the pinned npm package by `dashboard/build.mjs`, which the
//! test command runs with `--check`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use ipsx_api::{
    DealView, DepthLevelView, MarketDepthView, MarketTick, RecentDeal, RecentDeals, TokenAmount,
};

use crate::error::{ApiError, ErrorCode};
use crate::server::{Anonymous, AppState, lock};

/// The page and its assets: (path under `/assets/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "account.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/account.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.min.css"),
    ),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// Nothing from elsewhere: scripts, styles, data and frames from the node only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// Deals kept for `GET /v1/market/recent`.
const RECENT: usize = 50;

fn page(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`.
pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/{*path}`: only the embedded files.
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => page(content_type, bytes),
        None => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such asset")
            .into_response(),
    }
}

/// `GET /v1/market/depth`.
pub(crate) async fn depth(
    _: Anonymous,
    State(state): State<std::sync::Arc<AppState>>,
) -> Result<axum::Json<MarketDepthView>, ApiError> {
    let depth = state.shard()?.depth();
    let levels = depth
        .levels
        .iter()
        .map(|level| DepthLevelView {
            country: level.country.code().to_owned(),
            protocol: crate::market::api_protocol(level.protocol),
            kind: crate::market::api_kind(level.kind),
            price: TokenAmount(level.price),
            ips: level.ips,
        })
        .collect();
    Ok(axum::Json(MarketDepthView { levels }))
}

/// `GET /v1/market/recent`.
pub(crate) async fn recent(
    _: Anonymous,
    State(state): State<std::sync::Arc<AppState>>,
) -> axum::Json<RecentDeals> {
    let deals = lock(&state.recent.0).iter().rev().cloned().collect();
    axum::Json(RecentDeals { deals })
}

/// `GET /v1/market/live`: a tick now and one a second after, until the client goes or the
/// node stops (an open stream must not hold the node's shutdown).
pub(crate) async fn live(
    _: Anonymous,
    State(state): State<std::sync::Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut stopping = state.stopping.clone();
    let stopped = async move { drop(stopping.wait_for(|stop| *stop).await) };
    let ticks = futures_util::stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        |(state, mut every)| async move {
            every.tick().await;
            let tick = tick_of(&state);
            let event = Event::default().event("tick").json_data(tick).ok()?;
            Some((Ok(event), (state, every)))
        },
    );
    Sse::new(ticks.take_until(stopped)).keep_alive(KeepAlive::default())
}

fn tick_of(state: &AppState) -> MarketTick {
    let metrics = &state.metrics;
    MarketTick {
        at: crate::feed::unix_now(),
        deals_made: metrics.deals.get(),
        ips_leased: metrics.ips_leased.get(),
        lease_requests: metrics.lease_requests.get(),
        open_deals: metrics.open_deals.get(),
    }
}

/// The latest deals made, for the public (no party, no IP).
#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<VecDeque<RecentDeal>>);

impl Recent {
    /// A deal made.
    pub(crate) fn push(&self, deal: &DealView) {
        let mut recent = lock(&self.0);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(RecentDeal {
            start: deal.start,
            ips: deal.ips.len() as u32,
            seconds: deal.end.saturating_sub(deal.start),
            price: deal.price,
        });
    }
}
