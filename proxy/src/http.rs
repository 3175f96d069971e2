//! The HTTP proxy: `CONNECT host:port` tunnels (HTTPS; needs the lease's HTTPS protocol) and
//! absolute-URI forwarding of plain `http://` requests (needs HTTP), both authenticated with
//! `Proxy-Authorization: Basic base64(lease:secret)`. Refusals carry an RFC 9209 `Proxy-Status`
//! header naming the error type, and a short plain-text body.
//!
//! A forwarded request goes to the origin with its hop-by-hop headers removed and
//! `Connection: close`; the response streams back unchanged and the connection ends with it, so
//! one client connection carries one forwarded request (clients open the next one themselves).

use std::io;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::credentials::{Grant, Protocols};
use crate::egress::{self, Destination};
use crate::refusal::Refusal;
use crate::relay::{End, unix_now};
use crate::server::{Accepted, Shared};

/// The largest request head accepted (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most header fields accepted.
const MAX_HEADERS: usize = 64;
/// Headers that concern only this hop, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `CONNECT host:port`.
    Tunnel { host: String, port: u16 },
    /// An absolute `http://` URI, with the head to send the origin.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// A parsed, authenticated request.
struct Request {
    grant: Grant,
    target: Target,
}

/// Serves one HTTP proxy client.
pub(crate) async fn serve(accepted: Accepted, shared: &Shared) -> io::Result<End> {
    let Accepted {
        stream: mut client,
        local_ip,
        first: mut buffer,
        deadline,
    } = accepted;
    let read = tokio::time::timeout_at(deadline, read_head(&mut client, &mut buffer)).await;
    let head_len = match read {
        Ok(Ok(Ok(len))) => len,
        Ok(Ok(Err(refusal))) => return refuse(&mut client, &refusal).await,
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP request head timeout",
            ));
        }
    };
    let request = match parse(&buffer[..head_len], local_ip, shared) {
        Ok(request) => request,
        Err(refusal) => return refuse(&mut client, &refusal).await,
    };
    let early = &buffer[head_len..];

    let (protocol, name, host, port) = match &request.target {
        Target::Tunnel { host, port } => (Protocols::HTTPS, "HTTPS (CONNECT)", host, *port),
        Target::Forward { host, port, .. } => (Protocols::HTTP, "HTTP", host, *port),
    };
    let (lease, _open) = match shared.admit(request.grant, protocol, name, port) {
        Ok(admitted) => admitted,
        Err(refusal) => return refuse(&mut client, &refusal).await,
    };
    let connected = egress::connect(
        &Destination::from_host(host),
        port,
        // This connection's IP: one lease may hold several IPs.
        request.grant.ip,
        &shared.config.guard,
        shared.config.connect_timeout,
    )
    .await;
    let mut target = match connected {
        Ok(target) => target,
        Err(refusal) => return refuse(&mut client, &refusal).await,
    };
    match &request.target {
        Target::Tunnel { .. } => {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
        }
        Target::Forward { head, .. } => {
            target.write_all(head).await?;
            lease.count_up(head.len());
        }
    }
    shared.tunnel(&client, target, &lease, early).await
}

/// Reads until the end of the head; returns its length (bytes after it are the body's).
async fn read_head(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> io::Result<Result<usize, Refusal>> {
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(buffer, scanned) {
            return Ok(Ok(end));
        }
        if buffer.len() >= MAX_HEAD {
            return Ok(Err(Refusal::HeadTooLarge));
        }
        scanned = buffer.len().saturating_sub(3);
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_HEAD - buffer.len());
        let read = client.read(&mut chunk[..want]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before the end of its request head",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn find_head_end(buffer: &[u8], from: usize) -> Option<usize> {
    buffer[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// Parses and authenticates a request head.
fn parse(head: &[u8], local_ip: IpAddr, shared: &Shared) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::BadRequest("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::BadRequest("malformed request head")),
    }
    let method = parsed.method.ok_or(Refusal::BadRequest("no method"))?;
    let uri = parsed
        .path
        .ok_or(Refusal::BadRequest("no request target"))?;

    let grant = authenticate(parsed.headers, local_ip, shared)?;
    let target = if method.eq_ignore_ascii_case("CONNECT") {
        let authority: http::uri::Authority = uri
            .parse()
            .map_err(|_| Refusal::BadRequest("CONNECT needs host:port"))?;
        let port = authority
            .port_u16()
            .ok_or(Refusal::BadRequest("CONNECT needs host:port"))?;
        Target::Tunnel {
            host: authority.host().to_owned(),
            port,
        }
    } else {
        let uri: http::Uri = uri
            .parse()
            .map_err(|_| Refusal::BadRequest("malformed request target"))?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(_) => {
                return Err(Refusal::BadRequest(
                    "only http:// is forwarded; use CONNECT",
                ));
            }
            None => return Err(Refusal::BadRequest("a proxy request needs an absolute URI")),
        }
        let authority = uri
            .authority()
            .ok_or(Refusal::BadRequest("absolute URI without a host"))?;
        if authority.as_str().contains('@') {
            return Err(Refusal::BadRequest(
                "credentials in the URI are not forwarded",
            ));
        }
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let head = origin_head(
            method,
            path,
            parsed.version,
            parsed.headers,
            authority.as_str(),
        );
        Target::Forward { host, port, head }
    };
    Ok(Request { grant, target })
}

fn authenticate(
    headers: &[httparse::Header<'_>],
    local_ip: IpAddr,
    shared: &Shared,
) -> Result<Grant, Refusal> {
    let value = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .ok_or(Refusal::NoCredentials)?
        .value;
    let value = std::str::from_utf8(value).map_err(|_| Refusal::NoCredentials)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or(Refusal::NoCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::NoCredentials);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refusal::Auth(crate::AuthError::Malformed))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(Refusal::Auth(crate::AuthError::Malformed))?;
    let (username, password) = (&decoded[..colon], &decoded[colon + 1..]);
    Ok(shared
        .config
        .key
        .verify(username, password, local_ip, unix_now())?)
}

/// The head sent to the origin: origin-form target, no hop-by-hop headers, `Connection: close`.
fn origin_head(
    method: &str,
    path: &str,
    version: Option<u8>,
    headers: &[httparse::Header<'_>],
    authority: &str,
) -> Vec<u8> {
    // Headers the client named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<String> = headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("proxy-connection")
        })
        .flat_map(|h| {
            String::from_utf8_lossy(h.value)
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut head = Vec::with_capacity(512);
    let minor = version.unwrap_or(1);
    head.extend_from_slice(format!("{method} {path} HTTP/1.{minor}\r\n").as_bytes());
    let mut has_host = false;
    for header in headers {
        let lower = header.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower) {
            continue;
        }
        has_host |= lower == "host";
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    if !has_host {
        head.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

/// Answers a refusal: status, `Proxy-Status` (RFC 9209), a plain-text reason; then closes.
async fn refuse(client: &mut TcpStream, refusal: &Refusal) -> io::Result<End> {
    tracing::info!(%refusal, "HTTP proxy request refused");
    client.write_all(&refusal_response(refusal)).await?;
    client.shutdown().await?;
    Ok(End::Finished)
}

fn refusal_response(refusal: &Refusal) -> Vec<u8> {
    let http = refusal.http();
    let message = refusal.client_message();
    let details = message.replace(['"', '\\'], "'");
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nProxy-Status: ipsx; error={}; details=\"{details}\"\r\n",
        http.status, http.reason, http.error_type
    );
    if http.ask_credentials {
        response.push_str("Proxy-Authenticate: Basic realm=\"ipsx lease\"\r\n");
    }
    response.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    ));
    response.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'h>(pairs: &'h [(&'h str, &'h str)]) -> Vec<httparse::Header<'h>> {
        pairs
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    #[test]
    fn the_origin_sees_no_proxy_or_hop_by_hop_headers() {
        let given = headers(&[
            ("Host", "site.test"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Proxy-Connection", "keep-alive"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Accept", "*/*"),
        ]);
        let head = origin_head("GET", "/a?b=1", Some(1), &given, "site.test");
        let text = String::from_utf8(head).expect("utf8");
        assert_eq!(
            text,
            "GET /a?b=1 HTTP/1.1\r\nHost: site.test\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_missing_host_header_is_taken_from_the_uri() {
        let head = origin_head("GET", "/", Some(0), &[], "site.test:8080");
        let text = String::from_utf8(head).expect("utf8");
        assert!(
            text.starts_with("GET / HTTP/1.0\r\nHost: site.test:8080\r\n"),
            "{text}"
        );
    }

    #[test]
    fn refusals_carry_proxy_status_and_ask_for_credentials_when_missing() {
        let text = String::from_utf8(refusal_response(&Refusal::NoCredentials)).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(text.contains("Proxy-Status: ipsx; error=http_request_denied; details=\"lease credentials required\"\r\n"));
        assert!(text.contains("Proxy-Authenticate: Basic"));
        let guarded = Refusal::Guarded(crate::Guarded {
            address: "10.0.0.1".parse().expect("ip"),
            range: "private (RFC 1918)",
        });
        let text = String::from_utf8(refusal_response(&guarded)).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("error=destination_ip_prohibited"));
        assert!(!text.contains("Proxy-Authenticate"));
    }

    #[test]
    fn the_head_end_is_found_across_reads() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 13), Some(18));
    }
}
