//! Prometheus metrics, served as text at `GET /metrics`: every API call by route and status
//! with its latency, and the market's flow (offers placed, lease requests, IPs leased, deals).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A call's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: String,
    status: u16,
}

/// A route's label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    /// Offers placed.
    pub offers: Counter,
    /// Lease requests answered.
    pub lease_requests: Counter,
    /// IPs leased.
    pub ips_leased: Counter,
    /// Deals made.
    pub deals: Counter,
    /// Requesters' proofs accepted.
    pub proofs_received: Counter,
    /// Proofs signed to providers.
    pub provider_payments: Counter,
    /// Leases cut for non-payment.
    pub cut_offs: Counter,
    /// Deals the feed follows (made, not over yet).
    pub open_deals: Gauge,
    /// Times the feed fell behind the engine and re-read the deal book.
    pub feed_rereads: Counter,
    /// Deal-book entries recorded for anchoring.
    pub anchor_entries: Counter,
    /// The last epoch anchored on chain.
    pub anchored_epoch: Gauge,
    /// Anchor transactions that failed (tried again at the next check).
    pub anchor_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ipsx");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("api_calls", "API calls by route and status", calls.clone());
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            // 50 µs … ~1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "api_call_seconds",
            "API call latency by route, seconds",
            latency.clone(),
        );
        let offers = Counter::default();
        registry.register("offers_placed", "Offers placed", offers.clone());
        let lease_requests = Counter::default();
        registry.register(
            "lease_requests",
            "Lease requests answered",
            lease_requests.clone(),
        );
        let ips_leased = Counter::default();
        registry.register("ips_leased", "IPs leased", ips_leased.clone());
        let deals = Counter::default();
        registry.register("deals_made", "Deals made", deals.clone());
        let proofs_received = Counter::default();
        registry.register(
            "proofs_received",
            "Requesters' balance proofs accepted",
            proofs_received.clone(),
        );
        let provider_payments = Counter::default();
        registry.register(
            "provider_payments",
            "Balance proofs signed to providers",
            provider_payments.clone(),
        );
        let cut_offs = Counter::default();
        registry.register(
            "cut_offs",
            "Leases cut because their requester stopped paying",
            cut_offs.clone(),
        );
        let open_deals = Gauge::default();
        registry.register(
            "open_deals",
            "Deals made and not over yet, as the feed follows them",
            open_deals.clone(),
        );
        let feed_rereads = Counter::default();
        registry.register(
            "feed_rereads",
            "Times the feed re-read the deal book (at start, or after falling behind)",
            feed_rereads.clone(),
        );
        let anchor_entries = Counter::default();
        registry.register(
            "anchor_entries",
            "Deal-book entries recorded for anchoring",
            anchor_entries.clone(),
        );
        let anchored_epoch = Gauge::default();
        registry.register(
            "anchored_epoch",
            "The last deal-book epoch anchored on chain",
            anchored_epoch.clone(),
        );
        let anchor_failures = Counter::default();
        registry.register(
            "anchor_failures",
            "Anchor transactions that failed and wait for the next check",
            anchor_failures.clone(),
        );
        Self {
            registry,
            calls,
            latency,
            offers,
            lease_requests,
            ips_leased,
            deals,
            proofs_received,
            provider_payments,
            cut_offs,
            open_deals,
            feed_rereads,
            anchor_entries,
            anchored_epoch,
            anchor_failures,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn observe(&self, route: String, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(seconds);
        self.calls
            .get_or_create(&CallLabels { route, status })
            .inc();
    }
}

/// Middleware: counts and times every call under its route pattern (never the raw path, so
/// ids in paths do not explode the label set).
pub(crate) async fn track(
    State(metrics): State<std::sync::Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(State(metrics): State<std::sync::Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
