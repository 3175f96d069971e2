//! # ipsx-hop — what a proxy hop never passes on
//!
//! Both proxies in IPSX (the provider's egress proxy and the fleet's crawler endpoint) rebuild
//! every request and answer they forward. Neither passes on hop-by-hop fields (RFC 9110 §7.6.1),
//! the fields a `Connection` header names, or any `Proxy-*` field: lease credentials, a gate's
//! password and targeting, and a proxy's own `Proxy-Status` stay on the hop they belong to, so
//! a target can never fake a proxy's refusal and never learns a credential.
//!
//! ```
//! use http::HeaderMap;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("proxy-authorization", "Basic bGVhc2U6c2VjcmV0".parse().unwrap());
//! headers.insert("connection", "x-trace".parse().unwrap());
//! headers.insert("x-trace", "1".parse().unwrap());
//! headers.insert("accept", "*/*".parse().unwrap());
//! ipsx_hop::strip_hop_by_hop(&mut headers);
//! assert_eq!(headers.len(), 1);
//! assert!(headers.contains_key("accept"));
//! ```

use http::{HeaderMap, HeaderName, header};

/// Hop-by-hop fields (RFC 9110 §7.6.1), never forwarded either way.
pub const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields, those named in `Connection` (or `Proxy-Connection`), and every
/// `Proxy-*` field.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .chain(headers.get_all("proxy-connection"))
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxy_field_and_every_named_field_goes() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("proxy-status", "ipsx; error=http_request_denied"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive, x-a"),
            ("connection", "close, X-B"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("transfer-encoding", "chunked"),
            ("host", "example.com"),
        ] {
            headers.append(HeaderName::from_static(name), value.parse().expect("value"));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);
    }
}
