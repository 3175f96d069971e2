//! The provider's side: dial the relay, say who it is, learn its public IP, then carry every
//! stream the relay opens to the provider's own proxy on a local port. The proxy serves the
//! stream exactly as a direct client: credentials with the provider's key, the guard after
//! DNS, protocol checks, metering, cut-off, per-lease caps.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::tls::{self, TlsError};
use crate::wire::{self, Answer, Hello, RefusalCode, SERVER_NAME};

/// What a provider needs to reach a relay (the node hands it out).
#[derive(Debug, Clone)]
pub struct Access {
    /// The relay's QUIC address.
    pub relay: SocketAddr,
    /// The relay's certificate (DER), pinned.
    pub certificate: Vec<u8>,
    /// The ticket naming this provider.
    pub ticket: String,
}

/// How the provider's side runs.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The local UDP address to dial from. Default `0.0.0.0:0`.
    pub bind: SocketAddr,
    /// Where the provider's proxy listens (a loopback port).
    pub target: SocketAddr,
    /// Concurrent streams the relay may open. Default 1,024.
    pub max_streams: u32,
}

impl LinkConfig {
    /// Defaults, carrying streams to `target`.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            target,
            max_streams: 1024,
        }
    }
}

/// Connecting to the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket could not be opened.
    #[error("relay link: {0}")]
    Io(#[from] std::io::Error),
    /// The certificate or settings were refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The connection could not be made or was lost.
    #[error("relay connection: {0}")]
    Connect(String),
    /// The control stream failed.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The relay said no.
    #[error("the relay refused: {0}")]
    Refused(RefusalCode),
}

fn connect_error(error: impl std::fmt::Display) -> LinkError {
    LinkError::Connect(error.to_string())
}

/// What the relay said when it let the provider in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcomed {
    /// The public IP the relay sees (the one to offer).
    pub observed: IpAddr,
    /// Back within the grace from the same IP: offers and deals stand; otherwise offer again.
    pub resumed: bool,
}

/// A connection to the relay, welcomed.
#[derive(Debug)]
pub struct Link {
    /// What the relay said.
    pub welcomed: Welcomed,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    // Kept open: the relay reads the provider's departure from it as well.
    _control: quinn::SendStream,
}

impl Link {
    /// Dials the relay and presents the ticket.
    pub async fn connect(access: &Access, config: &LinkConfig) -> Result<Self, LinkError> {
        let mut endpoint = quinn::Endpoint::client(config.bind)?;
        endpoint.set_default_client_config(tls::client_config(
            &access.certificate,
            config.max_streams,
        )?);
        let connection = endpoint
            .connect(access.relay, SERVER_NAME)
            .map_err(connect_error)?
            .await
            .map_err(connect_error)?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(connect_error)?;
        wire::write(
            &mut send,
            &Hello {
                ticket: access.ticket.clone(),
            },
        )
        .await?;
        match wire::read(&mut recv).await? {
            Answer::Welcome { observed, resumed } => Ok(Self {
                welcomed: Welcomed { observed, resumed },
                connection,
                endpoint,
                _control: send,
            }),
            Answer::Refused { code } => Err(LinkError::Refused(code)),
        }
    }

    /// Carries the relay's streams to `target` until the connection ends.
    pub async fn serve(&self, target: SocketAddr) -> LinkError {
        loop {
            let (send, recv) = match self.connection.accept_bi().await {
                Ok(stream) => stream,
                Err(error) => return connect_error(error),
            };
            tokio::spawn(carry(send, recv, target));
        }
    }

    /// Closes the connection (the relay starts this provider's grace).
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"provider stopping");
        self.endpoint.close(0u32.into(), b"provider stopping");
    }
}

/// Carries one relay stream to the proxy and back. The stream's first answer (the proxy's
/// SOCKS5 replies or HTTP response head) goes ahead of other streams' bulk data, so a new
/// connection is not kept waiting behind a thousand downloads on the same link.
async fn carry(mut send: quinn::SendStream, recv: quinn::RecvStream, target: SocketAddr) {
    let Ok(proxy) = TcpStream::connect(target).await else {
        tracing::warn!(%target, "the local proxy is not answering");
        return;
    };
    let _ = proxy.set_nodelay(true);
    let (mut from_proxy, to_proxy) = proxy.into_split();
    let _ = send.set_priority(1);
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut first = true;
        loop {
            let read = from_proxy.read(&mut buffer).await?;
            if read == 0 {
                let _ = send.finish();
                return Ok::<_, std::io::Error>(());
            }
            send.write_all(&buffer[..read]).await?;
            if std::mem::take(&mut first) {
                let _ = send.set_priority(0);
            }
        }
    };
    let downstream = async {
        let mut recv = recv;
        let mut to_proxy = to_proxy;
        tokio::io::copy(&mut recv, &mut to_proxy).await?;
        to_proxy.shutdown().await
    };
    let _ = tokio::try_join!(upstream, downstream);
}

/// Keeps a link up until `stop`: fetches access (a fresh ticket) before each attempt, backs off
/// from 250 ms to 30 s between failures, and publishes each welcome (`None` while down).
pub async fn run<F, Fut>(
    mut access: F,
    config: LinkConfig,
    observed: watch::Sender<Option<Welcomed>>,
    mut stop: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Access, String>>,
{
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let access = access().await.map_err(LinkError::Connect)?;
            Link::connect(&access, &config).await
        };
        let link = tokio::select! {
            link = attempt => link,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match link {
            Ok(link) => {
                backoff.reset();
                tracing::info!(welcomed = ?link.welcomed, "relay link up");
                observed.send_replace(Some(link.welcomed));
                let error = tokio::select! {
                    error = link.serve(config.target) => error,
                    _ = stop.wait_for(|stop| *stop) => {
                        link.close();
                        observed.send_replace(None);
                        return;
                    }
                };
                observed.send_replace(None);
                tracing::warn!(%error, "relay link lost; reconnecting");
            }
            Err(error) => tracing::warn!(%error, "relay link failed; retrying"),
        }
        let wait = backoff.next();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Exponential back-off between reconnects.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(250))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        wait
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_a_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(&waits[..4], &[250, 500, 1000, 2000]);
        assert_eq!(waits[9], 30_000);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(250));
    }
}
