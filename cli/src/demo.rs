//! `ipsx demo`: a whole exchange on this machine, end to end, in about a minute.
//!
//! 1. anvil (from `contracts/node_modules`), the real contracts deployed from their bytecode;
//!    the node's wallet is the treasury, the fleet's wallet gets tokens.
//! 2. A node with payments, providers on loopback aliases (127.0.0.2 …) in several countries
//!    each running the egress proxy, and a test site on 127.0.0.1 that records the source IP
//!    of every request.
//! 3. A crawling fleet opens a channel, leases IPs by country, crawls the site through every
//!    endpoint, pays every second, cancels one lease early and lets the others run out.
//! 4. The node anchors its deal book on chain epoch by epoch; the fleet checks every deal's
//!    entries against the anchored roots.
//! 5. Providers and node claim on chain; the report compares the chain with the meters: each
//!    provider's balance = its metered usage − commission, the node's claim on the fleet's
//!    channel = everything metered, to the wei. The command fails if anything differs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use ipsx_channels::ChannelId;
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, deploy_local, spawn_anvil};
use ipsx_gateway::{GatewayConfig, PaymentsConfig, ProbeSettings};
use ipsx_sdk::{Client, LeaseBody, LeaseView, Payer, StreamEvent, TokenAmount, Wallet};
use tokio::sync::oneshot;

use crate::provide::{OfferConfig, ProvideConfig, ProviderSummary};

const TOKEN: u128 = 1_000_000_000_000_000_000;
const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "JP"];

/// Options of `ipsx demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Providers, each in its own country (up to 4).
    #[arg(long, default_value_t = 3)]
    providers: usize,
    /// IPs each provider offers (loopback aliases 127.0.0.2 onwards).
    #[arg(long, default_value_t = 3)]
    ips_per_provider: usize,
    /// Seconds each lease lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Requests the fleet sends through each endpoint.
    #[arg(long, default_value_t = 5)]
    requests_per_ip: usize,
    /// Contract commission, basis points.
    #[arg(long, default_value_t = 250)]
    commission_bps: u16,
    /// Keep the node's and providers' data here (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// A step heading, with the time since the start.
struct Progress {
    started: Instant,
    step: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!(
            "[{:>5.1}s] {}. {what}",
            self.started.elapsed().as_secs_f64(),
            self.step
        );
    }

    fn note(&self, what: &str) {
        println!("          {what}");
    }
}

fn tokens(amount: u128) -> String {
    format!("{}.{:018}", amount / TOKEN, amount % TOKEN)
}

/// The test site: every request's source IP is recorded.
struct Site {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<IpAddr, u64>>>,
}

async fn start_site() -> anyhow::Result<Site> {
    use axum::extract::{ConnectInfo, Path, State};
    let seen: Arc<Mutex<HashMap<IpAddr, u64>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/page/{n}",
            axum::routing::get(
                |State(seen): State<Arc<Mutex<HashMap<IpAddr, u64>>>>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 Path(n): Path<u32>| async move {
                    *seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(peer.ip())
                        .or_default() += 1;
                    format!("page {n} for {}\n{}", peer.ip(), "x".repeat(4096))
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(Site { addr, seen })
}

/// A port free on every provider IP (the proxy listens on one port on all of them).
fn free_port(ips: &[IpAddr]) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let probe = std::net::TcpListener::bind(SocketAddr::new(ips[0], 0))?;
        let port = probe.local_addr()?.port();
        drop(probe);
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no port free on every provider IP")
}

/// Crawls the site through one endpoint; returns the responses that came back whole.
async fn crawl(proxy: String, site: SocketAddr, pages: usize) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&proxy)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut ok = 0;
    for page in 0..pages {
        let response = client
            .get(format!("http://{site}/page/{page}"))
            .send()
            .await?;
        if response.status().is_success() && response.bytes().await?.len() > 4096 {
            ok += 1;
        }
    }
    Ok(ok)
}

struct RunningProvider {
    wallet: Wallet,
    client: Client,
    country: &'static str,
    ips: Vec<IpAddr>,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<ProviderSummary>>,
}

/// Runs the demo; fails if the chain and the meters disagree by a wei.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=COUNTRIES.len()).contains(&args.providers),
        "--providers must be 1 to {}",
        COUNTRIES.len()
    );
    ensure!(
        (1..=50).contains(&args.ips_per_provider),
        "--ips-per-provider must be 1 to 50"
    );
    ensure!(args.seconds >= 6, "--seconds must be at least 6");
    let mut progress = Progress {
        started: Instant::now(),
        step: 0,
    };
    let temporary = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)?;

    progress.step("starting anvil and deploying the contracts");
    let anvil = spawn_anvil()?;
    let rpc_url = anvil.endpoint();
    let anvil_key = |index: usize| -> anyhow::Result<Wallet> {
        let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
        Ok(Wallet::from_bytes(&bytes.into())?)
    };
    let node_wallet = anvil_key(0)?;
    let fleet_wallet = anvil_key(1)?;
    let node_key = ipsx_sdk::signing_key(&node_wallet)?;
    let deployment = deploy_local(
        &rpc_url,
        &node_key,
        DeploySettings {
            commission_bps: args.commission_bps,
            challenge_period: 3_600,
            treasury: node_key.address(),
        },
    )
    .await?;
    let node_chain =
        ChainClient::connect(&rpc_url, deployment.centralizer, node_key.clone()).await?;
    progress.note(&format!(
        "chain {} at {rpc_url}: token {}, Centralizer {} ({} bps commission), DealAnchor {}",
        node_chain.domain().chain_id(),
        deployment.token,
        deployment.centralizer,
        args.commission_bps,
        deployment.anchor
    ));

    progress.step("funding wallets");
    let provider_deposit = 100 * TOKEN;
    node_chain
        .deposit_with_permit(provider_deposit * args.providers as u128 * 2)
        .await?;
    node_chain
        .transfer_tokens(fleet_wallet.address(), 500 * TOKEN)
        .await?;
    progress.note(&format!(
        "node {} deposited {} IPSX for provider channels; fleet {} holds 500 IPSX",
        node_wallet.address(),
        provider_deposit * args.providers as u128 * 2 / TOKEN,
        fleet_wallet.address()
    ));

    progress.step("starting the node");
    let mut config = GatewayConfig::new(
        "127.0.0.1:0".parse()?,
        node_chain.domain().chain_id(),
        {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            key
        },
        data_dir.join("node"),
    );
    let mut payments = PaymentsConfig::new(&rpc_url, deployment.centralizer, node_key.clone());
    payments.provider_deposit = provider_deposit;
    payments.settle_every = Duration::from_secs(3_600);
    config.payments = Some(payments);
    // Short epochs, so the run's deals are on chain before it ends.
    let mut anchor = ipsx_gateway::anchoring::AnchorConfig::new(deployment.anchor);
    anchor.epochs.max_seconds = 2;
    anchor.check_every = Duration::from_millis(200);
    config.anchor = Some(anchor);
    config.probe = Some(ProbeSettings::new(""));
    std::fs::create_dir_all(data_dir.join("node"))?;
    let node = ipsx_gateway::start(config).await?;
    let node_url = format!("http://{}", node.addr);
    progress.note(&format!(
        "node API at {node_url}; the market's dashboard at {node_url}/ for the run"
    ));

    let site = start_site().await?;
    progress.note(&format!("test site at http://{}", site.addr));

    progress.step("starting providers on loopback aliases");
    let mut providers = Vec::new();
    let all_ips: Vec<IpAddr> = (0..args.providers * args.ips_per_provider)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).unwrap_or(0))))
        .collect();
    let port = free_port(&all_ips)?;
    for (index, country) in COUNTRIES.iter().take(args.providers).enumerate() {
        let wallet = anvil_key(2 + index)?;
        let ips =
            all_ips[index * args.ips_per_provider..(index + 1) * args.ips_per_provider].to_vec();
        let price = (10 + 5 * index as u128) * TOKEN / 10_000;
        let config = ProvideConfig {
            node: node_url.clone(),
            key_file: PathBuf::new(),
            port,
            allow_loopback: true,
            rpc_url: rpc_url.clone(),
            data_dir: PathBuf::new(),
            settle_every_secs: 3_600,
            label: format!("          provider {country}: "),
            relay: false,
            relay_bind: None,
            offers: vec![OfferConfig {
                ips: ips.clone(),
                cidr: None,
                country: (*country).to_owned(),
                city: None,
                kind: ipsx_sdk::IpKind::Residential,
                protocols: vec![
                    ipsx_sdk::Protocol::Socks5,
                    ipsx_sdk::Protocol::Http,
                    ipsx_sdk::Protocol::Https,
                ],
                price,
                hours: 1,
                asn: 0,
            }],
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, is_ready) = oneshot::channel::<()>();
        let provider_dir = data_dir.join(format!("provider-{country}"));
        let serving = wallet.clone();
        let done = tokio::spawn(async move {
            crate::provide::serve(config, serving, provider_dir, Some(ready), async {
                let _ = stopped.await;
            })
            .await
        });
        is_ready
            .await
            .context("a provider stopped before serving")?;
        let mut client = Client::new(&node_url);
        client.sign_in(&wallet).await?;
        progress.note(&format!(
            "provider {} in {country}: {} IPs {}…{} at {} IPSX per IP-second",
            wallet.address(),
            ips.len(),
            ips[0],
            ips[ips.len() - 1],
            tokens(price)
        ));
        providers.push(RunningProvider {
            wallet,
            client,
            country,
            ips,
            stop,
            done,
        });
    }

    progress.step("the fleet opens a payment channel and leases IPs by country");
    let mut fleet = Client::new(&node_url);
    fleet.sign_in(&fleet_wallet).await?;
    let channel = ipsx_sdk::ensure_channel(&fleet, &fleet_wallet, &rpc_url, 100 * TOKEN).await?;
    progress.note(&format!(
        "channel {} to the node with {} IPSX",
        channel.channel,
        channel.deposit.0 / TOKEN
    ));
    let mut payer = Payer::connect(&fleet, &fleet_wallet).await?;
    // Every IP of the first two countries in one call; the rest (cancelled half-way) in another.
    let split = args.providers.min(2);
    let mut deals: Vec<LeaseView> = Vec::new();
    for (countries, note) in [
        (&COUNTRIES[..split], ""),
        (
            &COUNTRIES[split..args.providers],
            " (this lease is cancelled half-way)",
        ),
    ] {
        if countries.is_empty() {
            continue;
        }
        let leased = fleet
            .lease(
                &LeaseBody::new(
                    u32::try_from(countries.len() * args.ips_per_provider)?,
                    args.seconds,
                    TokenAmount(TOKEN / 100),
                )
                .countries(countries.iter().copied())
                .protocols([ipsx_sdk::Protocol::Http]),
            )
            .await?;
        progress.note(&format!(
            "leased {} IPs in {}{note}",
            leased.leased,
            countries.join("+")
        ));
        deals.extend(leased.deals);
    }
    ensure!(!deals.is_empty(), "nothing was leased");
    for deal in &deals {
        payer.expect(&deal.deal);
    }
    print!(
        "{}",
        crate::output::leases(&deals, crate::output::Format::Table)?
    );

    progress.step("crawling the site through every endpoint, paying every second");
    let mut crawlers = tokio::task::JoinSet::new();
    for endpoint in deals.iter().flat_map(|deal| &deal.endpoints) {
        let proxy = endpoint.http.clone().context("an endpoint without HTTP")?;
        let ip = endpoint.ip;
        let site = site.addr;
        let pages = args.requests_per_ip;
        crawlers.spawn(async move { (ip, crawl(proxy, site, pages).await) });
    }
    let cancel_at = Instant::now() + Duration::from_secs(args.seconds / 2);
    let cancelled: Option<u64> = (args.providers > 2)
        .then(|| deals.last().map(|deal| deal.deal.deal))
        .flatten();
    let mut cancel_pending = cancelled.is_some();
    let mut final_terms: BTreeMap<u64, ipsx_sdk::LeaseTermsView> = BTreeMap::new();
    let mut last_note = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 30);
    while !payer.all_ended() {
        ensure!(Instant::now() < deadline, "the leases did not end in time");
        let event = tokio::time::timeout(Duration::from_millis(500), payer.next()).await;
        if let Ok(event) = event {
            match event? {
                Some(StreamEvent::LeaseReady { terms, .. }) => {
                    progress.note(&format!(
                        "deal {} ready: charged from {} to {} at {} IPSX/s",
                        terms.deal,
                        terms.start,
                        terms.end,
                        tokens(terms.rate.0)
                    ));
                }
                Some(StreamEvent::LeaseEnded { terms, status, .. }) => {
                    progress.note(&format!(
                        "deal {} {status}: {} s charged",
                        terms.deal,
                        terms.end - terms.start
                    ));
                    final_terms.insert(terms.deal, terms);
                }
                Some(StreamEvent::CutOff { deal, .. }) => bail!("deal {deal} was cut off"),
                Some(StreamEvent::Error { code, message }) => {
                    bail!("the node refused a proof: {code}: {message}")
                }
                Some(_) => {}
                None => bail!("the node closed the stream"),
            }
        }
        if cancel_pending && Instant::now() >= cancel_at {
            cancel_pending = false;
            if let Some(deal) = cancelled {
                let view = fleet.cancel_deal(deal).await?;
                progress.note(&format!("cancelled deal {deal}: {}", view.deal.status));
            }
        }
        if last_note.elapsed() >= Duration::from_secs(4) {
            last_note = Instant::now();
            progress.note(&format!(
                "paid {} IPSX so far, paid through {}",
                tokens(payer.accepted()),
                payer.paid_through().unwrap_or(0)
            ));
        }
    }
    let paid = payer.finish().await?;
    let mut crawled: HashMap<IpAddr, usize> = HashMap::new();
    while let Some(result) = crawlers.join_next().await {
        let (ip, pages) = result?;
        match pages {
            Ok(pages) => {
                crawled.insert(ip, pages);
            }
            Err(error) => progress.note(&format!("crawl through {ip} stopped: {error:#}")),
        }
    }

    progress.step("settling: providers and node claim their proofs on chain");
    // The hub pays providers within a tick of the fleet's last proof; wait for it.
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    for provider in &providers {
        loop {
            let info = provider.client.wallet().await?.payments;
            let settled = info
                .and_then(|p| p.outbound)
                .is_some_and(|c| c.amount.0 == c.owed.0);
            if settled {
                break;
            }
            ensure!(
                Instant::now() < settle_deadline,
                "the node did not pay {} in time",
                provider.wallet.address()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    progress.step("checking every deal against the roots the node anchored on chain");
    for (deal, terms) in &final_terms {
        let report = proven_on_chain(&fleet, *deal, &rpc_url, deployment.anchor).await?;
        let epochs: std::collections::BTreeSet<u64> =
            report.entries.iter().map(|check| check.epoch).collect();
        let anchored = report
            .entries
            .iter()
            .find(|check| check.entry.kind == ipsx_sdk::AnchorEntryKind::Ended)
            .map_or(0, |check| check.entry.amount.0);
        progress.note(&format!(
            "deal {deal}: {} entries proven in epochs {epochs:?}; ended at {} IPSX served \
             (metered {})",
            report.entries.len(),
            tokens(anchored),
            tokens(terms.rate.0 * u128::from(terms.end - terms.start))
        ));
    }
    // Let the last payment reach each provider's daemon before it stops.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let node_before = node_chain.balance_of(node_wallet.address()).await?;
    let node_held_before = node_chain.held_in_channels(node_wallet.address()).await?;
    let mut summaries = Vec::new();
    for provider in providers {
        let _ = provider.stop.send(());
        let summary = provider.done.await??;
        summaries.push((provider.country, provider.ips, summary));
    }
    node.shutdown().await?;
    let node_after = node_chain.balance_of(node_wallet.address()).await?;
    let node_held_after = node_chain.held_in_channels(node_wallet.address()).await?;

    progress.step("report");
    let mut ok = true;
    let metered: u128 = final_terms
        .values()
        .map(|t| t.rate.0 * u128::from(t.end - t.start))
        .sum();
    println!(
        "\n{:<6} {:<8} {:<5} {:>8} {:>22} {:>10} {:>10} {:>9}",
        "deal", "country", "IPs", "seconds", "amount (IPSX)", "bytes up", "bytes down", "requests"
    );
    let seen = site.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for deal in &deals {
        let id = deal.deal.deal;
        let terms = final_terms.get(&id).copied();
        let (country, usage) = summaries
            .iter()
            .find(|(_, _, s)| s.address == deal.deal.provider)
            .map(|(country, _, s)| {
                (
                    *country,
                    s.leases.iter().find(|(d, _)| *d == id).map(|(_, u)| *u),
                )
            })
            .unwrap_or(("?", None));
        let requests: u64 = deal
            .deal
            .ips
            .iter()
            .map(|ip| seen.get(ip).copied().unwrap_or(0))
            .sum();
        println!(
            "{:<6} {:<8} {:<5} {:>8} {:>22} {:>10} {:>10} {:>9}",
            id,
            country,
            deal.deal.ips.len(),
            terms.map_or(0, |t| t.end - t.start),
            tokens(terms.map_or(0, |t| t.rate.0 * u128::from(t.end - t.start))),
            usage.map_or(0, |u| u.bytes_up),
            usage.map_or(0, |u| u.bytes_down),
            requests
        );
    }
    let leased_ips: HashSet<IpAddr> = deals.iter().flat_map(|d| d.deal.ips.clone()).collect();
    let strangers: Vec<_> = seen.keys().filter(|ip| !leased_ips.contains(ip)).collect();
    let served_all = leased_ips.iter().all(|ip| seen.contains_key(ip));
    println!(
        "\nthe site saw {} requests from {} source IPs; every leased IP seen: {}; \
         from elsewhere: {}",
        seen.values().sum::<u64>(),
        seen.len(),
        if served_all { "yes" } else { "NO" },
        strangers.len()
    );
    ok &= served_all && strangers.is_empty();
    let crawled_pages: usize = crawled.values().sum();
    println!("pages crawled whole: {crawled_pages}");

    println!("\non chain, to the wei:");
    let commission_on = |amount: u128| node_chain.commission_on(amount);
    let mut providers_total = 0u128;
    for (country, _, summary) in &summaries {
        let expected: u128 = final_terms
            .values()
            .filter(|t| {
                deals
                    .iter()
                    .any(|d| d.deal.deal == t.deal && d.deal.provider == summary.address)
            })
            .map(|t| t.rate.0 * u128::from(t.end - t.start))
            .sum();
        providers_total += expected;
        let commission = commission_on(expected).await?;
        let balance = node_chain.balance_of(summary.address).await?;
        let matches = balance == expected - commission && summary.received == expected;
        ok &= matches;
        println!(
            "  provider {country} {}: metered {} − commission {} = {}; Centralizer balance {} {}",
            summary.address,
            expected,
            commission,
            expected - commission,
            balance,
            if matches { "✓" } else { "✗ MISMATCH" }
        );
    }
    ok &= providers_total == metered;
    let fleet_channel = node_chain.channel(ChannelId(channel.channel)).await?;
    let fleet_matches = fleet_channel.claimed == metered && paid == metered;
    ok &= fleet_matches;
    println!(
        "  fleet {}: metered {}, signed {}, claimed by the node {} {}",
        fleet_wallet.address(),
        metered,
        paid,
        fleet_channel.claimed,
        if fleet_matches { "✓" } else { "✗ MISMATCH" }
    );
    let provider_commissions: u128 = summaries
        .iter()
        .map(|(_, _, s)| s.claimed - s.credited)
        .sum();
    let paid_to_providers: u128 = summaries.iter().map(|(_, _, s)| s.credited).sum();
    let node_gain = node_after.saturating_sub(node_before);
    let node_matches = node_gain == fleet_channel.claimed;
    ok &= node_matches;
    println!(
        "  node {}: claimed {} from the fleet (as treasury the commission on it is its own) = \
         balance +{} {}",
        node_wallet.address(),
        fleet_channel.claimed,
        node_gain,
        if node_matches { "✓" } else { "✗ MISMATCH" }
    );
    // The node is the treasury and the sender of its provider channels: the commission on what
    // providers claimed is not paid out, it stays in those channels until they close.
    let left_channels = node_held_before.saturating_sub(node_held_after);
    let kept_matches = left_channels == paid_to_providers;
    ok &= kept_matches;
    println!(
        "  node's provider channels: {} paid out to providers; the commission on it, {}, stays \
         in them until they close {}",
        left_channels,
        provider_commissions,
        if kept_matches { "✓" } else { "✗ MISMATCH" }
    );
    if ok {
        println!("\nbalances equal metered usage minus commission, to the wei: OK");
        Ok(())
    } else {
        bail!("the chain and the meters disagree (see above)")
    }
}

/// Waits for `deal`'s entries to be anchored (up to 30 s), then checks them against the chain
/// and against what the node told the fleet.
async fn proven_on_chain(
    fleet: &Client,
    deal: u64,
    rpc_url: &str,
    anchor: ipsx_sdk::Address,
) -> anyhow::Result<ipsx_sdk::anchor::DealCheck> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let proofs = fleet.deal_proofs(deal).await?;
        let told = fleet.deal(deal).await?;
        let report = ipsx_sdk::anchor::check(&proofs, told.as_ref(), rpc_url, anchor).await?;
        ensure!(
            !report.caught(),
            "deal {deal}: the node's history differs from what it anchored: {report:?}"
        );
        let ended = proofs
            .entries
            .iter()
            .any(|anchored| anchored.entry.kind == ipsx_sdk::AnchorEntryKind::Ended);
        if report.proven() && ended && report.pending == 0 {
            return Ok(report);
        }
        ensure!(
            Instant::now() < deadline,
            "deal {deal} was not anchored in time: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
