//! Entry points for `cargo fuzz` (the `fuzz/` folder), compiled only with `--cfg fuzzing`.
//! Each takes bytes as a hostile client would send them and checks what must hold whatever
//! they are: no panic, no credential accepted for another IP, nothing of the proxy's own
//! fields forwarded.

use std::net::IpAddr;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::credentials::{CredentialKey, Grant, Protocols};
use crate::server::{ProxyConfig, Shared};

/// The IP the fuzzed client connected to, and the one its valid credentials are for.
pub const LEASED_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const KEY: [u8; 32] = [7; 32];

fn grant() -> Grant {
    Grant {
        lease: 9,
        ip: LEASED_IP,
        protocols: Protocols::SOCKS5
            .union(Protocols::HTTP)
            .union(Protocols::HTTPS),
        not_before: 0,
        not_after: u64::MAX,
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared::detached(ProxyConfig::new(Vec::new(), CredentialKey::new(KEY))))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// A SOCKS5 negotiation with a client that sends `data`. When the first byte is odd, a valid
/// greeting and authentication come first, so the request parser sees the rest.
pub fn socks5(data: &[u8]) {
    let Some((flag, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(data.len() + 600);
    if flag & 1 == 1 {
        let issued = CredentialKey::new(KEY).issue(&grant());
        input.extend_from_slice(&[5, 1, 2, 1]);
        for field in [issued.username.as_bytes(), issued.password.as_bytes()] {
            input.push(u8::try_from(field.len()).expect("short credentials"));
            input.extend_from_slice(field);
        }
    }
    input.extend_from_slice(rest);
    let mut reader = tokio::io::BufReader::new(input.as_slice());
    let mut answer = Vec::new();
    let negotiated = runtime().block_on(crate::socks5::negotiate(
        &mut reader,
        &mut answer,
        LEASED_IP,
        shared(),
    ));
    if let Ok(Some(request)) = negotiated {
        assert_eq!(request.grant.ip, LEASED_IP, "a grant for another IP");
        assert!(matches!(request.command, 1 | 3));
        let _ = (request.destination, request.port);
    }
}

/// An HTTP request head from a client. `@@` in the input stands for valid credentials, so
/// the checks past authentication are reached too.
pub fn http_head(data: &[u8]) {
    let issued = CredentialKey::new(KEY).issue(&grant());
    let token = STANDARD.encode(format!("{}:{}", issued.username, issued.password));
    let data = replace_all(data, b"@@", token.as_bytes());
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = head.parse(&data) else {
        return;
    };
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(path);
    for field in head.headers.iter() {
        builder = builder.header(field.name, field.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let framing = crate::http::check_framing(request.headers());
    let raw_framing = crate::http::check_raw_framing(&data, request.method(), request.uri());
    if framing.is_ok() && raw_framing.is_ok() {
        let lengths = request.headers().contains_key(http::header::CONTENT_LENGTH);
        let chunked = request
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING);
        assert!(!(lengths && chunked), "both framings passed");
    }
    if let Ok(grant) = crate::http::authenticate(request.headers(), LEASED_IP, shared()) {
        assert_eq!(grant.ip, LEASED_IP, "a grant for another IP");
    }
    if crate::http::forward_target(request.uri()).is_err() {
        return;
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if let Ok(sent) = crate::http::origin_request(request) {
        assert!(sent.uri().authority().is_none(), "origin-form target");
        assert!(
            sent.headers()
                .keys()
                .all(|name| !name.as_str().starts_with("proxy-")),
            "a Proxy-* field forwarded"
        );
        assert_eq!(
            sent.headers()
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok()),
            authority.as_deref(),
            "Host is the target's"
        );
    }
}

/// A SOCKS5 UDP datagram from the client.
pub fn udp_header(data: &[u8]) {
    if let Ok((_, _, payload)) = crate::udp::parse_header(data) {
        assert!(
            data.ends_with(payload),
            "the payload is the datagram's tail"
        );
    }
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(from) {
            out.extend_from_slice(to);
            at += from.len();
        } else {
            out.push(data[at]);
            at += 1;
        }
    }
    out
}
