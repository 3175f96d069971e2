//! The HTTP proxy, an HTTP/1.1 server on hyper: `CONNECT host:port` tunnels (HTTPS; needs the
//! lease's HTTPS protocol) and absolute-URI forwarding of plain `http://` requests (needs HTTP),
//! each request authenticated with its own `Proxy-Authorization: Basic base64(lease:secret)`.
//!
//! A client connection is kept alive across requests, and every request on it is parsed,
//! authenticated, admitted, guarded and routed on its own: a request for another host never
//! rides the connection to the first one. What reaches an origin is rebuilt from the parsed
//! request ([`origin_request`]): origin-form target, `Host` set to the target's authority
//! (RFC 9112 §3.2.2), hop-by-hop fields and every `Proxy-*` field removed — lease credentials
//! never leave the proxy. A request carrying both `Content-Length` and `Transfer-Encoding` is
//! refused (RFC 9112 §6.3: a smuggling vector) and the connection closed. hyper itself frames
//! such a request by `Transfer-Encoding` alone, drops the `Content-Length` it saw and closes the
//! connection after answering; to refuse it instead, the head's raw bytes (the last
//! [`RECENT`] bytes read from the client are kept) are checked again for a `Content-Length`
//! whenever a request arrives chunked.
//!
//! Origin connections are reused for the next request of the same client connection to the
//! same origin under the same lease and IP; they close when the lease ends (at its last
//! instant, not the next whole second) or is cut, and at shutdown. Refusals carry an RFC 9209
//! `Proxy-Status` header naming the error type, and a short plain-text body.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::credentials::{Grant, Protocols};
use crate::egress::{self, Destination};
use crate::leases::{LeaseState, OpenConnection};
use crate::refusal::Refusal;
use crate::relay::{End, lease_over, unix_now};
use crate::server::{Accepted, Shared};
use ipsx_hop::strip_hop_by_hop;

/// The largest request head accepted (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most header fields accepted.
const MAX_HEADERS: usize = 64;

type Body = Either<Incoming, Full<Bytes>>;

/// Bytes of the client's stream kept (at least) for a second look at chunked requests' heads:
/// a whole head and what hyper reads ahead past it fit.
const RECENT: usize = 4 * MAX_HEAD;

/// Serves one HTTP proxy client connection until it closes, idles past the handshake timeout
/// between requests, or turns into a `CONNECT` tunnel (then until the tunnel ends).
pub(crate) async fn serve(accepted: Accepted, shared: &Arc<Shared>) -> io::Result<End> {
    let Accepted {
        stream,
        local_ip,
        first,
        deadline: _,
    } = accepted;
    let recent = Arc::new(Mutex::new(Vec::with_capacity(0)));
    let connection = Arc::new(ClientConnection {
        shared: Arc::clone(shared),
        local_ip,
        recent: Arc::clone(&recent),
        tunnel: Mutex::new(None),
        origin: tokio::sync::Mutex::new(None),
    });
    let service = {
        let connection = Arc::clone(&connection);
        hyper::service::service_fn(move |request| {
            let connection = Arc::clone(&connection);
            async move { Ok::<_, std::convert::Infallible>(connection.handle(request).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Bounds a slow head (slowloris) and a keep-alive connection idle between requests.
        .header_read_timeout(shared.config.handshake_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .title_case_headers(true)
        .keep_alive(true);
    let io = TokioIo::new(Prefixed {
        first,
        at: 0,
        stream,
        recent,
    });
    builder
        .serve_connection(io, service)
        .with_upgrades()
        .await
        .map_err(io::Error::other)?;
    let tunnel = lock(&connection.tunnel).take();
    match tunnel {
        Some(tunnel) => tunnel.run(shared).await,
        None => Ok(End::Finished),
    }
}

/// What one client connection shares between its requests.
struct ClientConnection {
    shared: Arc<Shared>,
    /// The IP the client connected to (the one its leases must be for).
    local_ip: IpAddr,
    /// The last bytes read from the client.
    recent: Arc<Mutex<Vec<u8>>>,
    /// A `CONNECT` accepted on this connection, run once hyper hands the connection over.
    tunnel: Mutex<Option<Tunnel>>,
    /// The origin connection of the last forwarded request, for the next one.
    origin: tokio::sync::Mutex<Option<Origin>>,
}

/// A tunnel to open once the client's connection is upgraded.
struct Tunnel {
    upgrade: hyper::upgrade::OnUpgrade,
    target: TcpStream,
    lease: Arc<LeaseState>,
    _open: OpenConnection,
}

impl Tunnel {
    async fn run(self, shared: &Shared) -> io::Result<End> {
        let upgraded = self.upgrade.await.map_err(io::Error::other)?;
        let parts = upgraded
            .downcast::<TokioIo<Prefixed>>()
            .map_err(|_| io::Error::other("the upgraded connection is not the client socket"))?;
        let client = parts.io.into_inner();
        // Bytes the client sent after its CONNECT head: still in our prefix, or read by hyper.
        let mut early = client.first[client.at..].to_vec();
        early.extend_from_slice(&parts.read_buf);
        shared
            .tunnel(&client.stream, self.target, &self.lease, &early)
            .await
    }
}

/// A kept-alive connection to an origin, for one lease's IP.
struct Origin {
    key: (u64, IpAddr, String, u16),
    sender: SendRequest<Incoming>,
}

impl ClientConnection {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        match self.route(request).await {
            Ok(response) => response,
            Err(refusal) => {
                tracing::info!(%refusal, "HTTP proxy request refused");
                refusal_response(&refusal)
            }
        }
    }

    async fn route(&self, request: Request<Incoming>) -> Result<Response<Body>, Refusal> {
        check_framing(request.headers())?;
        if request.headers().contains_key(header::TRANSFER_ENCODING) {
            check_raw_framing(&lock(&self.recent), request.method(), request.uri())?;
        }
        let grant = authenticate(request.headers(), self.local_ip, &self.shared)?;
        if request.method() == Method::CONNECT {
            self.connect(request, grant).await
        } else {
            self.forward(request, grant).await
        }
    }

    /// `CONNECT host:port`: connect from the leased IP, answer 200, tunnel after the upgrade.
    async fn connect(
        &self,
        mut request: Request<Incoming>,
        grant: Grant,
    ) -> Result<Response<Body>, Refusal> {
        let authority = request
            .uri()
            .authority()
            .filter(|_| {
                request.uri().scheme().is_none() && request.uri().path_and_query().is_none()
            })
            .ok_or(Refusal::BadRequest("CONNECT needs host:port"))?
            .clone();
        let port = authority
            .port_u16()
            .ok_or(Refusal::BadRequest("CONNECT needs host:port"))?;
        let (lease, open) = self
            .shared
            .admit(grant, Protocols::HTTPS, "HTTPS (CONNECT)", port)?;
        let target = self.egress(authority.host(), port, grant).await?;
        let upgrade = hyper::upgrade::on(&mut request);
        *lock(&self.tunnel) = Some(Tunnel {
            upgrade,
            target,
            lease,
            _open: open,
        });
        Ok(Response::new(Either::Right(Full::default())))
    }

    /// An absolute `http://` URI: sent to the origin from the leased IP, the answer streamed back.
    async fn forward(
        &self,
        request: Request<Incoming>,
        grant: Grant,
    ) -> Result<Response<Body>, Refusal> {
        let (host, port) = forward_target(request.uri())?;
        let (lease, open) = self.shared.admit(grant, Protocols::HTTP, "HTTP", port)?;
        let request = origin_request(request)?;
        let key = (grant.lease, grant.ip, host.to_ascii_lowercase(), port);
        let mut origin = self.origin.lock().await;
        let reusable = origin
            .as_ref()
            .is_some_and(|kept| kept.key == key && !kept.sender.is_closed());
        if !reusable {
            *origin = None;
            let stream = self.egress(&host, port, grant).await?;
            let (sender, connection) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD.max(64 * 1024))
                .handshake(TokioIo::new(Metered {
                    stream,
                    lease: Arc::clone(&lease),
                }))
                .await
                .map_err(|e| Refusal::ConnectFailed(e.to_string()))?;
            // The origin connection lives until it closes, the lease ends or is cut, or the
            // proxy shuts down; it counts as one of the lease's open connections meanwhile.
            let closing = self.shared.closing.clone();
            tokio::spawn(async move {
                let _open = open;
                tokio::select! {
                    _ = connection => {}
                    _ = lease_over(&lease, closing) => {}
                }
            });
            *origin = Some(Origin { key, sender });
        }
        let kept = origin
            .as_mut()
            .ok_or(Refusal::ConnectFailed("no origin".into()))?;
        kept.sender
            .ready()
            .await
            .map_err(|e| Refusal::ConnectFailed(e.to_string()))?;
        let response = kept
            .sender
            .send_request(request)
            .await
            .map_err(|e| Refusal::OriginFailed(e.to_string()))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }

    async fn egress(&self, host: &str, port: u16, grant: Grant) -> Result<TcpStream, Refusal> {
        egress::connect(
            &Destination::from_host(host),
            port,
            // This request's IP: one lease may hold several IPs.
            grant.ip,
            self.shared.egress_source(grant.ip),
            &self.shared.config.guard,
            self.shared.config.connect_timeout,
        )
        .await
    }
}

/// RFC 9112 §6.3: a message with both `Transfer-Encoding` and `Content-Length` is refused — two
/// parsers may frame it differently, which is how requests are smuggled past a proxy.
pub(crate) fn check_framing(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(Refusal::BadRequest(
            "Content-Length together with Transfer-Encoding",
        ));
    }
    Ok(())
}

/// [`check_framing`] on the raw head of a chunked request (hyper drops a `Content-Length` it
/// finds beside `Transfer-Encoding`): the last head in `recent` whose request line names this
/// method and target.
pub(crate) fn check_raw_framing(recent: &[u8], method: &Method, uri: &Uri) -> Result<(), Refusal> {
    let line = format!("{method} {uri} ");
    let Some(start) = recent
        .windows(line.len())
        .rposition(|window| window.eq_ignore_ascii_case(line.as_bytes()))
    else {
        return Ok(());
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut fields);
    if head.parse(&recent[start..]).is_err() {
        return Ok(());
    }
    let has = |name: &str| {
        head.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    if has("content-length") && has("transfer-encoding") {
        return Err(Refusal::BadRequest(
            "Content-Length together with Transfer-Encoding",
        ));
    }
    Ok(())
}

/// The `(host, port)` of an absolute `http://` request target.
pub(crate) fn forward_target(uri: &Uri) -> Result<(String, u16), Refusal> {
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
    Ok((
        authority.host().to_owned(),
        authority.port_u16().unwrap_or(80),
    ))
}

/// The request an origin gets: origin-form target, HTTP/1.1, `Host` = the target's authority,
/// no hop-by-hop or `Proxy-*` fields (nor any the client named in `Connection`).
pub(crate) fn origin_request<B>(request: Request<B>) -> Result<Request<B>, Refusal> {
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .ok_or(Refusal::BadRequest("absolute URI without a host"))?
        .clone();
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| Refusal::BadRequest("malformed host"))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    parts.uri = path
        .parse()
        .map_err(|_| Refusal::BadRequest("malformed request target"))?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, host);
    Ok(Request::from_parts(parts, body))
}

pub(crate) fn authenticate(
    headers: &HeaderMap,
    local_ip: IpAddr,
    shared: &Shared,
) -> Result<Grant, Refusal> {
    let value = headers
        .get(header::PROXY_AUTHORIZATION)
        .ok_or(Refusal::NoCredentials)?;
    let value = value.to_str().map_err(|_| Refusal::NoCredentials)?;
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

/// A refusal: status, `Proxy-Status` (RFC 9209), a plain-text reason. Malformed requests also
/// close the connection: what follows them cannot be framed with confidence.
fn refusal_response(refusal: &Refusal) -> Response<Body> {
    let http = refusal.http();
    let message = refusal.client_message();
    let details = message.replace(['"', '\\'], "'");
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = StatusCode::from_u16(http.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "ipsx; error={}; details=\"{details}\"",
        http.error_type
    )) {
        headers.insert("proxy-status", value);
    }
    if http.ask_credentials {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ipsx lease\""),
        );
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(refusal, Refusal::BadRequest(_)) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client socket with the bytes already read to tell HTTP from SOCKS5 put back in front;
/// keeps the last [`RECENT`] bytes it reads.
struct Prefixed {
    first: Vec<u8>,
    at: usize,
    stream: TcpStream,
    recent: Arc<Mutex<Vec<u8>>>,
}

impl Prefixed {
    fn remember(&self, bytes: &[u8]) {
        let mut recent = lock(&self.recent);
        recent.extend_from_slice(bytes);
        // Trimmed to the last RECENT bytes once it holds twice that: amortised O(1) a byte.
        if recent.len() > 2 * RECENT {
            let excess = recent.len() - RECENT;
            recent.drain(..excess);
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.remember(&this.first[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.remember(&buf.filled()[before..]);
        polled
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An origin socket that meters what crosses it into its lease (up: to the origin; down: back).
struct Metered {
    stream: TcpStream,
    lease: Arc<LeaseState>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.lease.count_down(read);
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.lease.count_up(written);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method("GET")
            .uri("http://site.test:8080/a?b=1");
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn the_origin_sees_no_proxy_or_hop_by_hop_headers_and_its_own_host() {
        let given = request(&[
            ("Host", "evil.test"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Anything", "1"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Accept", "*/*"),
        ]);
        let sent = origin_request(given).expect("forwardable");
        assert_eq!(sent.uri(), "/a?b=1");
        assert_eq!(sent.version(), Version::HTTP_11);
        let names: Vec<&str> = sent
            .headers()
            .keys()
            .map(header::HeaderName::as_str)
            .collect();
        assert_eq!(names, vec!["host", "accept"]);
        assert_eq!(sent.headers()["host"], "site.test:8080");
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let both = request(&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]);
        assert!(matches!(
            check_framing(both.headers()),
            Err(Refusal::BadRequest(_))
        ));
        let one = request(&[("Transfer-Encoding", "chunked")]);
        assert_eq!(check_framing(one.headers()), Ok(()));
        let uri: Uri = "http://a.test/x".parse().expect("uri");
        let raw = b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\nPOST http://a.test/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n";
        assert!(check_raw_framing(raw, &Method::POST, &uri).is_err());
        let clean = b"POST http://a.test/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(check_raw_framing(clean, &Method::POST, &uri), Ok(()));
    }

    #[test]
    fn only_absolute_http_targets_are_forwarded() {
        let target = |uri: &str| forward_target(&uri.parse::<Uri>().expect("uri"));
        assert_eq!(target("http://a.test/x"), Ok(("a.test".into(), 80)));
        assert_eq!(target("http://[::1]:81/"), Ok(("[::1]".into(), 81)));
        assert!(target("https://a.test/").is_err());
        assert!(target("/relative").is_err());
        assert!(target("http://user:pw@a.test/").is_err());
    }

    #[test]
    fn refusals_carry_proxy_status_and_ask_for_credentials_when_missing() {
        let response = refusal_response(&Refusal::NoCredentials);
        assert_eq!(response.status(), 407);
        assert_eq!(
            response.headers()["proxy-status"],
            "ipsx; error=http_request_denied; details=\"lease credentials required\""
        );
        assert!(response.headers().contains_key(header::PROXY_AUTHENTICATE));
        let guarded = Refusal::Guarded(crate::Guarded {
            address: "10.0.0.1".parse().expect("ip"),
            range: "private (RFC 1918)",
        });
        let response = refusal_response(&guarded);
        assert_eq!(response.status(), 403);
        assert!(
            response.headers()["proxy-status"]
                .to_str()
                .expect("ascii")
                .contains("error=destination_ip_prohibited")
        );
        assert!(!response.headers().contains_key(header::PROXY_AUTHENTICATE));
        let malformed = refusal_response(&Refusal::BadRequest("x"));
        assert_eq!(malformed.headers()[header::CONNECTION], "close");
    }
}
