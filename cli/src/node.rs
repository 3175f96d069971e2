//! `ipsx node`: settings from flags, environment and a TOML file (in that order of precedence,
//! then defaults), the session key kept in the data directory, and a graceful stop.
//!
//! ```toml
//! listen = "127.0.0.1:7700"
//! public_url = "https://ipsx.example"   # what sign-in messages name; default: the bound address
//! data_dir = "ipsx-node"
//! chain_id = 31337
//! session_rate = 200.0
//! ready_timeout = 30
//! deal_retention = 3600                  # seconds finished deals stay in memory (then on disk)
//! rating_prior = "1000000000000000000"   # paid usage every rating starts from, at 3 stars
//!
//! [relay]                         # leave out if every provider is directly reachable
//! quic = "203.0.113.1:4433"       # providers behind NAT dial here (UDP)
//! listen = "203.0.113.1:1081"     # requesters of relayed providers connect here (TCP)
//! grace = 10                      # seconds a dropped provider keeps its IP and deals
//!
//! [payments]                      # leave out to run a market without a chain
//! rpc_url = "http://127.0.0.1:8545"
//! centralizer = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
//! key_file = "node.key"           # relative to this file
//! provider_deposit = "1000000000000000000000"
//! grace = 3
//! anchor = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"   # DealAnchor: the deal book on chain
//! anchor_every = 300              # seconds an epoch stays open
//!
//! [cluster]                       # leave out to run alone
//! servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
//! name = "eu"                     # the cluster's streams are IPSX_eu_*
//! node = "node-1"                 # unique in the cluster
//! replicas = 3                    # copies JetStream keeps of each stream
//! lease_ms = 3000                 # a silent leader is replaced after this long
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy_primitives::Address;
use anyhow::{Context, bail};
use clap::Args;
use ipsx_gateway::{GatewayConfig, PaymentsConfig, PresenceHook, RelaySettings};
use serde::Deserialize;

/// Flags (and environment) of `ipsx node`; unset ones come from `--config`, then defaults.
#[derive(Args, Debug, Default)]
pub(crate) struct NodeArgs {
    /// A TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "IPSX_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Where the API listens [default: 127.0.0.1:7700].
    #[arg(long, env = "IPSX_LISTEN")]
    listen: Option<SocketAddr>,
    /// The URL clients reach the node at (behind a proxy or a name); sign-in messages name it
    /// as their domain, which wallets and EIP-4361 verifiers check [default: the bound
    /// address].
    #[arg(long, env = "IPSX_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the node keeps its journal, snapshots, registry, proofs and session key
    /// [default: ipsx-node].
    #[arg(long, env = "IPSX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The chain the node settles on, stated in sign-in messages [default: 31337].
    #[arg(long, env = "IPSX_CHAIN_ID")]
    chain_id: Option<u64>,
    /// Calls per second each signed-in wallet may make, bursts of twice that [default: 200].
    #[arg(long, env = "IPSX_SESSION_RATE")]
    session_rate: Option<f64>,
    /// Seconds a provider has to report ready before its deal is voided and re-matched
    /// [default: 30].
    #[arg(long, env = "IPSX_READY_TIMEOUT")]
    ready_timeout: Option<u64>,
    /// Seconds a finished deal stays in memory, for look-ups and ratings; older deals are
    /// read from the node's history on disk. At least 60 [default: 3600].
    #[arg(long, env = "IPSX_DEAL_RETENTION")]
    deal_retention: Option<u64>,
    /// Paid usage (base units) every wallet's rating starts with at 3 stars: ratings weigh
    /// what their deals cost, so lifting a wallet past `min_rating` takes several times this
    /// in real usage [default: 1 IPSX].
    #[arg(long, env = "IPSX_RATING_PRIOR")]
    rating_prior: Option<u128>,
    /// When the journal reaches the disk: `always` (before each answer), `never` (the OS
    /// decides; a killed process still loses nothing acknowledged, a power loss may), or an
    /// interval such as `10ms` [default: always].
    #[arg(long, env = "IPSX_FSYNC")]
    fsync: Option<String>,
    /// The chain's JSON-RPC endpoint; with `--centralizer` and `--node-key-file` the node takes
    /// payments (without them it runs a market only).
    #[arg(long, env = "IPSX_RPC_URL")]
    rpc_url: Option<String>,
    /// The Centralizer contract (the node must be its treasury).
    #[arg(long, env = "IPSX_CENTRALIZER")]
    centralizer: Option<Address>,
    /// The node's private key file (hex): it signs proofs to providers and transactions.
    #[arg(long, env = "IPSX_NODE_KEY_FILE")]
    node_key_file: Option<PathBuf>,
    /// Reserved for each provider's channel when the node opens it, base units
    /// [default: 1000 IPSX].
    #[arg(long, env = "IPSX_PROVIDER_DEPOSIT")]
    provider_deposit: Option<u128>,
    /// Seconds a requester may fall behind before its leases are cut [default: 3].
    #[arg(long, env = "IPSX_GRACE")]
    grace: Option<u64>,
    /// Anchor the deal book in this DealAnchor contract (its anchorer must be the node's key;
    /// needs payments).
    #[arg(long, env = "IPSX_ANCHOR")]
    anchor: Option<Address>,
    /// Seconds an anchoring epoch stays open before its root goes on chain [default: 300].
    #[arg(long, env = "IPSX_ANCHOR_EVERY")]
    anchor_every: Option<u64>,
    /// Let direct providers' offers go live without proving their IPs (a market with no real
    /// proxies: demos of the API, load tests). By default each offered IP is fetched through
    /// the provider's proxy from the node's `/v1/echo` and must come back as the source.
    #[arg(long, env = "IPSX_NO_OFFER_PROBE")]
    no_offer_probe: bool,
    /// Run a relay for providers behind NAT: the UDP address they dial (QUIC), as they reach
    /// it. Needs `--relay-listen`.
    #[arg(long, env = "IPSX_RELAY_QUIC")]
    relay_quic: Option<SocketAddr>,
    /// The relay's TCP address for requesters of relayed providers, as they reach it.
    #[arg(long, env = "IPSX_RELAY_LISTEN")]
    relay_listen: Option<SocketAddr>,
    /// Seconds a relayed provider whose connection dropped keeps its IP, offers and deals
    /// [default: 10].
    #[arg(long, env = "IPSX_RELAY_GRACE")]
    relay_grace: Option<u64>,
    /// Take reports from relays run apart (`ipsx relay`), which hold the key kept in
    /// `DATA_DIR/relay.key`.
    #[arg(long, env = "IPSX_ACCEPT_RELAYS")]
    accept_relays: bool,
    /// Run as one node of a cluster whose market goes through NATS JetStream at these
    /// servers (comma-separated `nats://host:port`): one node leads and takes writes, the
    /// others follow and serve reads, and take over when it dies.
    #[arg(long, env = "IPSX_CLUSTER", value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// The cluster's name (its JetStream streams are `IPSX_<name>_*`) [default: ipsx].
    #[arg(long, env = "IPSX_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// This node's id in its cluster, unique there (letters, digits, `-`, `_`).
    #[arg(long, env = "IPSX_NODE_ID")]
    node_id: Option<String>,
    /// Copies JetStream keeps of the cluster's streams: 3 on three servers, 1 on one
    /// [default: 3].
    #[arg(long, env = "IPSX_CLUSTER_REPLICAS")]
    cluster_replicas: Option<usize>,
    /// Milliseconds a leader may stay silent before another node takes over; failover takes
    /// about this long [default: 3000].
    #[arg(long, env = "IPSX_CLUSTER_LEASE_MS")]
    cluster_lease_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    chain_id: Option<u64>,
    session_rate: Option<f64>,
    ready_timeout: Option<u64>,
    deal_retention: Option<u64>,
    rating_prior: Option<ipsx_sdk::TokenAmount>,
    fsync: Option<String>,
    relay: Option<RelayFile>,
    payments: Option<PaymentsFile>,
    cluster: Option<ClusterFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    servers: Option<Vec<String>>,
    name: Option<String>,
    node: Option<String>,
    replicas: Option<usize>,
    lease_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    quic: Option<SocketAddr>,
    listen: Option<SocketAddr>,
    grace: Option<u64>,
}

/// Where and how the node's relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelaySpot {
    pub(crate) quic: SocketAddr,
    pub(crate) listen: SocketAddr,
    pub(crate) grace: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentsFile {
    rpc_url: Option<String>,
    centralizer: Option<Address>,
    key_file: Option<PathBuf>,
    provider_deposit: Option<ipsx_sdk::TokenAmount>,
    grace: Option<u64>,
    anchor: Option<Address>,
    anchor_every: Option<u64>,
}

/// What the node runs with, resolved.
#[derive(Debug)]
pub(crate) struct NodeSettings {
    pub(crate) data_dir: PathBuf,
    pub(crate) gateway: GatewayConfig,
    pub(crate) relay: Option<RelaySpot>,
    pub(crate) accept_relays: bool,
}

impl NodeArgs {
    /// Flags over the file over defaults; the payment settings must come all together.
    pub(crate) fn resolve(self) -> anyhow::Result<NodeSettings> {
        let (file, base) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let file: NodeFile =
                    toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
                (file, path.parent().unwrap_or(Path::new(".")).to_path_buf())
            }
            None => (NodeFile::default(), PathBuf::from(".")),
        };
        let payments_file = file.payments.unwrap_or_default();
        let relay_file = file.relay.unwrap_or_default();
        let relay = match (
            self.relay_quic.or(relay_file.quic),
            self.relay_listen.or(relay_file.listen),
        ) {
            (None, None) => None,
            (Some(quic), Some(listen)) => {
                anyhow::ensure!(
                    !quic.ip().is_unspecified() && !listen.ip().is_unspecified(),
                    "the relay's addresses are told to providers and requesters: give the \
                     ones they reach (e.g. 203.0.113.1:4433), not 0.0.0.0 or ::"
                );
                let grace = self.relay_grace.or(relay_file.grace).unwrap_or(10);
                Some(RelaySpot {
                    quic,
                    listen,
                    grace: Duration::from_secs(grace),
                })
            }
            _ => anyhow::bail!(
                "a relay needs both its QUIC address and its requester address \
                 (--relay-quic and --relay-listen, or quic and listen under [relay])"
            ),
        };
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700)));
        let data_dir = self
            .data_dir
            .or_else(|| file.data_dir.map(|dir| base.join(dir)))
            .unwrap_or_else(|| PathBuf::from("ipsx-node"));
        let chain_id = self.chain_id.or(file.chain_id).unwrap_or(31337);
        let session_rate = self.session_rate.or(file.session_rate).unwrap_or(200.0);
        anyhow::ensure!(
            session_rate.is_finite() && session_rate > 0.0,
            "session_rate must be a positive number of calls per second"
        );
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let session_key = session_key(&data_dir)?;
        let mut gateway = GatewayConfig::new(listen, chain_id, session_key, &data_dir);
        gateway.session_rate = ipsx_gateway::rate::Rate {
            per_second: session_rate,
            burst: session_rate * 2.0,
        };
        gateway.ready_timeout = self.ready_timeout.or(file.ready_timeout).unwrap_or(30);
        gateway.deal_retention = self
            .deal_retention
            .or(file.deal_retention)
            .unwrap_or(gateway.deal_retention);
        if gateway.deal_retention < ipsx_gateway::MIN_DEAL_RETENTION {
            bail!(
                "deal_retention must be at least {} seconds (the node reads each deal after it \
                 finishes), not {}",
                ipsx_gateway::MIN_DEAL_RETENTION,
                gateway.deal_retention
            );
        }
        gateway.public_url = self.public_url.or(file.public_url);
        let cluster_file = file.cluster.unwrap_or_default();
        if let Some(servers) = self.cluster.or(cluster_file.servers) {
            let node = self.node_id.or(cluster_file.node).context(
                "a cluster node needs its id: --node-id (or node under [cluster]), unique in \
                 the cluster",
            )?;
            let advertise = match &gateway.public_url {
                Some(url) => url.clone(),
                None if !listen.ip().is_unspecified() && listen.port() != 0 => {
                    format!("http://{listen}")
                }
                None => bail!(
                    "a cluster node tells clients of the other nodes where it is: give \
                     --public-url, or a --listen address they reach (not 0.0.0.0 or port 0)"
                ),
            };
            let name = self
                .cluster_name
                .or(cluster_file.name)
                .unwrap_or_else(|| "ipsx".to_owned());
            let mut cluster =
                ipsx_engine_cluster::ClusterConfig::new(servers, &name, &node, &advertise);
            if let Some(replicas) = self.cluster_replicas.or(cluster_file.replicas) {
                cluster.replicas = replicas;
            }
            if let Some(lease) = self.cluster_lease_ms.or(cluster_file.lease_ms) {
                cluster.lease = Duration::from_millis(lease);
            }
            cluster.validate()?;
            anyhow::ensure!(
                relay.is_none() && !self.accept_relays,
                "a relay cannot run in a cluster yet: its providers' connections live on one \
                 node (run the cluster without --relay-* and --accept-relays)"
            );
            gateway.cluster = Some(cluster);
        }
        gateway.probe = (!self.no_offer_probe).then(|| ipsx_gateway::ProbeSettings::new(""));
        if let Some(prior) = self
            .rating_prior
            .or(file.rating_prior.map(|amount| amount.0))
        {
            gateway.rating_prior = prior;
        }
        if let Some(fsync) = self.fsync.or(file.fsync) {
            gateway.fsync = fsync_policy(&fsync)?;
        }
        if let Some(contract) = self.anchor.or(payments_file.anchor) {
            let mut anchor = ipsx_gateway::anchoring::AnchorConfig::new(contract);
            if let Some(seconds) = self.anchor_every.or(payments_file.anchor_every) {
                anyhow::ensure!(seconds > 0, "anchor_every must be at least one second");
                anchor.epochs.max_seconds = seconds;
            }
            gateway.anchor = Some(anchor);
        }
        let rpc_url = self.rpc_url.or(payments_file.rpc_url);
        let centralizer = self.centralizer.or(payments_file.centralizer);
        let key_file = self
            .node_key_file
            .or_else(|| payments_file.key_file.map(|file| base.join(file)));
        gateway.payments = match (rpc_url, centralizer, key_file) {
            (None, None, None) => None,
            (Some(rpc_url), Some(centralizer), Some(key_file)) => {
                let text = std::fs::read_to_string(&key_file)
                    .with_context(|| format!("reading {}", key_file.display()))?;
                let key = ipsx_channels::SigningKey::from_hex(text.trim())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
                let mut payments = PaymentsConfig::new(rpc_url, centralizer, key);
                if let Some(deposit) = self
                    .provider_deposit
                    .or(payments_file.provider_deposit.map(|amount| amount.0))
                {
                    payments.provider_deposit = deposit;
                }
                if let Some(grace) = self.grace.or(payments_file.grace) {
                    payments.hub.grace = grace;
                }
                Some(payments)
            }
            _ => anyhow::bail!(
                "payments need all of the RPC URL, the Centralizer address and the node's key \
                 file (--rpc-url, --centralizer, --node-key-file or [payments] in the config)"
            ),
        };
        Ok(NodeSettings {
            data_dir,
            gateway,
            relay,
            accept_relays: self.accept_relays,
        })
    }
}

fn fsync_policy(text: &str) -> anyhow::Result<ipsx_engine_runtime::FsyncPolicy> {
    use ipsx_engine_runtime::FsyncPolicy;
    Ok(match text.trim() {
        "always" => FsyncPolicy::Always,
        "never" => FsyncPolicy::Never,
        other => {
            let millis: u64 = other
                .strip_suffix("ms")
                .and_then(|n| n.trim().parse().ok())
                .with_context(|| format!("fsync {other:?}: use always, never or e.g. 10ms"))?;
            FsyncPolicy::Interval(Duration::from_millis(millis))
        }
    })
}

/// The node's session key: made once, kept in the data directory (owner-only) so sessions
/// survive restarts.
fn session_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    secret(&data_dir.join("session.key"))
}

/// A 32-byte secret kept in `path` (owner-only), made the first time.
fn secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = alloy_primitives::hex::decode(text.trim())
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .with_context(|| format!("{} is not a 64-hex-digit key", path.display()))?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(alloy_primitives::hex::encode(key).as_bytes())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// The node's relay, started before the gateway (which tells providers and requesters where it
/// is); it reaches the gateway through `hook` once that is up.
pub(crate) async fn start_relay(
    spot: RelaySpot,
    data_dir: &Path,
) -> anyhow::Result<(
    Arc<ipsx_relay::RelayHandle>,
    RelaySettings,
    Arc<OnceLock<PresenceHook>>,
)> {
    let identity = ipsx_relay::Identity::load_or_generate(&data_dir.join("relay.identity"))?;
    let key = relay_key(data_dir)?;
    let hook: Arc<OnceLock<PresenceHook>> = Arc::default();
    let to_node = Arc::clone(&hook);
    let on_change: ipsx_relay::OnChange = Arc::new(move |change| {
        match to_node.get() {
            Some(node) => match change {
                ipsx_relay::Change::Up { provider, ip } => node.up(Address::from(provider), ip),
                ipsx_relay::Change::Gone { provider, ip } => {
                    node.gone(Address::from(provider), ip);
                }
            },
            None => tracing::warn!(?change, "relay change before the node is up"),
        }
        Box::pin(async {})
    });
    let mut config =
        ipsx_relay::RelayConfig::new(spot.quic, spot.listen, identity.clone(), key.clone());
    config.grace = spot.grace;
    let relay = Arc::new(
        ipsx_relay::start(config, on_change)
            .await
            .with_context(|| format!("starting the relay on {} and {}", spot.quic, spot.listen))?,
    );
    let mut settings = RelaySettings::new(key);
    settings.local = Some(ipsx_gateway::RelayInfo {
        providers: relay.providers,
        requesters: relay.requesters,
        certificate: identity.certificate,
    });
    let measured = Arc::clone(&relay);
    settings.quality = Some(Arc::new(move || {
        measured
            .qualities()
            .into_iter()
            .map(relay_quality)
            .collect()
    }));
    Ok((relay, settings, hook))
}

/// The key the node shares with its relays, made once and kept in the data directory.
fn relay_key(data_dir: &Path) -> anyhow::Result<ipsx_credentials::RelayKey> {
    Ok(ipsx_credentials::RelayKey::new(secret(
        &data_dir.join("relay.key"),
    )?))
}

/// The relay's measures as the API shows them.
pub(crate) fn relay_quality(quality: ipsx_relay::Quality) -> (Address, ipsx_sdk::RelayQuality) {
    let connection = quality.connection;
    (
        Address::from(quality.provider),
        ipsx_sdk::RelayQuality {
            uptime: quality.uptime,
            connected: connection.is_some(),
            connected_secs: connection.map(|c| c.connected_secs),
            rtt_ms: connection.map(|c| u64::try_from(c.rtt.as_millis()).unwrap_or(u64::MAX)),
            streams: connection.map_or(0, |c| c.streams),
            failed_streams: connection.map_or(0, |c| c.failed),
        },
    )
}

/// Runs the node until SIGINT/SIGTERM.
pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let mut settings = args.resolve()?;
    let listen = settings.gateway.listen;
    let relay = match settings.relay {
        Some(spot) => Some(start_relay(spot, &settings.data_dir).await?),
        None => None,
    };
    settings.gateway.relay = match &relay {
        Some((_, relay_settings, _)) => Some(relay_settings.clone()),
        None if settings.accept_relays => Some(RelaySettings::new(relay_key(&settings.data_dir)?)),
        None => None,
    };
    let node = ipsx_gateway::start(settings.gateway)
        .await
        .with_context(|| format!("starting the node on {listen}"))?;
    if let Some((handle, _, hook)) = &relay {
        let _ = hook.set(node.presence());
        println!(
            "relay quic {} requesters {}",
            handle.providers, handle.requesters
        );
    }
    // Scripts that asked for port 0 read the real address here.
    println!("listening {}", node.addr);
    if let Some(address) = node.node_address() {
        println!("settling as {address}");
    }
    tracing::info!(data_dir = %settings.data_dir.display(), "node running");
    let failure = tokio::select! {
        () = crate::shutdown_signal() => None,
        failure = node.failed() => Some(failure),
    };
    tracing::info!("shutting down");
    let stopped = tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .context("shutdown took over 30 s")?;
    match failure {
        // Non-zero, so a supervisor restarts the node; recovery replays the journal.
        Some(failure) => {
            if let Err(error) = stopped {
                tracing::error!(%error, "stopping the failed node");
            }
            Err(anyhow::anyhow!("the node failed: {failure}"))
        }
        None => Ok(stopped?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("node.key"), "11".repeat(32)).expect("key");
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"state\"\nsession_rate = 50.0\n\
             [payments]\nrpc_url = \"http://127.0.0.1:8545\"\n\
             centralizer = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n\
             key_file = \"node.key\"\nprovider_deposit = \"7\"\n",
        )
        .expect("config");
        let args = NodeArgs {
            config: Some(config.clone()),
            listen: Some("127.0.0.1:9001".parse().expect("addr")),
            grace: Some(5),
            ..NodeArgs::default()
        };
        let settings = args.resolve().expect("resolves");
        assert_eq!(settings.gateway.listen.port(), 9001, "the flag wins");
        assert_eq!(
            settings.data_dir,
            dir.path().join("state"),
            "relative to the file"
        );
        assert_eq!(settings.gateway.session_rate.per_second, 50.0);
        assert_eq!(settings.gateway.ready_timeout, 30, "default");
        assert_eq!(
            settings.gateway.fsync,
            ipsx_engine_runtime::FsyncPolicy::Always
        );
        assert_eq!(
            fsync_policy("5ms").expect("parses"),
            ipsx_engine_runtime::FsyncPolicy::Interval(Duration::from_millis(5))
        );
        assert!(fsync_policy("sometimes").is_err());
        let payments = settings.gateway.payments.expect("payments");
        assert_eq!(payments.provider_deposit, 7);
        assert_eq!(payments.hub.grace, 5);

        std::fs::write(&config, "[payments]\nrpc_url = \"http://127.0.0.1:8545\"\n")
            .expect("config");
        let partial = NodeArgs {
            config: Some(config.clone()),
            data_dir: Some(dir.path().join("other")),
            ..NodeArgs::default()
        };
        let error = partial.resolve().expect_err("incomplete payments");
        assert!(format!("{error:#}").contains("Centralizer"), "{error:#}");

        std::fs::write(&config, "listen = \"127.0.0.1:9000\"\nlisten_port = 3\n").expect("config");
        let typo = NodeArgs {
            config: Some(config),
            ..NodeArgs::default()
        };
        let error = typo.resolve().expect_err("unknown key");
        assert!(format!("{error:#}").contains("listen_port"), "{error:#}");
    }
}
