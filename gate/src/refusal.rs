//! The gate's own refusals, and how each protocol says them.
//!
//! Every answer the gate makes itself carries `Proxy-Status: ipsx-gate; error=…; details=…`
//! (RFC 9209) and `X-Ipsx-Error: <code>`, so a crawler's ban detection can tell the gate's
//! errors from the target's answers (which never carry either: the provider's proxy strips
//! `Proxy-*` fields from origin responses, and so does the gate). The codes are stable:
//!
//! | code | status | Proxy-Status error | meaning |
//! | --- | --- | --- | --- |
//! | `bad_parameter` | 400 | `http_request_error` | a username/password parameter is unknown or malformed (named in `details`) |
//! | `auth_required` | 407 | `http_request_denied` | this gate needs its password |
//! | `bad_request` | 400 | `http_protocol_error` | not a proxy request (no absolute URI, no authority) |
//! | `session_gone` | 502 | `destination_unavailable` | the sticky session's exit failed or its lease ended: use a new session id |
//! | `no_exits` | 502 | `destination_unavailable` | the node has no IP for this filter now |
//! | `exits_failed` | 502 | `destination_unavailable` | every exit tried failed (retries exhausted) |
//! | `lease_timeout` | 504 | `connection_timeout` | no exit within the request's deadline |
//! | `max_ips` | 429 | `connection_limit_reached` | the gate holds as many IPs as the fleet allows |
//! | `spend_limit` | 402 | `http_request_denied` | leasing more would pass the fleet's spend per minute |
//!
//! Answers from the provider's own proxy (e.g. `dns_error` for a name that does not resolve)
//! pass through unchanged with the provider's `Proxy-Status: ipsx; …`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::pool;
use crate::target::ParamError;

/// Why the gate answered itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// A targeting parameter is wrong.
    #[error(transparent)]
    BadParameter(#[from] ParamError),
    /// The client did not give this gate's password.
    #[error("this gate needs its password")]
    AuthRequired,
    /// Not a request a proxy can serve.
    #[error("{0}")]
    BadRequest(&'static str),
    /// No exit could be found or used.
    #[error(transparent)]
    Pool(#[from] pool::Refusal),
    /// Every exit tried failed.
    #[error("{tries} exits tried, all failed (last: {last})")]
    ExitsFailed {
        /// How many.
        tries: u32,
        /// The last failure.
        last: String,
    },
    /// No exit came within the request's deadline.
    #[error("no exit within {0} ms")]
    LeaseTimeout(u64),
}

impl GateError {
    /// The stable code (see the module docs).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadParameter(_) => "bad_parameter",
            Self::AuthRequired => "auth_required",
            Self::BadRequest(_) => "bad_request",
            Self::Pool(pool::Refusal::SessionGone { .. }) => "session_gone",
            Self::Pool(pool::Refusal::NoExits { .. }) => "no_exits",
            Self::Pool(pool::Refusal::MaxIps { .. }) => "max_ips",
            Self::Pool(pool::Refusal::SpendLimit { .. }) => "spend_limit",
            Self::ExitsFailed { .. } => "exits_failed",
            Self::LeaseTimeout(_) => "lease_timeout",
        }
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadParameter(_) => (StatusCode::BAD_REQUEST, "http_request_error"),
            Self::AuthRequired => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "http_request_denied",
            ),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "http_protocol_error"),
            Self::Pool(pool::Refusal::MaxIps { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "connection_limit_reached")
            }
            Self::Pool(pool::Refusal::SpendLimit { .. }) => {
                (StatusCode::PAYMENT_REQUIRED, "http_request_denied")
            }
            Self::Pool(_) | Self::ExitsFailed { .. } => {
                (StatusCode::BAD_GATEWAY, "destination_unavailable")
            }
            Self::LeaseTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "connection_timeout"),
        }
    }

    /// The node refused a lease for a reason that is the crawler's parameter.
    pub(crate) fn from_pool(refusal: pool::Refusal) -> Self {
        if let pool::Refusal::NoExits {
            code: Some(code), ..
        } = &refusal
        {
            let param = match code.as_str() {
                "unknown_country" => Some("country"),
                "bad_city" | "unknown_city" => Some("city"),
                _ => None,
            };
            if let Some(param) = param {
                return Self::BadParameter(ParamError {
                    param: param.to_owned(),
                    problem: crate::target::Problem::Malformed("a value the node knows"),
                });
            }
        }
        Self::Pool(refusal)
    }

    /// The SOCKS5 reply code (RFC 1928 §6) for a CONNECT the gate refuses.
    pub fn socks_reply(&self) -> u8 {
        match self {
            Self::BadParameter(_) | Self::AuthRequired | Self::BadRequest(_) => 2,
            Self::Pool(pool::Refusal::MaxIps { .. } | pool::Refusal::SpendLimit { .. }) => 2,
            Self::Pool(_) | Self::ExitsFailed { .. } => 3,
            Self::LeaseTimeout(_) => 6,
        }
    }

    /// The HTTP answer.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let (status, error_type) = self.status();
        let message = self.to_string();
        let details = message.replace(['"', '\\'], "'");
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "{}: {message}\n",
            self.code()
        ))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&format!(
            "ipsx-gate; error={error_type}; details=\"{details}\""
        )) {
            headers.insert("proxy-status", value);
        }
        headers.insert("x-ipsx-error", HeaderValue::from_static(self.code()));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            headers.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ipsx-gate\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    #[test]
    fn a_bad_parameter_is_named_in_proxy_status() {
        let error = GateError::from(Target::parse("u-colour-red", "").expect_err("bad"));
        let response: Response<Full<Bytes>> = error.response();
        assert_eq!(response.status(), 400);
        let status = response.headers()["proxy-status"].to_str().expect("ascii");
        assert!(
            status.starts_with("ipsx-gate; error=http_request_error;"),
            "{status}"
        );
        assert!(status.contains("colour"), "{status}");
        assert_eq!(response.headers()["x-ipsx-error"], "bad_parameter");
    }

    #[test]
    fn a_node_refusal_of_the_country_is_a_bad_parameter() {
        let error = GateError::from_pool(pool::Refusal::NoExits {
            filter: "country ZZ".into(),
            reason: "unknown".into(),
            code: Some("unknown_country".into()),
        });
        assert!(matches!(error, GateError::BadParameter(ref p) if p.param == "country"));
    }

    #[test]
    fn limits_and_gone_sessions_have_their_documented_statuses() {
        let cases = [
            (
                GateError::Pool(pool::Refusal::MaxIps { held: 3 }),
                429,
                "max_ips",
            ),
            (
                GateError::Pool(pool::Refusal::SpendLimit {
                    per_minute: 1,
                    limit: 1,
                }),
                402,
                "spend_limit",
            ),
            (
                GateError::Pool(pool::Refusal::SessionGone {
                    session: "a".into(),
                    reason: "cut".into(),
                }),
                502,
                "session_gone",
            ),
        ];
        for (error, status, code) in cases {
            let response: Response<Full<Bytes>> = error.response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-ipsx-error"], code);
        }
    }
}
