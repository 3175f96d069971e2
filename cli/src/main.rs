//! `ipsx` — the IPSX command line, built on `ipsx-sdk` (and `ipsx-gateway` for `ipsx node`).
//!
//! ```text
//! ipsx node --listen 127.0.0.1:7700 --data-dir ./ipsx-node
//! ipsx provide --config provider.toml                         # the provider's daemon
//! ipsx register --port 1080                                   # or by hand:
//! ipsx offer --ip 127.0.0.2 --ip 127.0.0.3 --country DE --price 2 --hours 24
//! ipsx lease --count 10 --country DE,FR --protocol socks5 --duration 60 --max-price 5
//! ipsx gate                       # crawlers: http://USER-country-de:x@127.0.0.1:24000
//! ipsx relay --node URL --key-file relay.key --quic ADDR --listen ADDR   # a relay apart
//! ipsx balance ; ipsx withdraw all
//! ipsx demo                                                   # a whole exchange, locally
//! ipsx deals --format csv
//! ipsx cancel 12 ; ipsx rate 12 5
//! ```
//!
//! Wallet commands read the private key from `--key-file` (hex) or `IPSX_PRIVATE_KEY`; it only
//! signs the node's sign-in message, here. The node is `--node` or `IPSX_NODE`.

mod demo;
mod gate;
mod node;
mod output;
mod provide;
mod relay;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ipsx_sdk::{Client, LeaseBody, OfferBody, TokenAmount, Wallet};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "ipsx",
    version,
    about = "Rent IP addresses by the second: the IPSX command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node: the matching engine behind the HTTP API.
    Node(Box<node::NodeArgs>),
    /// Runs a provider: offers from a TOML file, the egress proxy on those IPs, ready reports.
    Provide {
        /// The provider's TOML file (see `ipsx_cli`'s provide module docs).
        #[arg(long)]
        config: PathBuf,
    },
    /// Registers this wallet as a provider; prints the key its proxy needs.
    Register {
        #[command(flatten)]
        wallet: WalletArgs,
        /// The port the proxy listens on, on every offered IP.
        #[arg(long, default_value_t = 1080)]
        port: u16,
    },
    /// Offers IPs.
    Offer(OfferArgs),
    /// Leases IPs by filter and prints their endpoints.
    Lease(LeaseArgs),
    /// The crawler endpoint: one local proxy port that leases, rotates, pays and retries.
    Gate(gate::GateArgs),
    /// A relay run apart from the node, for providers behind NAT (`ipsx node --accept-relays`).
    Relay(relay::RelayArgs),
    /// Lists this wallet's deals (with endpoints for the ones it leased).
    Deals {
        #[command(flatten)]
        wallet: WalletArgs,
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: Format,
        /// Instead of listing: check deal ID against the chain — each of its entries in the
        /// node's anchored deal book must be proven by the root the DealAnchor holds, and say
        /// what the node told this wallet. Fails if anything does not.
        #[arg(long, value_name = "ID")]
        proof: Option<u64>,
        /// The DealAnchor to check against [default: the one the node names].
        #[arg(long, requires = "proof")]
        anchor: Option<alloy_primitives::Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Prints a one-time link that opens the node's dashboard signed in as this wallet.
    Dashboard {
        #[command(flatten)]
        wallet: WalletArgs,
    },
    /// Ends a lease early.
    Cancel {
        #[command(flatten)]
        wallet: WalletArgs,
        /// The deal.
        deal: u64,
    },
    /// Shows this wallet's tokens, Centralizer balance and channels with the node.
    Balance {
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Moves tokens from the Centralizer back to the wallet (an amount, or `all` that is free).
    Withdraw {
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        chain: ChainArgs,
        /// Base units, or `all`.
        amount: String,
    },
    /// Runs a whole exchange on this machine: anvil, the contracts, a node, providers on
    /// loopback aliases, a test site, a crawling fleet that pays by the second, settlement.
    Demo(demo::DemoArgs),
    /// Rates the other party of a finished deal (1–5).
    Rate {
        #[command(flatten)]
        wallet: WalletArgs,
        /// The deal.
        deal: u64,
        /// Stars.
        score: u8,
    },
}

/// Where the chain is, for commands that send transactions.
#[derive(Args)]
struct ChainArgs {
    /// The chain's JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545", env = "IPSX_RPC_URL")]
    rpc_url: String,
}

#[derive(Args)]
struct WalletArgs {
    /// The node's API; a cluster's nodes comma-separated (calls fail over between them).
    #[arg(long, default_value = "http://127.0.0.1:7700", env = "IPSX_NODE")]
    node: String,
    /// A file holding the wallet's private key in hex (else `IPSX_PRIVATE_KEY`).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl WalletArgs {
    async fn client(&self) -> anyhow::Result<Client> {
        Ok(self.signed_in().await?.0)
    }

    fn wallet(&self) -> anyhow::Result<Wallet> {
        let key = match &self.key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => std::env::var("IPSX_PRIVATE_KEY")
                .context("no wallet: pass --key-file or set IPSX_PRIVATE_KEY")?,
        };
        key.trim()
            .parse()
            .context("the wallet key must be 32 bytes of hex")
    }

    async fn signed_in(&self) -> anyhow::Result<(Client, Wallet)> {
        let wallet = self.wallet()?;
        let mut client = Client::new(&self.node);
        client
            .sign_in(&wallet)
            .await
            .with_context(|| format!("signing in to {}", self.node))?;
        Ok((client, wallet))
    }
}

#[derive(Args)]
struct OfferArgs {
    #[command(flatten)]
    wallet: WalletArgs,
    /// An IP to offer (repeat for several).
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// A CIDR block to offer instead.
    #[arg(long)]
    cidr: Option<String>,
    /// ISO country code.
    #[arg(long)]
    country: String,
    /// residential, datacenter or mobile.
    #[arg(long, default_value = "residential")]
    kind: ipsx_sdk::IpKind,
    /// Comma-separated protocols served.
    #[arg(long, default_value = "socks5,http,https", value_delimiter = ',')]
    protocols: Vec<ipsx_sdk::Protocol>,
    /// Price per IP-second, token base units.
    #[arg(long)]
    price: u128,
    /// Hours from now the IPs stay available.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// The announcing ASN.
    #[arg(long, default_value_t = 0)]
    asn: u32,
}

#[derive(Args)]
struct LeaseArgs {
    #[command(flatten)]
    wallet: WalletArgs,
    /// How many IPs.
    #[arg(long)]
    count: u32,
    /// Comma-separated ISO country codes (default: any).
    #[arg(long, value_delimiter = ',')]
    country: Vec<String>,
    /// Comma-separated protocols every IP must serve.
    #[arg(long, value_delimiter = ',', default_value = "socks5")]
    protocol: Vec<ipsx_sdk::Protocol>,
    /// Comma-separated kinds (default: any).
    #[arg(long, value_delimiter = ',')]
    kind: Vec<ipsx_sdk::IpKind>,
    /// Seconds each lease lasts.
    #[arg(long)]
    duration: u64,
    /// Highest price per IP-second.
    #[arg(long)]
    max_price: u128,
    /// All the IPs or none.
    #[arg(long)]
    all_or_nothing: bool,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    format: Format,
    #[command(flatten)]
    chain: ChainArgs,
    /// On a paying node without a channel yet: deposit this much (base units) and open one.
    #[arg(long, default_value_t = 100 * 10u128.pow(18))]
    deposit: u128,
}

/// jemalloc, as long-running Rust servers use: glibc's malloc gives each thread that allocates
/// (the runtime's blocking pool threads come and go) an arena of its own and fragments across
/// them, which the soak saw as the node's memory creeping up by kilobytes a second.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // The demo prints its own progress; its parts only log what goes wrong.
    let default_level = if matches!(command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Gate(gate::GateArgs {
        threads: Some(threads),
        ..
    }) = &command
    {
        runtime.worker_threads((*threads).max(1));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(args) => node::run(*args).await,
        Command::Provide { config } => provide::run(&config).await,
        Command::Register { wallet, port } => {
            let registered = wallet.client().await?.register_provider(port).await?;
            println!("provider {}", registered.provider);
            println!("proxy port {}", registered.port);
            println!("proxy key {}", registered.proxy_key);
            Ok(())
        }
        Command::Offer(args) => {
            let until = unix_now() + args.hours * 3600;
            let mut body = OfferBody::new(
                args.ips.clone(),
                &args.country,
                args.kind,
                args.protocols.clone(),
                until,
                TokenAmount(args.price),
            );
            body.cidr = args.cidr.clone();
            body.asn = args.asn;
            let placed = args.wallet.client().await?.place_offer(&body).await?;
            println!("offer {} ({} IPs)", placed.offer, placed.ips);
            Ok(())
        }
        Command::Lease(args) => lease(args).await,
        Command::Gate(args) => gate::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Balance { wallet, chain } => balance(&wallet, &chain).await,
        Command::Withdraw {
            wallet,
            chain,
            amount,
        } => withdraw(&wallet, &chain, &amount).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Deals {
            wallet,
            proof: Some(deal),
            anchor,
            chain,
            ..
        } => check_deal(&wallet, &chain, deal, anchor).await,
        Command::Deals { wallet, format, .. } => {
            let deals = wallet.client().await?.deals().await?;
            print!("{}", output::leases(&deals, format)?);
            Ok(())
        }
        Command::Dashboard { wallet } => {
            let link = wallet.client().await?.login_link().await?;
            println!("{}", link.url);
            eprintln!(
                "open it in a browser before {} (unix): it signs that browser in as this \
                 wallet, once",
                link.expires_at
            );
            Ok(())
        }
        Command::Cancel { wallet, deal } => {
            let view = wallet.client().await?.cancel_deal(deal).await?;
            println!("deal {} {}", view.deal.deal, view.deal.status);
            Ok(())
        }
        Command::Rate {
            wallet,
            deal,
            score,
        } => {
            wallet.client().await?.rate(deal, score).await?;
            println!("deal {deal} rated {score}");
            Ok(())
        }
    }
}

/// Leases, prints the endpoints, then (on a paying node) pays every second until every lease
/// has ended; Ctrl-C cancels the leases first.
async fn lease(args: LeaseArgs) -> anyhow::Result<()> {
    let (client, wallet) = args.wallet.signed_in().await?;
    let paying = client.wallet().await?.payments.is_some();
    if paying {
        let channel =
            ipsx_sdk::ensure_channel(&client, &wallet, &args.chain.rpc_url, args.deposit).await?;
        eprintln!(
            "paying on channel {} (deposit {})",
            channel.channel, channel.deposit.0
        );
    }
    let mut payer = if paying {
        Some(ipsx_sdk::Payer::connect(&client, &wallet).await?)
    } else {
        None
    };
    let mut body = LeaseBody::new(args.count, args.duration, TokenAmount(args.max_price))
        .countries(args.country.clone())
        .protocols(args.protocol.clone())
        .kinds(args.kind.clone());
    if args.all_or_nothing {
        body = body.all_or_nothing();
    }
    let leased = client.lease(&body).await?;
    if leased.leased < args.count {
        eprintln!("leased {} of {} IPs", leased.leased, args.count);
    }
    print!("{}", output::leases(&leased.deals, args.format)?);
    let Some(mut payer) = payer.take() else {
        return Ok(());
    };
    for deal in &leased.deals {
        payer.expect(&deal.deal);
    }
    eprintln!("paying every second until the leases end (Ctrl-C cancels them)");
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut last_report = std::time::Instant::now();
    loop {
        if payer.all_ended() {
            break;
        }
        tokio::select! {
            () = &mut stop => {
                for deal in &leased.deals {
                    match client.cancel_deal(deal.deal.deal).await {
                        Ok(view) => eprintln!("deal {} {}", view.deal.deal, view.deal.status),
                        Err(error) => eprintln!("cancelling deal {}: {error}", deal.deal.deal),
                    }
                }
                // Pay for the seconds used up to the cancel.
                tokio::time::sleep(Duration::from_secs(2)).await;
                break;
            }
            event = payer.next() => {
                match event {
                    Ok(Some(ipsx_sdk::StreamEvent::CutOff { deal, at })) => {
                        eprintln!("deal {deal} cut off at {at}");
                    }
                    Ok(Some(ipsx_sdk::StreamEvent::Error { code, message })) => {
                        eprintln!("node refused: {code}: {message}");
                    }
                    Ok(Some(_)) => {}
                    lost => {
                        // The node restarted, or (in a cluster) another node leads now: pay
                        // on there. The node tells a new payer where its leases stand.
                        let why = lost.err().map_or("closed".to_owned(), |e| e.to_string());
                        eprintln!("the payment stream was lost ({why}); reconnecting");
                        payer = reconnect_payer(&client, &wallet, &leased.deals).await?;
                    }
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = std::time::Instant::now();
            eprintln!(
                "paid {} so far (accrued {})",
                payer.accepted(),
                payer.owed()
            );
        }
    }
    let paid = payer.finish().await?;
    eprintln!("done: paid {paid} in all on this channel");
    Ok(())
}

/// How long `ipsx lease` tries to reach a node again after its payment stream was lost.
const RECONNECT_WITHIN: Duration = Duration::from_secs(60);

/// A payer on a new stream (the client fails over between the nodes it knows), expecting
/// `deals`; tried again every second for [`RECONNECT_WITHIN`].
async fn reconnect_payer(
    client: &Client,
    wallet: &Wallet,
    deals: &[ipsx_sdk::LeaseView],
) -> anyhow::Result<ipsx_sdk::Payer> {
    let deadline = tokio::time::Instant::now() + RECONNECT_WITHIN;
    loop {
        match ipsx_sdk::Payer::connect(client, wallet).await {
            Ok(mut payer) => {
                for deal in deals {
                    // One that ended meanwhile may be folded already (paid in full): the new
                    // stream does not name it, so it is not waited for.
                    let over = client
                        .deal(deal.deal.deal)
                        .await?
                        .is_none_or(|view| view.status.is_over());
                    if !over {
                        payer.expect(&deal.deal);
                    }
                }
                eprintln!("paying again through {}", client.node());
                return Ok(payer);
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("reconnecting: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => anyhow::bail!("the node could not be reached again: {error}"),
        }
    }
}

async fn chain_client(
    client: &Client,
    wallet: &Wallet,
    chain: &ChainArgs,
) -> anyhow::Result<(
    ipsx_channels_runtime::chain::ChainClient,
    ipsx_sdk::WalletView,
)> {
    let view = client.wallet().await?;
    let info = view
        .payments
        .as_ref()
        .context("the node runs without payments")?;
    let chain = ipsx_channels_runtime::chain::ChainClient::connect(
        &chain.rpc_url,
        info.centralizer,
        ipsx_sdk::signing_key(wallet)?,
    )
    .await
    .with_context(|| format!("connecting to {}", chain.rpc_url))?;
    Ok((chain, view))
}

async fn balance(wallet: &WalletArgs, chain: &ChainArgs) -> anyhow::Result<()> {
    let (client, wallet) = wallet.signed_in().await?;
    let (chain, view) = chain_client(&client, &wallet, chain).await?;
    let me = wallet.address();
    println!("wallet      {me}");
    println!("tokens      {}", chain.token_balance(me).await?);
    println!("free        {}", chain.balance_of(me).await?);
    println!("in channels {}", chain.held_in_channels(me).await?);
    if let Some(info) = view.payments {
        for (role, channel) in [("paying", info.inbound), ("paid on", info.outbound)] {
            if let Some(channel) = channel {
                println!(
                    "{role:<11} channel {}: deposit {}, proofs {}, accrued {}",
                    channel.channel, channel.deposit.0, channel.amount.0, channel.owed.0
                );
            }
        }
    }
    Ok(())
}

async fn withdraw(wallet: &WalletArgs, chain: &ChainArgs, amount: &str) -> anyhow::Result<()> {
    let (client, wallet) = wallet.signed_in().await?;
    let (chain, _) = chain_client(&client, &wallet, chain).await?;
    let free = chain.balance_of(wallet.address()).await?;
    let amount = if amount == "all" {
        free
    } else {
        amount
            .parse()
            .with_context(|| format!("{amount:?} is neither base units nor `all`"))?
    };
    if amount == 0 || amount > free {
        anyhow::bail!("{amount} cannot be withdrawn: {free} is free in the Centralizer");
    }
    chain.withdraw(amount).await?;
    println!("withdrew {amount}; {} left free", free - amount);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `ipsx deals --proof ID`: the deal's anchored entries, checked against the chain and against
/// what the node told this wallet.
async fn check_deal(
    wallet: &WalletArgs,
    chain: &ChainArgs,
    deal: u64,
    anchor: Option<alloy_primitives::Address>,
) -> anyhow::Result<()> {
    let client = wallet.client().await?;
    let proofs = client.deal_proofs(deal).await?;
    let told = client.deal(deal).await?;
    let anchor = anchor.unwrap_or(proofs.anchor);
    let report = ipsx_sdk::anchor::check(&proofs, told.as_ref(), &chain.rpc_url, anchor).await?;
    print!("{}", output::deal_check(&report, anchor));
    if report.caught() {
        anyhow::bail!("deal {deal}: the node's history does not match what it anchored on chain");
    }
    // Entries still in the node's open epoch are not proven either: ask again later.
    if !report.proven() || report.pending > 0 {
        anyhow::bail!(
            "deal {deal}: not everything is anchored yet ({} entries waiting); ask again after \
             the node's next epoch",
            report.pending
                + report
                    .entries
                    .iter()
                    .filter(|check| check.verdict == ipsx_sdk::anchor::Verdict::NotAnchoredYet)
                    .count()
        );
    }
    Ok(())
}
