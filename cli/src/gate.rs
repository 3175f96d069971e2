//! `ipsx gate`: the crawler endpoint. One local proxy port (HTTP and SOCKS5) with targeting and
//! sticky sessions in the username; it leases, rotates, pays and retries by itself (see the
//! `ipsx-gate` crate).
//!
//! ```text
//! IPSX_PRIVATE_KEY=0x… ipsx gate --max-ips 200 --max-spend-per-minute 6000000000000000
//! curl -x http://fleet-country-de:x@127.0.0.1:24000 http://example.com/
//! scrapy: request.meta["proxy"] = "http://fleet-country-de-session-7:x@127.0.0.1:24000"
//! ```

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ipsx_gate::{GateConfig, PoolConfig};

use crate::{ChainArgs, WalletArgs};

/// Options of `ipsx gate`.
#[derive(Args)]
pub(crate) struct GateArgs {
    #[command(flatten)]
    wallet: WalletArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Where crawlers connect (HTTP proxy and SOCKS5 on one port). Any address but loopback
    /// needs --password.
    #[arg(long, default_value = "127.0.0.1:24000")]
    listen: SocketAddr,
    /// Where `GET /metrics` is served (Prometheus text); `off` for nowhere.
    #[arg(long, default_value = "127.0.0.1:24001")]
    metrics: String,
    /// The password crawlers put first in theirs (`PASSWORD` or `PASSWORD_country-de…`).
    #[arg(long, env = "IPSX_GATE_PASSWORD")]
    password: Option<String>,
    /// Most IPs held at once.
    #[arg(long, default_value_t = 100)]
    max_ips: usize,
    /// Most base units the held leases may accrue per minute (default: no limit).
    #[arg(long)]
    max_spend_per_minute: Option<u128>,
    /// Highest price per IP-second, base units (a username's `maxprice` can only lower it).
    #[arg(long, default_value_t = 10u128.pow(15))]
    max_price: u128,
    /// Free IPs kept ready per filter in use (hides the lease call from new sessions).
    #[arg(long, default_value_t = 4)]
    warm: usize,
    /// IPs leased at least per lease call.
    #[arg(long, default_value_t = 8)]
    batch: u32,
    /// Seconds each lease is taken for (cancelled earlier when nobody needs it; replaced
    /// before it ends). Offers whose window ends sooner are not matched.
    #[arg(long, default_value_t = 600)]
    lease_secs: u64,
    /// Seconds a filter may go unused before its IPs are given back.
    #[arg(long, default_value_t = 300)]
    pool_idle_secs: u64,
    /// Exits tried per non-sticky request.
    #[arg(long, default_value_t = 3)]
    max_tries: u32,
    /// Rate a provider 1 star when its exit was dropped for failing.
    #[arg(long)]
    rate_bad_exits: bool,
    /// Drop an exit whose time to first byte is this many times its pool's median (0: never).
    #[arg(long, default_value_t = 5)]
    slow_factor: u64,
    /// On a paying node without a channel yet: deposit this much (base units) and open one.
    #[arg(long, default_value_t = 100 * 10u128.pow(18))]
    deposit: u128,
    /// Threads serving crawlers (default: one per core).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

impl GateArgs {
    fn config(&self) -> anyhow::Result<GateConfig> {
        if !self.listen.ip().is_loopback() && self.password.is_none() {
            bail!(
                "--listen {} is reachable from other machines: set --password (or \
                 IPSX_GATE_PASSWORD) so only your crawlers can spend your wallet",
                self.listen
            );
        }
        if self
            .password
            .as_deref()
            .is_some_and(|p| p.contains(['_', ':']))
        {
            bail!("--password may not contain '_' or ':' (they separate parameters)");
        }
        let mut config = GateConfig::new(PoolConfig {
            warm: self.warm,
            batch: self.batch,
            lease_secs: self.lease_secs,
            pool_idle_secs: self.pool_idle_secs,
            max_ips: self.max_ips,
            max_spend_per_minute: self.max_spend_per_minute,
            max_price: self.max_price,
            slow_factor: self.slow_factor,
            ..PoolConfig::default()
        });
        config.listen = self.listen;
        config.metrics = match self.metrics.as_str() {
            "off" => None,
            at => Some(at.parse().with_context(|| format!("--metrics {at:?}"))?),
        };
        config.password = self.password.clone();
        config.max_tries = self.max_tries.max(1);
        config.rate_bad_exits = self.rate_bad_exits;
        Ok(config)
    }
}

/// Runs the gate until SIGINT/SIGTERM, then cancels every lease and pays up to their end.
pub(crate) async fn run(args: GateArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let (client, wallet) = args.wallet.signed_in().await?;
    let paying = if client.wallet().await?.payments.is_some() {
        let channel =
            ipsx_sdk::ensure_channel(&client, &wallet, &args.chain.rpc_url, args.deposit).await?;
        eprintln!(
            "paying on channel {} (deposit {})",
            channel.channel, channel.deposit.0
        );
        Some(wallet)
    } else {
        None
    };
    let gate = ipsx_gate::start(config, client, paying)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("listening {}", gate.addr);
    if let Some(metrics) = gate.metrics_addr {
        println!("metrics http://{metrics}/metrics");
    }
    eprintln!(
        "crawl through http://USER-country-de:x@{0} (or socks5h://…@{0}); Ctrl-C stops",
        gate.addr
    );
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    let live = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(if live { 1 } else { 10 }));
    let mut last = gate.snapshot();
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let now = gate.snapshot();
                let period = if live { 1 } else { 10 };
                let line = format!(
                    "IPs {:>4} · sessions {:>4} · {:>7.1} req/s · spend {}/s · paid {}",
                    now.ips,
                    now.sessions,
                    (now.requests - last.requests) as f64 / f64::from(period),
                    now.spend_rate,
                    now.paid
                );
                if live {
                    eprint!("\r{line}  ");
                } else {
                    eprintln!("{line}");
                }
                last = now;
            }
        }
    }
    if live {
        eprintln!();
    }
    eprintln!("stopping: cancelling every lease held, paying up to their end");
    let paid = gate.shutdown().await;
    println!("paid {paid}");
    Ok(())
}
