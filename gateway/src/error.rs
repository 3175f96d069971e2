//! The API's error answer: an HTTP status, a machine-readable code and a human message, as
//! `{"error": {"code": "...", "message": "..."}}`. Every refusal is one of these and changes
//! nothing on the node.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use ipsx_api::ErrorCode;

/// A refused API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code clients can branch on, e.g. `bad_signature`.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For 429 and 503: seconds until the next call may pass.
    pub retry_after: Option<u64>,
    /// For `not_leader`: the URL of the node that takes writes.
    pub leader: Option<String>,
}

impl ApiError {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            leader: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no valid session.
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 429 with the wait.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: ErrorCode::RateLimited,
            message: format!("too many requests; retry in {seconds} s"),
            retry_after: Some(seconds),
            leader: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(ipsx_api::ErrorBody {
            error: ipsx_api::ErrorDetail {
                code: self.code,
                message: self.message,
                leader: self.leader,
            },
        });
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::session::SignInError> for ApiError {
    fn from(error: crate::session::SignInError) -> Self {
        use crate::session::SignInError as E;
        let code = match &error {
            E::UnknownNonce => ErrorCode::UnknownNonce,
            E::Expired(_) => ErrorCode::ChallengeExpired,
            E::BadSignature(_) => ErrorCode::BadSignature,
            E::WrongSigner { .. } => ErrorCode::WrongSigner,
        };
        let status = match error {
            E::WrongSigner { .. } | E::BadSignature(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<crate::session::SessionError> for ApiError {
    fn from(error: crate::session::SessionError) -> Self {
        let code = match error {
            crate::session::SessionError::Invalid => ErrorCode::InvalidSession,
            crate::session::SessionError::Expired(_) => ErrorCode::SessionExpired,
        };
        Self::unauthorized(code, error.to_string())
    }
}
