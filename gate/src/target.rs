//! What a crawler asks for, read from its proxy username (and password).
//!
//! The grammar is the one residential-proxy users already write (Bright Data's
//! `…-country-de-session-abc`, Oxylabs' `cc-`, `sessid-`, `sesstime-`):
//!
//! ```text
//! username  = USER *( "-" param )                 e.g. fleet-country-de,fr-session-s7-sesstime-5
//! password  = SECRET *( "_" param )               e.g. hunter2_country-de_kind-mobile (IPRoyal)
//! param     = "country-" CC *( ("," / "|") CC )   alias "cc-";    any of these countries
//!           / "city-" NAME                        "_" in NAME is a space: city-new_york
//!           / "asn-" [ "as" ] DIGITS              the announcing autonomous system
//!           / "kind-" KIND *( "," KIND )          alias "type-"; residential, datacenter, mobile
//!           / "session-" ID                       alias "sessid-"; sticky: one exit IP per ID
//!           / "sesstime-" MINUTES                 a session ends after this long idle (1-1440)
//!           / "rotate"                            a fresh exit IP for every connection
//!           / "minrating-" STARS                  e.g. 4.5; providers rated at least this
//!           / "maxprice-" BASE-UNITS              highest price per IP-second
//! ```
//!
//! Keys are case-insensitive; a key may appear once (in the username or the password, not
//! both). Anything else is refused with a [`ParamError`] that names the parameter, before
//! anything is leased.

use std::fmt;

/// The kind of IP a crawler wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A home connection.
    Residential,
    /// A data-centre address.
    Datacenter,
    /// A mobile carrier's address.
    Mobile,
}

impl Kind {
    /// The node API's kind.
    pub fn api(self) -> ipsx_sdk::IpKind {
        match self {
            Self::Residential => ipsx_sdk::IpKind::Residential,
            Self::Datacenter => ipsx_sdk::IpKind::Datacenter,
            Self::Mobile => ipsx_sdk::IpKind::Mobile,
        }
    }

    /// The name the node's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Residential => "residential",
            Self::Datacenter => "datacenter",
            Self::Mobile => "mobile",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "residential" | "res" => Some(Self::Residential),
            "datacenter" | "dc" => Some(Self::Datacenter),
            "mobile" | "mob" => Some(Self::Mobile),
            _ => None,
        }
    }
}

/// Which IPs may serve: everything that decides which lease an exit comes from. Requests with
/// equal filters share one pool of exits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter {
    /// ISO codes, upper case, sorted; empty = any.
    pub countries: Vec<String>,
    /// City, lower case.
    pub city: Option<String>,
    /// Announcing ASN.
    pub asn: Option<u32>,
    /// Kinds, sorted; empty = any.
    pub kinds: Vec<Kind>,
    /// Minimum provider rating, hundredths of a star.
    pub min_rating: Option<u16>,
    /// Highest price per IP-second the crawler accepts (the gate's own cap still applies).
    pub max_price: Option<u128>,
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.countries.is_empty() {
            parts.push(format!("country {}", self.countries.join(",")));
        }
        if let Some(city) = &self.city {
            parts.push(format!("city {city}"));
        }
        if let Some(asn) = self.asn {
            parts.push(format!("asn {asn}"));
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<_> = self.kinds.iter().map(|k| k.as_str()).collect();
            parts.push(format!("kind {}", kinds.join(",")));
        }
        if let Some(rating) = self.min_rating {
            parts.push(format!("minrating {}.{:02}", rating / 100, rating % 100));
        }
        if let Some(price) = self.max_price {
            parts.push(format!("maxprice {price}"));
        }
        if parts.is_empty() {
            f.write_str("any IP")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// How requests stick to exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stickiness {
    /// Each request (or tunnel) takes the least recently used exit of the filter's pool.
    Spread,
    /// Every request with this id leaves from the same exit until the session ends.
    Session {
        /// The crawler's session id.
        id: String,
        /// Idle seconds after which the session ends (its exit is given back).
        idle_secs: u64,
    },
    /// Every connection gets an exit no earlier connection or session used.
    Rotate,
}

/// A parsed username/password: the filter, the stickiness and the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The user part of the username (a label for logs and metrics).
    pub user: String,
    /// The secret part of the password.
    pub secret: String,
    /// Which IPs.
    pub filter: Filter,
    /// How requests stick to them.
    pub stickiness: Stickiness,
}

/// Default idle time of a session, seconds (Oxylabs' default session time is 10 minutes).
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 600;
const MAX_SESSION_MINUTES: u64 = 1_440;
const MAX_SESSION_ID: usize = 64;
const MAX_CITY: usize = 64;

/// What is wrong with one parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not a parameter this gate knows.
    #[error("unknown parameter")]
    Unknown,
    /// A parameter that needs a value came without one.
    #[error("needs a value")]
    MissingValue,
    /// A flag came with a value.
    #[error("takes no value")]
    UnexpectedValue,
    /// The value is not of the expected form.
    #[error("expected {0}")]
    Malformed(&'static str),
    /// The parameter was given twice.
    #[error("given more than once")]
    Duplicate,
    /// It cannot be combined with another parameter.
    #[error("cannot be combined with {0}")]
    Conflict(&'static str),
}

/// A refused parameter: its name (as the crawler wrote it) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {param:?}: {problem}")]
pub struct ParamError {
    /// The parameter's key.
    pub param: String,
    /// What is wrong.
    pub problem: Problem,
}

fn refuse(param: &str, problem: Problem) -> ParamError {
    ParamError {
        param: param.to_owned(),
        problem,
    }
}

/// Parameters gathered from both fields before they are checked together.
#[derive(Default)]
struct Params {
    filter: Filter,
    seen: Vec<&'static str>,
    session: Option<String>,
    sesstime: Option<u64>,
    rotate: bool,
}

impl Params {
    fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), ParamError> {
        if key.is_empty() {
            return Err(refuse(
                "-",
                Problem::Malformed("a parameter name before '-'"),
            ));
        }
        let lower = key.to_ascii_lowercase();
        let canonical: &'static str = match lower.as_str() {
            "country" | "cc" => "country",
            "city" => "city",
            "asn" => "asn",
            "kind" | "type" => "kind",
            "session" | "sessid" => "session",
            "sesstime" => "sesstime",
            "rotate" => "rotate",
            "minrating" => "minrating",
            "maxprice" => "maxprice",
            _ => return Err(refuse(key, Problem::Unknown)),
        };
        if self.seen.contains(&canonical) {
            return Err(refuse(key, Problem::Duplicate));
        }
        self.seen.push(canonical);
        if canonical == "rotate" {
            if value.is_some() {
                return Err(refuse(key, Problem::UnexpectedValue));
            }
            self.rotate = true;
            return Ok(());
        }
        let value = value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| refuse(key, Problem::MissingValue))?;
        let malformed = |what| refuse(key, Problem::Malformed(what));
        match canonical {
            "country" => {
                let mut codes = Vec::new();
                for code in value.split([',', '|']) {
                    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(malformed("two-letter ISO country codes, e.g. de or de,fr"));
                    }
                    codes.push(code.to_ascii_uppercase());
                }
                codes.sort();
                codes.dedup();
                self.filter.countries = codes;
            }
            "city" => {
                let name = value.replace('_', " ").to_lowercase();
                if name.len() > MAX_CITY || name.chars().any(char::is_control) {
                    return Err(malformed("a city name of at most 64 bytes"));
                }
                self.filter.city = Some(name);
            }
            "asn" => {
                let digits = value
                    .strip_prefix("as")
                    .or_else(|| value.strip_prefix("AS"))
                    .unwrap_or(value);
                self.filter.asn = Some(
                    digits
                        .parse()
                        .map_err(|_| malformed("an AS number, e.g. 3320"))?,
                );
            }
            "kind" => {
                let mut kinds = Vec::new();
                for name in value.split([',', '|']) {
                    kinds.push(
                        Kind::parse(&name.to_ascii_lowercase())
                            .ok_or_else(|| malformed("residential, datacenter or mobile"))?,
                    );
                }
                kinds.sort();
                kinds.dedup();
                self.filter.kinds = kinds;
            }
            "session" => {
                if value.len() > MAX_SESSION_ID
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                {
                    return Err(malformed("up to 64 letters, digits, '_' or '.'"));
                }
                self.session = Some(value.to_owned());
            }
            "sesstime" => {
                let minutes: u64 = value
                    .parse()
                    .ok()
                    .filter(|m| (1..=MAX_SESSION_MINUTES).contains(m))
                    .ok_or_else(|| malformed("minutes from 1 to 1440"))?;
                self.sesstime = Some(minutes * 60);
            }
            "minrating" => {
                self.filter.min_rating =
                    Some(stars(value).ok_or_else(|| malformed("stars from 0 to 5, e.g. 4.5"))?);
            }
            "maxprice" => {
                self.filter.max_price = Some(
                    value
                        .parse()
                        .map_err(|_| malformed("base units per IP-second"))?,
                );
            }
            _ => unreachable!("every canonical key is handled above"),
        }
        Ok(())
    }

    fn finish(self, user: String, secret: String) -> Result<Target, ParamError> {
        let stickiness = match (self.session, self.rotate) {
            (Some(_), true) => return Err(refuse("rotate", Problem::Conflict("session"))),
            (Some(id), false) => Stickiness::Session {
                id,
                idle_secs: self.sesstime.unwrap_or(DEFAULT_SESSION_IDLE_SECS),
            },
            (None, rotate) => {
                if self.sesstime.is_some() {
                    return Err(refuse("sesstime", Problem::Conflict("no session")));
                }
                if rotate {
                    Stickiness::Rotate
                } else {
                    Stickiness::Spread
                }
            }
        };
        Ok(Target {
            user,
            secret,
            filter: self.filter,
            stickiness,
        })
    }
}

/// `4.5` → 450 hundredths of a star.
fn stars(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || fraction.len() > 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = whole.parse().ok()?;
    let fraction: u16 = format!("{fraction:0<2}").parse().ok()?;
    let value = whole.checked_mul(100)?.checked_add(fraction)?;
    (value <= 500).then_some(value)
}

/// Splits `key-value` (the value may itself hold dashes); a bare key is a flag.
fn key_value(token: &str) -> (&str, Option<&str>) {
    match token.split_once('-') {
        Some((key, value)) => (key, Some(value)),
        None => (token, None),
    }
}

/// Keys whose values may contain a `-` (so the username's `-` does not split them).
fn takes_value(key: &str) -> bool {
    !key.eq_ignore_ascii_case("rotate")
}

impl Target {
    /// Reads the username (`USER-key-value-…`) and password (`SECRET_key-value_…`).
    pub fn parse(username: &str, password: &str) -> Result<Self, ParamError> {
        let mut params = Params::default();
        let mut tokens = username.split('-');
        let user = tokens.next().unwrap_or_default().to_owned();
        while let Some(key) = tokens.next() {
            if key.is_empty() {
                return Err(refuse(
                    "-",
                    Problem::Malformed("key-value pairs after the user"),
                ));
            }
            let value = if takes_value(key) {
                tokens.next()
            } else {
                None
            };
            params.apply(key, value)?;
        }
        let mut fields = password.split('_');
        let secret = fields.next().unwrap_or_default().to_owned();
        for field in fields {
            if field.is_empty() {
                return Err(refuse(
                    "_",
                    Problem::Malformed("key-value pairs after the secret"),
                ));
            }
            let (key, value) = key_value(field);
            params.apply(key, value)?;
        }
        params.finish(user, secret)
    }

    /// The target of a client that sent no credentials at all: any IP, spread.
    pub fn anonymous() -> Self {
        Self {
            user: String::new(),
            secret: String::new(),
            filter: Filter::default(),
            stickiness: Stickiness::Spread,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(username: &str) -> Result<Target, ParamError> {
        Target::parse(username, "secret")
    }

    #[test]
    fn bright_data_style_usernames_read_as_filter_and_session() {
        let target = parse("fleet-country-de-session-abc").expect("parses");
        assert_eq!(target.user, "fleet");
        assert_eq!(target.secret, "secret");
        assert_eq!(target.filter.countries, ["DE"]);
        assert_eq!(
            target.stickiness,
            Stickiness::Session {
                id: "abc".into(),
                idle_secs: DEFAULT_SESSION_IDLE_SECS
            }
        );
    }

    #[test]
    fn oxylabs_aliases_and_every_parameter_parse() {
        let target = parse(
            "customer-cc-FR,de-city-new_york-asn-AS3320-type-mobile,dc-sessid-x.1_2-sesstime-5-\
             minrating-4.5-maxprice-1000",
        )
        .expect("parses");
        assert_eq!(target.filter.countries, ["DE", "FR"]);
        assert_eq!(target.filter.city.as_deref(), Some("new york"));
        assert_eq!(target.filter.asn, Some(3320));
        assert_eq!(target.filter.kinds, [Kind::Datacenter, Kind::Mobile]);
        assert_eq!(target.filter.min_rating, Some(450));
        assert_eq!(target.filter.max_price, Some(1000));
        assert_eq!(
            target.stickiness,
            Stickiness::Session {
                id: "x.1_2".into(),
                idle_secs: 300
            }
        );
    }

    #[test]
    fn rotate_is_a_flag_anywhere_in_the_username() {
        let target = parse("u-rotate-country-us").expect("parses");
        assert_eq!(target.stickiness, Stickiness::Rotate);
        assert_eq!(target.filter.countries, ["US"]);
        assert_eq!(
            parse("u").expect("bare user").stickiness,
            Stickiness::Spread
        );
    }

    #[test]
    fn parameters_may_come_in_the_password_iproyal_style() {
        let target = Target::parse("fleet", "s3cret_country-de_session-7").expect("parses");
        assert_eq!(target.secret, "s3cret");
        assert_eq!(target.filter.countries, ["DE"]);
        assert!(matches!(target.stickiness, Stickiness::Session { ref id, .. } if id == "7"));
        let error = Target::parse("fleet-country-fr", "s_country-de").expect_err("twice");
        assert_eq!(error.param, "country");
        assert_eq!(error.problem, Problem::Duplicate);
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            ("u-colour-red", "colour", Problem::Unknown),
            ("u-country", "country", Problem::MissingValue),
            ("u-country-deu", "country", Problem::Malformed("")),
            ("u-kind-satellite", "kind", Problem::Malformed("")),
            ("u-sesstime-0-session-a", "sesstime", Problem::Malformed("")),
            ("u-session-a-rotate", "rotate", Problem::Conflict("session")),
            ("u-sesstime-5", "sesstime", Problem::Conflict("no session")),
            ("u-minrating-5.5", "minrating", Problem::Malformed("")),
            ("u-minrating-4.555", "minrating", Problem::Malformed("")),
            ("u-maxprice--1", "maxprice", Problem::MissingValue),
            ("u-maxprice-1e3", "maxprice", Problem::Malformed("")),
            ("u-session-a b", "session", Problem::Malformed("")),
            ("u--country-de", "-", Problem::Malformed("")),
            ("u-asn-x", "asn", Problem::Malformed("")),
        ];
        for (username, param, problem) in cases {
            let error = parse(username).expect_err(username);
            assert_eq!(error.param, param, "{username}");
            assert_eq!(
                std::mem::discriminant(&error.problem),
                std::mem::discriminant(&problem),
                "{username}: {error}"
            );
        }
    }

    #[test]
    fn equal_filters_compare_equal_whatever_the_order_written() {
        let a = parse("a-country-fr,de-kind-mobile,residential").expect("a");
        let b = parse("b-kind-residential|mobile-cc-DE|fr").expect("b");
        assert_eq!(a.filter, b.filter);
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_names_a_parameter(username in ".{0,80}", password in ".{0,40}") {
            if let Err(error) = Target::parse(&username, &password) {
                proptest::prop_assert!(!error.param.is_empty());
            }
        }
    }
}
