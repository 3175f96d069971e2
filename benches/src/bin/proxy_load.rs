//! Load harness for the provider's egress proxy against its peers, all on this machine in one
//! run: direct loopback (the ceiling), `ipsx-proxy`, Debian's microsocks and dante-server.
//!
//! ```text
//! bash scripts/bench-proxy.sh            # installs the pinned peers, builds, runs this
//! cargo run --release -p ipsx-benches --bin proxy-load -- --rounds 3
//! ```
//!
//! Figures, each the median of `--rounds` rounds with the peers interleaved in every round:
//! * bulk download through one tunnel, and through 64 at once (Gbit/s);
//! * SOCKS5 CONNECT + a 128-byte response, by 64 concurrent clients (tunnels/s, HDR
//!   percentiles of the whole exchange);
//! * memory per idle tunnel: proportional set size of the proxy's process tree (dante forks
//!   children) with `--idle` tunnels open, minus before, over `--idle`, on a fresh process.
//!
//! The targets run in a child process (`proxy-load target`) so the harness, the proxy and the
//! targets each have their own file-descriptor budget (20,000 here; a proxy holds two per
//! tunnel, so `--idle` defaults to 9,900).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use ipsx_benches::tunnels::{
    MIB, Route, Targets, bulk_many, bulk_one, connect_rate, open, pss_of_tree,
};
use ipsx_benches::{median, percentiles};
use ipsx_proxy::{CredentialKey, Credentials, Grant, Protocols};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "IPSX egress proxy load harness (vs direct, microsocks, dante)")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Rounds of every throughput and rate figure (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB downloaded through the single-stream tunnel.
    #[arg(long, default_value_t = 2048)]
    bulk_mib: u64,
    /// Tunnels in the many-streams figure.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// MiB downloaded through each of the many streams.
    #[arg(long, default_value_t = 32)]
    stream_mib: u64,
    /// Seconds of CONNECT + small response per round.
    #[arg(long, default_value_t = 3.0)]
    rate_secs: f64,
    /// Concurrent clients in the CONNECT figure.
    #[arg(long, default_value_t = 64)]
    rate_clients: usize,
    /// Where the HTML report (bars per peer, latency percentiles) goes
    /// [default: target/bench-reports/proxy-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
    /// Idle tunnels held open for the memory figure (0 skips it).
    #[arg(long, default_value_t = 9_900)]
    idle: usize,
    /// Peers to measure (direct, ipsx, microsocks, dante).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,ipsx,microsocks,dante"
    )]
    peers: Vec<String>,
    /// The ipsx-proxy binary (default: next to this one).
    #[arg(long)]
    ipsx_proxy: Option<PathBuf>,
    /// microsocks, from Debian's package.
    #[arg(long, default_value = "/usr/bin/microsocks")]
    microsocks: PathBuf,
    /// Extra arguments for `ipsx-proxy serve` (e.g. `--threads 1`).
    #[arg(long, allow_hyphen_values = true)]
    ipsx_args: Option<String>,
    /// danted, from Debian's dante-server package.
    #[arg(long, default_value = "/usr/sbin/danted")]
    danted: PathBuf,
}

#[derive(Subcommand)]
enum Role {
    /// The target servers (started by the harness itself).
    Target,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role {
        Some(Role::Target) => runtime.block_on(serve_targets()),
        None => runtime.block_on(harness(args)),
    }
}

// ---------------------------------------------------------------------------------------------
// Targets (child process)

/// Serves the targets until the harness closes our stdin.
async fn serve_targets() -> Result<()> {
    let targets = Targets::serve().await?;
    println!(
        "targets {} {} {}",
        targets.bulk, targets.small, targets.idle
    );
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 1];
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Peers

/// A peer process under test.
struct Peer {
    name: &'static str,
    route: Route,
    child: Option<Child>,
    _files: Option<tempfile::TempDir>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Peer {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

fn free_port(ip: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr} after 10 s")
}

async fn start_peer(name: &str, args: &Args) -> Result<Peer> {
    match name {
        "direct" => Ok(Peer {
            name: "direct",
            route: Route::Direct,
            child: None,
            _files: None,
        }),
        "ipsx" => {
            let dir = tempfile::tempdir()?;
            let key = [0x5a; 32];
            let key_file = dir.path().join("proxy.key");
            std::fs::write(&key_file, hex(&key))?;
            let binary = match &args.ipsx_proxy {
                Some(path) => path.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("harness path")?
                    .join("ipsx-proxy"),
            };
            let ip = "127.0.0.2";
            let port = free_port(ip)?;
            let child = Command::new(&binary)
                .args(["serve", "--listen", &format!("{ip}:{port}"), "--key-file"])
                .arg(&key_file)
                .args([
                    "--allow-loopback",
                    "--max-connections",
                    "20000",
                    "--max-per-lease",
                    "20000",
                ])
                .args(
                    args.ipsx_args
                        .iter()
                        .flat_map(|extra| extra.split_whitespace()),
                )
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (build it: cargo build --release -p ipsx-proxy)",
                        binary.display()
                    )
                })?;
            let proxy: SocketAddr = format!("{ip}:{port}").parse()?;
            let credentials: Credentials = CredentialKey::new(key).issue(&Grant {
                lease: 1,
                ip: proxy.ip(),
                protocols: Protocols::SOCKS5,
                not_before: 0,
                not_after: u64::MAX,
            });
            let peer = Peer {
                name: "ipsx",
                route: Route::Socks {
                    proxy,
                    login: Some((credentials.username, credentials.password)),
                },
                child: Some(child),
                _files: Some(dir),
            };
            wait_listening(proxy).await?;
            Ok(peer)
        }
        "microsocks" => {
            let ip = "127.0.0.5";
            let port = free_port(ip)?;
            let child = Command::new(&args.microsocks)
                .args(["-i", ip, "-p", &port.to_string(), "-b", ip])
                .args(["-u", "bench", "-P", "secret"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (scripts/bench-proxy.sh installs it)",
                        args.microsocks.display()
                    )
                })?;
            let proxy: SocketAddr = format!("{ip}:{port}").parse()?;
            let peer = Peer {
                name: "microsocks",
                route: Route::Socks {
                    proxy,
                    login: Some(("bench".into(), "secret".into())),
                },
                child: Some(child),
                _files: None,
            };
            wait_listening(proxy).await?;
            Ok(peer)
        }
        "dante" => {
            let dir = tempfile::tempdir()?;
            let ip = "127.0.0.6";
            let port = free_port(ip)?;
            let config = dir.path().join("danted.conf");
            // Dante's username method checks system accounts; it runs without authentication
            // here (a little less work than the others do).
            std::fs::write(
                &config,
                format!(
                    "logoutput: /dev/null\ninternal: {ip} port = {port}\nexternal: {ip}\n\
                     socksmethod: none\nclientmethod: none\nuser.privileged: root\n\
                     user.unprivileged: nobody\n\
                     client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n\
                     socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n"
                ),
            )?;
            let child = Command::new(&args.danted)
                .arg("-f")
                .arg(&config)
                .arg("-p")
                .arg(dir.path().join("danted.pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (scripts/bench-proxy.sh installs it)",
                        args.danted.display()
                    )
                })?;
            let proxy: SocketAddr = format!("{ip}:{port}").parse()?;
            let peer = Peer {
                name: "dante",
                route: Route::Socks { proxy, login: None },
                child: Some(child),
                _files: Some(dir),
            };
            wait_listening(proxy).await?;
            Ok(peer)
        }
        other => bail!("unknown peer {other} (direct, ipsx, microsocks, dante)"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Opens `count` idle tunnels; bytes of proxy memory per tunnel and the tunnels that opened.
async fn idle_memory(peer: &Peer, targets: Targets, count: usize) -> Result<(f64, usize)> {
    let pid = peer.pid().context("a proxy process")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = pss_of_tree(pid)?;
    let gate = Arc::new(Semaphore::new(128));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let route = peer.route.clone();
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            open(&route, targets.idle).await.ok()
        }));
    }
    let mut open_streams = Vec::with_capacity(count);
    for task in tasks {
        if let Some(stream) = task.await? {
            open_streams.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = pss_of_tree(pid)?;
    let opened = open_streams.len();
    drop(open_streams);
    let per = after.saturating_sub(before) as f64 / opened.max(1) as f64;
    Ok((per, opened))
}

// ---------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Figures {
    bulk_one: Vec<f64>,
    bulk_many: Vec<f64>,
    rate: Vec<f64>,
    rate_latency: Option<Histogram<u64>>,
    failures: u64,
    idle_bytes: Option<(f64, usize)>,
}

async fn harness(args: Args) -> Result<()> {
    let mut target_process = Command::new(std::env::current_exe()?)
        .arg("target")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(target_process.stdout.take().context("target stdout")?).read_line(&mut line)?;
    let addrs: Vec<SocketAddr> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("target said {line:?}"))?;
    let [bulk, small, idle] = addrs[..] else {
        bail!("target said {line:?}");
    };
    let targets = Targets { bulk, small, idle };

    let mut figures: Vec<(String, Figures)> = args
        .peers
        .iter()
        .map(|name| (name.clone(), Figures::default()))
        .collect();

    if args.idle > 0 {
        for (name, figure) in figures.iter_mut().filter(|(name, _)| name != "direct") {
            let peer = start_peer(name, &args).await?;
            let measured = idle_memory(&peer, targets, args.idle).await?;
            eprintln!(
                "idle {name}: {:.0} B per tunnel over {} tunnels",
                measured.0, measured.1
            );
            figure.idle_bytes = Some(measured);
        }
    }

    let mut peers = Vec::new();
    for name in &args.peers {
        peers.push(start_peer(name, &args).await?);
    }
    for round in 1..=args.rounds {
        for (peer, (_, figure)) in peers.iter().zip(figures.iter_mut()) {
            let one = bulk_one(&peer.route, targets, args.bulk_mib * MIB).await?;
            let many = bulk_many(&peer.route, targets, args.streams, args.stream_mib * MIB).await?;
            let (rate, latency, failures) =
                connect_rate(&peer.route, targets, args.rate_clients, args.rate_secs).await?;
            eprintln!(
                "round {round} {:>10}: 1 stream {one:6.2} Gbit/s, {} streams {many:6.2} Gbit/s, CONNECT+128 B {rate:8.0}/s (failures {failures})",
                peer.name, args.streams
            );
            figure.bulk_one.push(one);
            figure.bulk_many.push(many);
            figure.rate.push(rate);
            figure.failures += failures;
            match &mut figure.rate_latency {
                Some(all) => all.add(&latency)?,
                None => figure.rate_latency = Some(latency),
            }
        }
    }
    drop(peers);
    drop(target_process.stdin.take());
    let _ = target_process.wait();

    report(&args, &mut figures);
    Ok(())
}

/// The run as an HTML page: each figure's medians per peer, and the CONNECT latencies.
fn write_report(args: &Args, medians: &[(String, f64, f64, f64)], figures: &[(String, Figures)]) {
    let mut page = ipsx_benches::report::Report::new(
        "proxy-load: the egress proxy against its peers",
        format!(
            "medians of {} rounds, peers interleaved in each; {} MiB through one tunnel, {} \
             tunnels of {} MiB, {} clients doing CONNECT + 128 B",
            args.rounds, args.bulk_mib, args.streams, args.stream_mib, args.rate_clients
        ),
    );
    let one = page.figure("bulk download, 1 tunnel", "Gbit/s");
    for (name, value, _, _) in medians {
        one.peer(name, *value, None);
    }
    let many = page.figure(format!("bulk download, {} tunnels", args.streams), "Gbit/s");
    for (name, _, value, _) in medians {
        many.peer(name, *value, None);
    }
    let rate = page.figure("SOCKS5 CONNECT + 128-byte answer", "tunnels/s");
    for ((name, _, _, value), (_, f)) in medians.iter().zip(figures) {
        rate.peer(name, *value, f.rate_latency.as_ref());
    }
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| ipsx_benches::report::Report::default_path("proxy-load"));
    if let Err(error) = page.write(&path) {
        eprintln!("writing {}: {error}", path.display());
    }
}

fn report(args: &Args, figures: &mut [(String, Figures)]) {
    let medians: Vec<(String, f64, f64, f64)> = figures
        .iter_mut()
        .map(|(name, f)| {
            (
                name.clone(),
                median(&mut f.bulk_one),
                median(&mut f.bulk_many),
                median(&mut f.rate),
            )
        })
        .collect();
    println!(
        "\n| peer | 1 stream Gbit/s | {} streams Gbit/s | CONNECT+128 B /s | p50 | p99 | p99.9 | idle B/tunnel (tunnels) | failures |",
        args.streams
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for ((name, one, many, rate), (_, f)) in medians.iter().zip(figures.iter()) {
        let [p50, p99, p999, _] = f
            .rate_latency
            .as_ref()
            .map_or([Duration::ZERO; 4], percentiles);
        let idle = f
            .idle_bytes
            .map_or("—".to_string(), |(bytes, n)| format!("{bytes:.0} ({n})"));
        println!(
            "| {name} | {one:.2} | {many:.2} | {rate:.0} | {p50:.2?} | {p99:.2?} | {p999:.2?} | {idle} | {} |",
            f.failures
        );
    }
    write_report(args, &medians, figures);
    let find = |peer: &str| medians.iter().find(|(name, ..)| name == peer);
    let Some(ipsx) = find("ipsx") else {
        return;
    };
    println!("\nipsx ratios (median / median, {} rounds):", args.rounds);
    for other in ["direct", "microsocks", "dante"] {
        let Some(peer) = find(other) else {
            continue;
        };
        let idle_ratio = figures
            .iter()
            .find(|(name, _)| name == other)
            .and_then(|(_, f)| f.idle_bytes)
            .zip(
                figures
                    .iter()
                    .find(|(name, _)| name == "ipsx")
                    .and_then(|(_, f)| f.idle_bytes),
            )
            .map_or(String::new(), |((theirs, _), (ours, _))| {
                format!(", idle memory {:.2}× theirs", ours / theirs.max(1.0))
            });
        println!(
            "  vs {other:>10}: 1 stream {:.2}×, {} streams {:.2}×, CONNECT rate {:.2}×{idle_ratio}",
            ipsx.1 / peer.1,
            args.streams,
            ipsx.2 / peer.2,
            ipsx.3 / peer.3,
        );
    }
}
