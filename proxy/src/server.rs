//! The listeners: one per provider IP, each serving SOCKS5 and HTTP proxy clients on the same
//! port (a SOCKS5 greeting starts with byte 5, an HTTP request with a letter). Connections are
//! capped globally and per lease; shutdown can drain (stop accepting, let open connections
//! finish up to a deadline) before closing what is left.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::credentials::{CredentialKey, Grant, Protocols};
use crate::egress;
use crate::guard::Guard;
use crate::leases::{LeaseState, LeaseTable, OpenConnection};
use crate::refusal::Refusal;
use crate::relay::{End, unix_now};

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// One listening address per provider IP (the IP is what leases egress from).
    pub listen: Vec<SocketAddr>,
    /// Verifies lease credentials.
    pub key: CredentialKey,
    /// The provider-network guard.
    pub guard: Guard,
    /// Time a client has to finish its SOCKS5 negotiation or send its whole HTTP request head
    /// (the slowloris bound before a tunnel exists). Default 10 s.
    pub handshake_timeout: Duration,
    /// Time a tunnel or UDP association may move nothing before it is closed (the slowloris
    /// bound once a tunnel exists). Default 5 min.
    pub idle_timeout: Duration,
    /// Time to resolve and connect a destination. Default 10 s.
    pub connect_timeout: Duration,
    /// Open client connections in all. Default 10,000.
    pub max_connections: usize,
    /// Open connections per lease. Default 256.
    pub max_per_lease: u64,
    /// Serving from behind NAT through a relay: every connection is taken as arriving on this
    /// IP (the router's public one, as the relay observed it; [`ProxyHandle::serve_as`]
    /// changes it) whatever local address it came in on, and egress leaves by the default
    /// route, which the NAT maps to it. Listen on loopback then. UDP cannot be relayed and is
    /// refused. Default: none (direct).
    pub public_ip: Option<IpAddr>,
}

impl ProxyConfig {
    /// A configuration with the defaults above.
    pub fn new(listen: Vec<SocketAddr>, key: CredentialKey) -> Self {
        Self {
            listen,
            key,
            guard: Guard::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_per_lease: 256,
            public_ip: None,
        }
    }
}

/// A running proxy.
pub struct ProxyHandle {
    /// The bound addresses (ports filled in when 0 was asked).
    pub addrs: Vec<SocketAddr>,
    /// The leases seen: metering, cut-off.
    pub leases: Arc<LeaseTable>,
    accepting: watch::Sender<bool>,
    closing: watch::Sender<bool>,
    open: watch::Receiver<usize>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// Behind NAT: the public IP connections are for from now on (the relay saw it change).
    /// Connections already open keep theirs. Nothing changes for a direct proxy.
    pub fn serve_as(&self, ip: IpAddr) {
        if self.shared.config.public_ip.is_some() {
            *self
                .shared
                .public_ip
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ip);
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Stops accepting, lets open connections finish for up to `deadline`, then closes the
    /// rest. Returns how many were still open at the deadline.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.accepting.send_replace(false);
        let mut open = self.open.clone();
        let drained = tokio::time::timeout(deadline, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        let left = if drained { 0 } else { *self.open.borrow() };
        tracing::info!(left, "proxy drained; closing what is left");
        self.shutdown();
        left
    }

    /// Stops accepting and closes every open connection now.
    pub fn shutdown(&self) {
        self.accepting.send_replace(false);
        self.closing.send_replace(true);
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) leases: Arc<LeaseTable>,
    /// Becomes true when open connections must close now.
    pub(crate) closing: watch::Receiver<bool>,
    accepting: watch::Receiver<bool>,
    open: watch::Sender<usize>,
    /// Behind NAT: the public IP served now.
    public_ip: std::sync::RwLock<Option<IpAddr>>,
}

impl Shared {
    /// A proxy's shared state with nothing listening, for the fuzz targets.
    #[cfg(fuzzing)]
    pub(crate) fn detached(config: ProxyConfig) -> Self {
        Self {
            config,
            leases: Arc::new(LeaseTable::default()),
            closing: watch::channel(false).1,
            accepting: watch::channel(true).1,
            open: watch::channel(0).0,
            public_ip: std::sync::RwLock::new(None),
        }
    }

    /// Lets a verified grant use `protocol` towards `port`: protocol leased, lease not cut,
    /// lease below its connection cap. The returned guard keeps the connection counted.
    pub(crate) fn admit(
        &self,
        grant: Grant,
        protocol: Protocols,
        name: &'static str,
        port: u16,
    ) -> Result<(Arc<LeaseState>, OpenConnection), Refusal> {
        egress::check_protocol(&grant, protocol, name, port)?;
        let lease = self.leases.enter(grant, unix_now());
        if lease.is_cut() {
            return Err(Refusal::LeaseCut(grant.lease));
        }
        let open = lease
            .open_connection(self.config.max_per_lease)
            .ok_or(Refusal::LeaseLimit(grant.lease))?;
        Ok((lease, open))
    }

    /// Behind NAT, the public IP served now.
    fn serving_as(&self) -> Option<IpAddr> {
        *self
            .public_ip
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The address a lease's connections leave from: the leased IP itself, or (behind NAT)
    /// whatever the default route picks.
    pub(crate) fn egress_source(&self, leased: IpAddr) -> Option<IpAddr> {
        self.config.public_ip.is_none().then_some(leased)
    }

    /// Sends the bytes the client sent ahead (metered), then relays until the tunnel ends.
    pub(crate) async fn tunnel(
        &self,
        client: &TcpStream,
        mut target: TcpStream,
        lease: &LeaseState,
        early: &[u8],
    ) -> io::Result<End> {
        if !early.is_empty() {
            target.write_all(early).await?;
            lease.count_up(early.len());
        }
        crate::relay::tunnel(
            client,
            &target,
            lease,
            self.config.idle_timeout,
            self.closing.clone(),
        )
        .await
    }

    /// Counts a client connection if below the global cap.
    fn try_open(self: &Arc<Self>) -> Option<ClientSlot> {
        let mut admitted = false;
        self.open.send_if_modified(|open| {
            admitted = *open < self.config.max_connections;
            if admitted {
                *open += 1;
            }
            admitted
        });
        admitted.then(|| ClientSlot(Arc::clone(self)))
    }
}

/// One client connection counted against the global cap.
struct ClientSlot(Arc<Shared>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.open.send_modify(|open| *open -= 1);
    }
}

/// Binds every listening address and serves until the handle is dropped or shut down.
pub async fn start(config: ProxyConfig) -> io::Result<ProxyHandle> {
    let (accepting_tx, accepting) = watch::channel(true);
    let (closing_tx, closing) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(0);
    let leases = Arc::new(LeaseTable::default());
    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(TcpListener::bind(addr).await?);
    }
    let shared = Arc::new(Shared {
        public_ip: std::sync::RwLock::new(config.public_ip),
        leases: Arc::clone(&leases),
        closing,
        accepting,
        open: open_tx,
        config,
    });
    let mut addrs = Vec::new();
    for listener in listeners {
        addrs.push(listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, "proxy listening (SOCKS5 and HTTP)");
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
    }
    Ok(ProxyHandle {
        addrs,
        leases,
        accepting: accepting_tx,
        closing: closing_tx,
        open: open_rx,
        shared,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut accepting = shared.accepting.clone();
    // A listener bound to one IP tells every connection's local IP without asking the kernel.
    let listen_ip = listener
        .local_addr()
        .ok()
        .map(|addr| addr.ip())
        .filter(|ip| !ip.is_unspecified());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = accepting.wait_for(|accepting| !*accepting) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = shared.try_open() else {
            tracing::warn!(%peer, "connection cap reached, closing");
            continue;
        };
        // Behind NAT every connection is for the public IP the relay saw.
        let local_ip = shared.serving_as().or(listen_ip);
        tokio::spawn(async move {
            let shared = Arc::clone(&slot.0);
            match serve(stream, local_ip, &shared).await {
                Ok(end) => tracing::debug!(%peer, ?end, "connection ended"),
                Err(error) => tracing::debug!(%peer, %error, "connection ended"),
            }
            drop(slot);
        });
    }
}

/// A client connection as handed to a protocol: what was read to tell the protocol, and when
/// its negotiation must be over.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    /// The IP the client connected to (the one its lease must be for).
    pub(crate) local_ip: IpAddr,
    /// Bytes already read from the client.
    pub(crate) first: Vec<u8>,
    /// The end of the handshake timeout.
    pub(crate) deadline: Instant,
}

/// Reads the first bytes, tells SOCKS5 from HTTP by the first one, and serves the connection.
async fn serve(
    mut stream: TcpStream,
    listen_ip: Option<IpAddr>,
    shared: &Arc<Shared>,
) -> io::Result<End> {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    stream.set_nodelay(true)?;
    let local_ip = match listen_ip {
        Some(ip) => ip,
        None => stream.local_addr()?.ip(),
    };
    let mut first = Vec::with_capacity(512);
    let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut first))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client sent nothing"))??;
    if read == 0 {
        return Ok(End::Finished);
    }
    let is_socks = first[0] == 5;
    let accepted = Accepted {
        stream,
        local_ip,
        first,
        deadline,
    };
    let mut closing = shared.closing.clone();
    let served = async {
        if is_socks {
            crate::socks5::serve(accepted, shared).await
        } else {
            crate::http::serve(accepted, shared).await
        }
    };
    // Shutdown also interrupts handshakes and connects, not only tunnels.
    tokio::select! {
        served = served => served,
        _ = closing.wait_for(|closing| *closing) => Ok(End::Shutdown),
    }
}
