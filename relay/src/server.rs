//! The relay: a QUIC endpoint providers dial out to, and a TCP port requesters connect to with
//! their lease credentials, exactly as to a provider's own proxy.
//!
//! ```text
//! provider ──QUIC (dials out)──► relay: ticket → provider; source address → observed IP
//! requester ──TCP──► relay: sniff credentials → seal and window checked → route by grant IP
//!           ──► a new stream on that provider's connection, carrying the connection as is
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipsx_credentials::RelayKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::presence::{Change, Conflict, Presence, Provider};
use crate::sniff::{self, Presented, Sniffed};
use crate::tls::{self, Identity, TlsError};
use crate::wire::{self, Answer, Hello, RefusalCode};

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address providers' QUIC connections arrive at.
    pub providers: SocketAddr,
    /// TCP address requesters connect to.
    pub requesters: SocketAddr,
    /// The certificate providers pin.
    pub identity: Identity,
    /// The key shared with the node: tickets and credential seals.
    pub key: RelayKey,
    /// How long a dropped provider keeps its IP before it is gone. Default 10 s.
    pub grace: Duration,
    /// Time a requester has to send its credentials, and a provider its hello. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time a carried connection may move nothing either way before it is closed (the
    /// provider's proxy has its own; this one does not trust it). Default 5 min.
    pub idle_timeout: Duration,
    /// Concurrent requester streams per provider connection. Default 1,024.
    pub max_streams_per_provider: u32,
    /// Open connections per requester source IP. Default 1,024.
    pub max_per_requester: u32,
    /// Providers connected at once. Default 100,000.
    pub max_providers: usize,
}

impl RelayConfig {
    /// A configuration with the defaults above.
    pub fn new(
        providers: SocketAddr,
        requesters: SocketAddr,
        identity: Identity,
        key: RelayKey,
    ) -> Self {
        Self {
            providers,
            requesters,
            identity,
            key,
            grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_streams_per_provider: 1024,
            max_per_requester: 1024,
            max_providers: 100_000,
        }
    }
}

/// What the relay measures of one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// The provider.
    pub provider: Provider,
    /// Share of time connected since the relay first saw it, basis points.
    pub uptime: u16,
    /// Its connection now, if it is up.
    pub connection: Option<ConnectionQuality>,
}

/// What the relay measures of a provider's current connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionQuality {
    /// Seconds the connection has been up.
    pub connected_secs: u64,
    /// QUIC's smoothed round-trip time.
    pub rtt: Duration,
    /// Requester streams opened to it since it connected.
    pub streams: u64,
    /// Of those, the ones it did not take (refused credentials, no answer).
    pub failed: u64,
}

/// Called with every presence change; the provider hears it is welcome only once the returned
/// future is done: the node must know a provider's IP before the provider can offer it.
pub type OnChange = Arc<dyn Fn(Change) -> Reported + Send + Sync>;

/// The node has taken a change in (a report sent and answered, or a call made in-process).
pub type Reported = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A running relay.
pub struct RelayHandle {
    /// The bound QUIC address.
    pub providers: SocketAddr,
    /// The bound requester address.
    pub requesters: SocketAddr,
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("providers", &self.providers)
            .field("requesters", &self.requesters)
            .finish_non_exhaustive()
    }
}

impl RelayHandle {
    /// Provider connections up now.
    pub fn connected(&self) -> usize {
        lock(&self.shared.routes).len()
    }

    /// What the relay measures of every provider it has seen.
    pub fn qualities(&self) -> Vec<Quality> {
        let now = Instant::now();
        let uptimes = lock(&self.shared.presence).uptimes(now);
        let routes = lock(&self.shared.routes);
        let connections: HashMap<Provider, ConnectionQuality> = routes
            .values()
            .map(|route| {
                (
                    route.provider,
                    ConnectionQuality {
                        connected_secs: route.since.elapsed().as_secs(),
                        rtt: route.connection.rtt(),
                        streams: route.streams.load(Ordering::Relaxed),
                        failed: route.failed.load(Ordering::Relaxed),
                    },
                )
            })
            .collect();
        uptimes
            .into_iter()
            .map(|(provider, uptime)| Quality {
                provider,
                uptime,
                connection: connections.get(&provider).copied(),
            })
            .collect()
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        self.endpoint.close(0u32.into(), b"relay stopping");
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One connected provider.
struct Route {
    provider: Provider,
    id: u64,
    connection: quinn::Connection,
    since: Instant,
    slots: Arc<Semaphore>,
    streams: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    config: RelayConfig,
    presence: Mutex<Presence>,
    /// Connected providers by observed IP.
    routes: Mutex<HashMap<IpAddr, Arc<Route>>>,
    /// Wakes the grace timer when a provider leaves.
    left: Notify,
    on_change: OnChange,
    requesters: Mutex<HashMap<IpAddr, u32>>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding a socket failed.
    #[error("relay: {0}")]
    Io(#[from] io::Error),
    /// The TLS identity or QUIC settings were refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Binds both sides and serves until the handle is dropped.
pub async fn start(config: RelayConfig, on_change: OnChange) -> Result<RelayHandle, StartError> {
    let endpoint =
        quinn::Endpoint::server(tls::server_config(&config.identity)?, config.providers)?;
    let listener = TcpListener::bind(config.requesters).await?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        presence: Mutex::new(Presence::new(config.grace)),
        config,
        routes: Mutex::new(HashMap::new()),
        left: Notify::new(),
        on_change,
        requesters: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
    });
    let handle = RelayHandle {
        providers: endpoint.local_addr()?,
        requesters: listener.local_addr()?,
        shared: Arc::clone(&shared),
        endpoint: endpoint.clone(),
        stop,
    };
    tracing::info!(providers = %handle.providers, requesters = %handle.requesters, "relay listening");
    tokio::spawn(accept_providers(endpoint, Arc::clone(&shared)));
    tokio::spawn(accept_requesters(
        listener,
        Arc::clone(&shared),
        stopped.clone(),
    ));
    tokio::spawn(expire_graces(shared, stopped));
    Ok(handle)
}

async fn accept_providers(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(error) = serve_provider(incoming, &shared).await {
                tracing::debug!(%error, "provider connection ended");
            }
        });
    }
}

/// Tells the node of changes past their grace, as they fall due.
async fn expire_graces(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        let next = lock(&shared.presence).next_expiry();
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.left.notified() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let changes = lock(&shared.presence).expire(Instant::now());
        report(&shared, changes).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum ProviderError {
    #[error("handshake: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("control stream: {0}")]
    Wire(#[from] wire::WireError),
    #[error("timed out")]
    Timeout,
    #[error("refused: {0}")]
    Refused(RefusalCode),
}

async fn serve_provider(incoming: quinn::Incoming, shared: &Shared) -> Result<(), ProviderError> {
    let timeout = shared.config.handshake_timeout;
    let handshake = async {
        let connection = incoming.await?;
        let (send, mut recv) = connection.accept_bi().await?;
        let hello: Hello = wire::read(&mut recv).await?;
        Ok::<_, ProviderError>((connection, send, hello))
    };
    let (connection, mut send, hello) = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ProviderError::Timeout)??;
    let observed = connection.remote_address().ip().to_canonical();
    let (admitted, changes) = admit(shared, &connection, observed, &hello);
    report(shared, changes).await;
    let answer = match &admitted {
        Ok((_, resumed)) => Answer::Welcome {
            observed,
            resumed: *resumed,
        },
        Err(code) => Answer::Refused { code: *code },
    };
    wire::write(&mut send, &answer).await?;
    let route = match admitted {
        Ok((route, _)) => route,
        Err(code) => {
            let _ = send.finish();
            // Let the refusal reach the provider before the connection closes.
            let _ = tokio::time::timeout(timeout, send.stopped()).await;
            connection.close(1u32.into(), b"refused");
            return Err(ProviderError::Refused(code));
        }
    };
    tracing::info!(%observed, "provider connected");
    let error = connection.closed().await;
    let mut routes = lock(&shared.routes);
    if routes
        .get(&observed)
        .is_some_and(|held| held.id == route.id)
    {
        routes.remove(&observed);
    }
    drop(routes);
    lock(&shared.presence).leave(route.provider, route.id, Instant::now());
    shared.left.notify_one();
    Err(error.into())
}

/// A provider let in (its route, and whether it resumed), or why not.
type Admission = Result<(Arc<Route>, bool), RefusalCode>;

/// Checks a provider's hello and makes it the route for its observed IP; whether it resumed
/// (held that IP already, within its grace). Beside the outcome, the changes the node must hear
/// of either way.
fn admit(
    shared: &Shared,
    connection: &quinn::Connection,
    observed: IpAddr,
    hello: &Hello,
) -> (Admission, Vec<Change>) {
    let Ok(provider) = shared
        .config
        .key
        .check_ticket(hello.ticket.as_bytes(), unix_now())
    else {
        return (Err(RefusalCode::BadTicket), Vec::new());
    };
    if lock(&shared.routes).len() >= shared.config.max_providers {
        return (Err(RefusalCode::Full), Vec::new());
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let (changes, resumed) = {
        let mut presence = lock(&shared.presence);
        // Expiries first: whoever is past the grace is gone, and the node hears so even when
        // this arrival is refused.
        let mut changes = presence.expire(now);
        let resumed = presence
            .holder(observed)
            .is_some_and(|(holder, _)| holder == provider);
        match presence.arrive(provider, observed, id, now) {
            Ok(more) => changes.extend(more),
            Err(Conflict::IpInUse) => return (Err(RefusalCode::IpInUse), changes),
        }
        (changes, resumed)
    };
    let route = Arc::new(Route {
        provider,
        id,
        connection: connection.clone(),
        since: Instant::now(),
        slots: Arc::new(Semaphore::new(
            shared.config.max_streams_per_provider as usize,
        )),
        streams: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    {
        let mut routes = lock(&shared.routes);
        for change in &changes {
            if let Change::Gone { ip, provider } = change
                && routes
                    .get(ip)
                    .is_some_and(|held| held.provider == *provider)
            {
                routes.remove(ip);
            }
        }
        if let Some(older) = routes.insert(observed, Arc::clone(&route)) {
            // The same provider again (a reconnect racing its old connection's close).
            older.connection.close(2u32.into(), b"superseded");
        }
    }
    (Ok((route, resumed)), changes)
}

/// Tells the node of presence changes, in order, each taken in before the next.
async fn report(shared: &Shared, changes: Vec<Change>) {
    for change in changes {
        (shared.on_change)(change).await;
    }
}

async fn accept_requesters(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = RequesterSlot::take(&shared, peer.ip()) else {
            tracing::debug!(%peer, "requester at its connection cap");
            continue;
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = serve_requester(stream, &slot.shared) => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "requester connection ended");
                    }
                }
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// One requester connection counted against its source IP's cap.
struct RequesterSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl RequesterSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut open = lock(&shared.requesters);
        let count = open.entry(ip).or_default();
        if *count >= shared.config.max_per_requester {
            return None;
        }
        *count += 1;
        Some(Self {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for RequesterSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.shared.requesters);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Why a requester connection was not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No credentials, or ones the relay does not accept.
    Credentials,
    /// The lease's provider is not connected.
    Offline,
    /// The provider's connection carries as many streams as it may.
    Busy,
    /// The provider did not take the stream.
    Unreachable,
}

async fn serve_requester(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_nodelay(true)?;
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let mut buffer = Vec::with_capacity(1024);
    read_more(&mut client, &mut buffer, deadline).await?;
    if buffer.first() == Some(&5) {
        serve_socks(client, buffer, deadline, shared).await
    } else {
        serve_http(client, buffer, deadline, shared).await
    }
}

/// Reads at least one more byte before the deadline.
async fn read_more(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> io::Result<()> {
    let read = tokio::time::timeout_at(deadline, client.read_buf(buffer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    if read == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads until `parse` says the message is whole.
async fn read_until<T>(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
    from: usize,
    deadline: tokio::time::Instant,
    parse: impl Fn(&[u8]) -> Sniffed<T>,
) -> io::Result<(usize, T)> {
    loop {
        match parse(&buffer[from..]) {
            Sniffed::Done(length, value) => return Ok((from + length, value)),
            Sniffed::Invalid(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            Sniffed::Incomplete if buffer.len() >= sniff::MAX_HEAD => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too long"));
            }
            Sniffed::Incomplete => read_more(client, buffer, deadline).await?,
        }
    }
}

async fn serve_socks(
    mut client: TcpStream,
    mut buffer: Vec<u8>,
    deadline: tokio::time::Instant,
    shared: &Shared,
) -> io::Result<()> {
    let (greeted, offers_password) =
        read_until(&mut client, &mut buffer, 0, deadline, sniff::socks_greeting).await?;
    if !offers_password {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, 2]).await?;
    let (_, presented) = read_until(
        &mut client,
        &mut buffer,
        greeted,
        deadline,
        sniff::socks_auth,
    )
    .await?;
    let (route, permit, (mut send, recv)) = match open_stream(shared, &presented).await {
        Ok(opened) => opened,
        Err(refusal) => {
            tracing::debug!(?refusal, "SOCKS5 requester refused");
            client.write_all(&[1, 1]).await?;
            return Ok(());
        }
    };
    // The seal says the node issued these credentials, so the client hears yes at once and its
    // request follows without waiting a round trip to the provider. The provider runs the
    // negotiation again from the first byte and checks the credentials itself; its two answers
    // are the relay's to read, and a no from it (a lease cut meanwhile) refuses the request.
    send.write_all(&buffer).await?;
    client.write_all(&[1, 0]).await?;
    let carried = carry(
        client,
        send,
        recv,
        permit,
        shared.config.idle_timeout,
        PROVIDER_YES,
    )
    .await;
    if let Err(error) = &carried
        && error.kind() == io::ErrorKind::PermissionDenied
    {
        count_failure(&route);
    }
    carried
}

/// The provider's answers to the greeting (username/password) and to the credentials (yes).
const PROVIDER_YES: &[u8] = &[5, 2, 1, 0];
/// SOCKS5's reply "connection not allowed by ruleset", IPv4 0.0.0.0:0.
const SOCKS_NOT_ALLOWED: [u8; 10] = [5, 2, 0, 1, 0, 0, 0, 0, 0, 0];

async fn serve_http(
    mut client: TcpStream,
    mut buffer: Vec<u8>,
    deadline: tokio::time::Instant,
    shared: &Shared,
) -> io::Result<()> {
    let (_, presented) =
        read_until(&mut client, &mut buffer, 0, deadline, sniff::http_head).await?;
    let opened = match presented {
        Some(presented) => open_stream(shared, &presented).await,
        None => Err(Refusal::Credentials),
    };
    let (_, permit, (mut send, recv)) = match opened {
        Ok(opened) => opened,
        Err(refusal) => {
            client.write_all(http_refusal(refusal).as_bytes()).await?;
            return Ok(());
        }
    };
    send.write_all(&buffer).await?;
    carry(client, send, recv, permit, shared.config.idle_timeout, &[]).await
}

fn http_refusal(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Credentials => {
            "HTTP/1.1 407 Proxy Authentication Required\r\n\
             Proxy-Authenticate: Basic realm=\"ipsx\"\r\n\
             Proxy-Status: ipsx-relay; error=proxy_auth_required\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::Offline => {
            "HTTP/1.1 502 Bad Gateway\r\n\
             Proxy-Status: ipsx-relay; error=destination_unavailable; details=\"provider offline\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::Busy => {
            "HTTP/1.1 429 Too Many Requests\r\n\
             Proxy-Status: ipsx-relay; error=connection_limit_reached\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::Unreachable => {
            "HTTP/1.1 502 Bad Gateway\r\n\
             Proxy-Status: ipsx-relay; error=destination_unavailable; details=\"provider did not answer\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        }
    }
}

type Opened = (
    Arc<Route>,
    OwnedSemaphorePermit,
    (quinn::SendStream, quinn::RecvStream),
);

/// Checks credentials and opens a stream to the provider serving their IP.
async fn open_stream(shared: &Shared, presented: &Presented) -> Result<Opened, Refusal> {
    let grant = shared
        .config
        .key
        .check(&presented.username, &presented.password, unix_now())
        .map_err(|error| {
            tracing::debug!(%error, "relay refused credentials");
            Refusal::Credentials
        })?;
    let route = lock(&shared.routes)
        .get(&grant.ip)
        .cloned()
        .ok_or(Refusal::Offline)?;
    let permit = Arc::clone(&route.slots)
        .try_acquire_owned()
        .map_err(|_| Refusal::Busy)?;
    route.streams.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(shared.config.handshake_timeout, route.connection.open_bi()).await {
        Ok(Ok(stream)) => Ok((route, permit, stream)),
        _ => {
            count_failure(&route);
            Err(Refusal::Unreachable)
        }
    }
}

fn count_failure(route: &Route) {
    route.failed.fetch_add(1, Ordering::Relaxed);
}

/// Moves bytes both ways until both sides are done or nothing moved for `idle`; the stream
/// slot is held throughout. The provider's first bytes must be `expected` (taken out, not
/// passed on); anything else refuses the client's request (`PermissionDenied`).
async fn carry(
    client: TcpStream,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    permit: OwnedSemaphorePermit,
    idle: Duration,
    expected: &[u8],
) -> io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let moved = AtomicU64::new(0);
    let downstream = async {
        let mut got = vec![0u8; expected.len()];
        if tokio::io::AsyncReadExt::read_exact(&mut recv, &mut got)
            .await
            .is_err()
            || got != expected
        {
            client_write.write_all(&SOCKS_NOT_ALLOWED).await?;
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the provider refused the credentials",
            ));
        }
        pump(recv, client_write, &moved).await
    };
    let both = async { tokio::try_join!(pump(client_read, send, &moved), downstream) };
    let watchdog = async {
        let mut seen = moved.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle).await;
            let now = moved.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    let outcome = tokio::select! {
        both = both => both.map(|_| ()),
        () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
    };
    drop(permit);
    outcome
}

/// Copies one direction, counting every move, and passes the end on.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    moved: &AtomicU64,
) -> io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..read]).await?;
        moved.fetch_add(1, Ordering::Relaxed);
    }
}
