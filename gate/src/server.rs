//! The crawler-facing port: SOCKS5 and the HTTP proxy on one listener, told apart by the first
//! byte (5 starts a SOCKS5 greeting; nothing in HTTP does).
//!
//! HTTP is served by hyper: client keep-alive, each request authenticated and routed on its
//! own (a crawler may change its username per request on one connection), `CONNECT` tunnels,
//! absolute-URI forwarding of `http://` requests. SOCKS5 (RFC 1928, with RFC 1929 username and
//! password) carries `CONNECT` only; its tunnels go out through the exit's `CONNECT` as well.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::control::Shared;
use crate::metrics::RequestKind;
use crate::refusal::GateError;
use crate::target::Target;
use ipsx_hop::strip_hop_by_hop;

/// Answers up to this long (by `Content-Length`) are read whole before they are passed on.
const WHOLE_BELOW: u64 = 64 * 1024;

/// How long a client may take to send its first bytes, a request head or a SOCKS5 handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, hyper::Error>;

fn boxed(body: Full<Bytes>) -> Body {
    body.map_err(|never: Infallible| match never {}).boxed()
}

fn refusal(shared: &Shared, error: &GateError) -> Response<Body> {
    shared.metrics.error(error.code());
    tracing::debug!(%error, "refused");
    error.response().map(boxed)
}

/// Accepts crawlers until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let open = Arc::new(Open {
                conn: shared.connection(),
                shared: Arc::clone(&shared),
            });
            let _ = stream.set_nodelay(true);
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(HANDSHAKE, stream.peek(&mut first)).await;
            match peeked {
                Ok(Ok(1)) if first[0] == 5 => socks5(stream, &shared, open.conn).await,
                Ok(Ok(1)) => http(stream, &shared, open).await,
                _ => {}
            }
        });
    }
}

/// A client connection until it and every tunnel it turned into have closed: then a rotating
/// exit it held is retired.
struct Open {
    conn: u64,
    shared: Arc<Shared>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.closed(self.conn);
    }
}

async fn http(stream: TcpStream, shared: &Arc<Shared>, open: Arc<Open>) {
    let service = {
        let shared = Arc::clone(shared);
        service_fn(move |request| {
            let shared = Arc::clone(&shared);
            let open = Arc::clone(&open);
            async move { Ok::<_, Infallible>(handle(&shared, open, request).await) }
        })
    };
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn handle(
    shared: &Arc<Shared>,
    open: Arc<Open>,
    request: Request<Incoming>,
) -> Response<Body> {
    let conn = open.conn;
    let target = match authenticate(shared, request.headers().get(header::PROXY_AUTHORIZATION)) {
        Ok(target) => target,
        Err(error) => return refusal(shared, &error),
    };
    if request.method() == Method::CONNECT {
        shared.metrics.request(RequestKind::Connect);
        connect(shared, open, &target, request).await
    } else {
        shared.metrics.request(RequestKind::Http);
        forward(shared, conn, &target, request).await
    }
}

/// Targets already read, by the `Proxy-Authorization` value they came in: a crawler sends the
/// same few values over and over.
#[derive(Default)]
pub(crate) struct Targets(std::sync::Mutex<rustc_hash::FxHashMap<Bytes, Arc<Target>>>);

/// Distinct values kept; the cache starts over when it fills.
const TARGETS_KEPT: usize = 4_096;

impl Targets {
    fn get(&self, header: &HeaderValue) -> Option<Arc<Target>> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(header.as_bytes()).cloned()
    }

    fn keep(&self, header: &HeaderValue, target: Arc<Target>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TARGETS_KEPT {
            cache.clear();
        }
        cache.insert(Bytes::copy_from_slice(header.as_bytes()), target);
    }
}

/// The crawler's target from `Proxy-Authorization: Basic …` (none: any IP, spread — allowed
/// only when the gate has no password).
fn authenticate(shared: &Shared, header: Option<&HeaderValue>) -> Result<Arc<Target>, GateError> {
    let Some(header) = header else {
        return match shared.config.password {
            Some(_) => Err(GateError::AuthRequired),
            None => Ok(Arc::new(Target::anonymous())),
        };
    };
    if let Some(target) = shared.targets.get(header) {
        return Ok(target);
    }
    let target = Arc::new(read_basic(shared, header)?);
    shared.targets.keep(header, Arc::clone(&target));
    Ok(target)
}

fn read_basic(shared: &Shared, header: &HeaderValue) -> Result<Target, GateError> {
    let (username, password) = header
        .to_str()
        .ok()
        .and_then(|value| {
            value
                .strip_prefix("Basic ")
                .or(value.strip_prefix("basic "))
        })
        .and_then(|token| {
            base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
        })
        .ok_or(GateError::AuthRequired)?;
    credentials(shared, &username, &password)
}

fn credentials(shared: &Shared, username: &str, password: &str) -> Result<Target, GateError> {
    let target = Target::parse(username, password)?;
    if let Some(expected) = &shared.config.password
        && !same(expected.as_bytes(), target.secret.as_bytes())
    {
        return Err(GateError::AuthRequired);
    }
    Ok(target)
}

/// Compares without stopping at the first difference (the password is a secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn forward(
    shared: &Arc<Shared>,
    conn: u64,
    target: &Target,
    request: Request<Incoming>,
) -> Response<Body> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return refusal(
            shared,
            &GateError::BadRequest("send an absolute http:// URI (https:// goes through CONNECT)"),
        );
    }
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Kept whole so the request can be sent again through another exit.
    let body = match Limited::new(body, shared.config.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return refusal(
                shared,
                &GateError::BadRequest("the request body is too large or broken"),
            );
        }
    };
    shared.metrics.bytes_up.inc_by(body.len() as u64);
    let method = parts.method;
    let headers = parts.headers;
    let through = shared
        .through(target, conn, |exit| {
            let mut upstream = Request::new(Full::new(body.clone()));
            *upstream.method_mut() = method.clone();
            *upstream.uri_mut() = uri.clone();
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = headers.clone();
            let shared = Arc::clone(shared);
            async move { shared.upstreams.forward(&exit, upstream).await }
        })
        .await;
    match through {
        Ok(Ok((response, exit))) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Ok(ip) = HeaderValue::from_str(&exit.key.ip.to_string()) {
                parts.headers.insert("x-ipsx-exit", ip);
            }
            // A small answer of known length is read whole first, so its head and body leave
            // in one write; others stream as they come.
            let small = body
                .size_hint()
                .exact()
                .is_some_and(|length| length <= WHOLE_BELOW);
            if small {
                return match body.collect().await {
                    Ok(whole) => {
                        let whole = whole.to_bytes();
                        shared.metrics.bytes_down.inc_by(whole.len() as u64);
                        Response::from_parts(parts, boxed(Full::new(whole)))
                    }
                    Err(_) => refusal(
                        shared,
                        &GateError::ExitsFailed {
                            tries: 1,
                            last: "the answer broke off".to_owned(),
                        },
                    ),
                };
            }
            let metrics = Arc::clone(&shared.metrics);
            let body = body
                .map_frame(move |frame| {
                    if let Some(data) = frame.data_ref() {
                        metrics.bytes_down.inc_by(data.len() as u64);
                    }
                    frame
                })
                .boxed();
            Response::from_parts(parts, body)
        }
        Ok(Err(refused)) => provider_refusal(refused),
        Err(error) => refusal(shared, &error),
    }
}

/// The provider's proxy refused about the target: its answer goes to the crawler with its own
/// `Proxy-Status`, hop-by-hop fields removed.
fn provider_refusal(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let status = parts.headers.remove("proxy-status");
    strip_hop_by_hop(&mut parts.headers);
    if let Some(status) = status {
        parts.headers.insert("proxy-status", status);
    }
    Response::from_parts(parts, body.boxed())
}

async fn connect(
    shared: &Arc<Shared>,
    open: Arc<Open>,
    target: &Target,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let conn = open.conn;
    let Some(authority) = request
        .uri()
        .authority()
        .filter(|a| a.port_u16().is_some())
        .map(ToString::to_string)
    else {
        return refusal(shared, &GateError::BadRequest("CONNECT needs host:port"));
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let through = shared
        .through(target, conn, |exit| {
            let shared = Arc::clone(shared);
            let authority = authority.clone();
            async move { shared.upstreams.tunnel(&exit, &authority).await }
        })
        .await;
    match through {
        Ok(Ok((upstream, _exit))) => {
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                // The connection stays open (for rotation) while its tunnel runs.
                let _open = open;
                if let Ok(client) = upgrade.await {
                    relay(&shared, TokioIo::new(client), upstream).await;
                }
            });
            Response::new(boxed(Full::new(Bytes::new())))
        }
        Ok(Err(refused)) => provider_refusal(refused),
        Err(error) => refusal(shared, &error),
    }
}

const SOCKS_VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USERNAME_PASSWORD: u8 = 2;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
const SUCCEEDED: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];

async fn socks5(stream: TcpStream, shared: &Arc<Shared>, conn: u64) {
    // `conn`'s `Open` guard lives in the caller until this returns.
    shared.metrics.request(RequestKind::Socks5);
    let mut client = BufReader::new(stream);
    let negotiated = tokio::time::timeout(HANDSHAKE, negotiate(&mut client, shared)).await;
    let (target, authority) = match negotiated {
        Ok(Ok(Ok(negotiated))) => negotiated,
        Ok(Ok(Err(reply))) => {
            let _ = client.get_mut().write_all(&failure(reply)).await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let through = shared
        .through(&target, conn, |exit| {
            let shared = Arc::clone(shared);
            let authority = authority.clone();
            async move { shared.upstreams.tunnel(&exit, &authority).await }
        })
        .await;
    let upstream = match through {
        Ok(Ok((upstream, _exit))) => upstream,
        Ok(Err(refused)) => {
            let _ = client
                .get_mut()
                .write_all(&failure(socks_code(&refused)))
                .await;
            return;
        }
        Err(error) => {
            shared.metrics.error(error.code());
            tracing::debug!(%error, "SOCKS5 request refused");
            let _ = client
                .get_mut()
                .write_all(&failure(error.socks_reply()))
                .await;
            return;
        }
    };
    if client.get_mut().write_all(&SUCCEEDED).await.is_err() {
        return;
    }
    // Bytes the client sent ahead of our reply (still in the reader) belong to the target.
    relay(shared, client, upstream).await;
}

/// Copies both ways between a crawler and its tunnel through the exit until either closes.
async fn relay(
    shared: &Shared,
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: hyper::upgrade::Upgraded,
) {
    let mut upstream = TokioIo::new(upstream);
    if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        shared.metrics.bytes_up.inc_by(up);
        shared.metrics.bytes_down.inc_by(down);
    }
}

/// The SOCKS5 greeting, sub-negotiation and request. `Ok(Err(code))`: refuse with that reply.
pub(crate) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut BufReader<S>,
    shared: &Shared,
) -> std::io::Result<Result<(Target, String), u8>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let anonymous = shared.config.password.is_none() && methods.contains(&NO_AUTH);
    let method = if methods.contains(&USERNAME_PASSWORD) {
        USERNAME_PASSWORD
    } else if anonymous {
        NO_AUTH
    } else {
        client
            .get_mut()
            .write_all(&[SOCKS_VERSION, NO_ACCEPTABLE_METHOD])
            .await?;
        return Err(std::io::Error::other("no acceptable method"));
    };
    client.get_mut().write_all(&[SOCKS_VERSION, method]).await?;
    let target = if method == USERNAME_PASSWORD {
        let mut version = [0u8; 1];
        client.read_exact(&mut version).await?;
        let username = short_string(client).await?;
        let password = short_string(client).await?;
        let target = std::str::from_utf8(&username)
            .ok()
            .zip(std::str::from_utf8(&password).ok())
            .ok_or(GateError::AuthRequired)
            .and_then(|(u, p)| credentials(shared, u, p));
        match target {
            Ok(target) => {
                client.get_mut().write_all(&[1, 0]).await?;
                target
            }
            Err(error) => {
                // RFC 1929 can only say "failure"; the reason goes to the log and metrics.
                shared.metrics.error(error.code());
                tracing::info!(%error, "SOCKS5 credentials refused");
                client.get_mut().write_all(&[1, 1]).await?;
                return Err(std::io::Error::other("credentials refused"));
            }
        }
    } else {
        Target::anonymous()
    };
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    if request[0] != SOCKS_VERSION {
        return Err(std::io::Error::other("not SOCKS5"));
    }
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            format!("[{}]", std::net::Ipv6Addr::from(ip))
        }
        3 => {
            // A host name, nothing else: it becomes the authority of the exit's CONNECT.
            let name = short_string(client).await?;
            let host_name = !name.is_empty()
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            match String::from_utf8(name) {
                Ok(name) if host_name => name,
                _ => return Ok(Err(4)),
            }
        }
        _ => return Ok(Err(8)),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    if request[1] != CONNECT {
        return Ok(Err(7));
    }
    Ok(Ok((target, format!("{host}:{}", u16::from_be_bytes(port)))))
}

async fn short_string<S: AsyncRead + Unpin>(client: &mut BufReader<S>) -> std::io::Result<Vec<u8>> {
    let length = client.read_u8().await?;
    let mut bytes = vec![0u8; usize::from(length)];
    client.read_exact(&mut bytes).await?;
    Ok(bytes)
}

fn failure(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// The SOCKS5 reply for a refusal the provider's proxy made about the target.
fn socks_code(response: &Response<Incoming>) -> u8 {
    let error = response
        .headers()
        .get("proxy-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("error=")))
        .unwrap_or("");
    match (response.status(), error) {
        (_, "dns_error") => 4,
        (_, "connection_refused") => 5,
        (_, "connection_timeout") | (StatusCode::GATEWAY_TIMEOUT, _) => 6,
        (_, "destination_ip_prohibited") => 2,
        (_, "destination_unavailable" | "destination_ip_unroutable") => 3,
        _ => 1,
    }
}
