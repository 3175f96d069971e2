//! Why a request is refused, and how each protocol says so: one list of reasons, mapped to a
//! SOCKS5 reply code (RFC 1928 §6) and to an HTTP status with an RFC 9209 `Proxy-Status`.

use crate::credentials::AuthError;
use crate::guard::Guarded;

/// A refused request. Logged in full; the client gets the protocol's code and a short message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// No credentials were offered.
    #[error("lease credentials required")]
    NoCredentials,
    /// The credentials did not verify.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The lease does not include this protocol (or SMTP for a mail port).
    #[error("the lease does not include {0}")]
    ProtocolNotLeased(&'static str),
    /// The lease was cut (ended early or payment lapsed).
    #[error("lease {0} is cut off")]
    LeaseCut(u64),
    /// The lease has as many open connections as it may.
    #[error("lease {0} is at its connection limit")]
    LeaseLimit(u64),
    /// The destination is in the provider's guarded network.
    #[error(transparent)]
    Guarded(#[from] Guarded),
    /// The name does not resolve.
    #[error("{0} does not resolve")]
    Dns(String),
    /// The destination has no address of the leased IP's family.
    #[error("destination has no address of the leased IP's family")]
    Family,
    /// The destination refused the connection.
    #[error("destination refused the connection")]
    ConnectionRefused,
    /// No route to the destination.
    #[error("destination unreachable")]
    Unreachable,
    /// Resolving and connecting took longer than the connect timeout.
    #[error("connecting to the destination timed out")]
    ConnectTimeout,
    /// Any other failure to connect.
    #[error("could not connect: {0}")]
    ConnectFailed(String),
    /// A SOCKS command other than CONNECT and UDP ASSOCIATE.
    #[error("command not supported")]
    CommandNotSupported,
    /// A SOCKS address type other than IPv4, IPv6 and domain name.
    #[error("address type not supported")]
    AddressTypeNotSupported,
    /// The origin closed or broke the connection before its response head.
    #[error("the destination did not answer: {0}")]
    OriginFailed(String),
    /// A malformed HTTP request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

/// An HTTP refusal: status, the RFC 9209 error type and whether to ask for credentials.
pub(crate) struct HttpRefusal {
    pub(crate) status: u16,
    pub(crate) error_type: &'static str,
    pub(crate) ask_credentials: bool,
}

impl Refusal {
    /// The SOCKS5 reply code.
    pub(crate) fn socks_reply(&self) -> u8 {
        match self {
            // Authentication failures are answered in the RFC 1929 sub-negotiation instead.
            Self::NoCredentials | Self::Auth(_) => 1,
            Self::ProtocolNotLeased(_)
            | Self::LeaseCut(_)
            | Self::LeaseLimit(_)
            | Self::Guarded(_) => 2,
            Self::Unreachable => 3,
            Self::Dns(_) => 4,
            Self::ConnectionRefused => 5,
            Self::ConnectTimeout => 6,
            Self::CommandNotSupported => 7,
            Self::Family | Self::AddressTypeNotSupported => 8,
            Self::ConnectFailed(_) | Self::OriginFailed(_) | Self::BadRequest(_) => 1,
        }
    }

    /// The HTTP answer.
    pub(crate) fn http(&self) -> HttpRefusal {
        let (status, error_type) = match self {
            Self::NoCredentials | Self::Auth(_) => (407, "http_request_denied"),
            Self::ProtocolNotLeased(_) | Self::LeaseCut(_) => (403, "http_request_denied"),
            Self::LeaseLimit(_) => (429, "connection_limit_reached"),
            Self::Guarded(_) => (403, "destination_ip_prohibited"),
            Self::Dns(_) => (502, "dns_error"),
            Self::Family => (502, "destination_ip_unroutable"),
            Self::ConnectionRefused => (502, "connection_refused"),
            Self::Unreachable => (502, "destination_unavailable"),
            Self::ConnectTimeout => (504, "connection_timeout"),
            Self::ConnectFailed(_) => (502, "proxy_internal_error"),
            Self::OriginFailed(_) => (502, "http_response_incomplete"),
            Self::CommandNotSupported | Self::AddressTypeNotSupported | Self::BadRequest(_) => {
                (400, "http_protocol_error")
            }
        };
        HttpRefusal {
            status,
            error_type,
            ask_credentials: status == 407,
        }
    }

    /// What the client is told. Authentication failures stay coarse on purpose: the client
    /// learns the credentials were refused, not which part was wrong.
    pub(crate) fn client_message(&self) -> String {
        match self {
            Self::Auth(AuthError::Expired(_)) => "lease expired".to_owned(),
            Self::Auth(AuthError::NotYetValid(_)) => "lease not started".to_owned(),
            Self::Auth(_) => "lease credentials refused".to_owned(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_client_error_or_a_gateway_error() {
        let all = [
            Refusal::NoCredentials,
            Refusal::Auth(AuthError::BadSecret),
            Refusal::ProtocolNotLeased("SMTP"),
            Refusal::LeaseCut(1),
            Refusal::LeaseLimit(1),
            Refusal::Dns("x".into()),
            Refusal::Family,
            Refusal::ConnectionRefused,
            Refusal::Unreachable,
            Refusal::ConnectTimeout,
            Refusal::ConnectFailed("x".into()),
            Refusal::OriginFailed("x".into()),
            Refusal::CommandNotSupported,
            Refusal::AddressTypeNotSupported,
            Refusal::BadRequest("x"),
        ];
        for refusal in all {
            let http = refusal.http();
            assert!((400..600).contains(&http.status), "{refusal:?}");
            assert_ne!(refusal.socks_reply(), 0, "{refusal:?}");
            assert!(!http.error_type.is_empty());
        }
    }

    #[test]
    fn a_wrong_secret_is_not_explained_to_the_client() {
        let message = Refusal::Auth(AuthError::BadSecret).client_message();
        assert_eq!(message, "lease credentials refused");
    }
}
