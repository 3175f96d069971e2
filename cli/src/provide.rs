//! `ipsx provide`: the provider's daemon. From a TOML file of IPs, geo, kind, protocols, window
//! and price it registers with the node, places the offers, runs the egress proxy on those IPs
//! with the key the node gave it, reports ready for each new deal of its IPs, and cuts a deal's
//! connections as soon as the deal ends early (cancelled, voided, payment lapsed).
//!
//! ```toml
//! node = "http://127.0.0.1:7700"
//! key_file = "provider.key"
//! port = 1080
//!
//! rpc_url = "http://127.0.0.1:8545"
//!
//! [[offer]]
//! ips = ["127.0.0.2", "127.0.0.3"]   # or: cidr = "127.0.1.0/29"
//! country = "DE"
//! kind = "residential"
//! protocols = ["socks5", "http", "https"]
//! price = 2
//! hours = 24
//! ```
//!
//! What to report ready, cut and forget is decided by the SDK's serving state machine
//! ([`ipsx_sdk::serve::Serving`]); this file runs it against the node, the proxy, the proof store
//! and the chain. A lease is forgotten a minute after it is over, so a daemon left running for a
//! month holds only what runs (its summary keeps totals and the last 1,000 leases).
//!
//! Behind NAT (a home device), set `relay = true` and give no `ips`: the daemon dials the
//! node's relay, runs its proxy on a loopback port behind that connection, and offers the one
//! public IP the relay sees it come from — again whenever that IP changes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, bail};
use ipsx_channels::{
    ChannelDomain, ChannelId, CheckpointPolicy, ProviderLedger, ReceiverChannel, SignedProof,
};
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::settle::Settler;
use ipsx_channels_runtime::store::ProofStore;
use ipsx_gateway::market::offer_ips;

use crate::unix_now;
use ipsx_proxy::{CredentialKey, Guard, LeaseUsage, ProxyConfig};
use ipsx_relay::{Access, LinkConfig, Welcomed};
use ipsx_sdk::serve::{Action, CutReason, Earning, Serving};
use ipsx_sdk::{
    Address, Client, EventStream, OfferBody, StreamEvent, TokenAmount, Wallet, signing_key,
};
use serde::Deserialize;
use tokio::sync::watch;

/// The daemon's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvideConfig {
    /// The node's API.
    #[serde(default = "default_node")]
    pub(crate) node: String,
    /// The provider wallet's private key file (hex), relative to the config file.
    pub(crate) key_file: PathBuf,
    /// The proxy's port on every IP.
    #[serde(default = "default_port")]
    pub(crate) port: u16,
    /// Let leases reach loopback destinations: local demos only.
    #[serde(default)]
    pub(crate) allow_loopback: bool,
    /// The chain's JSON-RPC endpoint, for claiming earnings.
    #[serde(default = "default_rpc_url")]
    pub(crate) rpc_url: String,
    /// Where received proofs are kept (relative to the config file).
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    /// How often to consider claiming earnings on chain (the checkpoint policy decides).
    #[serde(default = "default_settle_every")]
    pub(crate) settle_every_secs: u64,
    /// Behind NAT: serve through the node's relay and offer the public IP it observes.
    #[serde(default)]
    pub(crate) relay: bool,
    /// The local UDP address to dial the relay from [default: any].
    #[serde(default)]
    pub(crate) relay_bind: Option<SocketAddr>,
    /// What to offer.
    #[serde(rename = "offer")]
    pub(crate) offers: Vec<OfferConfig>,
    /// Put before every line the daemon prints (`ipsx demo` runs several in one terminal).
    #[serde(skip)]
    pub(crate) label: String,
}

/// One offer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferConfig {
    /// The IPs, listed (or give `cidr`).
    #[serde(default)]
    pub(crate) ips: Vec<IpAddr>,
    /// A CIDR block, e.g. `127.0.1.0/29`.
    #[serde(default)]
    pub(crate) cidr: Option<String>,
    pub(crate) country: String,
    #[serde(default)]
    pub(crate) city: Option<String>,
    #[serde(default = "default_kind")]
    pub(crate) kind: ipsx_sdk::IpKind,
    #[serde(default = "default_protocols")]
    pub(crate) protocols: Vec<ipsx_sdk::Protocol>,
    /// Tokens (base units) per IP-second.
    pub(crate) price: u128,
    #[serde(default = "default_hours")]
    pub(crate) hours: u64,
    #[serde(default)]
    pub(crate) asn: u32,
}

fn default_node() -> String {
    "http://127.0.0.1:7700".to_owned()
}

fn default_rpc_url() -> String {
    "http://127.0.0.1:8545".to_owned()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("provider-data")
}

fn default_settle_every() -> u64 {
    60
}

fn default_port() -> u16 {
    1080
}

fn default_kind() -> ipsx_sdk::IpKind {
    ipsx_sdk::IpKind::Residential
}

fn default_protocols() -> Vec<ipsx_sdk::Protocol> {
    use ipsx_sdk::Protocol;
    vec![Protocol::Socks5, Protocol::Http, Protocol::Https]
}

fn default_hours() -> u64 {
    24
}

impl ProvideConfig {
    /// Reads and checks a config file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        if config.offers.is_empty() {
            bail!("{}: no [[offer]]", path.display());
        }
        if config.relay {
            if config
                .offers
                .iter()
                .any(|offer| !offer.ips.is_empty() || offer.cidr.is_some())
            {
                bail!(
                    "{}: with `relay = true` an [[offer]] names no IPs: the public IP the relay \
                     sees is offered",
                    path.display()
                );
            }
        } else if config
            .offers
            .iter()
            .any(|offer| offer.ips.is_empty() == offer.cidr.is_none())
        {
            bail!(
                "{}: each [[offer]] gives `ips` or `cidr` (one of them)",
                path.display()
            );
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let key_file = base.join(&config.key_file);
        Ok((config, key_file))
    }
}

/// Runs the daemon until SIGINT/SIGTERM, then prints what it earned.
pub(crate) async fn run(config_path: &Path) -> anyhow::Result<()> {
    let (config, key_file) = ProvideConfig::load(config_path)?;
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let wallet: Wallet = key
        .trim()
        .parse()
        .context("the wallet key must be 32 bytes of hex")?;
    let data_dir = config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&config.data_dir);
    let summary = serve(config, wallet, data_dir, None, crate::shutdown_signal()).await?;
    println!(
        "earned {} (proofs received), claimed {} on chain, of which {} credited to you",
        summary.received, summary.claimed, summary.credited
    );
    Ok(())
}

/// What a provider's run came to.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderSummary {
    /// The provider's address.
    pub(crate) address: Address,
    /// The node's latest cumulative proof to this provider.
    pub(crate) received: u128,
    /// What checkpoints claimed in all (before commission).
    pub(crate) claimed: u128,
    /// What they credited to the provider (after commission).
    pub(crate) credited: u128,
    /// Leases served in all.
    pub(crate) served: u64,
    /// What they used in all (bytes and connections; `open` is left at 0).
    pub(crate) usage: LeaseUsage,
    /// The last leases served, (deal, usage), at most [`RECENT_LEASES`].
    pub(crate) leases: Vec<(u64, LeaseUsage)>,
}

/// Leases whose own usage a summary keeps (the totals count every lease).
pub(crate) const RECENT_LEASES: usize = 1_000;

impl ProviderSummary {
    /// Counts a lease the proxy forgot.
    fn add(&mut self, deal: u64, usage: LeaseUsage) {
        self.served += 1;
        self.usage.bytes_up += usage.bytes_up;
        self.usage.bytes_down += usage.bytes_down;
        self.usage.connections += usage.connections;
        self.usage.seconds += usage.seconds;
        if self.leases.len() == RECENT_LEASES {
            self.leases.remove(0);
        }
        self.leases.push((deal, usage));
    }
}

/// The payment side of a provider's process: its durable proofs and its claims (the ledger
/// is in the serving state machine).
struct Earnings {
    store: Arc<ProofStore>,
    settler: Settler,
    claimed: u128,
    credited: u128,
    label: String,
}

impl Earnings {
    async fn open(
        node: &Client,
        wallet: &Wallet,
        rpc_url: &str,
        data_dir: &Path,
        policy: CheckpointPolicy,
        label: &str,
    ) -> anyhow::Result<Option<(Self, Earning)>> {
        let Some(info) = node.wallet().await?.payments else {
            return Ok(None);
        };
        let outbound = info
            .outbound
            .context("the node opened no payment channel to this provider")?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let store = Arc::new(ProofStore::open(&data_dir.join("proofs.redb"))?);
        let channel = ChannelId(outbound.channel);
        let ledger = ProviderLedger::new(ReceiverChannel::new(
            channel,
            info.node,
            outbound.deposit.0,
            store.latest_received(channel)?,
        ));
        let chain = ChainClient::connect(rpc_url, info.centralizer, signing_key(wallet)?)
            .await
            .with_context(|| format!("connecting to the chain at {rpc_url}"))?;
        let earning = Earning {
            ledger,
            domain: ChannelDomain::new(info.chain_id, info.centralizer),
            // The node cuts a requester `grace` seconds behind and pays every second: one
            // more second for its proof to arrive, one for clocks.
            grace: info.grace + 2,
        };
        let earnings = Self {
            settler: Settler::new(chain, Arc::clone(&store), policy),
            store,
            claimed: 0,
            credited: 0,
            label: label.to_owned(),
        };
        Ok(Some((earnings, earning)))
    }

    /// Checks a payment, stores it, then counts it.
    fn receive(
        &self,
        serving: &mut Serving,
        wire: &str,
        paid_through: &[(u64, u64)],
    ) -> anyhow::Result<u128> {
        let bytes = alloy_primitives::hex::decode(wire.trim())?;
        let proof = SignedProof::decode(&bytes)?;
        serving.check_payment(&proof, paid_through)?;
        self.store.persist_received(&[proof])?;
        serving.accept_payment(proof, paid_through);
        Ok(proof.amount)
    }

    async fn settle(&mut self, force: bool) {
        match self.settler.run_once(unix_now(), force).await {
            Ok(paid) => {
                for checkpoint in paid {
                    self.claimed += checkpoint.paid_to_receiver + checkpoint.commission;
                    self.credited += checkpoint.paid_to_receiver;
                    println!(
                        "{}claimed {} on channel {} ({} to you, {} commission)",
                        self.label,
                        checkpoint.amount,
                        checkpoint.channel.0,
                        checkpoint.paid_to_receiver,
                        checkpoint.commission
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "claiming failed; will retry"),
        }
    }
}

/// Registers, serves and earns until `stop` resolves; then drains the proxy and claims
/// everything it holds on chain.
pub(crate) async fn serve(
    config: ProvideConfig,
    wallet: Wallet,
    data_dir: PathBuf,
    serving: Option<tokio::sync::oneshot::Sender<()>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ProviderSummary> {
    tokio::pin!(stop);
    let mut node = Client::new(&config.node);
    node.sign_in(&wallet)
        .await
        .with_context(|| format!("signing in to {}", config.node))?;
    let registered = if config.relay {
        node.register_relayed_provider().await?
    } else {
        node.register_provider(config.port).await?
    };
    let opened = Earnings::open(
        &node,
        &wallet,
        &config.rpc_url,
        &data_dir,
        CheckpointPolicy::default(),
        &config.label,
    )
    .await?;
    let (mut earnings, earning) = match opened {
        Some((earnings, earning)) => (Some(earnings), Some(earning)),
        None => (None, None),
    };
    let label = config.label.clone();
    let key = CredentialKey::from_hex(&registered.proxy_key)?;
    let guard = Guard {
        allow_loopback: config.allow_loopback,
    };
    let (proxy, mut relay, ours) = if config.relay {
        let (proxy, mut relay) = RelayedServing::start(&config, &node, key, guard).await?;
        let Some(ip) = relay.first_ip(&mut stop).await else {
            proxy.shutdown();
            return Ok(ProviderSummary::default());
        };
        proxy.serve_as(ip);
        println!("{label}serving {ip} through the relay");
        (proxy, Some(relay), HashSet::from([ip]))
    } else {
        let ips = offered_ips(&config.offers)?;
        let mut proxy_config = ProxyConfig::new(
            ips.iter()
                .map(|ip| SocketAddr::new(*ip, config.port))
                .collect(),
            key,
        );
        proxy_config.guard = guard;
        let proxy = ipsx_proxy::start(proxy_config)
            .await
            .context("starting the proxy (is every offered IP on this machine?)")?;
        println!("{label}serving {} IPs on port {}", ips.len(), config.port);
        (proxy, None, ips.into_iter().collect())
    };
    place_offers(
        &node,
        &config.offers,
        relay.as_ref().and_then(|r| r.ip),
        &label,
    )
    .await?;

    if let Some(serving) = serving {
        let _ = serving.send(());
    }
    let me = wallet.address();
    let mut serving = Serving::new(me, ours, earning);
    let mut summary = ProviderSummary {
        address: me,
        ..ProviderSummary::default()
    };
    let started = tokio::time::Instant::now();
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut last_settle = tokio::time::Instant::now();
    let mut last_earnings_note = tokio::time::Instant::now();
    let mut reported = 0u128;
    let mut settled = Settled::default();
    let settle_every = Duration::from_secs(config.settle_every_secs.max(1));
    let mut stream = None;
    loop {
        if stream.is_none() {
            // (Re)connect, then catch up on deals made while away.
            match node.stream().await {
                Ok(connected) => {
                    stream = Some(connected);
                    report_ready(&node, &serving, &label).await;
                }
                Err(error) => tracing::warn!(%error, "event stream unavailable; retrying"),
            }
        }
        let actions = tokio::select! {
            () = &mut stop => break,
            _ = every_second.tick() => {
                proxy.leases.sweep(unix_now());
                serving.on_second(unix_now(), started.elapsed().as_secs())
            }
            event = next_event(&mut stream) => match event {
                Some(StreamEvent::Payment { proof, paid_through }) => {
                    if let Some(earnings) = &earnings {
                        match earnings.receive(&mut serving, &proof, &paid_through) {
                            Ok(_) => settled.note(
                                &serving,
                                paid_through.iter().map(|(deal, _)| *deal),
                                &label,
                            ),
                            Err(error) => {
                                tracing::warn!(%error, "refused a payment from the node");
                            }
                        }
                    }
                    Vec::new()
                }
                Some(event) => {
                    let actions = serving.on_event(&event);
                    // A lease ended early may be paid in full by proofs that came before.
                    if let StreamEvent::LeaseEnded { terms, .. } = &event {
                        settled.note(&serving, [terms.deal], &label);
                    }
                    actions
                }
                None => Vec::new(),
            },
            Some(ip) = moved(&mut relay) => {
                // The node withdrew the offers on the old IP and ended its deals there.
                println!("{label}back on the relay as {ip}: offering it again");
                proxy.serve_as(ip);
                serving.serve_ips(HashSet::from([ip]));
                if let Err(error) = place_offers(&node, &config.offers, Some(ip), &label).await {
                    tracing::warn!(%error, "offering the new IP failed");
                }
                Vec::new()
            }
        };
        for action in actions {
            match action {
                Action::Ready(deal) => ready(&node, &deal, &label).await,
                Action::Cut { deal, why, until } => {
                    proxy.leases.cut_until(deal, until);
                    match why {
                        CutReason::Ended(status) => println!("{label}deal {deal} {status}: cut"),
                        CutReason::NotPaying => {
                            println!("{label}deal {deal}: requester stopped paying, cut");
                        }
                        CutReason::Unpaid => println!(
                            "{label}deal {deal}: unpaid for more than {} s, cut",
                            serving.earning().map_or(0, |e| e.grace)
                        ),
                    }
                }
                Action::Forget { deal } => {
                    settled.forget(deal);
                    if let Some(usage) = proxy.leases.forget(deal) {
                        summary.add(deal, usage);
                    }
                }
            }
        }
        if let Some(earnings) = &mut earnings {
            if last_settle.elapsed() >= settle_every {
                last_settle = tokio::time::Instant::now();
                earnings.settle(false).await;
            }
            if last_earnings_note.elapsed() >= Duration::from_secs(30) {
                last_earnings_note = tokio::time::Instant::now();
                let received = received(&serving);
                if received > reported {
                    reported = received;
                    println!(
                        "{label}earned {received} so far ({} claimed on chain)",
                        earnings.claimed
                    );
                }
            }
        }
    }
    if let Some(relay) = relay {
        relay.stop();
    }
    println!("{label}stopping: draining the proxy");
    proxy.drain(Duration::from_secs(10)).await;
    let mut running: Vec<u64> = serving.leases().collect();
    running.sort_unstable();
    for deal in running {
        if let Some(usage) = proxy.leases.usage(deal) {
            summary.add(deal, usage);
        }
    }
    summary.received = received(&serving);
    if let Some(mut earnings) = earnings {
        earnings.settle(true).await;
        summary.claimed = earnings.claimed;
        summary.credited = earnings.credited;
    }
    Ok(summary)
}

/// Leases the provider was told are paid in full: each is said once, with what the node's
/// proofs come to in all, so an operator (or a script stopping the provider to claim) sees
/// when the last one is settled.
#[derive(Default)]
struct Settled(HashSet<u64>);

impl Settled {
    /// Says which of `deals` are now over and paid in full, if not said before.
    fn note(&mut self, serving: &Serving, deals: impl IntoIterator<Item = u64>, label: &str) {
        let Some(earning) = serving.earning() else {
            return;
        };
        for deal in deals {
            if earning.ledger.paid_in_full(deal) && self.0.insert(deal) {
                println!(
                    "{label}deal {deal} paid in full: earned {} in all",
                    received(serving)
                );
            }
        }
    }

    /// A lease no longer followed.
    fn forget(&mut self, deal: u64) {
        self.0.remove(&deal);
    }
}

/// The node's latest cumulative proof to this provider.
fn received(serving: &Serving) -> u128 {
    serving
        .earning()
        .map_or(0, |earning| earning.ledger.channel().received())
}

/// Every IP the offers name (direct providers).
fn offered_ips(offers: &[OfferConfig]) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for offer in offers {
        ips.extend(
            offer_ips(&offer_body(offer, None, unix_now()))
                .map_err(|e| anyhow::anyhow!("{}", e.message))?,
        );
    }
    Ok(ips)
}

fn offer_body(offer: &OfferConfig, relayed_ip: Option<IpAddr>, now: u64) -> OfferBody {
    let ips = match relayed_ip {
        Some(ip) => vec![ip],
        None => offer.ips.clone(),
    };
    let mut body = OfferBody::new(
        ips,
        &offer.country,
        offer.kind,
        offer.protocols.clone(),
        now + offer.hours * 3600,
        TokenAmount(offer.price),
    );
    body.cidr = offer.cidr.clone();
    body.city = offer.city.clone();
    body.asn = offer.asn;
    body
}

/// Places every offer (for a relayed provider, naming the one IP it serves).
async fn place_offers(
    node: &Client,
    offers: &[OfferConfig],
    relayed_ip: Option<IpAddr>,
    label: &str,
) -> anyhow::Result<()> {
    let now = unix_now();
    for offer in offers {
        let body = offer_body(offer, relayed_ip, now);
        let placed = node.place_offer(&body).await?;
        println!(
            "{label}offer {} ({} IPs, {})",
            placed.offer, placed.ips, body.country
        );
    }
    Ok(())
}

/// A provider behind NAT: its proxy on a loopback port, and the link to the relay that carries
/// requesters' connections to it.
struct RelayedServing {
    /// The public IP served now.
    ip: Option<IpAddr>,
    observed: watch::Receiver<Option<Welcomed>>,
    stop: watch::Sender<bool>,
}

impl RelayedServing {
    async fn start(
        config: &ProvideConfig,
        node: &Client,
        key: CredentialKey,
        guard: Guard,
    ) -> anyhow::Result<(ipsx_proxy::ProxyHandle, Self)> {
        let mut proxy_config =
            ProxyConfig::new(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))], key);
        proxy_config.guard = guard;
        // Nothing verifies until the relay says which IP this is.
        proxy_config.public_ip = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let proxy = ipsx_proxy::start(proxy_config)
            .await
            .context("starting the proxy on loopback")?;
        let mut link = LinkConfig::new(proxy.addrs[0]);
        if let Some(bind) = config.relay_bind {
            link.bind = bind;
        }
        let (observed_tx, observed) = watch::channel(None);
        let (stop, stopped) = watch::channel(false);
        let node = node.clone();
        let access = move || {
            let node = node.clone();
            async move {
                let access = node.relay_access().await.map_err(|e| e.to_string())?;
                let certificate = alloy_primitives::hex::decode(&access.certificate)
                    .map_err(|e| format!("the relay's certificate: {e}"))?;
                Ok(Access {
                    relay: access.relay,
                    certificate,
                    ticket: access.ticket,
                })
            }
        };
        tokio::spawn(ipsx_relay::run(access, link, observed_tx, stopped));
        Ok((
            proxy,
            Self {
                ip: None,
                observed,
                stop,
            },
        ))
    }

    /// Waits for the relay's first welcome (or `stop`).
    async fn first_ip(
        &mut self,
        stop: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Option<IpAddr> {
        tokio::select! {
            observed = self.observed.wait_for(Option::is_some) => {
                self.ip = observed.ok().and_then(|welcomed| *welcomed).map(|w| w.observed);
            }
            () = stop => {}
        }
        self.ip
    }

    fn stop(self) {
        self.stop.send_replace(true);
    }
}

/// Resolves with the public IP to offer when the relay welcomes the provider back from a new
/// IP, or after its grace ran out (its offers were withdrawn); never for direct providers.
async fn moved(relay: &mut Option<RelayedServing>) -> Option<IpAddr> {
    let Some(relay) = relay.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if relay.observed.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = *relay.observed.borrow_and_update();
        if let Some(welcomed) = now
            && (!welcomed.resumed || Some(welcomed.observed) != relay.ip)
        {
            relay.ip = Some(welcomed.observed);
            return relay.ip;
        }
    }
}

async fn next_event(stream: &mut Option<EventStream>) -> Option<StreamEvent> {
    let Some(connected) = stream.as_mut() else {
        return std::future::pending().await;
    };
    match connected.next().await {
        Some(Ok(event)) => Some(event),
        Some(Err(error)) => {
            tracing::warn!(%error, "event stream failed; reconnecting");
            *stream = None;
            None
        }
        None => {
            *stream = None;
            None
        }
    }
}

async fn ready(node: &Client, deal: &ipsx_sdk::DealView, label: &str) {
    match node.ready(deal.deal).await {
        Ok(_) => println!(
            "{label}deal {} ready: {} IPs for {} until {}",
            deal.deal,
            deal.ips.len(),
            deal.requester,
            deal.end
        ),
        Err(error) => tracing::warn!(deal = deal.deal, %error, "ready refused"),
    }
}

/// Reports ready for pending deals of ours that arrived while the stream was down.
async fn report_ready(node: &Client, serving: &Serving, label: &str) {
    let pending = ipsx_sdk::DealsQuery {
        status: Some("pending".to_owned()),
        role: Some(ipsx_sdk::Role::Provider),
        ..ipsx_sdk::DealsQuery::default()
    };
    let Ok(deals) = node.all_deals(pending).await else {
        return;
    };
    for view in deals {
        if serving.should_ready(&view.deal) {
            ready(node, &view.deal, label).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_reads_with_defaults_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("provide.toml");
        std::fs::write(
            &path,
            "key_file = \"p.key\"\n[[offer]]\nips = [\"127.0.0.2\"]\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        let (config, key_file) = ProvideConfig::load(&path).expect("loads");
        assert_eq!(config.port, 1080);
        assert_eq!(config.offers[0].protocols, default_protocols());
        assert_eq!(key_file, dir.path().join("p.key"));

        std::fs::write(&path, "key_file = \"p.key\"\noffer = []\n").expect("write");
        assert!(ProvideConfig::load(&path).is_err(), "no offers");
        std::fs::write(
            &path,
            "key_file = \"p.key\"\nprot = 1\n[[offer]]\nips = []\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        let error = ProvideConfig::load(&path).expect_err("unknown field");
        assert!(format!("{error:#}").contains("prot"), "{error:#}");

        std::fs::write(
            &path,
            "key_file = \"p.key\"\nrelay = true\n[[offer]]\nips = [\"127.0.0.2\"]\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        let error = ProvideConfig::load(&path).expect_err("relayed offers name no IPs");
        assert!(format!("{error:#}").contains("relay sees"), "{error:#}");
        std::fs::write(
            &path,
            "key_file = \"p.key\"\nrelay = true\n[[offer]]\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        assert!(ProvideConfig::load(&path).expect("relayed").0.relay);
    }
}
