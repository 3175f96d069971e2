//! The market's JSON: offers and lease requests as clients send them, deals as they come back,
//! and the engine's refusals as API errors. Every field is checked here or by the engine's own
//! `validate` before anything changes.

use std::net::IpAddr;

use axum::http::StatusCode;
use ipsx_engine::{
    CountrySet, Deal, EngineError, Filters, IpKind, IpSpec, KindSet, OfferSpec, Protocol,
    ProtocolSet, RequestSpec, Start, TimeInForce, Timestamp, Window,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ApiError;

/// A token amount in base units: a JSON number or a decimal string (amounts can exceed what
/// JavaScript numbers hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct TokenAmount(pub u128);

impl From<TokenAmount> for String {
    fn from(amount: TokenAmount) -> Self {
        amount.0.to_string()
    }
}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Number(n) => Ok(Self(u128::from(n))),
            Either::Text(text) => text.trim().parse().map(Self).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a whole number of base units"))
            }),
        }
    }
}

/// `POST /v1/offers`: IPs to lend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfferBody {
    /// The IPs, listed (give this or `cidr`).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// A CIDR block, e.g. `203.0.113.0/28` (give this or `ips`).
    #[serde(default)]
    pub cidr: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Region, if said.
    #[serde(default)]
    pub region: Option<String>,
    /// City, if said.
    #[serde(default)]
    pub city: Option<String>,
    /// The announcing autonomous system.
    pub asn: u32,
    /// `residential`, `datacenter` or `mobile`.
    pub kind: String,
    /// Protocols served: `http`, `https`, `socks5`, `smtp`, `vpn`.
    pub protocols: Vec<String>,
    /// First available second (unix); default now.
    #[serde(default)]
    pub from: Option<u64>,
    /// First second no longer available (unix).
    pub until: u64,
    /// Shortest lease, seconds. Default 5.
    #[serde(default = "default_min_lease")]
    pub min_lease: u64,
    /// Longest lease, seconds. Default 30 days.
    #[serde(default = "default_max_lease")]
    pub max_lease: u64,
    /// Price per IP-second, base units.
    pub price: TokenAmount,
    /// Leases one IP may hold at once. Default 1 (exclusive).
    #[serde(default = "default_tenants")]
    pub tenants: u16,
}

fn default_min_lease() -> u64 {
    5
}

fn default_max_lease() -> u64 {
    30 * 24 * 3600
}

fn default_tenants() -> u16 {
    1
}

/// `POST /v1/leases`: N IPs wanted now or later.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// How many IPs.
    pub count: u32,
    /// Countries accepted (ISO codes); empty = any.
    #[serde(default)]
    pub countries: Vec<String>,
    /// City required.
    #[serde(default)]
    pub city: Option<String>,
    /// Kinds accepted; empty = any.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Protocols every IP must serve.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// ASNs accepted; empty = any.
    #[serde(default)]
    pub asn_include: Vec<u32>,
    /// ASNs refused.
    #[serde(default)]
    pub asn_exclude: Vec<u32>,
    /// Minimum provider rating in hundredths of a star (450 = 4.5).
    #[serde(default)]
    pub min_rating: Option<u16>,
    /// At most one IP per /24 (v4) or /48 (v6).
    #[serde(default)]
    pub distinct_subnets: bool,
    /// Start (unix); default at the match.
    #[serde(default)]
    pub start: Option<u64>,
    /// Seconds each lease lasts (5 s … 30 days).
    pub duration: u64,
    /// Highest price per IP-second accepted.
    pub max_price: TokenAmount,
    /// `ioc` (default: take what is there), `fok` (all or nothing) or `gtc` (rest waits).
    #[serde(default)]
    pub mode: Option<String>,
    /// For `gtc`: when the rest leaves the book (unix).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// A deal as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DealView {
    /// The deal id (also the lease id in credentials).
    pub deal: u64,
    /// The request it fills.
    pub request: u64,
    /// The offer it takes from.
    pub offer: u64,
    /// Who serves.
    pub provider: alloy_primitives::Address,
    /// Who pays.
    pub requester: alloy_primitives::Address,
    /// The leased IPs.
    pub ips: Vec<IpAddr>,
    /// First leased second (unix).
    pub start: u64,
    /// First second after the lease.
    pub end: u64,
    /// Price per IP-second.
    pub price: TokenAmount,
    /// `pending`, `active`, `completed`, `voided`, `cancelled`, `payment_lapsed` or
    /// `provider_dropped`.
    pub status: String,
}

impl DealView {
    /// The view of an engine deal.
    pub fn of(deal: &Deal) -> Self {
        Self {
            deal: deal.id.0,
            request: deal.request.0,
            offer: deal.offer.0,
            provider: to_alloy(deal.provider),
            requester: to_alloy(deal.requester),
            ips: deal.ips.clone(),
            start: deal.start.0,
            end: deal.end.0,
            price: TokenAmount(deal.price),
            status: snake_case(&format!("{:?}", deal.status())),
        }
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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
    ApiError::bad_request("invalid_input", message)
}

fn protocols(names: &[String]) -> Result<ProtocolSet, ApiError> {
    let parsed = names
        .iter()
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "http" => Ok(Protocol::Http),
            "https" => Ok(Protocol::Https),
            "socks5" => Ok(Protocol::Socks5),
            "smtp" => Ok(Protocol::Smtp),
            "vpn" => Ok(Protocol::Vpn),
            _ => Err(invalid(format!(
                "unknown protocol {name:?} (http, https, socks5, smtp, vpn)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProtocolSet::of(&parsed))
}

fn kind(name: &str) -> Result<IpKind, ApiError> {
    match name.to_ascii_lowercase().as_str() {
        "residential" => Ok(IpKind::Residential),
        "datacenter" => Ok(IpKind::Datacenter),
        "mobile" => Ok(IpKind::Mobile),
        _ => Err(invalid(format!(
            "unknown IP kind {name:?} (residential, datacenter, mobile)"
        ))),
    }
}

fn country(code: &str) -> Result<ipsx_engine::Country, ApiError> {
    ipsx_engine::Country::parse(code)
        .map_err(|e| ApiError::bad_request("unknown_country", e.to_string()))
}

impl OfferBody {
    /// The engine's offer for `provider`, at `now` (unix).
    pub fn to_spec(
        &self,
        provider: alloy_primitives::Address,
        now: u64,
    ) -> Result<OfferSpec, ApiError> {
        let ips = match (&self.cidr, self.ips.as_slice()) {
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
        };
        Ok(OfferSpec {
            provider: to_engine(provider),
            ips,
            country: country(&self.country)?,
            region: self.region.clone(),
            city: self.city.clone(),
            asn: self.asn,
            kind: kind(&self.kind)?,
            protocols: protocols(&self.protocols)?,
            window: Window {
                from: Timestamp(self.from.unwrap_or(now)),
                until: Timestamp(self.until),
            },
            min_lease: self.min_lease,
            max_lease: self.max_lease,
            price: self.price.0,
            tenants: self.tenants,
        })
    }
}

impl LeaseBody {
    /// The engine's request for `requester`.
    pub fn to_spec(&self, requester: alloy_primitives::Address) -> Result<RequestSpec, ApiError> {
        let countries = self
            .countries
            .iter()
            .map(|code| country(code))
            .collect::<Result<Vec<_>, _>>()?;
        let kinds = self
            .kinds
            .iter()
            .map(|name| kind(name))
            .collect::<Result<Vec<_>, _>>()?;
        let time_in_force = match (
            self.mode.as_deref().map(str::to_ascii_lowercase).as_deref(),
            self.expires_at,
        ) {
            (None | Some("ioc"), None) => TimeInForce::Ioc,
            (Some("fok"), None) => TimeInForce::Fok,
            (Some("gtc"), Some(expires_at)) => TimeInForce::Gtc {
                expires_at: Timestamp(expires_at),
            },
            (Some("gtc"), None) => return Err(invalid("`gtc` needs `expires_at`")),
            (None | Some("ioc" | "fok"), Some(_)) => {
                return Err(invalid("`expires_at` is only for `gtc`"));
            }
            (Some(other), _) => {
                return Err(invalid(format!("unknown mode {other:?} (ioc, fok, gtc)")));
            }
        };
        Ok(RequestSpec {
            requester: to_engine(requester),
            count: self.count,
            filters: Filters {
                countries: CountrySet::of(&countries),
                city: self.city.clone(),
                asn_include: self.asn_include.clone(),
                asn_exclude: self.asn_exclude.clone(),
                kinds: KindSet::of(&kinds),
                protocols: protocols(&self.protocols)?,
                min_rating: self.min_rating,
                distinct_subnets: self.distinct_subnets,
            },
            start: self.start.map_or(Start::Now, |at| Start::At(Timestamp(at))),
            duration: self.duration,
            max_price: self.max_price.0,
            time_in_force,
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let (status, code) = match &error {
            EngineError::Input(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            EngineError::UnknownOffer(_) => (StatusCode::NOT_FOUND, "unknown_offer"),
            EngineError::UnknownRequest(_) => (StatusCode::NOT_FOUND, "unknown_request"),
            EngineError::UnknownDeal(_) => (StatusCode::NOT_FOUND, "unknown_deal"),
            EngineError::NotOwner { .. } => (StatusCode::FORBIDDEN, "not_owner"),
            EngineError::IpOwnedByOther { .. } | EngineError::IpAlreadyOffered { .. } => {
                (StatusCode::CONFLICT, "ip_taken")
            }
            EngineError::ClockWentBackwards { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "clock"),
            _ => (StatusCode::CONFLICT, "refused"),
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
        let spec = offer().to_spec(provider, 1_700_000_000).expect("spec");
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
            bad.to_spec(provider, 0).map_err(|e| e.code),
            Err("unknown_country")
        );
        let mut bad = offer();
        bad.protocols = vec!["ftp".into()];
        let error = bad.to_spec(provider, 0).expect_err("ftp");
        assert!(error.message.contains("ftp"), "{error:?}");
        let mut bad = offer();
        bad.cidr = Some("10.0.0.0/24".into());
        assert!(bad.to_spec(provider, 0).is_err(), "both ips and cidr");
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
        let body = |mode: Option<&str>, expires_at: Option<u64>| LeaseBody {
            count: 1,
            countries: vec![],
            city: None,
            kinds: vec![],
            protocols: vec![],
            asn_include: vec![],
            asn_exclude: vec![],
            min_rating: None,
            distinct_subnets: false,
            start: None,
            duration: 60,
            max_price: TokenAmount(10),
            mode: mode.map(str::to_owned),
            expires_at,
        };
        assert_eq!(
            body(None, None).to_spec(requester).map(|s| s.time_in_force),
            Ok(TimeInForce::Ioc)
        );
        assert_eq!(
            body(Some("FOK"), None)
                .to_spec(requester)
                .map(|s| s.time_in_force),
            Ok(TimeInForce::Fok)
        );
        assert!(body(Some("gtc"), None).to_spec(requester).is_err());
        assert!(body(Some("ioc"), Some(5)).to_spec(requester).is_err());
        assert!(body(Some("later"), None).to_spec(requester).is_err());
    }

    #[test]
    fn statuses_read_as_snake_case() {
        assert_eq!(snake_case("PaymentLapsed"), "payment_lapsed");
        assert_eq!(snake_case("Active"), "active");
    }
}
