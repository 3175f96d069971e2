//! The market's JSON: offers and lease requests as clients send them, deals as they come back,
//! and the engine's refusals as API errors. Every field is checked here or by the engine's own
//! `validate` before anything changes.

use crate::error::ErrorCode;
use axum::http::StatusCode;
use ipsx_api::{DealView, LeaseBody, LeaseMode, OfferBody, TokenAmount};
use ipsx_engine::{
    CountrySet, Deal, EngineError, Filters, IpKind, IpSpec, KindSet, OfferSpec, Protocol,
    ProtocolSet, RequestSpec, Start, TimeInForce, Timestamp, Window,
};

use crate::error::ApiError;

/// The API's view of an engine deal.
pub fn deal_view(deal: &Deal) -> DealView {
    DealView {
        deal: deal.id.0,
        request: deal.request.0,
        offer: deal.offer.0,
        provider: to_alloy(deal.provider),
        requester: to_alloy(deal.requester),
        ips: deal.ips.to_vec(),
        start: deal.start.0,
        end: deal.end.0,
        price: TokenAmount(deal.price),
        protocols: deal.protocols.iter().map(api_protocol).collect(),
        status: api_status(deal.status()),
        closed_at: deal.closed_at.map(|t| t.0),
    }
}

pub(crate) fn api_protocol(protocol: Protocol) -> ipsx_api::Protocol {
    match protocol {
        Protocol::Http => ipsx_api::Protocol::Http,
        Protocol::Https => ipsx_api::Protocol::Https,
        Protocol::Socks5 => ipsx_api::Protocol::Socks5,
        Protocol::Smtp => ipsx_api::Protocol::Smtp,
        Protocol::Vpn => ipsx_api::Protocol::Vpn,
    }
}

pub(crate) fn api_kind(kind: IpKind) -> ipsx_api::IpKind {
    match kind {
        IpKind::Residential => ipsx_api::IpKind::Residential,
        IpKind::Datacenter => ipsx_api::IpKind::Datacenter,
        IpKind::Mobile => ipsx_api::IpKind::Mobile,
    }
}

pub(crate) fn api_status(status: ipsx_engine::DealStatus) -> ipsx_api::DealStatus {
    use ipsx_engine::DealStatus as Engine;
    match status {
        Engine::Pending => ipsx_api::DealStatus::Pending,
        Engine::Active => ipsx_api::DealStatus::Active,
        Engine::Completed => ipsx_api::DealStatus::Completed,
        Engine::Voided => ipsx_api::DealStatus::Voided,
        Engine::Cancelled => ipsx_api::DealStatus::Cancelled,
        Engine::PaymentLapsed => ipsx_api::DealStatus::PaymentLapsed,
        Engine::ProviderDropped => ipsx_api::DealStatus::ProviderDropped,
    }
}

/// The engine's address of a wallet.
pub fn to_engine(address: alloy_primitives::Address) -> ipsx_engine::Address {
    ipsx_engine::Address(address.0.0)
}

/// The wallet address of an engine address.
pub fn to_alloy(address: ipsx_engine::Address) -> alloy_primitives::Address {
    alloy_primitives::Address::from(address.0)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidInput, message)
}

fn protocols(names: &[ipsx_api::Protocol]) -> ProtocolSet {
    let parsed: Vec<Protocol> = names.iter().map(|p| engine_protocol(*p)).collect();
    ProtocolSet::of(&parsed)
}

fn engine_protocol(protocol: ipsx_api::Protocol) -> Protocol {
    match protocol {
        ipsx_api::Protocol::Http => Protocol::Http,
        ipsx_api::Protocol::Https => Protocol::Https,
        ipsx_api::Protocol::Socks5 => Protocol::Socks5,
        ipsx_api::Protocol::Smtp => Protocol::Smtp,
        ipsx_api::Protocol::Vpn => Protocol::Vpn,
    }
}

fn kind(kind: ipsx_api::IpKind) -> IpKind {
    match kind {
        ipsx_api::IpKind::Residential => IpKind::Residential,
        ipsx_api::IpKind::Datacenter => IpKind::Datacenter,
        ipsx_api::IpKind::Mobile => IpKind::Mobile,
    }
}

fn country(code: &str) -> Result<ipsx_engine::Country, ApiError> {
    ipsx_engine::Country::parse(code)
        .map_err(|e| ApiError::bad_request(ErrorCode::UnknownCountry, e.to_string()))
}

/// The IPs an offer body names (its `ips`, or every address of its `cidr`), checked as the
/// engine checks them: what a provider's proxy must listen on.
pub fn offer_ips(body: &OfferBody) -> Result<Vec<std::net::IpAddr>, ApiError> {
    ip_spec(body)?
        .expand()
        .map(|ips| ips.into_vec())
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidInput, e.to_string()))
}

fn ip_spec(body: &OfferBody) -> Result<IpSpec, ApiError> {
    Ok(match (&body.cidr, body.ips.as_slice()) {
        (Some(_), [_, ..]) => return Err(invalid("give `ips` or `cidr`, not both")),
        (None, []) => return Err(invalid("give `ips` or `cidr`")),
        (None, [one]) => IpSpec::Single(*one),
        (None, many) => IpSpec::List(many.to_vec()),
        (Some(cidr), []) => {
            let (network, prefix) = cidr
                .split_once('/')
                .ok_or_else(|| invalid(format!("{cidr:?} is not a CIDR block")))?;
            IpSpec::Cidr {
                network: network
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("{cidr:?} is not a CIDR block")))?,
                prefix: prefix
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("{cidr:?} is not a CIDR block")))?,
            }
        }
    })
}

/// The engine's offer for `provider`, at `now` (unix).
pub fn offer_spec(
    body: &OfferBody,
    provider: alloy_primitives::Address,
    now: u64,
) -> Result<OfferSpec, ApiError> {
    let ips = ip_spec(body)?;
    Ok(OfferSpec {
        provider: to_engine(provider),
        ips,
        country: country(&body.country)?,
        region: body.region.clone(),
        city: body.city.clone(),
        asn: body.asn,
        kind: kind(body.kind),
        protocols: protocols(&body.protocols),
        window: Window {
            from: Timestamp(body.from.unwrap_or(now)),
            until: Timestamp(body.until),
        },
        min_lease: body.min_lease,
        max_lease: body.max_lease,
        price: body.price.0,
        tenants: body.tenants,
    })
}

/// The engine's request for `requester`.
pub fn request_spec(
    body: &LeaseBody,
    requester: alloy_primitives::Address,
) -> Result<RequestSpec, ApiError> {
    let countries = body
        .countries
        .iter()
        .map(|code| country(code))
        .collect::<Result<Vec<_>, _>>()?;
    let kinds: Vec<IpKind> = body.kinds.iter().map(|k| kind(*k)).collect();
    let time_in_force = match (body.mode.unwrap_or(LeaseMode::Ioc), body.expires_at) {
        (LeaseMode::Ioc, None) => TimeInForce::Ioc,
        (LeaseMode::Fok, None) => TimeInForce::Fok,
        (LeaseMode::Gtc, Some(expires_at)) => TimeInForce::Gtc {
            expires_at: Timestamp(expires_at),
        },
        (LeaseMode::Gtc, None) => return Err(invalid("`gtc` needs `expires_at`")),
        (LeaseMode::Ioc | LeaseMode::Fok, Some(_)) => {
            return Err(invalid("`expires_at` is only for `gtc`"));
        }
    };
    Ok(RequestSpec {
        requester: to_engine(requester),
        count: body.count,
        filters: Filters {
            countries: CountrySet::of(&countries),
            city: body.city.clone(),
            asn_include: body.asn_include.clone(),
            asn_exclude: body.asn_exclude.clone(),
            kinds: KindSet::of(&kinds),
            protocols: protocols(&body.protocols),
            min_rating: body.min_rating,
            min_uptime: body.min_uptime,
            distinct_subnets: body.distinct_subnets,
        },
        start: body.start.map_or(Start::Now, |at| Start::At(Timestamp(at))),
        duration: body.duration,
        max_price: body.max_price.0,
        time_in_force,
    })
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let (status, code) = match &error {
            EngineError::Input(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
            EngineError::UnknownOffer(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownOffer),
            EngineError::UnknownRequest(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownRequest),
            EngineError::UnknownDeal(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownDeal),
            EngineError::NotOwner { .. } => (StatusCode::FORBIDDEN, ErrorCode::NotOwner),
            EngineError::IpOwnedByOther { .. } | EngineError::IpAlreadyOffered { .. } => {
                (StatusCode::CONFLICT, ErrorCode::IpTaken)
            }
            EngineError::NothingServed { .. } => (StatusCode::CONFLICT, ErrorCode::NothingServed),
            EngineError::SelfRating { .. } => (StatusCode::CONFLICT, ErrorCode::SelfRating),
            EngineError::AlreadyRated { .. } => (StatusCode::CONFLICT, ErrorCode::AlreadyRated),
            EngineError::NotFinished { .. } => (StatusCode::CONFLICT, ErrorCode::NotFinished),
            EngineError::ClockWentBackwards { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ClockWentBackwards,
            ),
            _ => (StatusCode::CONFLICT, ErrorCode::Refused),
        };
        Self::new(status, code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> OfferBody {
        serde_json::from_value(serde_json::json!({
            "ips": ["127.0.0.2", "127.0.0.3"],
            "country": "de",
            "asn": 64500,
            "kind": "Residential",
            "protocols": ["socks5", "HTTP"],
            "until": 2_000_000_000u64,
            "price": "1000",
        }))
        .expect("offer JSON")
    }

    #[test]
    fn an_offer_maps_to_the_engines_spec() {
        let provider = alloy_primitives::Address::repeat_byte(1);
        let spec = offer_spec(&offer(), provider, 1_700_000_000).expect("spec");
        assert_eq!(spec.provider, to_engine(provider));
        assert_eq!(spec.country.code(), "DE");
        assert_eq!(spec.price, 1000);
        assert_eq!(spec.window.from, Timestamp(1_700_000_000));
        assert_eq!(
            spec.protocols,
            ProtocolSet::of(&[Protocol::Socks5, Protocol::Http])
        );
        assert!(matches!(spec.ips, IpSpec::List(ref ips) if ips.len() == 2));
    }

    #[test]
    fn bad_fields_are_named() {
        let provider = alloy_primitives::Address::repeat_byte(1);
        let mut bad = offer();
        bad.country = "XX".into();
        assert_eq!(
            offer_spec(&bad, provider, 0).map_err(|e| e.code),
            Err(ErrorCode::UnknownCountry)
        );
        let mut ftp = serde_json::to_value(offer()).expect("json");
        ftp["protocols"] = serde_json::json!(["socks5", "FTP"]);
        let error = serde_json::from_value::<OfferBody>(ftp).expect_err("ftp");
        assert!(
            error.to_string().contains("unknown protocol \"FTP\""),
            "the shape error names it: {error}"
        );
        let mut bad = offer();
        bad.cidr = Some("10.0.0.0/24".into());
        assert!(offer_spec(&bad, provider, 0).is_err(), "both ips and cidr");
        assert!(
            serde_json::from_value::<TokenAmount>(serde_json::json!("-5")).is_err(),
            "negative amounts do not parse"
        );
        assert_eq!(
            serde_json::from_value::<TokenAmount>(serde_json::json!(
                "340282366920938463463374607431768211455"
            ))
            .expect("u128 max"),
            TokenAmount(u128::MAX)
        );
    }

    #[test]
    fn lease_modes_need_their_fields() {
        let requester = alloy_primitives::Address::repeat_byte(2);
        let lease = |mode: Option<&str>, expires_at: Option<u64>| LeaseBody {
            count: 1,
            countries: vec![],
            city: None,
            kinds: vec![],
            protocols: vec![],
            asn_include: vec![],
            asn_exclude: vec![],
            min_rating: None,
            min_uptime: None,
            distinct_subnets: false,
            start: None,
            duration: 60,
            max_price: TokenAmount(10),
            mode: mode.map(|word| word.parse().expect("a mode")),
            expires_at,
        };
        assert_eq!(
            request_spec(&lease(None, None), requester).map(|s| s.time_in_force),
            Ok(TimeInForce::Ioc)
        );
        assert_eq!(
            request_spec(&lease(Some("FOK"), None), requester).map(|s| s.time_in_force),
            Ok(TimeInForce::Fok)
        );
        assert!(request_spec(&lease(Some("gtc"), None), requester).is_err());
        assert!(request_spec(&lease(Some("ioc"), Some(5)), requester).is_err());
        assert!("later".parse::<LeaseMode>().is_err(), "no such mode");
    }

    #[test]
    fn statuses_keep_their_wire_names() {
        let lapsed =
            serde_json::to_value(api_status(ipsx_engine::DealStatus::PaymentLapsed)).expect("json");
        assert_eq!(lapsed, serde_json::json!("payment_lapsed"));
        assert_eq!(
            api_status(ipsx_engine::DealStatus::Active).as_str(),
            "active"
        );
    }
}
