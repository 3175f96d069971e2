//! Soak: a node with payments, provider daemons and paying fleets churning short leases for a
//! long time; the node's memory, file descriptors and open deals are sampled and plotted.
//!
//! ```text
//! bash scripts/soak.sh                        # 30 minutes, ±10 % after a 5-minute warm-up
//! bash scripts/soak.sh --minutes 2 --bound 0.25 --warmup-minutes 1   # the CI check
//! ```
//!
//! Real parts only: anvil with the real contracts, `ipsx node` and `ipsx provide` as their own
//! processes (so their memory is theirs alone), fleets in this process paying every second
//! through the SDK's `Payer` over the node's WebSocket. Each fleet leases one IP for
//! `--lease-secs` seconds `--leases-per-second` times a second.
//!
//! Every `--sample-secs` the harness records the node's RSS and open file descriptors
//! (`/proc`), the providers' and its own RSS, the node's open deals and deals made
//! (`/metrics`). At the end it writes `soak.csv` and `soak.svg` into `--out`, prints the
//! deal-to-party latency percentiles (lease call sent → `deal_made` on the fleet's own stream,
//! which the node sends both parties at once), and fails if, after the warm-up, any RSS sample
//! of the node is more than `--bound` away from their median.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use ipsx_benches::processes::Process;
use ipsx_benches::{latency_histogram, median, percentiles, record};
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, deploy_local, spawn_anvil};
use ipsx_sdk::{Client, DealView, LeaseBody, Next, Payer, StreamEvent, TokenAmount, Wallet};

const TOKEN: u128 = 1_000_000_000_000_000_000;
/// Price per IP-second the providers ask.
const PRICE: u128 = 1_000_000_000_000;

#[derive(Parser, Debug)]
#[command(about = "IPSX soak: a paying exchange churning short leases, memory sampled")]
struct Args {
    /// How long the churn runs.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Samples before this are the warm-up (default: a sixth of the run, at most 5 minutes).
    #[arg(long)]
    warmup_minutes: Option<f64>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Largest relative distance of a post-warm-up RSS sample from their median.
    #[arg(long, default_value_t = 0.10)]
    bound: f64,
    /// Paying fleets (anvil has 10 funded accounts: node + fleets + providers ≤ 10).
    #[arg(long, default_value_t = 3)]
    fleets: usize,
    /// Lease calls per second of each fleet (one IP each).
    #[arg(long, default_value_t = 4.0)]
    leases_per_second: f64,
    /// Seconds each lease lasts.
    #[arg(long, default_value_t = 5)]
    lease_secs: u64,
    /// Provider daemons.
    #[arg(long, default_value_t = 3)]
    providers: usize,
    /// Loopback IPs each provider offers.
    #[arg(long, default_value_t = 32)]
    ips_per_provider: usize,
    /// Seconds finished deals stay in the node's memory (`ipsx node --deal-retention`).
    #[arg(long, default_value_t = 60)]
    deal_retention: u64,
    /// Where `soak.csv` and `soak.svg` go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// The `ipsx` binary (default: next to this one).
    #[arg(long)]
    ipsx: Option<PathBuf>,
}

/// One sample.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    seconds: f64,
    node_rss_kib: u64,
    node_fds: u64,
    open_deals: u64,
    deals_made: u64,
    providers_rss_kib: u64,
    fleets_rss_kib: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        1 + args.fleets + args.providers <= 10,
        "anvil funds 10 accounts: node + fleets + providers must fit"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(soak(args))
}

fn ipsx_binary(args: &Args) -> Result<PathBuf> {
    Ok(match &args.ipsx {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("harness path")?
            .join("ipsx"),
    })
}

fn key_hex(wallet: &Wallet) -> String {
    format!("0x{}", alloy_primitives::hex::encode(wallet.to_bytes()))
}

async fn soak(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ipsx = ipsx_binary(&args)?;
    let anvil = spawn_anvil()?;
    let rpc_url = anvil.endpoint();
    let anvil_key = |index: usize| -> Result<Wallet> {
        let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
        Ok(Wallet::from_bytes(&bytes.into())?)
    };
    let node_wallet = anvil_key(0)?;
    let node_key = ipsx_sdk::signing_key(&node_wallet)?;
    let deployment = deploy_local(
        &rpc_url,
        &node_key,
        DeploySettings {
            commission_bps: 250,
            challenge_period: 3_600,
            treasury: node_key.address(),
        },
    )
    .await?;
    let chain = ChainClient::connect(&rpc_url, deployment.centralizer, node_key.clone()).await?;
    let provider_deposit = 100 * TOKEN;
    chain
        .deposit_with_permit(provider_deposit * args.providers as u128 * 2)
        .await?;
    let fleets: Vec<Wallet> = (0..args.fleets)
        .map(|i| anvil_key(1 + i))
        .collect::<Result<_>>()?;
    for fleet in &fleets {
        chain.transfer_tokens(fleet.address(), 500 * TOKEN).await?;
    }

    // The node, as its own process.
    std::fs::write(dir.path().join("node.key"), key_hex(&node_wallet))?;
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "[payments]\nrpc_url = \"{rpc_url}\"\ncentralizer = \"{}\"\nkey_file = \"node.key\"\n\
             provider_deposit = \"{provider_deposit}\"\n",
            deployment.centralizer
        ),
    )?;
    let mut node = Command::new(&ipsx)
        .arg("node")
        .arg("--config")
        .arg(dir.path().join("node.toml"))
        .args(["--listen", "127.0.0.1:0", "--session-rate", "100000"])
        .args(["--deal-retention", &args.deal_retention.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (cargo build --release)", ipsx.display()))?;
    let mut line = String::new();
    let mut stdout = BufReader::new(node.stdout.take().context("node stdout")?);
    stdout.read_line(&mut line)?;
    // The node goes on printing (`settling as …`): keep its pipe open and drained, or its next
    // line fails on a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let node = Process(node);
    let node_pid = node.0.id();
    let base = format!(
        "http://{}",
        line.trim()
            .strip_prefix("listening ")
            .with_context(|| format!("node said {line:?}"))?
    );
    println!("node {base} (pid {node_pid}), chain {rpc_url}");

    // Provider daemons on loopback aliases, each its own process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut providers = Vec::new();
    for index in 0..args.providers {
        let wallet = anvil_key(1 + args.fleets + index)?;
        let home = dir.path().join(format!("provider-{index}"));
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("provider.key"), key_hex(&wallet))?;
        let ips: Vec<String> = (0..args.ips_per_provider)
            .map(|i| format!("\"127.0.{}.{}\"", 10 + index, 2 + i))
            .collect();
        std::fs::write(
            home.join("provider.toml"),
            format!(
                "node = \"{base}\"\nkey_file = \"provider.key\"\nport = {port}\n\
                 allow_loopback = true\nrpc_url = \"{rpc_url}\"\nsettle_every_secs = 3600\n\n\
                 [[offer]]\nips = [{}]\ncountry = \"DE\"\nprice = {PRICE}\nhours = 24\n",
                ips.join(", ")
            ),
        )?;
        let log = std::fs::File::create(home.join("provider.log"))?;
        let child = Command::new(&ipsx)
            .arg("provide")
            .arg("--config")
            .arg(home.join("provider.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        providers.push(Process(child));
    }

    // Paying fleets.
    let stop = Arc::new(AtomicBool::new(false));
    let leased = Arc::new(AtomicU64::new(0));
    let mut fleet_tasks = Vec::new();
    for wallet in fleets {
        fleet_tasks.push(tokio::spawn(fleet(
            base.clone(),
            rpc_url.clone(),
            wallet,
            Duration::from_secs_f64(1.0 / args.leases_per_second),
            args.lease_secs,
            Arc::clone(&stop),
            Arc::clone(&leased),
        )));
    }

    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(args.sample_secs));
    let http = reqwest::Client::new();
    while started.elapsed() < total {
        every.tick().await;
        for (index, provider) in providers.iter_mut().enumerate() {
            if let Some(status) = provider.0.try_wait()? {
                bail!(
                    "provider {index} exited ({status}); see {}",
                    dir.path()
                        .join(format!("provider-{index}/provider.log"))
                        .display()
                );
            }
        }
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            node_rss_kib: rss_kib(node_pid)?,
            node_fds: fds(node_pid)?,
            open_deals: metric(&metrics, "ipsx_open_deals"),
            deals_made: metric(&metrics, "ipsx_deals_made_total"),
            providers_rss_kib: providers
                .iter()
                .map(|p| rss_kib(p.0.id()).unwrap_or(0))
                .sum(),
            fleets_rss_kib: rss_kib(std::process::id())?,
        };
        println!(
            "{:>6.0} s  node {:>7.1} MiB  {:>4} fds  {:>5} open deals  {:>8} deals made  \
             providers {:>6.1} MiB  fleets {:>6.1} MiB",
            sample.seconds,
            sample.node_rss_kib as f64 / 1024.0,
            sample.node_fds,
            sample.open_deals,
            sample.deals_made,
            sample.providers_rss_kib as f64 / 1024.0,
            sample.fleets_rss_kib as f64 / 1024.0,
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = latency_histogram();
    for task in fleet_tasks {
        latency.add(task.await??)?;
    }
    drop(providers);
    drop(node);

    std::fs::create_dir_all(&args.out)?;
    write_csv(&args.out.join("soak.csv"), &samples)?;
    std::fs::write(args.out.join("soak.svg"), svg(&samples, &args))?;
    let made = samples.last().map_or(0, |s| s.deals_made);
    let mut page = ipsx_benches::report::Report::new(
        "soak: a paying exchange churning 5-second leases",
        format!(
            "{:.0} minutes; memory and descriptors over time are in soak.svg beside this file",
            args.minutes
        ),
    );
    page.figure(
        "lease call sent → deal_made on the fleet's stream",
        "deals/s",
    )
    .peer(
        "ipsx node",
        made as f64 / (args.minutes * 60.0).max(1.0),
        Some(&latency),
    );
    page.write(&args.out.join("soak.html"))?;
    report(&args, &samples, &latency, leased.load(Ordering::Relaxed))
}

/// The verdict and the figures.
fn report(args: &Args, samples: &[Sample], latency: &Histogram<u64>, leased: u64) -> Result<()> {
    let warmup = args.warmup_minutes.unwrap_or((args.minutes / 6.0).min(5.0)) * 60.0;
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.seconds >= warmup).collect();
    ensure!(
        steady.len() >= 3,
        "too few samples after the warm-up ({})",
        steady.len()
    );
    let mut rss: Vec<f64> = steady.iter().map(|s| s.node_rss_kib as f64).collect();
    let middle = median(&mut rss);
    let worst = rss
        .iter()
        .map(|r| (r - middle).abs() / middle)
        .fold(0.0, f64::max);
    let (lo, hi) = (rss[0], rss[rss.len() - 1]);
    let fds: Vec<u64> = steady.iter().map(|s| s.node_fds).collect();
    let made = samples.last().map_or(0, |s| s.deals_made);
    let [p50, p99, p999, max] = percentiles(latency);
    println!(
        "\n{} deals made in {:.0} minutes ({leased} leased by the fleets)",
        made, args.minutes
    );
    println!(
        "node RSS after the warm-up ({:.0} s): median {:.1} MiB, {:.1}–{:.1} MiB, worst {:.1} % \
         from the median (bound {:.0} %)",
        warmup,
        middle / 1024.0,
        lo / 1024.0,
        hi / 1024.0,
        worst * 100.0,
        args.bound * 100.0
    );
    println!(
        "node file descriptors after the warm-up: {}–{}",
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0)
    );
    println!(
        "lease call sent → deal_made on the fleet's stream ({} deals): p50 {:?}  p99 {:?}  \
         p99.9 {:?}  max {:?}",
        latency.len(),
        p50,
        p99,
        p999,
        max
    );
    println!(
        "wrote {} and {}",
        args.out.join("soak.csv").display(),
        args.out.join("soak.svg").display()
    );
    ensure!(
        worst <= args.bound,
        "node RSS moved {:.1} % from its median after the warm-up (bound {:.0} %)",
        worst * 100.0,
        args.bound * 100.0
    );
    ensure!(made > 0, "no deal was made");
    Ok(())
}

/// One fleet: leases on a timer, pays every second, times each deal's notification.
async fn fleet(
    base: String,
    rpc_url: String,
    wallet: Wallet,
    every: Duration,
    lease_secs: u64,
    stop: Arc<AtomicBool>,
    leased: Arc<AtomicU64>,
) -> Result<Histogram<u64>> {
    let mut client = Client::new(&base);
    client.sign_in(&wallet).await?;
    ipsx_sdk::ensure_channel(&client, &wallet, &rpc_url, 200 * TOKEN).await?;
    let mut payer = Payer::connect(&client, &wallet).await?;
    let (commands, mut answers) =
        tokio::sync::mpsc::unbounded_channel::<(Vec<DealView>, Instant)>();
    let leaser = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let sent = Instant::now();
            let body = LeaseBody::new(1, lease_secs, TokenAmount(PRICE * 2));
            match client.lease(&body).await {
                Ok(answer) => {
                    leased.fetch_add(u64::from(answer.leased), Ordering::Relaxed);
                    let deals = answer.deals.into_iter().map(|view| view.deal).collect();
                    if commands.send((deals, sent)).is_err() {
                        break;
                    }
                }
                Err(error) => eprintln!("lease call failed: {error}"),
            }
        }
    });
    let mut latency = latency_histogram();
    // A deal's notification may come before or after its lease call's answer.
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut heard_at: HashMap<u64, Instant> = HashMap::new();
    let me = wallet.address();
    let mut last_prune = Instant::now();
    loop {
        match payer.next_or(&mut answers).await? {
            Next::Event(StreamEvent::DealMade { deal }) if deal.requester == me => {
                match sent_at.remove(&deal.deal) {
                    Some(sent) => record(&mut latency, sent.elapsed()),
                    None => {
                        heard_at.insert(deal.deal, Instant::now());
                    }
                }
            }
            Next::Event(_) => {}
            Next::Command(Some((deals, sent))) => {
                for deal in deals {
                    payer.expect(&deal);
                    match heard_at.remove(&deal.deal) {
                        Some(heard) => record(&mut latency, heard.duration_since(sent)),
                        None => {
                            sent_at.insert(deal.deal, sent);
                        }
                    }
                }
            }
            Next::Command(None) => break,
            Next::Closed => bail!("the node closed the fleet's stream"),
        }
        if last_prune.elapsed() > Duration::from_secs(30) {
            // Deals never told (refused, or made before a restart): not kept forever.
            last_prune = Instant::now();
            sent_at.retain(|_, at| at.elapsed() < Duration::from_secs(30));
            heard_at.retain(|_, at| at.elapsed() < Duration::from_secs(30));
        }
    }
    leaser.await?;
    payer.finish().await?;
    Ok(latency)
}

fn status_field(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("{field} of process {pid}"))
}

fn rss_kib(pid: u32) -> Result<u64> {
    status_field(pid, "VmRSS:")
}

fn fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// A metric's value from the Prometheus text (0 if absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .map_or(0, |value| value as u64)
}

fn write_csv(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut csv = String::from(
        "seconds,node_rss_kib,node_fds,open_deals,deals_made,providers_rss_kib,fleets_rss_kib\n",
    );
    for s in samples {
        writeln!(
            csv,
            "{:.0},{},{},{},{},{},{}",
            s.seconds,
            s.node_rss_kib,
            s.node_fds,
            s.open_deals,
            s.deals_made,
            s.providers_rss_kib,
            s.fleets_rss_kib
        )?;
    }
    std::fs::write(path, csv)?;
    Ok(())
}

/// Three panels over time: RSS (node, providers, fleets), the node's file descriptors, its
/// open deals. Plain SVG: a browser shows it, a diff reads it.
fn svg(samples: &[Sample], args: &Args) -> String {
    type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);
    let (width, panel, left, gap) = (900.0, 220.0, 70.0, 40.0);
    let end = samples.last().map_or(1.0, |s| s.seconds.max(1.0));
    let series = |value: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.seconds, value(s))).collect()
    };
    let panels: [(&str, Vec<Series>); 3] = [
        (
            "RSS (MiB)",
            vec![
                (
                    "node",
                    "#c0392b",
                    series(|s| s.node_rss_kib as f64 / 1024.0),
                ),
                (
                    "providers",
                    "#2980b9",
                    series(|s| s.providers_rss_kib as f64 / 1024.0),
                ),
                (
                    "fleets (SDK)",
                    "#27ae60",
                    series(|s| s.fleets_rss_kib as f64 / 1024.0),
                ),
            ],
        ),
        (
            "node file descriptors",
            vec![("fds", "#8e44ad", series(|s| s.node_fds as f64))],
        ),
        (
            "open deals",
            vec![("open", "#d35400", series(|s| s.open_deals as f64))],
        ),
    ];
    let height = 3.0 * (panel + gap) + gap;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">IPSX soak: {} min, \
         {} fleets × {} leases/s of {} s, retention {} s</text>\n",
        args.minutes, args.fleets, args.leases_per_second, args.lease_secs, args.deal_retention
    );
    for (index, (title, lines)) in panels.iter().enumerate() {
        let top = gap + index as f64 * (panel + gap);
        let peak = lines
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.1;
        let x = |t: f64| left + t / end * (width - left - 20.0);
        let y = |v: f64| top + panel - v / peak * panel;
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{panel}\" fill=\"none\" \
             stroke=\"#999\"/><text x=\"{left}\" y=\"{}\">{title}</text>\
             <text x=\"5\" y=\"{}\">{peak:.0}</text><text x=\"5\" y=\"{}\">0</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{end:.0} s</text>",
            width - left - 20.0,
            top - 5.0,
            top + 12.0,
            top + panel,
            width - 20.0,
            top + panel + 15.0
        );
        for (position, (name, color, points)) in lines.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" \
                 points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
                path.join(" "),
                width - 150.0,
                top + 15.0 + 14.0 * position as f64
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
