//! Load harness for the crawler endpoint (`ipsx gate`): 1 KiB pages over keep-alive from many
//! clients through (a) the gate, (b) the provider endpoints directly, (c) no proxy, in one run.
//!
//! ```text
//! bash scripts/bench-gate.sh                     # installs nginx (pinned), builds, runs
//! cargo run --release -p ipsx-benches --bin gate-load -- --rounds 3
//! ```
//!
//! Real processes on loopback: `ipsx node`, one `ipsx provide` daemon serving 2 × `--ips` loopback
//! aliases (127.0.0.2 …) in DE, nginx answering a 1 KiB page, and `ipsx gate` with a warm
//! pool. The harness leases the same number of IPs for (b) with its own wallet and spreads its
//! clients over their endpoints. Each client is a keep-alive HTTP client (reqwest) configured
//! with its proxy URL, as a crawler would be. Then, with the pool warm, one client sends
//! requests that each open a new sticky session (`…-session-N`) to time a session's first
//! request. Reported: requests/s and HDR latency percentiles per path, the CPU time the gate and
//! the provider's proxy spend per request (from `/proc`), medians over the rounds, and the
//! ratios the gate aims for: (a) ≥ 0.7 × (b) in requests/s, p99 added by the gate ≤ 2 ms, a new
//! session's first request ≤ 20 ms p99.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Parser;
use hdrhistogram::Histogram;
use ipsx_benches::processes::{Nginx, Process, spawn_ipsx, wait_http};
use ipsx_benches::{latency_histogram, median, percentiles, record_since, stop_and_merge};
use ipsx_sdk::{Client, LeaseBody, TokenAmount, Wallet};

#[derive(Parser)]
#[command(about = "IPSX gate load harness (gate vs provider endpoints vs no proxy)")]
struct Args {
    /// Rounds (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients (keep-alive connections).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Provider IPs (loopback aliases 127.0.0.2 onwards); the gate and the harness lease as
    /// many each.
    #[arg(long, default_value_t = 4)]
    ips: u8,
    /// New sessions timed per round.
    #[arg(long, default_value_t = 500)]
    sessions: usize,
    /// Extra arguments for `ipsx gate` (repeat), e.g. `--gate-arg=--threads --gate-arg=1`.
    #[arg(long = "gate-arg", allow_hyphen_values = true)]
    gate_args: Vec<String>,
    /// The `ipsx` binary (default: next to this one).
    #[arg(long)]
    ipsx: Option<PathBuf>,
    /// nginx, from Debian.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Where the HTML report goes [default: target/bench-reports/gate-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
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
    let node_dir = dir.path().join("node");
    let (_node, listening) = spawn_ipsx(
        &ipsx,
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            node_dir.to_str().context("utf-8")?,
        ],
        "listening ",
    )?;
    let node = format!("http://{listening}");

    // Twice the IPs: as many for the gate as for the harness's own lease.
    let ips: Vec<String> = (0..args.ips.saturating_mul(2))
        .map(|i| format!("127.0.0.{}", 2 + i))
        .collect();
    let port = free_port(&ips)?;
    let provider_key = dir.path().join("provider.key");
    std::fs::write(&provider_key, "22".repeat(32))?;
    let quoted: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"{node}\"\nkey_file = \"{}\"\nport = {port}\nallow_loopback = true\n\
             data_dir = \"provider\"\n[[offer]]\nips = [{}]\ncountry = \"DE\"\n\
             protocols = [\"http\", \"https\", \"socks5\"]\nprice = 1\nhours = 2\n",
            provider_key.display(),
            quoted.join(", ")
        ),
    )?;
    let (provider, _) = spawn_ipsx(
        &ipsx,
        &["provide", "--config", config.to_str().context("utf-8")?],
        "offer ",
    )?;

    let origin = start_nginx(&args.nginx, dir.path())?;
    let page = format!("http://{}/page", origin.1);
    wait_http(&page).await?;

    let gate_key = dir.path().join("gate.key");
    std::fs::write(&gate_key, "33".repeat(32))?;
    let warm = args.ips.to_string();
    let mut gate_args = vec![
        "gate",
        "--node",
        &node,
        "--key-file",
        gate_key.to_str().context("utf-8")?,
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "off",
        "--max-price",
        "1",
        "--max-ips",
        &warm,
        "--warm",
        &warm,
        "--batch",
        &warm,
    ];
    gate_args.extend(args.gate_args.iter().map(String::as_str));
    let (gate_process, gate_addr) = spawn_ipsx(&ipsx, &gate_args, "listening ")?;

    // (b): the harness's own lease of as many IPs, endpoints straight to the provider.
    let mut fleet = Client::new(&node);
    fleet
        .sign_in(&Wallet::from_bytes(&[0x44; 32].into())?)
        .await?;
    let leased = fleet
        .lease(
            &LeaseBody::new(u32::from(args.ips), 3_600, TokenAmount(1))
                .countries(["DE"])
                .protocols([ipsx_sdk::Protocol::Http]),
        )
        .await?;
    let endpoints: Vec<String> = leased
        .deals
        .iter()
        .flat_map(|deal| &deal.endpoints)
        .filter_map(|endpoint| endpoint.http.clone())
        .collect();
    if endpoints.len() != usize::from(args.ips) {
        bail!("leased {} of {} IPs for (b)", endpoints.len(), args.ips);
    }
    let gate = format!("http://bench-country-de:x@{gate_addr}");
    // Warm the gate's pool (its first request leases).
    warm_up(&gate, &page).await?;

    let mut rates: [Vec<f64>; 3] = Default::default();
    // CPU µs per request of [the gate, the provider's proxy], per path.
    let mut cpu: [[Vec<f64>; 2]; 3] = Default::default();
    let mut latency = [
        latency_histogram(),
        latency_histogram(),
        latency_histogram(),
    ];
    let mut first = latency_histogram();
    for round in 1..=args.rounds {
        let paths: [Vec<Option<String>>; 3] = [
            vec![Some(gate.clone())],
            endpoints.iter().cloned().map(Some).collect(),
            vec![None],
        ];
        let mut line = format!("round {round}:");
        for (index, proxies) in paths.iter().enumerate() {
            let before = [cpu_time(&gate_process), cpu_time(&provider)];
            let (rate, histogram) = load(&page, proxies, args.clients, args.seconds).await?;
            let requests = rate * args.seconds;
            for (who, (start, process)) in before.iter().zip([&gate_process, &provider]).enumerate()
            {
                let spent = cpu_time(process).saturating_sub(*start);
                cpu[index][who].push(spent.as_secs_f64() * 1e6 / requests.max(1.0));
            }
            line.push_str(&format!(" {:>9.0}/s", rate));
            rates[index].push(rate);
            latency[index].add(&histogram)?;
        }
        let sessions = first_requests(&gate_addr, &page, round, args.sessions).await?;
        first.add(&sessions)?;
        eprintln!("{line} (gate, provider endpoints, no proxy)");
    }
    let names = [
        "(a) through the gate",
        "(b) provider endpoints directly",
        "(c) no proxy",
    ];
    println!(
        "\n| {} clients, 1 KiB pages, keep-alive | requests/s | p50 | p99 | p99.9 | max |\n| --- | --- | --- | --- | --- | --- |",
        args.clients
    );
    let mut medians = [0.0; 3];
    for index in 0..3 {
        medians[index] = median(&mut rates[index]);
        let [p50, p99, p999, max] = percentiles(&latency[index]);
        println!(
            "| {} | {:.0} | {p50:.2?} | {p99:.2?} | {p999:.2?} | {max:.2?} |",
            names[index], medians[index]
        );
    }
    let [f50, f99, f999, fmax] = percentiles(&first);
    println!(
        "| a new session's first request (warm pool, one client) | — | {f50:.2?} | {f99:.2?} | {f999:.2?} | {fmax:.2?} |"
    );
    let (gate_a, provider_a, provider_b) = (
        median(&mut cpu[0][0]),
        median(&mut cpu[0][1]),
        median(&mut cpu[1][1]),
    );
    println!(
        "\nCPU per request: the gate {gate_a:.1} µs, the provider's proxy {provider_a:.1} µs \
         behind it; the provider's proxy {provider_b:.1} µs serving clients directly"
    );
    let p99 = |h: &Histogram<u64>| Duration::from_nanos(h.value_at_quantile(0.99));
    let added = p99(&latency[0]).saturating_sub(p99(&latency[1]));
    println!(
        "\n(a)/(b) = {:.2}× (aim ≥ 0.70×); (b)/(c) = {:.2}×; p99 added by the gate {added:.2?} \
         (aim ≤ 2 ms); a new session's first request p99 {f99:.2?} (aim ≤ 20 ms); medians of {} \
         rounds",
        medians[0] / medians[1],
        medians[1] / medians[2],
        args.rounds
    );
    let mut page = ipsx_benches::report::Report::new(
        "gate-load: the crawler endpoint against provider endpoints and no proxy",
        format!(
            "medians of {} rounds of {} s, {} keep-alive clients, 1 KiB pages",
            args.rounds, args.seconds, args.clients
        ),
    );
    let figure = page.figure("requests through each path", "requests/s");
    for index in 0..3 {
        figure.peer(names[index], medians[index], Some(&latency[index]));
    }
    page.figure(
        "a new session's first request (warm pool, one client)",
        "sessions",
    )
    .peer("the gate", args.sessions as f64, Some(&first));
    page.write(
        &args
            .report
            .clone()
            .unwrap_or_else(|| ipsx_benches::report::Report::default_path("gate-load")),
    )?;
    Ok(())
}

/// `clients` keep-alive clients spread over `proxies` (None: straight to the page), each
/// fetching the page in a loop for `seconds`: requests/s and latency.
async fn load(
    page: &str,
    proxies: &[Option<String>],
    clients: usize,
    seconds: f64,
) -> Result<(f64, Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut http_clients = Vec::new();
    for i in 0..clients {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(1);
        builder = match &proxies[i % proxies.len()] {
            Some(proxy) => builder.proxy(reqwest::Proxy::http(proxy)?),
            None => builder.no_proxy(),
        };
        http_clients.push(builder.build()?);
    }
    let started = Instant::now();
    for http in http_clients {
        let (page, stop) = (page.to_owned(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let began = Instant::now();
                let whole = match http.get(&page).send().await {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_ok_and(|body| body.len() == 1024)
                    }
                    _ => false,
                };
                if whole {
                    record_since(&mut histogram, began);
                }
            }
            histogram
        }));
    }
    let (all, elapsed) = stop_and_merge(tasks, &stop, seconds, started).await?;
    Ok((all.len() as f64 / elapsed, all))
}

/// One client, one kept-alive connection to the gate: each request opens a new session.
async fn first_requests(
    gate: &str,
    page: &str,
    round: usize,
    sessions: usize,
) -> Result<Histogram<u64>> {
    let mut histogram = latency_histogram();
    // The session is in the Proxy-Authorization of each request; reqwest's proxy settings are
    // per client, so the header is set by hand on a client that knows the gate as its proxy.
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{gate}"))?)
        .build()?;
    for n in 0..sessions {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("bench-country-de-session-r{round}n{n}:x"));
        let began = Instant::now();
        let response = http
            .get(page)
            .header("proxy-authorization", format!("Basic {token}"))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("a new session was refused: {}", response.status());
        }
        response.bytes().await?;
        record_since(&mut histogram, began);
    }
    Ok(histogram)
}

async fn warm_up(gate: &str, page: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(gate)?)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = http.get(page).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gate did not serve within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// nginx with one worker answering `/page` with 1 KiB; returns it and its address.
fn start_nginx(nginx: &Path, dir: &Path) -> Result<(Nginx, String)> {
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("logs"))?;
    let port = free_port(&["127.0.0.1".to_owned()])?;
    std::fs::write(
        root.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi;\n\
             scgi_temp_path {dir}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location /page {{ return 200 \"{body}\"; }} }} }}\n",
            dir = root.display(),
            body = "x".repeat(1024)
        ),
    )?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (scripts/bench-gate.sh installs it)",
                nginx.display()
            )
        })?;
    Ok((Nginx(child), format!("127.0.0.1:{port}")))
}

/// User + system CPU time a child has used so far (Linux `/proc/PID/stat`; zero elsewhere).
fn cpu_time(process: &Process) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", process.0.id())).unwrap_or_default();
    // Fields after the command name (which sits in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |at: usize| {
        fields
            .get(at)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the name), in clock ticks (100/s).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A port free on every one of `ips`.
fn free_port(ips: &[String]) -> Result<u16> {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind(format!("{}:0", ips[0]))?
            .local_addr()?
            .port();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind(format!("{ip}:{port}")).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no port free on every provider IP")
}
