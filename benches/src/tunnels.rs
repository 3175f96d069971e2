//! Tunnels through a SOCKS5 proxy, as the proxy and relay harnesses measure them: target
//! servers on loopback (bulk, small answer, idle), a SOCKS5 client, and the figures (bulk
//! Gbit/s through one or many tunnels, CONNECT + small answer per second with HDR latencies,
//! memory of a process tree).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{latency_histogram, record_since, stop_and_merge};

/// The small target's whole answer.
pub const SMALL_RESPONSE: &[u8; 128] = &[b'x'; 128];
/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;

/// Where the targets listen.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    /// Reads a u64 N, then sends N bytes and closes.
    pub bulk: SocketAddr,
    /// Sends 128 bytes and closes.
    pub small: SocketAddr,
    /// Holds the connection until the client closes it.
    pub idle: SocketAddr,
}

impl Targets {
    /// Binds the three on loopback and serves them on the current runtime.
    pub async fn serve() -> Result<Self> {
        let bulk = TcpListener::bind("127.0.0.1:0").await?;
        let small = TcpListener::bind("127.0.0.1:0").await?;
        let idle = TcpListener::bind("127.0.0.1:0").await?;
        let targets = Self {
            bulk: bulk.local_addr()?,
            small: small.local_addr()?,
            idle: idle.local_addr()?,
        };
        tokio::spawn(accept_each(bulk, |mut stream| async move {
            let Ok(len) = stream.read_u64().await else {
                return;
            };
            let chunk = vec![0u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let part = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                if stream.write_all(&chunk[..part]).await.is_err() {
                    return;
                }
                left -= part as u64;
            }
            let _ = stream.shutdown().await;
        }));
        tokio::spawn(accept_each(small, |mut stream| async move {
            let _ = stream.write_all(SMALL_RESPONSE).await;
            let _ = stream.shutdown().await;
            let mut rest = [0u8; 64];
            let _ = stream.read(&mut rest).await;
        }));
        tokio::spawn(accept_each(idle, |mut stream| async move {
            let mut rest = [0u8; 64];
            let _ = stream.read(&mut rest).await;
        }));
        Ok(targets)
    }
}

async fn accept_each<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// How a client reaches a target through a peer.
#[derive(Debug, Clone)]
pub enum Route {
    /// Straight to the target.
    Direct,
    /// A SOCKS5 CONNECT through `proxy`, with a username and password when given.
    Socks {
        /// The proxy.
        proxy: SocketAddr,
        /// Username and password.
        login: Option<(String, String)>,
    },
}

/// Opens a connection to `target` along `route` (a SOCKS5 CONNECT when through a proxy).
pub async fn open(route: &Route, target: SocketAddr) -> std::io::Result<TcpStream> {
    let (proxy, login) = match route {
        Route::Direct => {
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            return Ok(stream);
        }
        Route::Socks { proxy, login } => (*proxy, login),
    };
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let method = if login.is_some() { 2 } else { 0 };
    stream.write_all(&[5, 1, method]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, method] {
        return Err(std::io::Error::other(format!("method refused: {choice:?}")));
    }
    if let Some((user, password)) = login {
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(password.len() as u8);
        auth.extend_from_slice(password.as_bytes());
        stream.write_all(&auth).await?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await?;
        if status[1] != 0 {
            return Err(std::io::Error::other("authentication refused"));
        }
    }
    let std::net::IpAddr::V4(ip) = target.ip() else {
        return Err(std::io::Error::other("IPv4 targets only"));
    };
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&target.port().to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        return Err(std::io::Error::other(format!(
            "CONNECT refused: {}",
            reply[1]
        )));
    }
    Ok(stream)
}

/// Downloads `len` bytes through one tunnel; Gbit/s.
pub async fn bulk_one(route: &Route, targets: Targets, len: u64) -> Result<f64> {
    let started = Instant::now();
    let received = download(route, targets.bulk, len).await?;
    Ok(gbits(received, started.elapsed()))
}

/// Downloads `len` bytes from the bulk target through one tunnel; the bytes received.
pub async fn download(route: &Route, target: SocketAddr, len: u64) -> Result<u64> {
    let mut stream = open(route, target).await?;
    stream.write_u64(len).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    if received != len {
        bail!("received {received} of {len} bytes");
    }
    Ok(received)
}

/// Downloads `len` bytes through each of `streams` tunnels at once; aggregate Gbit/s.
pub async fn bulk_many(route: &Route, targets: Targets, streams: usize, len: u64) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            download(&route, targets.bulk, len).await
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(gbits(total, started.elapsed()))
}

/// Gbit/s of `bytes` over `elapsed`.
pub fn gbits(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

/// CONNECT + 128-byte response by `clients` concurrent clients for `secs`.
pub async fn connect_rate(
    route: &Route,
    targets: Targets,
    clients: usize,
    secs: f64,
) -> Result<(f64, Histogram<u64>, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    let started = Instant::now();
    for _ in 0..clients {
        let route = route.clone();
        let stop = Arc::clone(&stop);
        let failures = Arc::clone(&failures);
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let exchanged = async {
                    let mut stream = open(&route, targets.small).await?;
                    let mut got = 0;
                    loop {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    if got == SMALL_RESPONSE.len() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("short response"))
                    }
                }
                .await;
                match exchanged {
                    Ok(()) => {
                        record_since(&mut histogram, began);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            histogram
        }));
    }
    let (all, elapsed) = stop_and_merge(tasks, &stop, secs, started).await?;
    Ok((
        all.len() as f64 / elapsed,
        all,
        failures.load(Ordering::Relaxed),
    ))
}

/// Proportional set size of a process and its descendants, bytes.
pub fn pss_of_tree(root: u32) -> Result<u64> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The field after the parenthesised command is the state, then the parent pid.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in &parents {
            if tree.contains(ppid) && !tree.contains(pid) {
                tree.push(*pid);
                grew = true;
            }
        }
    }
    let mut total = 0;
    for pid in tree {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        for line in rollup.lines() {
            if let Some(kib) = line.strip_prefix("Pss:") {
                total += kib.trim().trim_end_matches("kB").trim().parse::<u64>()? * 1024;
            }
        }
    }
    Ok(total)
}
