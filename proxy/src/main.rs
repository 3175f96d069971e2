//! `ipsx-proxy`: the provider's egress proxy on its own, for providers who run it outside
//! `ipsx provide`, for benchmarks, and for trying a lease by hand.
//!
//! ```text
//! ipsx-proxy serve --listen 127.0.0.2:1080 --listen 127.0.0.3:1080 --key-file proxy.key
//! ipsx-proxy issue --key-file proxy.key --lease 7 --ip 127.0.0.2 --protocols socks5,http
//! ```
//!
//! The key file holds the 64 hex digits shared with the node (`IPSX_PROXY_KEY` may hold them
//! instead). `serve` drains on SIGINT/SIGTERM: it stops accepting, lets tunnels finish for
//! `--drain-secs`, then closes the rest.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use ipsx_proxy::{CredentialKey, Grant, Guard, Protocols, ProxyConfig};

#[derive(Parser)]
#[command(
    name = "ipsx-proxy",
    version,
    about = "The IPSX provider's egress proxy (SOCKS5 and HTTP on one port)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves leases on the given provider IPs.
    Serve(Serve),
    /// Issues credentials for one leased IP (what the node does for each lease).
    Issue(Issue),
}

#[derive(Args)]
struct KeySource {
    /// File holding the 64-hex-digit key shared with the node (else `IPSX_PROXY_KEY`).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl KeySource {
    fn load(&self) -> anyhow::Result<CredentialKey> {
        let text = match &self.key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the key file {}", path.display()))?,
            None => std::env::var("IPSX_PROXY_KEY")
                .context("no key: pass --key-file or set IPSX_PROXY_KEY")?,
        };
        Ok(CredentialKey::from_hex(&text)?)
    }
}

#[derive(Args)]
struct Serve {
    /// An address to listen on, one per provider IP (leases egress from that IP).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    #[command(flatten)]
    key: KeySource,
    /// Let leases reach loopback destinations (local demos and benchmarks only).
    #[arg(long)]
    allow_loopback: bool,
    /// Seconds a client has to finish its SOCKS5 negotiation or HTTP request head.
    #[arg(long, default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// Seconds a tunnel may move nothing before it is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Seconds to resolve and connect a destination.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Client connections open at once, in all.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Client connections open at once per lease.
    #[arg(long, default_value_t = 256)]
    max_per_lease: u64,
    /// Seconds open tunnels may go on after a shutdown signal.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct Issue {
    #[command(flatten)]
    key: KeySource,
    /// The lease id.
    #[arg(long)]
    lease: u64,
    /// The leased IP.
    #[arg(long)]
    ip: IpAddr,
    /// Comma-separated: socks5, http, https, smtp, vpn.
    #[arg(long, default_value = "socks5,http,https")]
    protocols: Protocols,
    /// Seconds from now the lease lasts.
    #[arg(long, default_value_t = 3600)]
    valid_secs: u64,
    /// The proxy's port, for the printed URLs.
    #[arg(long, default_value_t = 1080)]
    port: u16,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(serve) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = serve.threads {
                builder.worker_threads(threads.max(1));
            }
            let runtime = builder.enable_all().build()?;
            runtime.block_on(run(serve))
        }
        Command::Issue(issue) => {
            let key = issue.key.load()?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let credentials = key.issue(&Grant {
                lease: issue.lease,
                ip: issue.ip,
                protocols: issue.protocols,
                not_before: now,
                not_after: now + issue.valid_secs,
            });
            let at = SocketAddr::new(issue.ip, issue.port);
            println!("username {}", credentials.username);
            println!("password {}", credentials.password);
            for scheme in ["socks5h", "http"] {
                println!(
                    "{scheme}://{}:{}@{at}",
                    credentials.username, credentials.password
                );
            }
            Ok(())
        }
    }
}

async fn run(serve: Serve) -> anyhow::Result<()> {
    let mut config = ProxyConfig::new(serve.listen.clone(), serve.key.load()?);
    config.guard = Guard {
        allow_loopback: serve.allow_loopback,
    };
    config.handshake_timeout = Duration::from_secs(serve.handshake_timeout_secs);
    config.idle_timeout = Duration::from_secs(serve.idle_timeout_secs);
    config.connect_timeout = Duration::from_secs(serve.connect_timeout_secs);
    config.max_connections = serve.max_connections;
    config.max_per_lease = serve.max_per_lease;
    if config.max_connections == 0 || config.max_per_lease == 0 {
        bail!("--max-connections and --max-per-lease must be at least 1");
    }
    let proxy = ipsx_proxy::start(config)
        .await
        .context("binding the listen addresses (is each IP on this machine?)")?;
    for addr in &proxy.addrs {
        // Scripts that asked for port 0 read the real ports here.
        println!("listening {addr}");
    }
    shutdown_signal().await?;
    tracing::info!(drain_secs = serve.drain_secs, "shutting down: draining");
    let left = proxy.drain(Duration::from_secs(serve.drain_secs)).await;
    tracing::info!(closed = left, "stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
