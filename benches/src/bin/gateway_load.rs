//! Load harness for the node's lease calls over loopback, against nginx serving a static
//! response on the same machine in the same run (the ceiling for an HTTP round trip here).
//!
//! ```text
//! bash scripts/bench-gateway.sh                  # installs nginx and wrk (pinned), builds, runs
//! cargo run --release -p ipsx-benches --bin gateway-load -- --rounds 3
//! ```
//!
//! Each round: `--clients` signed-in fleets, each on its own keep-alive connection, call
//! `POST /v1/leases` (`--ips-per-lease` IPs, 5 s leases) for `--seconds`; then the same client
//! code calls nginx's static `GET /` with the same concurrency; then `wrk -t2 -c64` measures
//! nginx on its own. Reported: lease calls/s, leased IPs/s, HDR latency percentiles, and the
//! ratios, medians over the rounds. The node runs as its own process (`ipsx node`), so it has
//! the machine's cores to share with the clients as nginx does.
//!
//! `--cluster` runs the market on three `ipsx node --cluster` processes over three nats-servers
//! (JetStream R3) instead, the fleets' clients listing all three: every lease call is then
//! answered only once a quorum of the servers stored its record. Run it after a plain run in
//! the same sitting to compare.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use ipsx_benches::processes::{Nginx, Process, spawn_ipsx, wait_http};
use ipsx_benches::{latency_histogram, median, percentiles, record_since, stop_and_merge};
use ipsx_engine_cluster::local::LocalNats;
use ipsx_sdk::{Client, LeaseBody, OfferBody, TokenAmount, Wallet};

#[derive(Parser)]
#[command(about = "IPSX gateway load harness (lease calls vs nginx)")]
struct Args {
    /// Rounds (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// IPs asked for in each lease call.
    #[arg(long, default_value_t = 10)]
    ips_per_lease: u32,
    /// The `ipsx` binary (default: next to this one).
    #[arg(long)]
    ipsx: Option<PathBuf>,
    /// /16 blocks offered (at most 64).
    #[arg(long, default_value_t = 16)]
    blocks: u8,
    /// Tenants per IP (1: exclusive leases; more: IPs shared by overlapping leases).
    #[arg(long, default_value_t = 1)]
    tenants: u16,
    /// Extra arguments for `ipsx node` (repeat), e.g. `--node-arg=--fsync --node-arg=never`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// nginx, from Debian.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// wrk, from Debian.
    #[arg(long, default_value = "/usr/bin/wrk")]
    wrk: PathBuf,
    /// Three nodes in a cluster over three nats-servers (JetStream R3) instead of one node.
    #[arg(long)]
    cluster: bool,
    /// Where the HTML report goes [default: target/bench-reports/gateway-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(harness(args))
}

async fn harness(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ipsx = match &args.ipsx {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("harness path")?
            .join("ipsx"),
    };
    let (_nodes, _nats, urls) = if args.cluster {
        start_cluster(&ipsx, dir.path(), &args.node_args).await?
    } else {
        let (node, url) = start_node(&ipsx, dir.path(), "127.0.0.1:0", &[], &args.node_args)?;
        (vec![node], None, vec![url])
    };
    let base = urls.join(",");

    // A market deep enough for every round: by default 16 /16 blocks (1,048,576 IPs), each IP
    // leased to one tenant at a time — the common, exclusive case; `--blocks 4 --tenants 1024`
    // measures IPs shared by many overlapping leases instead.
    let mut provider = Client::new(&base);
    provider.sign_in(&wallet(1)).await?;
    let until = unix_now() + 3600;
    for block in 0..args.blocks.min(64) {
        let mut offer = OfferBody::new(
            Vec::new(),
            "DE",
            ipsx_sdk::IpKind::Datacenter,
            [ipsx_sdk::Protocol::Socks5],
            until,
            TokenAmount(1),
        );
        offer.cidr = Some(format!("100.{}.0.0/16", 64 + block));
        offer.tenants = args.tenants;
        provider.place_offer(&offer).await?;
    }
    let mut fleets = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut fleet = Client::new(&base);
        let seed = u8::try_from(i % 200).unwrap_or(0) + 2;
        let mut key = [seed; 32];
        key[0] = u8::try_from(i / 200).unwrap_or(0) + 1;
        let wallet = Wallet::from_bytes(&key.into()).context("wallet")?;
        // Sign-ins are rate-limited per client IP (all of them are 127.0.0.1 here): pace them.
        loop {
            match fleet.sign_in(&wallet).await {
                Ok(_) => break,
                Err(error) if error.code() == Some(ipsx_sdk::ErrorCode::RateLimited) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        fleets.push(fleet);
    }

    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(nginx_dir.join("logs"))?;
    let nginx_port = free_port()?;
    std::fs::write(
        nginx_dir.join("nginx.conf"),
        format!(
            "worker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
             server {{ listen 127.0.0.1:{nginx_port}; location / {{ return 200 \"ok\"; }} }} }}\n",
            dir = nginx_dir.display()
        ),
    )?;
    let nginx = Command::new(&args.nginx)
        .arg("-p")
        .arg(&nginx_dir)
        .arg("-c")
        .arg(nginx_dir.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (scripts/bench-gateway.sh installs it)",
                args.nginx.display()
            )
        })?;
    let _nginx = Nginx(nginx);
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    wait_http(&nginx_url).await?;

    let mut lease_rates = Vec::new();
    let mut ip_rates = Vec::new();
    let mut nginx_rates = Vec::new();
    let mut wrk_rates = Vec::new();
    let mut lease_latency = latency_histogram();
    let mut nginx_latency = latency_histogram();
    for round in 1..=args.rounds {
        let (calls, ips, histogram, failures) =
            lease_load(&fleets, args.ips_per_lease, args.seconds).await?;
        let (static_calls, static_histogram) =
            static_load(&nginx_url, args.clients, args.seconds).await?;
        let wrk = run_wrk(&args.wrk, &nginx_url, args.seconds)?;
        eprintln!(
            "round {round}: leases {calls:9.0}/s ({ips:9.0} IPs/s, failures {failures}), nginx same client {static_calls:9.0}/s, wrk {wrk:9.0}/s"
        );
        lease_rates.push(calls);
        ip_rates.push(ips);
        nginx_rates.push(static_calls);
        wrk_rates.push(wrk);
        lease_latency.add(&histogram)?;
        nginx_latency.add(&static_histogram)?;
    }
    let (leases, ips) = (median(&mut lease_rates), median(&mut ip_rates));
    let (same_client, wrk) = (median(&mut nginx_rates), median(&mut wrk_rates));
    let [p50, p99, p999, max] = percentiles(&lease_latency);
    let [n50, n99, n999, _] = percentiles(&nginx_latency);
    println!(
        "\n| what | calls/s | IPs/s | p50 | p99 | p99.9 |\n| --- | --- | --- | --- | --- | --- |"
    );
    println!(
        "| POST /v1/leases ({} IPs, {} clients{}) | {leases:.0} | {ips:.0} | {p50:.2?} | {p99:.2?} | {p999:.2?} |",
        args.ips_per_lease,
        args.clients,
        if args.cluster {
            ", cluster of 3, JetStream R3"
        } else {
            ""
        }
    );
    println!(
        "| nginx static, same client | {same_client:.0} | — | {n50:.2?} | {n99:.2?} | {n999:.2?} |"
    );
    println!("| nginx static, wrk -t2 -c64 | {wrk:.0} | — | — | — | — |");
    println!(
        "\nlease calls / nginx (same client) = {:.2}×, / nginx (wrk) = {:.2}×; max lease latency {max:.2?} (medians of {} rounds)",
        leases / same_client,
        leases / wrk,
        args.rounds
    );
    let mut page = ipsx_benches::report::Report::new(
        "gateway-load: lease calls through the node against nginx",
        format!(
            "medians of {} rounds of {} s, {} clients, {} IPs a lease call",
            args.rounds, args.seconds, args.clients, args.ips_per_lease
        ),
    );
    page.figure("HTTP calls answered", "calls/s")
        .peer("ipsx POST /v1/leases", leases, Some(&lease_latency))
        .peer(
            "nginx static, same client",
            same_client,
            Some(&nginx_latency),
        )
        .peer("nginx static, wrk -t2 -c64", wrk, None);
    page.figure("IPs leased", "IPs/s")
        .peer("ipsx POST /v1/leases", ips, None);
    page.write(
        &args
            .report
            .clone()
            .unwrap_or_else(|| ipsx_benches::report::Report::default_path("gateway-load")),
    )?;
    Ok(())
}

/// Starts `ipsx node` with its data under `dir`, listening on `listen`; the process and its URL.
fn start_node(
    ipsx: &std::path::Path,
    dir: &std::path::Path,
    listen: &str,
    cluster: &[String],
    extra: &[String],
) -> Result<(Process, String)> {
    let data = dir.join(format!("node-{}", listen.replace(':', "-")));
    let data = data.display().to_string();
    let mut args = vec![
        "node",
        // The load's offers are served by no proxy.
        "--no-offer-probe",
        "--listen",
        listen,
        "--session-rate",
        "1000000",
        "--data-dir",
        &data,
    ];
    args.extend(cluster.iter().chain(extra).map(String::as_str));
    let (node, addr) = spawn_ipsx(ipsx, &args, "listening ")?;
    Ok((node, format!("http://{addr}")))
}

/// Three nats-servers and three cluster nodes; the nodes' URLs, the leader's first.
async fn start_cluster(
    ipsx: &std::path::Path,
    dir: &std::path::Path,
    extra: &[String],
) -> Result<(Vec<Process>, Option<LocalNats>, Vec<String>)> {
    let nats =
        LocalNats::start(&dir.join("nats"), 3).context("nats-server (apt install nats-server)")?;
    let servers = nats.urls().join(",");
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for n in 1..=3 {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let cluster = [
            "--cluster".to_owned(),
            servers.clone(),
            "--node-id".to_owned(),
            format!("n{n}"),
        ];
        let (node, url) = start_node(ipsx, dir, &listen, &cluster, extra)?;
        nodes.push(node);
        urls.push(url);
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (at, url) in urls.iter().enumerate() {
            let view: Option<ipsx_sdk::ClusterView> =
                match http.get(format!("{url}/v1/cluster")).send().await {
                    Ok(response) => response.json().await.ok(),
                    Err(_) => None,
                };
            if view.is_some_and(|view| view.role == ipsx_sdk::ClusterRole::Leading) {
                urls.swap(0, at);
                return Ok((nodes, Some(nats), urls));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no node of the cluster leads after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wallet(seed: u8) -> Wallet {
    Wallet::from_bytes(&[seed; 32].into()).expect("a valid key")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every fleet leases in a loop for `seconds`: (calls/s, IPs/s, latency, failures).
async fn lease_load(
    fleets: &[Client],
    ips_per_lease: u32,
    seconds: f64,
) -> Result<(f64, f64, Histogram<u64>, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let leased = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let body = LeaseBody::new(ips_per_lease, 5, TokenAmount(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for fleet in fleets {
        let (fleet, body) = (fleet.clone(), body.clone());
        let (stop, leased, failures) = (stop.clone(), leased.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                match fleet.lease(&body).await {
                    Ok(answer) => {
                        leased.fetch_add(u64::from(answer.leased), Ordering::Relaxed);
                        record_since(&mut histogram, began);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }
    let (all, elapsed) = stop_and_merge(tasks, &stop, seconds, started).await?;
    Ok((
        all.len() as f64 / elapsed,
        leased.load(Ordering::Relaxed) as f64 / elapsed,
        all,
        failures.load(Ordering::Relaxed),
    ))
}

/// The same client loop against nginx's static answer.
async fn static_load(url: &str, clients: usize, seconds: f64) -> Result<(f64, Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, stop) = (url.to_owned(), stop.clone());
        let http = reqwest::Client::new();
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let answered = match http.get(&url).send().await {
                    Ok(response) => response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if answered {
                    record_since(&mut histogram, began);
                }
            }
            histogram
        }));
    }
    let (all, elapsed) = stop_and_merge(tasks, &stop, seconds, started).await?;
    Ok((all.len() as f64 / elapsed, all))
}

/// `wrk -t2 -c64 -d<seconds>s`: requests per second.
fn run_wrk(wrk: &PathBuf, url: &str, seconds: f64) -> Result<f64> {
    let output = Command::new(wrk)
        .args([
            "-t2",
            "-c64",
            &format!("-d{}s", seconds.ceil().max(1.0)),
            url,
        ])
        .output()
        .with_context(|| {
            format!(
                "running {} (scripts/bench-gateway.sh installs it)",
                wrk.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}
