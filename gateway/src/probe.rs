//! Proof that a direct provider egresses from the IPs it offers. Before an offer goes live the
//! node asks the provider's own proxy, on each offered IP, to fetch the node's echo endpoint
//! (`GET /v1/echo`, which answers the address a request came from) with a credential only
//! that provider's proxy accepts (issued with its key for a lease id no deal ever has). The
//! answer must be the offered IP: a provider claiming someone else's address reaches no proxy
//! of its own there, and one whose proxy leaves from another address is caught by the echo.

use crate::error::ErrorCode;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt as _;
use ipsx_credentials::{CredentialKey, Grant, Protocols};

use crate::error::ApiError;

/// The lease id probe credentials carry: deals count up from 1 and never reach it.
pub const PROBE_LEASE: u64 = u64::MAX;
/// Probes in flight at once for one offer.
const CONCURRENT: usize = 32;

/// How the node proves direct providers' IPs.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// The node's echo endpoint as the providers' proxies reach it
    /// (`http://<node>/v1/echo`; plain HTTP, so the proxy forwards it itself). Empty: the
    /// node's public URL when it is `http://`, else its bound address.
    pub echo_url: String,
    /// Time for one probe. Default 10 s.
    pub timeout: Duration,
}

impl ProbeSettings {
    /// Probes to `echo_url` with the default timeout.
    pub fn new(echo_url: impl Into<String>) -> Self {
        Self {
            echo_url: echo_url.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an IP was not proven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// Nothing answered as a proxy at the IP and port.
    #[error("no proxy answered at {0}: {1}")]
    Unreachable(SocketAddr, String),
    /// The proxy answered with an error status.
    #[error("the proxy at {0} refused the probe ({1})")]
    Refused(SocketAddr, u16),
    /// The echo saw the request come from elsewhere.
    #[error("traffic through {proxy} leaves from {seen}, not {ip}")]
    WrongEgress {
        /// The proxy probed.
        proxy: SocketAddr,
        /// The IP offered.
        ip: IpAddr,
        /// The address the echo saw.
        seen: IpAddr,
    },
}

/// Probes one IP through the provider's proxy on `port`.
pub async fn probe(
    settings: &ProbeSettings,
    key: &CredentialKey,
    ip: IpAddr,
    port: u16,
    now: u64,
) -> Result<(), ProbeFailure> {
    let proxy = SocketAddr::new(ip, port);
    let credentials = key.issue(&Grant {
        lease: PROBE_LEASE,
        ip,
        protocols: Protocols::HTTP,
        not_before: now.saturating_sub(5),
        not_after: now + 60,
    });
    let unreachable = |error: reqwest::Error| ProbeFailure::Unreachable(proxy, error.to_string());
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{proxy}"))
                .map_err(unreachable)?
                .basic_auth(&credentials.username, &credentials.password),
        )
        .timeout(settings.timeout)
        .build()
        .map_err(unreachable)?;
    let answer = client
        .get(&settings.echo_url)
        .send()
        .await
        .map_err(unreachable)?;
    if !answer.status().is_success() {
        return Err(ProbeFailure::Refused(proxy, answer.status().as_u16()));
    }
    let seen = answer
        .json::<ipsx_api::Echo>()
        .await
        .map_err(unreachable)?
        .ip;
    if seen.to_canonical() == ip.to_canonical() {
        Ok(())
    } else {
        Err(ProbeFailure::WrongEgress { proxy, ip, seen })
    }
}

/// Probes every IP of an offer; the first failure refuses the offer.
pub(crate) async fn prove_all(
    settings: &ProbeSettings,
    key: &CredentialKey,
    ips: &[IpAddr],
    port: u16,
    now: u64,
) -> Result<(), ApiError> {
    let mut probes = futures_util::stream::iter(ips.to_vec())
        .map(|ip| {
            let (settings, key) = (settings.clone(), key.clone());
            async move { probe(&settings, &key, ip, port, now).await }
        })
        .buffer_unordered(CONCURRENT);
    while let Some(outcome) = probes.next().await {
        if let Err(failure) = outcome {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::IpNotProven,
                format!(
                    "offered IPs must be served by your proxy and leave from themselves: \
                     {failure}"
                ),
            ));
        }
    }
    Ok(())
}
