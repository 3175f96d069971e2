//! Talking to exits: the provider's proxy on the leased IP, over HTTP/1.1 (hyper's client).
//!
//! Plain `http://` requests are forwarded in absolute form over kept-alive connections, a few
//! per exit; tunnels (`CONNECT` from HTTP clients and SOCKS5 clients alike) open a connection
//! of their own and `CONNECT` through it. Each answer is sorted into: served (whatever the
//! target said), the exit's fault (its proxy is unreachable, refuses the lease, or is at its
//! connection limit) or a refusal the provider's proxy made about the target (passed through).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::pool::{Exit, ExitKey, Upstream};

/// Kept-alive connections per exit, at most.
const IDLE_PER_EXIT: usize = 32;

/// How a try through one exit went.
pub(crate) enum Outcome<T> {
    /// Through: the target's answer (or the tunnel).
    Served(T),
    /// The exit's fault. `fatal`: it cannot serve this lease any more.
    Exit {
        /// Whether the whole lease is unusable.
        fatal: bool,
        /// What happened.
        reason: String,
    },
    /// The provider's proxy refused for a reason about the target (DNS, refused, guarded):
    /// its answer, with its own `Proxy-Status`.
    Refused(Response<Incoming>),
    /// The exit is at its connection limit for the lease: not its fault, try another.
    Busy(Response<Incoming>),
}

/// Connections to exits: the kept-alive ones per exit.
pub(crate) struct Upstreams {
    idle: Mutex<HashMap<ExitKey, Vec<SendRequest<Full<Bytes>>>>>,
    connect_timeout: Duration,
}

impl Upstreams {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
        }
    }

    /// Forwards `request` (absolute URI, the client's hop-by-hop and `Proxy-*` fields already
    /// gone) through `exit`.
    pub(crate) async fn forward(
        &self,
        exit: &Exit,
        mut request: Request<Full<Bytes>>,
    ) -> Outcome<Response<Incoming>> {
        request.headers_mut().insert(
            header::PROXY_AUTHORIZATION,
            exit.upstream.authorization.clone(),
        );
        // A kept-alive connection may have been closed by the provider meanwhile: the request
        // then comes back unsent and goes on a fresh connection.
        if let Some(mut sender) = self.take_idle(exit.key) {
            match sender.try_send_request(request).await {
                Ok(response) => return self.answered(exit.key, sender, response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Outcome::Exit {
                            fatal: false,
                            reason: format!("exit connection broke: {}", error.into_error()),
                        };
                    }
                },
            }
        }
        let mut sender = match self.connect(&exit.upstream).await {
            Ok(sender) => sender,
            Err(reason) => {
                return Outcome::Exit {
                    fatal: true,
                    reason,
                };
            }
        };
        match sender.send_request(request).await {
            Ok(response) => self.answered(exit.key, sender, response),
            Err(error) => Outcome::Exit {
                fatal: true,
                reason: format!("exit closed the connection: {error}"),
            },
        }
    }

    fn answered(
        &self,
        key: ExitKey,
        sender: SendRequest<Full<Bytes>>,
        response: Response<Incoming>,
    ) -> Outcome<Response<Incoming>> {
        match judge(&response) {
            Judged::Target => {
                self.keep(key, sender);
                Outcome::Served(response)
            }
            Judged::Exit { fatal, reason } => Outcome::Exit { fatal, reason },
            Judged::Refused => Outcome::Refused(response),
            Judged::Busy => Outcome::Busy(response),
        }
    }

    /// Opens a tunnel to `authority` (`host:port`) through `exit`.
    pub(crate) async fn tunnel(&self, exit: &Exit, authority: &str) -> Outcome<Upgraded> {
        let mut sender = match self.connect(&exit.upstream).await {
            Ok(sender) => sender,
            Err(reason) => {
                return Outcome::Exit {
                    fatal: true,
                    reason,
                };
            }
        };
        let request = Request::connect(authority)
            .header(header::HOST, authority)
            .header(
                header::PROXY_AUTHORIZATION,
                exit.upstream.authorization.clone(),
            )
            .body(Full::new(Bytes::new()));
        let Ok(request) = request else {
            return Outcome::Exit {
                fatal: false,
                reason: format!("{authority:?} is not an authority"),
            };
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Exit {
                    fatal: true,
                    reason: format!("exit closed the connection: {error}"),
                };
            }
        };
        match judge(&response) {
            Judged::Target if response.status() == StatusCode::OK => {
                match hyper::upgrade::on(response).await {
                    Ok(upgraded) => Outcome::Served(upgraded),
                    Err(error) => Outcome::Exit {
                        fatal: false,
                        reason: format!("tunnel upgrade failed: {error}"),
                    },
                }
            }
            Judged::Exit { fatal, reason } => Outcome::Exit { fatal, reason },
            Judged::Busy => Outcome::Busy(response),
            Judged::Target | Judged::Refused => Outcome::Refused(response),
        }
    }

    /// A fresh connection to the exit's proxy, driven by a task of its own (which also lets a
    /// `CONNECT` answer turn it into a tunnel).
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(upstream.proxy))
            .await
            .map_err(|_| format!("connecting to exit {} timed out", upstream.proxy))?
            .map_err(|error| format!("exit {} unreachable: {error}", upstream.proxy))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("exit {} handshake: {error}", upstream.proxy))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// A kept-alive connection to `key` that can take a request now.
    fn take_idle(&self, key: ExitKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(&key)?;
        senders.retain(|sender| !sender.is_closed());
        let ready = senders.iter().position(SendRequest::is_ready)?;
        Some(senders.swap_remove(ready))
    }

    /// Keeps `sender` for the next request; it takes one once the current answer was read.
    fn keep(&self, key: ExitKey, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(key).or_default();
        if senders.len() < IDLE_PER_EXIT {
            senders.push(sender);
        }
    }

    /// Drops kept connections to exits no longer held.
    pub(crate) fn forget(&self, held: impl Fn(&ExitKey) -> bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|key, senders| {
            senders.retain(|sender| !sender.is_closed());
            held(key) && !senders.is_empty()
        });
    }
}

enum Judged {
    Target,
    Exit { fatal: bool, reason: String },
    Busy,
    Refused,
}

/// Sorts the provider proxy's answer. Its own refusals carry `Proxy-Status: ipsx; …` (it
/// strips every `Proxy-*` field from origin answers, so a target cannot fake one).
fn judge(response: &Response<Incoming>) -> Judged {
    let status = response.status();
    let proxy_status = response
        .headers()
        .get("proxy-status")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("ipsx;"));
    let Some(proxy_status) = proxy_status else {
        return Judged::Target;
    };
    let error = proxy_status
        .split(';')
        .find_map(|part| part.trim().strip_prefix("error="))
        .unwrap_or("");
    match (status.as_u16(), error) {
        (407, _) | (403, "http_request_denied") => Judged::Exit {
            fatal: true,
            reason: format!("the exit refused the lease: {proxy_status}"),
        },
        (429, _) => Judged::Busy,
        _ => Judged::Refused,
    }
}
