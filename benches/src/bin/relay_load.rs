//! Load harness for the relay: a provider behind it against the same provider proxy reached
//! directly, in one run.
//!
//! ```text
//! bash scripts/bench-relay.sh            # builds, runs this
//! cargo run --release -p ipsx-benches --bin relay-load -- --rounds 3
//! ```
//!
//! The relay is the real one, in an `ipsx node --relay-quic … --relay-listen …` process. The
//! provider runs here: the egress proxy (`ipsx-proxy`, as `ipsx provide` runs it) with its
//! QUIC link to the relay from 127.0.0.60, and the same proxy listening directly on 127.0.0.61.
//! The harness holds the relay's key from the node's data directory, so it issues tickets and
//! sealed credentials itself (no sign-ins, no leases to make).
//!
//! Figures, medians of `--rounds` rounds with the two paths interleaved in every round:
//! * bulk download through one tunnel (Gbit/s);
//! * SOCKS5 CONNECT + a 128-byte answer by 64 concurrent clients (tunnels/s, HDR latencies);
//! * `--streams` (1,000) tunnels at once over the one provider connection, `--stream-kib`
//!   (256) KiB each (aggregate Gbit/s; every one must finish);
//! * memory per idle provider connection: the node process's proportional set size with
//!   `--idle` (10,000) simulated providers connected (each its own QUIC endpoint on its own
//!   loopback address), minus before, over `--idle`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use ipsx_benches::tunnels::{MIB, Route, Targets, bulk_many, bulk_one, connect_rate, pss_of_tree};
use ipsx_benches::{median, percentiles};
use ipsx_proxy::{CredentialKey, Grant, Protocols, ProxyConfig, ProxyHandle};
use ipsx_relay::{Access, Link, LinkConfig, RelayKey};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "IPSX relay load harness (relayed provider vs the same proxy reached directly)")]
struct Args {
    /// Rounds of every throughput and rate figure (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB downloaded through the single tunnel.
    #[arg(long, default_value_t = 1024)]
    bulk_mib: u64,
    /// Seconds of CONNECT + small answer per round.
    #[arg(long, default_value_t = 3.0)]
    rate_secs: f64,
    /// Concurrent clients in the CONNECT figure.
    #[arg(long, default_value_t = 64)]
    rate_clients: usize,
    /// Tunnels at once over one provider connection.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// KiB through each of those tunnels.
    #[arg(long, default_value_t = 256)]
    stream_kib: u64,
    /// Simulated idle providers for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The `ipsx` binary (default: next to this one).
    #[arg(long)]
    ipsx: Option<PathBuf>,
    /// Where the HTML report goes [default: target/bench-reports/relay-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
}

/// The node running the relay.
struct Node {
    child: Child,
    quic: SocketAddr,
    requesters: SocketAddr,
    key: RelayKey,
    certificate: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(ipsx: &Path) -> Result<Node> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let mut child = Command::new(ipsx)
        .args(["node", "--no-offer-probe", "--listen", "127.0.0.1:0"])
        .args([
            "--relay-quic",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ])
        .args(["--relay-grace", "600", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", ipsx.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let relay_line = loop {
        let line = lines.next().context("the node stopped")??;
        if line.starts_with("relay quic ") {
            break line;
        }
    };
    // "relay quic A requesters B"
    let words: Vec<&str> = relay_line.split_whitespace().collect();
    let [_, _, quic, _, requesters] = words[..] else {
        bail!("the node said {relay_line:?}");
    };
    let key_hex = std::fs::read_to_string(data.join("relay.key"))?;
    let key = RelayKey::from_hex(&key_hex).map_err(|e| anyhow::anyhow!("relay.key: {e}"))?;
    let identity = ipsx_relay::Identity::load_or_generate(&data.join("relay.identity"))?;
    // Keep reading so the node never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Node {
        child,
        quic: quic.parse()?,
        requesters: requesters.parse()?,
        key,
        certificate: identity.certificate,
        _dir: dir,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn provider_address(n: u32) -> [u8; 20] {
    let mut address = [0x5a; 20];
    address[16..].copy_from_slice(&n.to_be_bytes());
    address
}

/// Dials the relay as provider `n` from `bind`.
async fn dial(node: &Node, n: u32, bind: IpAddr, target: SocketAddr) -> Result<Link> {
    let access = Access {
        relay: node.quic,
        certificate: node.certificate.clone(),
        ticket: node.key.ticket(provider_address(n), unix_now() + 3600),
    };
    let mut config = LinkConfig::new(target);
    config.bind = SocketAddr::new(bind, 0);
    config.max_streams = 4096;
    Ok(Link::connect(&access, &config).await?)
}

async fn proxy(
    key: &CredentialKey,
    listen: SocketAddr,
    public: Option<IpAddr>,
) -> Result<ProxyHandle> {
    let mut config = ProxyConfig::new(vec![listen], key.clone());
    config.guard.allow_loopback = true;
    config.max_per_lease = 8192;
    config.public_ip = public;
    Ok(ipsx_proxy::start(config).await?)
}

/// A SOCKS5 route for lease 1 on `ip`, sealed for the relay when it goes through one.
fn route(key: &CredentialKey, ip: IpAddr, proxy: SocketAddr, relay: Option<&RelayKey>) -> Route {
    let now = unix_now();
    let mut credentials = key.issue(&Grant {
        lease: 1,
        ip,
        protocols: Protocols::SOCKS5,
        not_before: now - 10,
        not_after: now + 3600,
    });
    if let Some(relay) = relay {
        credentials = relay.seal(credentials);
    }
    Route::Socks {
        proxy,
        login: Some((credentials.username, credentials.password)),
    }
}

#[derive(Default)]
struct Figures {
    bulk: Vec<f64>,
    rate: Vec<f64>,
    latency: Option<Histogram<u64>>,
    failures: u64,
    many: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(harness(args))
}

async fn harness(args: Args) -> Result<()> {
    let ipsx = match &args.ipsx {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("ipsx"),
    };
    let targets = Targets::serve().await?;
    let node = start_node(&ipsx)?;
    let key = CredentialKey::new([0x42; 32]);
    let home: IpAddr = Ipv4Addr::new(127, 0, 0, 60).into();
    let direct_ip: IpAddr = Ipv4Addr::new(127, 0, 0, 61).into();
    let relayed_proxy = proxy(&key, "127.0.0.1:0".parse()?, Some(home)).await?;
    let link = Arc::new(dial(&node, 0, home, relayed_proxy.addrs[0]).await?);
    let carrying = Arc::clone(&link);
    let target = relayed_proxy.addrs[0];
    tokio::spawn(async move { carrying.serve(target).await });
    let direct_proxy = proxy(&key, SocketAddr::new(direct_ip, 0), None).await?;
    let paths = [
        (
            "direct",
            route(&key, direct_ip, direct_proxy.addrs[0], None),
        ),
        ("relay", route(&key, home, node.requesters, Some(&node.key))),
    ];
    let mut figures: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    for round in 1..=args.rounds {
        for ((name, route), figure) in paths.iter().zip(figures.iter_mut()) {
            let bulk = bulk_one(route, targets, args.bulk_mib * MIB).await?;
            let (rate, latency, failures) =
                connect_rate(route, targets, args.rate_clients, args.rate_secs).await?;
            eprintln!(
                "round {round} {name:>6}: 1 tunnel {bulk:6.2} Gbit/s, CONNECT+128 B {rate:8.0}/s (failures {failures})"
            );
            figure.bulk.push(bulk);
            figure.rate.push(rate);
            figure.failures += failures;
            match &mut figure.latency {
                Some(all) => all.add(&latency)?,
                None => figure.latency = Some(latency),
            }
        }
    }
    for ((name, route), figure) in paths.iter().zip(figures.iter_mut()) {
        let started = Instant::now();
        let many = bulk_many(route, targets, args.streams, args.stream_kib * 1024).await?;
        eprintln!(
            "{name:>6}: {} tunnels at once, {many:.2} Gbit/s, all finished in {:.2?}",
            args.streams,
            started.elapsed()
        );
        figure.many = Some(many);
    }
    link.close();
    drop((relayed_proxy, direct_proxy));

    let idle = if args.idle > 0 {
        Some(idle_providers(&node, args.idle).await?)
    } else {
        None
    };
    report(&args, &paths.map(|(name, _)| name), &mut figures, idle);
    Ok(())
}

/// Connects `count` providers from as many loopback addresses and leaves them idle; node
/// memory per connection and the connections made.
async fn idle_providers(node: &Node, count: usize) -> Result<(f64, usize)> {
    let pid = node.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = pss_of_tree(pid)?;
    let gate = Arc::new(Semaphore::new(64));
    let nowhere: SocketAddr = "127.0.0.1:9".parse()?;
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let n = u32::try_from(n)?;
        // 127.1.0.1 … : one public IP per provider, as the relay requires.
        let bind = IpAddr::V4(Ipv4Addr::from(0x7f01_0001 + n));
        let gate = Arc::clone(&gate);
        let access = Access {
            relay: node.quic,
            certificate: node.certificate.clone(),
            ticket: node.key.ticket(provider_address(n + 1), unix_now() + 3600),
        };
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            let mut config = LinkConfig::new(nowhere);
            config.bind = SocketAddr::new(bind, 0);
            Link::connect(&access, &config).await.ok()
        }));
    }
    let mut links = Vec::with_capacity(count);
    for task in tasks {
        if let Some(link) = task.await? {
            links.push(link);
        }
    }
    // Past a few keep-alive rounds, so the figure is of connections at rest.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = pss_of_tree(pid)?;
    let connected = links.len();
    for link in &links {
        link.close();
    }
    let per = after.saturating_sub(before) as f64 / connected.max(1) as f64;
    eprintln!("idle: {connected} providers connected, {per:.0} B of node memory each");
    Ok((per, connected))
}

fn report(args: &Args, names: &[&str], figures: &mut [Figures], idle: Option<(f64, usize)>) {
    println!(
        "\n| path | 1 tunnel Gbit/s | CONNECT+128 B /s | p50 | p99 | p99.9 | {} tunnels Gbit/s | failures |",
        args.streams
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut medians = Vec::new();
    let mut page = ipsx_benches::report::Report::new(
        "relay-load: a provider behind the relay against the same proxy reached directly",
        format!(
            "medians of {} rounds; {} MiB through one tunnel, {} clients doing CONNECT + 128 B, \
             {} tunnels of {} KiB over one provider connection",
            args.rounds, args.bulk_mib, args.rate_clients, args.streams, args.stream_kib
        ),
    );
    let mut figure_rows = Vec::new();
    for (name, figure) in names.iter().zip(figures.iter_mut()) {
        let bulk = median(&mut figure.bulk);
        let rate = median(&mut figure.rate);
        let [p50, p99, p999, _] = figure
            .latency
            .as_ref()
            .map_or([Duration::ZERO; 4], percentiles);
        println!(
            "| {name} | {bulk:.2} | {rate:.0} | {p50:.2?} | {p99:.2?} | {p999:.2?} | {:.2} | {} |",
            figure.many.unwrap_or_default(),
            figure.failures
        );
        medians.push((bulk, rate, figure.many.unwrap_or_default()));
        figure_rows.push((
            name.to_string(),
            bulk,
            rate,
            figure.latency.clone(),
            figure.many,
        ));
    }
    let one = page.figure("bulk download, 1 tunnel", "Gbit/s");
    for (name, bulk, ..) in &figure_rows {
        one.peer(name, *bulk, None);
    }
    let rate = page.figure("SOCKS5 CONNECT + 128-byte answer", "tunnels/s");
    for (name, _, value, latency, _) in &figure_rows {
        rate.peer(name, *value, latency.as_ref());
    }
    let many = page.figure(format!("{} tunnels at once", args.streams), "Gbit/s");
    for (name, .., value) in &figure_rows {
        many.peer(name, value.unwrap_or_default(), None);
    }
    if let Some((bytes, connected)) = idle {
        page.figure(
            format!("relay memory per idle provider connection ({connected} held)"),
            "KiB",
        )
        .peer("relay", bytes / 1024.0, None);
    }
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| ipsx_benches::report::Report::default_path("relay-load"));
    if let Err(error) = page.write(&path) {
        eprintln!("writing {}: {error}", path.display());
    }
    if let [direct, relay] = medians[..] {
        println!(
            "\nrelay / direct (medians of {} rounds): 1 tunnel {:.2}× (aim ≥ 0.5), CONNECT rate {:.2}× (aim ≥ 0.5), {} tunnels {:.2}×",
            args.rounds,
            relay.0 / direct.0,
            relay.1 / direct.1,
            args.streams,
            relay.2 / direct.2
        );
    }
    if let Some((bytes, connected)) = idle {
        println!(
            "idle provider connections: {connected} held, {:.1} KiB of relay memory each (aim ≤ 64 KiB)",
            bytes / 1024.0
        );
    }
}
