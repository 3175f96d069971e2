//! The gate's Prometheus metrics, served as text on a port of their own (`GET /metrics`), away
//! from the proxy port crawlers use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A request's kind.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: RequestKind,
}

/// What a crawler asked the gate to do.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
pub(crate) enum RequestKind {
    /// `GET http://…` through the HTTP side.
    Http = 0,
    /// `CONNECT host:port` through the HTTP side.
    Connect = 1,
    /// A SOCKS5 `CONNECT`.
    Socks5 = 2,
}

const KINDS: [RequestKind; 3] = [RequestKind::Http, RequestKind::Connect, RequestKind::Socks5];

/// An error's code (see [`crate::refusal`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: &'static str,
}

/// Counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by kind: HTTP, CONNECT, SOCKS5 (the family's counters, looked up once).
    requests: [Counter; 3],
    pub(crate) errors: Family<CodeLabel, Counter>,
    pub(crate) retries: Counter,
    pub(crate) exits_dropped: Counter,
    pub(crate) bytes_up: Counter,
    pub(crate) bytes_down: Counter,
    pub(crate) ips_held: Gauge,
    pub(crate) sessions: Gauge,
    pub(crate) leases: Counter,
    pub(crate) ips_leased: Counter,
    pub(crate) cancels: Counter,
    /// Tokens per second the held leases accrue (base units; may exceed an i64 gauge).
    pub(crate) spend_rate: Arc<AtomicU64>,
    /// Base units the node accepted from this gate's wallet in all.
    pub(crate) paid: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ipsx_gate");
        let family = Family::<KindLabel, Counter>::default();
        registry.register("requests", "Requests by kind", family.clone());
        let requests = KINDS.map(|kind| family.get_or_create(&KindLabel { kind }).clone());
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register("errors", "The gate's own refusals by code", errors.clone());
        let retries = Counter::default();
        registry.register(
            "retries",
            "Requests retried on another exit",
            retries.clone(),
        );
        let exits_dropped = Counter::default();
        registry.register(
            "exits_dropped",
            "Exits dropped as failed or persistently bad",
            exits_dropped.clone(),
        );
        let bytes_up = Counter::default();
        registry.register("bytes_up", "Bytes sent to targets", bytes_up.clone());
        let bytes_down = Counter::default();
        registry.register(
            "bytes_down",
            "Bytes received from targets",
            bytes_down.clone(),
        );
        let ips_held = Gauge::default();
        registry.register("ips_held", "IPs held", ips_held.clone());
        let sessions = Gauge::default();
        registry.register("sessions", "Sticky sessions alive", sessions.clone());
        let leases = Counter::default();
        registry.register("lease_calls", "Lease calls to the node", leases.clone());
        let ips_leased = Counter::default();
        registry.register("ips_leased", "IPs leased", ips_leased.clone());
        let cancels = Counter::default();
        registry.register("cancels", "Deals cancelled", cancels.clone());
        let spend_rate = Arc::new(AtomicU64::new(0));
        let paid = Arc::new(AtomicU64::new(0));
        Self {
            registry,
            requests,
            errors,
            retries,
            exits_dropped,
            bytes_up,
            bytes_down,
            ips_held,
            sessions,
            leases,
            ips_leased,
            cancels,
            spend_rate,
            paid,
        }
    }
}

impl Metrics {
    pub(crate) fn request(&self, kind: RequestKind) {
        self.requests[kind as usize].inc();
    }

    pub(crate) fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        for (name, help, value) in [
            (
                "ipsx_gate_spend_per_second",
                "Base units per second the held leases accrue",
                self.spend_rate.load(Ordering::Relaxed),
            ),
            (
                "ipsx_gate_paid",
                "Base units the node accepted from this wallet",
                self.paid.load(Ordering::Relaxed),
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }

    /// Requests counted so far, all kinds.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().map(Counter::get).sum()
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move {
                    if request.uri().path() == "/metrics" {
                        Response::builder()
                            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(metrics.render())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Where the metrics listen.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
