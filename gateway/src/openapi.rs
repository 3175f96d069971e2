//! The node's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Schemas come from the API types themselves (`ipsx-api`, `utoipa::ToSchema`), so they cannot
//! drift from what the node parses; the operations are listed once, in [`OPERATIONS`], and a
//! test calls every one of them on a running node to check that it exists.

use utoipa::PartialSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref, Required,
    ResponseBuilder, ResponsesBuilder,
};

use ipsx_api::*;

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path, with `{parameters}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The request body's schema, if any.
    pub body: Option<&'static str>,
    /// The success answer's schema.
    pub answer: &'static str,
    /// Whether it needs `Authorization: Bearer <session>`.
    pub signed: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    answer: &'static str,
    signed: bool,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        body,
        answer,
        signed,
    }
}

/// Every operation the node serves (besides `/metrics` and this document).
pub const OPERATIONS: &[Operation] = &[
    op("GET", "/v1/health", "Liveness", None, "Health", false),
    op(
        "GET",
        "/v1/cluster",
        "Where this node stands in its cluster (leader, follower or alone)",
        None,
        "ClusterView",
        false,
    ),
    op(
        "POST",
        "/v1/auth/challenge",
        "An EIP-4361 message for a wallet to sign",
        Some("ChallengeRequest"),
        "ChallengeResponse",
        false,
    ),
    op(
        "POST",
        "/v1/auth/session",
        "Trade the signed message for a session token",
        Some("SessionRequest"),
        "SessionResponse",
        false,
    ),
    op(
        "GET",
        "/v1/me",
        "The signed-in wallet",
        None,
        "MeResponse",
        true,
    ),
    op(
        "POST",
        "/v1/providers",
        "Register as a provider: the proxy port; answers the proxy's credential key (and, with payments, opens the node's channel to you)",
        Some("ProviderBody"),
        "ProviderRegistered",
        true,
    ),
    op(
        "POST",
        "/v1/offers",
        "Offer IPs (listed or a CIDR block)",
        Some("OfferBody"),
        "OfferPlaced",
        true,
    ),
    op(
        "POST",
        "/v1/relays/report",
        "A relay run apart: presence changes and measures, tagged with the relay key",
        Some("RelayReport"),
        "ReportTaken",
        false,
    ),
    op(
        "GET",
        "/v1/echo",
        "The caller's address (offer probes fetch it through providers' proxies)",
        None,
        "Echo",
        false,
    ),
    op(
        "POST",
        "/v1/relay/access",
        "Relayed provider: the relay's address and certificate and a fresh ticket",
        None,
        "RelayAccess",
        true,
    ),
    op(
        "DELETE",
        "/v1/offers/{id}",
        "Withdraw an offer's unleased IPs",
        None,
        "OfferCancelled",
        true,
    ),
    op(
        "POST",
        "/v1/leases",
        "Lease N IPs by filter, in one call; answers the deals with per-IP endpoints",
        Some("LeaseBody"),
        "Leased",
        true,
    ),
    op(
        "GET",
        "/v1/deals",
        "A page of your deals, as provider or requester, oldest first (see `next`)",
        None,
        "Deals",
        true,
    ),
    op(
        "POST",
        "/v1/deals/{id}/ready",
        "Provider: the deal's IPs are served",
        None,
        "LeaseView",
        true,
    ),
    op(
        "POST",
        "/v1/deals/{id}/failed",
        "Provider: the deal cannot be served (its IPs are re-matched)",
        None,
        "LeaseView",
        true,
    ),
    op(
        "POST",
        "/v1/deals/{id}/cancel",
        "Requester: end the lease now",
        None,
        "LeaseView",
        true,
    ),
    op(
        "POST",
        "/v1/deals/{id}/rating",
        "Rate the other party of a finished deal",
        Some("RatingBody"),
        "LeaseView",
        true,
    ),
    op(
        "GET",
        "/v1/deals/{id}/proofs",
        "A party: the deal's entries in the anchored deal book, with Merkle proofs to check \
         against the DealAnchor's roots on chain",
        None,
        "DealProofs",
        true,
    ),
    op(
        "POST",
        "/v1/auth/link",
        "A one-time login link for your browser (the dashboard), valid for the challenge lifetime",
        None,
        "LoginLink",
        true,
    ),
    op(
        "POST",
        "/v1/auth/link/session",
        "Trade a login link's code for a session, once",
        Some("LinkSessionRequest"),
        "SessionResponse",
        false,
    ),
    op(
        "GET",
        "/v1/wallet/claims",
        "Provider: your channel from the node as the chain holds it (what you claimed on chain)",
        None,
        "ClaimsView",
        true,
    ),
    op(
        "GET",
        "/v1/offers",
        "Provider: your offers still in the book",
        None,
        "Offers",
        true,
    ),
    op(
        "GET",
        "/v1/market/depth",
        "Public: unleased IPs by country, protocol, kind and price",
        None,
        "MarketDepthView",
        false,
    ),
    op(
        "GET",
        "/v1/market/live",
        "Public: server-sent events, a `tick` a second with the market's counters",
        None,
        "MarketTick",
        false,
    ),
    op(
        "GET",
        "/v1/market/recent",
        "Public: the latest deals made, with no party and no IP",
        None,
        "RecentDeals",
        false,
    ),
    op(
        "GET",
        "/v1/profiles/{address}",
        "A wallet's record in the market",
        None,
        "ProfileView",
        false,
    ),
    op(
        "GET",
        "/v1/wallet",
        "Your payment state: the node's settlement details and your channels",
        None,
        "WalletView",
        true,
    ),
    op(
        "POST",
        "/v1/wallet/channel",
        "Requester: register the channel you opened to the node",
        Some("ChannelBody"),
        "ChannelView",
        true,
    ),
    op(
        "GET",
        "/v1/stream",
        "WebSocket upgrade: StreamEvent messages down, StreamRequest messages up (JSON text)",
        None,
        "StreamEvent",
        true,
    ),
];

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    ErrorDetail,
    ErrorCode,
    TokenAmount,
    OfferBody,
    LeaseBody,
    DealView,
    DealProofs,
    MarketDepthView,
    ClaimsView,
    LoginLink,
    LinkSessionRequest,
    Offers,
    OfferView,
    DepthLevelView,
    MarketTick,
    RecentDeals,
    RecentDeal,
    AnchoredEntry,
    AnchorEntryView,
    AnchorEntryKind,
    Endpoint,
    Via,
    RelayAccess,
    Echo,
    RelayView,
    PresenceChange,
    ProviderQuality,
    RelayReport,
    ReportTaken,
    ChallengeRequest,
    ChallengeResponse,
    SessionRequest,
    SessionResponse,
    MeResponse,
    OfferPlaced,
    OfferCancelled,
    LeaseView,
    Leased,
    Deals,
    Role,
    ProviderBody,
    ProviderRegistered,
    RatingBody,
    ProfileView,
    RelayQuality,
    WalletView,
    PaymentsInfo,
    ChannelView,
    ChannelBody,
    LeaseTermsView,
    StreamEvent,
    StreamRequest,
    ClusterView,
    ClusterRole,
    Health
)))]
struct Schemas;

/// `GET /v1/health`'s answer: 200 with `ok`, or 503 with what is down.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `engine_down` (the engine's writer stopped: the node cannot apply anything and
    /// exits so its supervisor restarts it) or `stopping`.
    pub status: &'static str,
}

fn json_ref(name: &str) -> ContentBuilder {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(name)))
}

/// The document.
pub fn document() -> OpenApi {
    use utoipa::OpenApi as _;
    let mut components = Schemas::openapi().components.unwrap_or_default();
    components.add_security_scheme(
        "session",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    let mut paths = PathsBuilder::new();
    for operation in OPERATIONS {
        let mut responses = ResponsesBuilder::new().response(
            "200",
            ResponseBuilder::new()
                .description("Done")
                .content("application/json", json_ref(operation.answer).build()),
        );
        for (status, what) in [
            ("400", "Bad input (nothing changed)"),
            ("401", "No or expired session"),
            ("402", "A payment channel is needed first"),
            ("404", "Unknown deal, offer or endpoint"),
            ("409", "Not allowed in the current state"),
            ("413", "Body too large"),
            ("422", "JSON of the wrong shape"),
            ("429", "Rate limited (see Retry-After)"),
        ] {
            responses = responses.response(
                status,
                ResponseBuilder::new()
                    .description(what)
                    .content("application/json", json_ref("ErrorBody").build()),
            );
        }
        let mut builder = OperationBuilder::new()
            .summary(Some(operation.summary))
            .responses(responses.build());
        if let Some(body) = operation.body {
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json_ref(body).build())
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        for parameter in ["id", "address"] {
            if operation.path.contains(&format!("{{{parameter}}}")) {
                builder = builder.parameter(
                    ParameterBuilder::new()
                        .name(parameter)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(if parameter == "id" {
                            u64::schema()
                        } else {
                            String::schema()
                        })),
                );
            }
        }
        if operation.path == "/v1/deals" {
            use utoipa::IntoParams as _;
            for parameter in DealsQuery::into_params(|| Some(ParameterIn::Query)) {
                builder = builder.parameter(parameter);
            }
        }
        if operation.signed {
            builder = builder.security(utoipa::openapi::security::SecurityRequirement::new(
                "session",
                Vec::<String>::new(),
            ));
        }
        let method = match operation.method {
            "POST" => HttpMethod::Post,
            "DELETE" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        };
        paths = paths.path(operation.path, PathItem::new(method, builder.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("IPSX node")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Rent IP addresses by the second. Sign in with a wallet (EIP-4361), lease \
                     IPs by filter, pay per second over the WebSocket stream.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_schema_it_refers_to() {
        let json = document().to_json().expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let schemas = value["components"]["schemas"].as_object().expect("schemas");
        for operation in OPERATIONS {
            for name in operation.body.iter().chain([&operation.answer]) {
                assert!(schemas.contains_key(*name), "{name} is missing");
            }
        }
        assert!(schemas.contains_key("ErrorBody"));
        for (schema, value) in [
            ("DealStatus", "payment_lapsed"),
            ("LeaseEnd", "ended"),
            ("ErrorCode", "unknown_country"),
            ("ErrorCode", "rate_limited"),
            ("Role", "provider"),
            ("IpKind", "datacenter"),
            ("LeaseMode", "gtc"),
            ("Protocol", "socks5"),
        ] {
            let values = schemas[schema]["enum"].as_array().expect("an enum");
            assert!(
                values.contains(&serde_json::json!(value)),
                "{schema}: {values:?}"
            );
        }
        let deal_parameters: Vec<&str> = value["paths"]["/v1/deals"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            deal_parameters,
            ["cursor", "limit", "status", "role", "since", "until"]
        );
        let paths: std::collections::BTreeSet<&str> = OPERATIONS.iter().map(|o| o.path).collect();
        assert_eq!(
            value["paths"].as_object().expect("paths").len(),
            paths.len(),
            "a path per documented path, its methods under it"
        );
    }
}
