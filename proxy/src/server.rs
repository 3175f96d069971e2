//! The listeners: one per leased IP, SOCKS5 (RFC 1928) with username/password (RFC 1929),
//! CONNECT egress bound to the IP the client came in on, metered relaying, cut-off.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::credentials::{CredentialKey, Grant, Protocols};
use crate::guard::Guard;
use crate::leases::{LeaseState, LeaseTable};

/// Ports only a lease with SMTP may reach.
const SMTP_PORTS: [u16; 3] = [25, 465, 587];

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// One listening address per provider IP (the IP is what leases egress from).
    pub listen: Vec<SocketAddr>,
    /// Verifies lease credentials.
    pub key: CredentialKey,
    /// The provider-network guard.
    pub guard: Guard,
    /// Time to finish the SOCKS handshake (slowloris bound). Default 10 s.
    pub handshake_timeout: Duration,
    /// Time to resolve and connect a destination. Default 10 s.
    pub connect_timeout: Duration,
    /// Open client connections in all. Default 10,000.
    pub max_connections: usize,
    /// Open connections per lease. Default 256.
    pub max_per_lease: u64,
}

impl ProxyConfig {
    /// A configuration with the defaults above.
    pub fn new(listen: Vec<SocketAddr>, key: CredentialKey) -> Self {
        Self {
            listen,
            key,
            guard: Guard::default(),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_per_lease: 256,
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    /// The bound addresses (ports filled in when 0 was asked).
    pub addrs: Vec<SocketAddr>,
    /// The leases seen: metering, cut-off.
    pub leases: Arc<LeaseTable>,
    shutdown: watch::Sender<bool>,
}

impl ProxyHandle {
    /// Stops accepting and closes every open connection.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    config: ProxyConfig,
    leases: Arc<LeaseTable>,
    slots: Semaphore,
    shutdown: watch::Receiver<bool>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Binds every listening address and serves until the handle is dropped or shut down.
pub async fn start(config: ProxyConfig) -> io::Result<ProxyHandle> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let leases = Arc::new(LeaseTable::default());
    let shared = Arc::new(Shared {
        slots: Semaphore::new(config.max_connections),
        leases: Arc::clone(&leases),
        shutdown: shutdown_rx,
        config,
    });
    let mut addrs = Vec::new();
    for addr in shared.config.listen.clone() {
        let listener = TcpListener::bind(addr).await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
    }
    Ok(ProxyHandle {
        addrs,
        leases,
        shutdown: shutdown_tx,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(_slot) = shared.slots.try_acquire() else {
                tracing::warn!(%peer, "connection cap reached, closing");
                return;
            };
            if let Err(error) = serve(stream, &shared).await {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
    }
}

/// SOCKS5 reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

enum Destination {
    Ip(IpAddr),
    Name(String),
}

async fn serve(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    let local_ip = client.local_addr()?.ip();
    let handshake = tokio::time::timeout(
        shared.config.handshake_timeout,
        handshake(&mut client, local_ip, shared),
    )
    .await;
    let (lease, target) = match handshake {
        Ok(Ok(Some(pair))) => pair,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(error)) => return Err(error),
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout")),
    };
    relay(client, target, lease, shared).await
}

/// Negotiates, authenticates and connects. `Ok(None)`: refused with a reply already sent.
async fn handshake(
    client: &mut TcpStream,
    local_ip: IpAddr,
    shared: &Shared,
) -> io::Result<Option<(Arc<LeaseState>, TcpStream)>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Ok(None);
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&2) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(None);
    }
    client.write_all(&[5, 2]).await?;

    // RFC 1929 username/password.
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await?;
    if byte[0] != 1 {
        return Ok(None);
    }
    client.read_exact(&mut byte).await?;
    let mut username = vec![0u8; usize::from(byte[0])];
    client.read_exact(&mut username).await?;
    client.read_exact(&mut byte).await?;
    let mut password = vec![0u8; usize::from(byte[0])];
    client.read_exact(&mut password).await?;
    let now = unix_now();
    let grant: Grant = match shared
        .config
        .key
        .verify(&username, &password, local_ip, now)
    {
        Ok(grant) => grant,
        Err(error) => {
            tracing::info!(%error, %local_ip, "authentication refused");
            client.write_all(&[1, 1]).await?;
            return Ok(None);
        }
    };
    client.write_all(&[1, 0]).await?;

    // The request.
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let destination = match request[3] {
        1 => {
            let mut octets = [0u8; 4];
            client.read_exact(&mut octets).await?;
            Destination::Ip(IpAddr::from(octets))
        }
        4 => {
            let mut octets = [0u8; 16];
            client.read_exact(&mut octets).await?;
            Destination::Ip(IpAddr::from(octets))
        }
        3 => {
            client.read_exact(&mut byte).await?;
            let mut name = vec![0u8; usize::from(byte[0])];
            client.read_exact(&mut name).await?;
            match String::from_utf8(name) {
                Ok(name) => Destination::Name(name),
                Err(_) => return refuse(client, Reply::HostUnreachable).await,
            }
        }
        _ => return refuse(client, Reply::AddressTypeNotSupported).await,
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if request[0] != 5 || request[1] != 1 {
        // BIND and UDP ASSOCIATE are not offered.
        return refuse(client, Reply::CommandNotSupported).await;
    }
    if !grant.protocols.contains(Protocols::SOCKS5)
        || (SMTP_PORTS.contains(&port) && !grant.protocols.contains(Protocols::SMTP))
    {
        tracing::info!(lease = grant.lease, port, "protocol not leased");
        return refuse(client, Reply::NotAllowed).await;
    }
    let lease = shared.leases.enter(grant, now);
    if lease.is_cut() || lease.open.load(Ordering::Relaxed) >= shared.config.max_per_lease {
        return refuse(client, Reply::NotAllowed).await;
    }

    let target = match tokio::time::timeout(
        shared.config.connect_timeout,
        egress(&destination, port, grant.ip, &shared.config.guard),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(reply)) => return refuse(client, reply).await,
        Err(_) => return refuse(client, Reply::TtlExpired).await,
    };
    let bound = target.local_addr()?;
    let mut reply = vec![5, Reply::Succeeded as u8, 0];
    match bound.ip() {
        IpAddr::V4(v4) => {
            reply.push(1);
            reply.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            reply.push(4);
            reply.extend_from_slice(&v6.octets());
        }
    }
    reply.extend_from_slice(&bound.port().to_be_bytes());
    client.write_all(&reply).await?;
    Ok(Some((lease, target)))
}

async fn refuse<T>(client: &mut TcpStream, reply: Reply) -> io::Result<Option<T>> {
    client
        .write_all(&[5, reply as u8, 0, 1, 0, 0, 0, 0, 0, 0])
        .await?;
    Ok(None)
}

/// Resolves (on the provider's side), guards every candidate and connects from the leased IP.
async fn egress(
    destination: &Destination,
    port: u16,
    leased: IpAddr,
    guard: &Guard,
) -> Result<TcpStream, Reply> {
    let candidates: Vec<IpAddr> = match destination {
        Destination::Ip(ip) => vec![ip.to_canonical()],
        Destination::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|_| Reply::HostUnreachable)?
            .map(|addr| addr.ip().to_canonical())
            .collect(),
    };
    // Only the leased IP's family can leave from the leased IP.
    let same_family: Vec<IpAddr> = candidates
        .into_iter()
        .filter(|ip| ip.is_ipv4() == leased.is_ipv4())
        .collect();
    if same_family.is_empty() {
        return Err(Reply::AddressTypeNotSupported);
    }
    let mut last = Reply::NotAllowed;
    for ip in same_family {
        if let Err(guarded) = guard.check(ip) {
            tracing::info!(%guarded, "destination refused");
            continue;
        }
        match connect_from(leased, SocketAddr::new(ip, port)).await {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last = match error.kind() {
                    io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                    io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                    io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
                    io::ErrorKind::TimedOut => Reply::TtlExpired,
                    _ => Reply::GeneralFailure,
                }
            }
        }
    }
    Err(last)
}

/// Bind before connect: the connection leaves from `from`, never from another address.
async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Counts bytes read through it into a lease's counter.
struct Metered<'a, S> {
    inner: S,
    counter: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.counter.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn relay(
    client: TcpStream,
    target: TcpStream,
    lease: Arc<LeaseState>,
    shared: &Shared,
) -> io::Result<()> {
    lease.connections.fetch_add(1, Ordering::Relaxed);
    lease.open.fetch_add(1, Ordering::Relaxed);
    let mut cut = lease.cut.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut client = Metered {
        inner: client,
        counter: &lease.bytes_up,
    };
    let mut target = Metered {
        inner: target,
        counter: &lease.bytes_down,
    };
    // The lease's end closes its connections even if nobody cuts it.
    let until_end = Duration::from_secs(lease.grant.not_after.saturating_sub(unix_now()));
    let outcome = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut target) => copied.map(|_| ()),
        _ = tokio::time::sleep(until_end) => Ok(()),
        _ = cut.wait_for(|cut| *cut) => {
            tracing::info!(lease = lease.grant.lease, "lease cut: closing connection");
            Ok(())
        }
        _ = shutdown.wait_for(|stop| *stop) => Ok(()),
    };
    lease.open.fetch_sub(1, Ordering::Relaxed);
    outcome
}
