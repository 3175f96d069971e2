//! The node's HTTP API (axum): sign-in, sessions, limits, and the JSON error envelope.
//!
//! Every call is checked in this order: body size (`max_body`), JSON shape, session (bearer
//! token from [`crate::session`]), rate (per session; per client IP before sign-in). A refusal
//! at any step is an [`ApiError`] and changes nothing.

use crate::error::ErrorCode;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy_primitives::Address;
use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;

use ipsx_engine::{CommandKind, Engine, Event, OfferId};
use ipsx_engine_runtime::{ShardConfig, ShardHandle, StoreConfig};

use crate::error::ApiError;
use crate::feed::{Streams, unix_now};
use crate::market::{deal_view, offer_spec, request_spec, to_engine};
use crate::metrics::Metrics;
use crate::payments::{Payments, PaymentsConfig, PaymentsError, Standing};
use crate::probe::ProbeSettings;
use crate::rate::{Rate, RateLimiter};
use crate::registry::{Registry, RegistryError};
use crate::relayed::{Observed, PresenceHook, RelaySettings};
use crate::session::{SignIn, SignInDomain, SignInLimits, parse_address};
use ipsx_api::{
    ChallengeRequest, ChallengeResponse, DealView, Deals, DealsQuery, LeaseBody, LeaseView, Leased,
    MeResponse, OfferBody, OfferCancelled, OfferPlaced, ProfileView, ProviderBody,
    ProviderRegistered, RatingBody, RelayAccess, SessionRequest, SessionResponse,
};
use ipsx_api::{ChannelBody, ChannelView, WalletView};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The chain the node settles on (sign-in messages name it).
    pub chain_id: u64,
    /// The URL clients reach the node at (`https://node.example`), which sign-in messages name
    /// as their domain and URI; by default the address the API is bound to (the real port,
    /// also when `listen` asks for port 0).
    pub public_url: Option<String>,
    /// The key session tokens are MACed with; keep it across restarts to keep sessions.
    pub session_key: [u8; 32],
    /// Challenge and session lifetimes.
    pub sign_in: SignInLimits,
    /// Calls per signed-in address. Default 200/s, bursts of 400.
    pub session_rate: Rate,
    /// Calls per client IP before sign-in. Default 20/s, bursts of 40.
    pub anonymous_rate: Rate,
    /// Largest request body, bytes. Default 1 MiB (a batch lease of 100,000 IPs fits).
    pub max_body: usize,
    /// Where the engine keeps its journal and snapshots.
    pub data_dir: PathBuf,
    /// The chain and payment hub; `None` runs a market without payments (tests, benchmarks).
    pub payments: Option<PaymentsConfig>,
    /// Seconds a provider has from a lease's start to report ready before the deal is voided
    /// and its IPs re-matched. Default 30.
    pub ready_timeout: u64,
    /// How often the engine's clock moves without calls, so ready deadlines, lease ends and
    /// expiries fire on time. Default every second; `None` moves it only with calls (tests that
    /// decide which call fires a timer). The payment hub's clock follows the engine's, so with
    /// `None` an idle engine holds payments and cut-offs too.
    pub engine_tick: Option<std::time::Duration>,
    /// Seconds a finished deal stays in the engine's memory (ratings and moves need it there);
    /// at least 60. `GET /v1/deals` reads older ones from the node's history on disk. Default
    /// an hour.
    pub deal_retention: u64,
    /// Paid usage (token base units) every wallet's rating starts with at 3 stars; see
    /// `ipsx_engine::EngineConfig::rating_prior`. Default one IPSX.
    pub rating_prior: u128,
    /// When the engine's journal is flushed to the disk. Default: before every answer
    /// (`Always`); every call is written to the OS before it is answered in any case, so a
    /// killed process loses nothing it acknowledged — the policy is about power loss.
    pub fsync: ipsx_engine_runtime::FsyncPolicy,
    /// The relay this node runs for providers behind NAT, if any.
    pub relay: Option<RelaySettings>,
    /// Prove direct providers' IPs before their offers go live. Default: off (the `ipsx node`
    /// command turns it on).
    pub probe: Option<ProbeSettings>,
    /// Anchor the deal book in this `DealAnchor` contract (needs `payments`: the node's key
    /// anchors, through its one sender). Default: none.
    pub anchor: Option<crate::anchoring::AnchorConfig>,
    /// Run as one node of a cluster: the engine follows the cluster's log and leads when it
    /// wins the lease; with `payments`, the leader runs the hub and every node follows the
    /// cluster's payments log. Default: alone.
    pub cluster: Option<ipsx_engine_cluster::ClusterConfig>,
}

impl GatewayConfig {
    /// Defaults for a node on `listen` settling on `chain_id`, keeping its state in `data_dir`.
    pub fn new(
        listen: SocketAddr,
        chain_id: u64,
        session_key: [u8; 32],
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            listen,
            chain_id,
            public_url: None,
            session_key,
            sign_in: SignInLimits::default(),
            session_rate: Rate {
                per_second: 200.0,
                burst: 400.0,
            },
            anonymous_rate: Rate {
                per_second: 20.0,
                burst: 40.0,
            },
            max_body: 1 << 20,
            data_dir: data_dir.into(),
            payments: None,
            ready_timeout: 30,
            deal_retention: 3_600,
            engine_tick: Some(std::time::Duration::from_secs(1)),
            rating_prior: ipsx_engine::EngineConfig::default().rating_prior,
            fsync: ipsx_engine_runtime::FsyncPolicy::Always,
            relay: None,
            probe: None,
            anchor: None,
            cluster: None,
        }
    }
}

/// Why the gateway could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Binding or serving failed.
    #[error("gateway I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The engine's store could not be opened or closed.
    #[error(transparent)]
    Store(#[from] ipsx_engine_runtime::StoreError),
    /// The configuration cannot work (a public URL that is not one).
    #[error("gateway configuration: {0}")]
    Config(String),
    /// The node's registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The deal history could not be opened.
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    /// The chain or the payment stores could not be set up.
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    /// Anchoring could not be set up (its log, or a contract the node may not anchor in).
    #[error("deal anchoring: {0}")]
    Anchoring(String),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] ipsx_engine_cluster::ClusterError),
}

/// A running gateway.
pub struct GatewayHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    feed: tokio::task::JoinHandle<()>,
    state: Shared,
    /// The cluster node the engine runs in, when in a cluster.
    cluster: crate::cluster::NodeSlot,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// What the node's relay calls when a relayed provider's presence changes.
    pub fn presence(&self) -> PresenceHook {
        PresenceHook(Arc::clone(&self.state))
    }

    /// Resolves when the node can no longer work (its engine's writer stopped on a disk error
    /// or a panic), with why. A process running the node should then stop with an error so
    /// that its supervisor restarts it: recovery from the journal loses nothing acknowledged.
    pub async fn failed(&self) -> String {
        let mut failure = self.state.failure.subscribe();
        match failure.wait_for(Option::is_some).await {
            Ok(failure) => failure.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Moves the engine's clock forward to `at` (unix seconds) now: whatever falls due by then
    /// happens, and calls after it are stamped no earlier. For tests and drills that must see
    /// time pass (retention, expiries) without waiting for it. Refused if `at` is in the
    /// engine's past.
    pub async fn advance_engine_clock(&self, at: u64) -> Result<(), ApiError> {
        let shard = self.state.shard()?;
        let outcome = tokio::task::spawn_blocking(move || {
            shard.submit_at(Some(ipsx_engine::Timestamp(at)), CommandKind::Tick)
        })
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
        outcome
            .result
            .map(drop)
            .map_err(|e| ApiError::bad_request(ErrorCode::ClockWentBackwards, e.to_string()))
    }

    /// The node's address on chain, when it runs with payments.
    pub fn node_address(&self) -> Option<Address> {
        self.state.payments.config.as_ref().map(|p| p.key.address())
    }

    /// Stops accepting, lets calls in progress finish, claims every requester proof it holds
    /// on chain, then closes the engine's store.
    pub async fn shutdown(mut self) -> Result<(), GatewayError> {
        self.stop.send_replace(true);
        self.served
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let _ = self.feed.await;
        if let Some(payments) = self.state.payments.running() {
            payments.settle(unix_now(), true).await;
        }
        let shard = lock(&self.state.shard).take();
        if let Some(node) = self.cluster.0.take() {
            // The cluster node holds the shard too; it shuts it down once the calls still
            // finishing let go of theirs.
            drop(shard);
            tokio::task::spawn_blocking(move || node.shutdown())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        } else if let Some(mut shard) = shard {
            // Calls still finishing hold the shard for a moment; the writer must be the last.
            let shard = loop {
                match Arc::try_unwrap(shard) {
                    Ok(shard) => break shard,
                    Err(shared) => {
                        shard = shared;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            };
            tokio::task::spawn_blocking(move || shard.shutdown())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        Ok(())
    }
}

/// The node's state every call shares.
pub struct AppState {
    /// Counters and latencies for `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// The engine's single shard (taken out at shutdown).
    shard: Mutex<Option<Arc<ShardHandle>>>,
    /// Providers' proxy keys and offers' protocols.
    registry: Arc<Registry>,
    /// Finished deals, on disk.
    pub(crate) history: Arc<crate::history::History>,
    sign_in: SignIn,
    per_session: Mutex<RateLimiter<Address>>,
    per_ip: Mutex<RateLimiter<IpAddr>>,
    origin: Instant,
    /// The hub, stores and chain client, when the node runs with a chain.
    pub(crate) payments: crate::payments::PaymentsSlot,
    /// Each party's event streams.
    pub(crate) streams: Streams,
    /// Set once the engine's writer is found dead (why), for health and the process.
    failure: watch::Sender<Option<String>>,
    /// The relay for providers behind NAT, if this node runs one.
    relay: Option<RelaySettings>,
    /// How direct providers' IPs are proven, if they are.
    probe: Option<ProbeSettings>,
    /// The IP each connected relayed provider comes from.
    pub(crate) observed: Observed,
    /// The deal book's epochs and their anchoring, when the node anchors.
    pub(crate) anchoring: Option<Arc<crate::anchoring::Anchoring>>,
    /// The latest deals made, for the public dashboard.
    pub(crate) recent: crate::dashboard::Recent,
    /// Told when the feed must start over as after a restart (a cluster node that now leads
    /// runs the hub: every running deal is metered again from the book).
    pub(crate) feed_restart: tokio::sync::Notify,
    /// Turns true when the node stops: streams that would never end (server-sent events) end.
    pub(crate) stopping: watch::Receiver<bool>,
    /// The node's cluster, when it runs in one.
    pub(crate) cluster: Option<crate::cluster::ClusterLink>,
    /// The URL clients reach this node at.
    pub(crate) public_url: String,
}

type Shared = Arc<AppState>;

impl AppState {
    fn seconds(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Whether the engine can still apply commands (the feed asks every second, health on
    /// every call); a dead writer is noted once.
    pub(crate) fn engine_alive(&self) -> bool {
        if self.failure.borrow().is_some() {
            return false;
        }
        let alive = lock(&self.shard)
            .as_ref()
            .is_none_or(|shard| shard.writer_alive());
        if !alive {
            self.note_engine_down();
        }
        alive
    }

    fn note_engine_down(&self) {
        self.fail("the engine's writer stopped".to_owned());
    }

    /// Marks the node failed (once): health turns `engine_down` and [`GatewayHandle::failed`]
    /// resolves, so the process stops and its supervisor restarts it.
    pub(crate) fn fail(&self, why: String) {
        if self.failure.borrow().is_none() {
            tracing::error!("{why}: the node cannot apply anything");
            self.failure.send_replace(Some(why));
        }
    }

    /// Why the engine cannot answer: the node is stopping (the shard was taken out), or the
    /// writer died (its queue or an answer dropped while the shard is in place — the thread
    /// may still be unwinding, so this does not wait for it to be finished).
    fn unavailable(&self) -> ApiError {
        if lock(&self.shard).is_none() {
            return stopping();
        }
        self.note_engine_down();
        engine_down()
    }

    fn reached<T, E>(&self, result: Result<T, E>) -> Result<T, ApiError> {
        result.map_err(|_| self.unavailable())
    }

    /// A command handed to the shard: refused at once on a follower (`not_leader`), or the
    /// writer is gone.
    fn posted(&self, result: Result<(), ipsx_engine_runtime::SubmitError>) -> Result<(), ApiError> {
        match (result, &self.cluster) {
            (Err(ipsx_engine_runtime::SubmitError::NotLeader), Some(cluster)) => {
                Err(cluster.not_leader())
            }
            (result, _) => self.reached(result),
        }
    }

    /// Refuses unless this node takes writes (only a cluster's follower does not).
    pub(crate) fn require_leader(&self) -> Result<(), ApiError> {
        self.cluster
            .as_ref()
            .map_or(Ok(()), crate::cluster::ClusterLink::require_leader)
    }

    /// The payment hub: `None` on a node without a chain; on a cluster's follower (the
    /// leader runs the hub), the refusal that names the leader.
    pub(crate) fn payments(&self) -> Result<Option<&Arc<Payments>>, ApiError> {
        if self.payments.config.is_none() {
            return Ok(None);
        }
        match (self.payments.running(), &self.cluster) {
            (Some(payments), _) => Ok(Some(payments)),
            (None, Some(cluster)) => Err(cluster.not_leader()),
            (None, None) => Err(internal("the payment hub is not running".to_owned())),
        }
    }
}

/// Locks a mutex; a panic elsewhere while holding it does not poison the node.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The retention is part of the engine's journaled state: a new one is a command.
pub(crate) fn set_deal_retention(shard: &ShardHandle, seconds: u64) -> Result<(), GatewayError> {
    let current = shard
        .query(|engine| engine.config().deal_retention)
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    if current == seconds {
        return Ok(());
    }
    let outcome = shard
        .submit(CommandKind::SetDealRetention { seconds })
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    outcome
        .result
        .map(drop)
        .map_err(|e| GatewayError::Config(format!("deal retention: {e}")))
}

/// Recovers the engine from `data_dir`, binds, and serves until [`GatewayHandle::shutdown`].
pub async fn start(config: GatewayConfig) -> Result<GatewayHandle, GatewayError> {
    let mut store = StoreConfig::new(config.data_dir.join("engine"));
    store.engine.ready_timeout = config.ready_timeout;
    store.engine.rating_prior = config.rating_prior;
    store.fsync = config.fsync;
    let mut shard_config = ShardConfig::new(store);
    shard_config.tick_every = config.engine_tick;
    let retention = config.deal_retention;
    let mut session_key = config.session_key;
    let (shard, cluster) = match &config.cluster {
        None => {
            let shard = tokio::task::spawn_blocking(move || {
                let shard = ShardHandle::start(shard_config)?;
                set_deal_retention(&shard, retention)?;
                Ok::<_, GatewayError>(shard)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            (Arc::new(shard), None)
        }
        Some(cluster) => {
            check_cluster_settings(&config)?;
            let shared = ipsx_engine_cluster::Shared::open(cluster).await?;
            let payments_log = match &config.payments {
                Some(_) => Some(ipsx_engine_cluster::OpLog::open(cluster, "PAYMENTS").await?),
                None => None,
            };
            session_key = crate::cluster::session_key(&shared, session_key).await?;
            let settings = cluster.clone();
            let node = tokio::task::spawn_blocking(move || {
                ipsx_engine_cluster::ClusterNode::start(shard_config, settings)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            let link = crate::cluster::ClusterLink {
                node: cluster.node.clone(),
                status: node.watch(),
                shared,
                payments_log,
            };
            (Arc::clone(node.shard()), Some((node, link)))
        }
    };
    let (cluster_node, cluster) = match cluster {
        Some((node, link)) => (Some(node), Some(link)),
        None => (None, None),
    };
    let cluster_node = crate::cluster::NodeSlot(cluster_node);
    let registry = Registry::open(&config.data_dir.join("node.redb"))?;
    let history = crate::history::History::open(&config.data_dir.join("history.redb"))?;
    let ledger = match &config.payments {
        Some(_) => Some(Arc::new(
            crate::payments::Ledger::open(&config.data_dir).map_err(PaymentsError::from)?,
        )),
        None => None,
    };
    let payments = crate::payments::PaymentsSlot::new(config.payments.clone(), ledger);
    // A node alone runs the hub from the start; a cluster's leader, once it leads.
    if let (Some(settings), Some(ledger), None) =
        (&payments.config, &payments.ledger, &config.cluster)
    {
        let hub = Payments::start(settings.clone(), Arc::clone(ledger), unix_now()).await?;
        payments.run(Arc::new(hub));
    }
    let anchoring = match (&config.anchor, payments.running()) {
        (Some(anchor), Some(payments)) => Some(Arc::new(
            open_anchoring(&config.data_dir, *anchor, payments.chain()).await?,
        )),
        (Some(_), None) => {
            return Err(GatewayError::Anchoring(
                "anchoring needs the chain: run the node with payments".to_owned(),
            ));
        }
        (None, _) => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let domain =
        SignInDomain::for_url(&public_url, config.chain_id).map_err(GatewayError::Config)?;
    let mut probe = config.probe.clone();
    if let Some(probe) = probe.as_mut().filter(|probe| probe.echo_url.is_empty()) {
        let base = if public_url.starts_with("http://") {
            public_url.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        probe.echo_url = format!("{base}/v1/echo");
    }
    let (stop, mut stopped) = watch::channel(false);
    let state = Arc::new(AppState {
        metrics: Arc::new(Metrics::default()),
        shard: Mutex::new(Some(shard)),
        registry: Arc::new(registry),
        history: Arc::new(history),
        sign_in: SignIn::new(domain, config.sign_in, session_key),
        per_session: Mutex::new(RateLimiter::new(config.session_rate, 100_000)),
        per_ip: Mutex::new(RateLimiter::new(config.anonymous_rate, 100_000)),
        origin: Instant::now(),
        payments,
        streams: Streams::default(),
        failure: watch::channel(None).0,
        relay: config.relay.clone(),
        probe,
        observed: Observed::default(),
        anchoring,
        recent: crate::dashboard::Recent::default(),
        feed_restart: tokio::sync::Notify::new(),
        stopping: stop.subscribe(),
        cluster,
        public_url,
    });
    let app = router(Arc::clone(&state), config.max_body);
    let feed = tokio::spawn(crate::feed::run(Arc::clone(&state), stop.subscribe()));
    if let Some(link) = &state.cluster {
        tokio::spawn(crate::cluster::follow_registry(
            link.shared.clone(),
            Arc::clone(&state.registry),
            stop.subscribe(),
        ));
        tokio::spawn(crate::cluster::follow_status(
            Arc::clone(&state),
            link.status.clone(),
            retention,
            stop.subscribe(),
        ));
        if let Some(log) = &link.payments_log {
            tokio::spawn(crate::cluster::run_payments(
                Arc::clone(&state),
                log.clone(),
                link.status.clone(),
                stop.subscribe(),
            ));
        }
    }
    if let Some(payments) = state.payments.running() {
        tokio::spawn(Arc::clone(payments).watch(0, stop.subscribe()));
        if let Some(anchoring) = &state.anchoring {
            tokio::spawn(crate::anchoring::run(
                Arc::clone(anchoring),
                payments.chain().clone(),
                Arc::clone(&state.metrics),
                stop.subscribe(),
            ));
        }
    }
    if let Some(relay) = &state.relay {
        tokio::spawn(crate::relayed::follow_quality(
            Arc::clone(&state),
            relay.quality.clone(),
            relay.note_every,
            stop.subscribe(),
        ));
    }
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
    });
    tracing::info!(%addr, "gateway listening");
    Ok(GatewayHandle {
        addr,
        stop,
        served,
        feed,
        state,
        cluster: cluster_node,
    })
}

/// What a node in a cluster cannot run yet: the parts whose state lives on one node only.
fn check_cluster_settings(config: &GatewayConfig) -> Result<(), GatewayError> {
    let refuse = |what: &str| {
        Err(GatewayError::Config(format!(
            "{what} cannot run in a cluster yet: its state lives on one node (run the cluster \
             without it, or one node alone)"
        )))
    };
    if config.anchor.is_some() {
        return refuse("anchoring");
    }
    if config.relay.is_some() {
        return refuse("the relay");
    }
    Ok(())
}

/// Opens the anchoring log after checking the node may anchor in the contract.
async fn open_anchoring(
    data_dir: &std::path::Path,
    anchor: crate::anchoring::AnchorConfig,
    chain: &ipsx_channels_runtime::chain::ChainClient,
) -> Result<crate::anchoring::Anchoring, GatewayError> {
    let failed =
        |e: ipsx_channels_runtime::chain::ChainError| GatewayError::Anchoring(e.to_string());
    let anchorer = crate::anchoring::anchorer(chain, anchor.contract)
        .await
        .map_err(failed)?;
    if anchorer != chain.address() {
        return Err(GatewayError::Anchoring(format!(
            "the DealAnchor at {} takes roots from {anchorer}, not from the node ({})",
            anchor.contract,
            chain.address()
        )));
    }
    let on_chain = crate::anchoring::anchored_epochs(chain, anchor.contract)
        .await
        .map_err(failed)?;
    let chain_id = chain.domain().chain_id();
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::anchoring::Anchoring::open(&data_dir, anchor, chain_id, on_chain)
    })
    .await
    .map_err(|e| GatewayError::Anchoring(e.to_string()))?
    .map_err(|e| GatewayError::Anchoring(e.to_string()))
}

fn router(state: Shared, max_body: usize) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let metrics_route = Router::new()
        .route("/metrics", get(crate::metrics::serve))
        .with_state(Arc::clone(&metrics));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/cluster", get(crate::cluster::view))
        .route("/", get(crate::dashboard::index))
        .route("/assets/{*path}", get(crate::dashboard::asset))
        .route("/v1/market/depth", get(crate::dashboard::depth))
        .route("/v1/market/live", get(crate::dashboard::live))
        .route("/v1/market/recent", get(crate::dashboard::recent))
        .route("/openapi.json", get(openapi))
        .route("/v1/auth/challenge", post(challenge))
        .route("/v1/auth/session", post(open_session))
        .route("/v1/auth/link", post(login_link))
        .route("/v1/auth/link/session", post(link_session))
        .route("/v1/me", get(me))
        .route("/v1/providers", post(register_provider))
        .route("/v1/relay/access", post(relay_access))
        .route("/v1/relays/report", post(relay_report))
        .route("/v1/echo", get(echo))
        .route("/v1/offers", post(place_offer).get(my_offers))
        .route("/v1/offers/{offer}", delete(cancel_offer))
        .route("/v1/leases", post(lease))
        .route("/v1/deals", get(deals))
        .route("/v1/deals/{deal}/ready", post(deal_ready))
        .route("/v1/deals/{deal}/failed", post(deal_failed))
        .route("/v1/deals/{deal}/cancel", post(deal_cancel))
        .route("/v1/deals/{deal}/rating", post(deal_rating))
        .route("/v1/deals/{deal}/proofs", get(deal_proofs))
        .route("/v1/profiles/{address}", get(profile))
        .route("/v1/wallet", get(wallet))
        .route("/v1/wallet/channel", post(register_channel))
        .route("/v1/wallet/claims", get(wallet_claims))
        .route("/v1/stream", get(crate::stream::stream))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .merge(metrics_route)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
}

// ---------------------------------------------------------------------------------------------
// Extractors: JSON bodies with our error envelope, sessions, anonymous rate limits.

/// A JSON body; shape errors become [`ApiError`]s instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

/// A query string; shape errors become [`ApiError`]s (`bad_query`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                ErrorCode::BadQuery,
                rejection.body_text(),
            )),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::JsonRequired,
        _ => ErrorCode::BadJson,
    };
    ApiError::new(
        if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        },
        code,
        rejection.body_text(),
    )
}

/// A path parameter; a malformed one is an [`ApiError`] (`bad_path`).
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                ErrorCode::BadPath,
                rejection.body_text(),
            )),
        }
    }
}

/// The signed-in caller, rate-limited per address.
pub struct Caller(pub Address);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    ErrorCode::SessionRequired,
                    "sign in first: Authorization: Bearer <token>",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized(ErrorCode::InvalidSession, "expected `Bearer <token>`")
            })?;
        let address = state.sign_in.verify(token, unix_now())?;
        lock(&state.per_session)
            .check(&address, state.seconds())
            .map_err(ApiError::rate_limited)?;
        Ok(Self(address))
    }
}

/// A caller not signed in yet, rate-limited per IP.
pub struct Anonymous;

impl FromRequestParts<Shared> for Anonymous {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::NoPeer,
                    "peer address unknown",
                )
            })?;
        lock(&state.per_ip)
            .check(&crate::rate::client_key(ip), state.seconds())
            .map_err(ApiError::rate_limited)?;
        Ok(Self)
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn health(State(state): State<Shared>) -> (StatusCode, Json<crate::openapi::Health>) {
    let status = if !state.engine_alive() {
        "engine_down"
    } else if lock(&state.shard).is_none() {
        "stopping"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(crate::openapi::Health { status }))
}

async fn openapi() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match crate::openapi::document().to_json() {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(error) => internal(error.to_string()).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

async fn challenge(
    _: Anonymous,
    State(state): State<Shared>,
    ApiJson(request): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let address = parse_address(&request.address)
        .map_err(|message| ApiError::bad_request(ErrorCode::BadAddress, message))?;
    let challenge = state.sign_in.challenge(address, unix_now(), randomness()?);
    Ok(Json(ChallengeResponse {
        nonce: challenge.nonce,
        message: challenge.message,
        expires_at: challenge.expires_at,
    }))
}

fn randomness() -> Result<[u8; 8], ApiError> {
    let mut randomness = [0u8; 8];
    getrandom::fill(&mut randomness).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NoRandomness,
            e.to_string(),
        )
    })?;
    Ok(randomness)
}

/// `POST /v1/auth/link`: a one-time login link for the caller's browser.
async fn login_link(
    Caller(address): Caller,
    State(state): State<Shared>,
) -> Result<Json<ipsx_api::LoginLink>, ApiError> {
    let (code, expires_at) = state.sign_in.login_link(address, unix_now(), randomness()?);
    let base = state.sign_in.domain().uri.trim_end_matches('/').to_owned();
    Ok(Json(ipsx_api::LoginLink {
        url: format!("{base}/#login={code}"),
        code,
        expires_at,
    }))
}

/// `POST /v1/auth/link/session`: a login link's code traded for a session, once.
async fn link_session(
    _: Anonymous,
    State(state): State<Shared>,
    ApiJson(request): ApiJson<ipsx_api::LinkSessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let session = state.sign_in.redeem_link(&request.code, unix_now())?;
    Ok(Json(session_response(session)))
}

fn session_response(session: crate::session::Session) -> SessionResponse {
    SessionResponse {
        token: session.token,
        address: session.address,
        expires_at: session.expires_at,
    }
}

/// `GET /v1/offers`: the caller's offers still in the book.
async fn my_offers(
    Caller(caller): Caller,
    State(state): State<Shared>,
) -> Result<Json<ipsx_api::Offers>, ApiError> {
    let provider = to_engine(caller);
    let offers = state
        .query(move |engine| {
            engine
                .offers_of(provider)
                .map(|offer| ipsx_api::OfferView {
                    offer: offer.id.0,
                    country: offer.country.code().to_owned(),
                    kind: crate::market::api_kind(offer.kind),
                    protocols: offer
                        .protocols
                        .iter()
                        .map(crate::market::api_protocol)
                        .collect(),
                    price: ipsx_api::TokenAmount(offer.price),
                    ips: offer.ip_count(),
                    idle: offer.idle_count(),
                    until: offer.window.until.0,
                })
                .collect()
        })
        .await?;
    Ok(Json(ipsx_api::Offers { offers }))
}

async fn open_session(
    _: Anonymous,
    State(state): State<Shared>,
    ApiJson(request): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let signature = alloy_primitives::hex::decode(request.signature.trim()).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::BadSignature,
            "the signature must be hex (0x + 130 digits)",
        )
    })?;
    let session = state
        .sign_in
        .complete(&request.nonce, &signature, unix_now())?;
    Ok(Json(session_response(session)))
}

async fn me(Caller(address): Caller) -> Json<MeResponse> {
    Json(MeResponse { address })
}

// ---------------------------------------------------------------------------------------------
// The market

impl AppState {
    pub(crate) fn shard(&self) -> Result<Arc<ShardHandle>, ApiError> {
        lock(&self.shard).clone().ok_or_else(stopping)
    }

    /// Submits a command and waits until it is durable; the engine's events or its refusal.
    pub(crate) async fn submit(&self, kind: CommandKind) -> Result<Vec<Event>, ApiError> {
        Ok(self.submit_and_read(kind, |_, _| ()).await?.0)
    }

    /// Submits a command and, once it is durable, reads the engine in the same writer round
    /// trip (no thread parked meanwhile: the writer answers through a oneshot channel).
    pub(crate) async fn submit_and_read<R: Send + 'static>(
        &self,
        kind: CommandKind,
        read: impl FnOnce(&[Event], &Engine) -> R + Send + 'static,
    ) -> Result<(Vec<Event>, R), ApiError> {
        let shard = self.shard()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.posted(shard.submit_then(
            kind,
            move |outcome, engine| {
                outcome.result.map(|events| {
                    let read = read(&events, engine);
                    (events.into_vec(), read)
                })
            },
            move |result| {
                let _ = answer.send(result);
            },
        ))?;
        Ok(self.reached(answered.await)??)
    }

    /// Reads the engine between batches.
    pub(crate) async fn query<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let shard = self.shard()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.reached(shard.query_then(read, move |read| {
            let _ = answer.send(read);
        }))?;
        self.reached(answered.await)
    }
}

fn stopping() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Stopping,
        "the node is shutting down",
    )
}

fn engine_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::EngineDown,
        "the node's engine stopped; it is restarting",
    )
}

pub(crate) fn internal(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        message,
    )
}

async fn place_offer(
    Caller(provider): Caller,
    State(state): State<Shared>,
    ApiJson(body): ApiJson<OfferBody>,
) -> Result<(StatusCode, Json<OfferPlaced>), ApiError> {
    let spec = offer_spec(&body, provider, unix_now())?;
    // Probing IPs is work only the node that places the offer should do.
    state.require_leader()?;
    let registered = state
        .registry
        .provider(provider)
        .map_err(|e| internal(e.to_string()))?;
    match (&registered, &state.probe) {
        (Some(entry), _) if entry.relayed => {
            let offered = crate::market::offer_ips(&body)?;
            crate::relayed::check_offer(state.observed.ip(provider), &offered)?;
        }
        (Some(entry), Some(probe)) => {
            let offered = crate::market::offer_ips(&body)?;
            crate::probe::prove_all(probe, &entry.key, &offered, entry.port, unix_now()).await?;
        }
        (None, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ProviderNotRegistered,
                "register your proxy first (POST /v1/providers): the node proves each offered \
                 IP through it",
            ));
        }
        (_, None) => {}
    }
    if let Some(payments) = state.payments()?
        && !payments.has_provider(provider).await
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ProviderNotRegistered,
            "register your proxy first (POST /v1/providers): the node opens your payment \
             channel then",
        ));
    }
    let events = state.submit(CommandKind::PlaceOffer(spec)).await?;
    let placed = events
        .iter()
        .find_map(|event| match event {
            Event::OfferPlaced { offer, ips } => Some(OfferPlaced {
                offer: offer.0,
                ips: *ips,
            }),
            _ => None,
        })
        .ok_or_else(|| internal("the engine placed no offer".into()))?;
    state.metrics.offers.inc();
    Ok((StatusCode::CREATED, Json(placed)))
}

async fn cancel_offer(
    Caller(provider): Caller,
    State(state): State<Shared>,
    ApiPath(offer): ApiPath<u64>,
) -> Result<Json<OfferCancelled>, ApiError> {
    state
        .submit(CommandKind::CancelOffer {
            offer: OfferId(offer),
            provider: to_engine(provider),
        })
        .await?;
    Ok(Json(OfferCancelled { offer }))
}

impl AppState {
    /// For a relayed provider's deals: the relay key and where requesters reach the provider.
    fn relay_route(&self, provider: Address) -> Option<(ipsx_credentials::RelayKey, SocketAddr)> {
        let relay = self.relay.as_ref()?;
        let at = self.observed.requesters(provider, relay.local.as_ref())?;
        Some((relay.key.clone(), at))
    }

    /// In a cluster, a provider registered through another node may not have reached this
    /// node's registry yet (its copy follows the shared values): the deals' providers that
    /// `caller` gets endpoints for are read from the shared values first.
    async fn know_providers(&self, deals: &[DealView], caller: Address) -> Result<(), ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let mut missing: Vec<Address> = Vec::new();
        for deal in deals.iter().filter(|deal| deal.requester == caller) {
            if !missing.contains(&deal.provider)
                && self
                    .registry
                    .provider(deal.provider)
                    .map_err(|e| internal(e.to_string()))?
                    .is_none()
            {
                missing.push(deal.provider);
            }
        }
        for provider in missing {
            cluster.fetch_provider(&self.registry, provider).await?;
        }
        Ok(())
    }

    fn lease_view(&self, deal: DealView, caller: Address) -> Result<LeaseView, ApiError> {
        let endpoints = if deal.requester == caller {
            self.registry
                .endpoints(&deal, self.relay_route(deal.provider).as_ref())
                .map_err(|e| internal(e.to_string()))?
        } else {
            Vec::new()
        };
        Ok(LeaseView { deal, endpoints })
    }
}

async fn lease(
    Caller(requester): Caller,
    State(state): State<Shared>,
    ApiJson(body): ApiJson<LeaseBody>,
) -> Result<Json<Leased>, ApiError> {
    let spec = request_spec(&body, requester)?;
    if let Some(payments) = state.payments()? {
        match payments.standing(requester).await {
            Standing::Good => {}
            Standing::NoChannel => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    ErrorCode::ChannelRequired,
                    format!(
                        "open a channel to the node ({}) on the Centralizer and register it \
                         (POST /v1/wallet/channel) before leasing",
                        payments.node()
                    ),
                ));
            }
            Standing::Overdue(position) => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    ErrorCode::PaymentOverdue,
                    format!(
                        "you owe {} for leases served and paid {} (through second {}): send a \
                         proof for what you owe on your event stream before leasing again",
                        position.owed, position.received, position.paid_through
                    ),
                ));
            }
        }
    }
    let (_, (request, deals)) = state
        .submit_and_read(CommandKind::SubmitRequest(spec), |events, engine| {
            own_deals(events, engine)
        })
        .await?;
    let request = request.ok_or_else(|| internal("the engine accepted no request".into()))?;
    let leased: u32 = deals
        .iter()
        .map(|deal| u32::try_from(deal.ips.len()).unwrap_or(u32::MAX))
        .sum();
    state.metrics.lease_requests.inc();
    state.metrics.ips_leased.inc_by(u64::from(leased));
    state.metrics.deals.inc_by(deals.len() as u64);
    state.know_providers(&deals, requester).await?;
    let deals = deals
        .into_iter()
        .map(|deal| state.lease_view(deal, requester))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Leased {
        request,
        leased,
        deals,
    }))
}

/// The request a `SubmitRequest` command made and the deals made for it. The same command may
/// fire timers that make deals for other requests (a voided deal re-matched, a resting request
/// filled by freed capacity): those belong to their own requesters, who hear of them on their
/// streams, and never appear in this caller's answer.
fn own_deals(events: &[Event], engine: &Engine) -> (Option<u64>, Vec<DealView>) {
    let Some(request) = events.iter().find_map(|event| match event {
        Event::RequestAccepted { request } => Some(*request),
        _ => None,
    }) else {
        return (None, Vec::new());
    };
    let deals = events
        .iter()
        .filter_map(|event| match event {
            Event::DealMade {
                deal, request: of, ..
            } if *of == request => engine.deal(*deal).map(deal_view),
            _ => None,
        })
        .collect();
    (Some(request.0), deals)
}

/// Deals a page may look at on disk before it stops (and says where to go on).
const PAGE_SCAN: usize = 10_000;
/// Deals a page may look at in the engine: the read runs on its writer, between batches, so a
/// caller whose filter keeps nothing costs it at most this many cheap checks per call.
const PAGE_SCAN_LIVE: usize = 2_000;

/// `GET /v1/deals`: a page of the caller's deals, oldest first — live and recent ones from
/// the engine, older finished ones from the history on disk.
async fn deals(
    Caller(caller): Caller,
    State(state): State<Shared>,
    ApiQuery(query): ApiQuery<DealsQuery>,
) -> Result<Json<Deals>, ApiError> {
    let filter = DealFilter::of(&query, caller)?;
    let after = query.after().ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::BadCursor,
            "cursor: pass the `next` of a previous page",
        )
    })?;
    let limit = query.limit.unwrap_or(DealsQuery::DEFAULT_LIMIT) as usize;
    let party = to_engine(caller);
    let live = {
        let filter = filter.clone();
        state
            .query(move |engine| {
                let deals = engine.deals_of_after(party, ipsx_engine::DealId(after));
                // Filtered on the engine's own records; only the page is copied out.
                crate::history::slice(
                    deals,
                    |deal| deal.id.0,
                    |deal| filter.keeps_live(deal),
                    limit,
                    PAGE_SCAN_LIVE,
                )
                .map(deal_view)
            })
            .await?
    };
    let history = Arc::clone(&state.history);
    let old = tokio::task::spawn_blocking(move || {
        history.page(caller, after, |deal| filter.keeps(deal), limit, PAGE_SCAN)
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(|e| internal(e.to_string()))?;
    let (page, next) = merge_pages(live, old, limit);
    state.know_providers(&page, caller).await?;
    let deals = page
        .into_iter()
        .map(|deal| state.lease_view(deal, caller))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Deals {
        deals,
        next: next.map(|id| id.to_string()),
    }))
}

/// What `GET /v1/deals` keeps.
#[derive(Clone)]
struct DealFilter {
    caller: Address,
    statuses: Vec<ipsx_api::DealStatus>,
    role: Option<ipsx_api::Role>,
    since: u64,
    until: u64,
}

impl DealFilter {
    fn of(query: &DealsQuery, caller: Address) -> Result<DealFilter, ApiError> {
        if query
            .limit
            .is_some_and(|limit| limit == 0 || limit > DealsQuery::MAX_LIMIT)
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidInput,
                format!("limit must be 1-{}", DealsQuery::MAX_LIMIT),
            ));
        }
        let statuses = query.statuses().map_err(|why| {
            ApiError::bad_request(ErrorCode::InvalidInput, format!("status: {why}"))
        })?;
        Ok(DealFilter {
            caller,
            statuses,
            role: query.role,
            since: query.since.unwrap_or(0),
            until: query.until.unwrap_or(u64::MAX),
        })
    }

    fn keeps(&self, deal: &DealView) -> bool {
        self.passes(deal.provider, deal.requester, deal.status, deal.start)
    }

    fn keeps_live(&self, deal: &ipsx_engine::Deal) -> bool {
        self.passes(
            crate::market::to_alloy(deal.provider),
            crate::market::to_alloy(deal.requester),
            crate::market::api_status(deal.status()),
            deal.start.0,
        )
    }

    fn passes(
        &self,
        provider: Address,
        requester: Address,
        status: ipsx_api::DealStatus,
        start: u64,
    ) -> bool {
        let side = match self.role {
            None => true,
            Some(ipsx_api::Role::Provider) => provider == self.caller,
            Some(ipsx_api::Role::Requester) => requester == self.caller,
        };
        side && (self.statuses.is_empty() || self.statuses.contains(&status))
            && (self.since..self.until).contains(&start)
    }
}

/// One page from the engine's slice and the history's: by id, the engine's view of a deal in
/// both (it is the newer), and no further than either source was read.
fn merge_pages(
    live: crate::history::Slice,
    old: crate::history::Slice,
    limit: usize,
) -> (Vec<DealView>, Option<u64>) {
    let bound = live.stopped_at.into_iter().chain(old.stopped_at).min();
    let mut merged: std::collections::BTreeMap<u64, DealView> = old
        .deals
        .into_iter()
        .map(|deal| (deal.deal, deal))
        .collect();
    merged.extend(live.deals.into_iter().map(|deal| (deal.deal, deal)));
    let mut page: Vec<DealView> = merged
        .into_values()
        .filter(|deal| bound.is_none_or(|bound| deal.deal <= bound))
        .collect();
    if page.len() > limit {
        page.truncate(limit);
        let next = page.last().map(|deal| deal.deal);
        return (page, next);
    }
    (page, bound)
}

async fn register_provider(
    Caller(provider): Caller,
    State(state): State<Shared>,
    ApiJson(body): ApiJson<ProviderBody>,
) -> Result<Json<ProviderRegistered>, ApiError> {
    if body.port == 0 && !body.relayed {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidInput,
            "port must be 1-65535",
        ));
    }
    if body.relayed && state.relay.is_none() {
        return Err(no_relay());
    }
    state.require_leader()?;
    if let Some(payments) = state.payments()? {
        payments.ensure_provider_channel(provider).await?;
    }
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| internal(e.to_string()))?;
    let entry = match &state.cluster {
        Some(cluster) => {
            cluster
                .register_provider(&state.registry, provider, body.port, body.relayed, fresh)
                .await?
        }
        None => {
            let registry = Arc::clone(&state.registry);
            tokio::task::spawn_blocking(move || {
                registry.register(provider, body.port, body.relayed, fresh)
            })
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| internal(e.to_string()))?
        }
    };
    Ok(Json(ProviderRegistered {
        provider,
        port: entry.port,
        relayed: entry.relayed,
        proxy_key: entry.key.to_hex(),
    }))
}

/// `GET /v1/echo`: the address the request came from (what offer probes compare).
async fn echo(_: Anonymous, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Json<ipsx_api::Echo> {
    Json(ipsx_api::Echo {
        ip: peer.ip().to_canonical(),
    })
}

fn no_relay() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NoRelay,
        "this node runs no relay: serve directly from the IPs you offer",
    )
}

/// `POST /v1/relay/access`: a fresh ticket and where the relay is, for a relayed provider.
async fn relay_access(
    Caller(provider): Caller,
    State(state): State<Shared>,
) -> Result<Json<RelayAccess>, ApiError> {
    let relay = state.relay.as_ref().ok_or_else(no_relay)?;
    let registered = state
        .registry
        .provider(provider)
        .map_err(|e| internal(e.to_string()))?;
    if !registered.is_some_and(|entry| entry.relayed) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotRelayed,
            "register as relayed first (POST /v1/providers with \"relayed\": true)",
        ));
    }
    let info = state
        .observed
        .relay_for(relay.local.as_ref())
        .ok_or_else(no_relay)?;
    let expires_at = unix_now() + relay.ticket_lifetime;
    Ok(Json(RelayAccess {
        relay: info.providers,
        certificate: alloy_primitives::hex::encode(&info.certificate),
        ticket: relay.key.ticket(provider.0.0, expires_at),
        expires_at,
    }))
}

/// `POST /v1/relays/report`: a relay run apart reports presence changes and measures.
async fn relay_report(
    _: Anonymous,
    State(state): State<Shared>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ipsx_api::ReportTaken>, ApiError> {
    let relay = state.relay.clone().ok_or_else(no_relay)?;
    let tag = headers
        .get("x-ipsx-relay-tag")
        .and_then(|value| value.to_str().ok());
    crate::relayed::take_report(&state, &relay, &body, tag, unix_now()).map(Json)
}

// ---------------------------------------------------------------------------------------------
// The agreement protocol and profiles

/// Applies a move to a deal and answers the deal as it stands once the move is durable.
async fn deal_move(
    state: &AppState,
    kind: CommandKind,
    deal: u64,
    caller: Address,
) -> Result<Json<LeaseView>, ApiError> {
    let (_, found) = state
        .submit_and_read(kind, move |_, engine| {
            engine.deal(ipsx_engine::DealId(deal)).map(deal_view)
        })
        .await?;
    let found = found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownDeal,
            format!("unknown deal {deal}"),
        )
    })?;
    state
        .know_providers(std::slice::from_ref(&found), caller)
        .await?;
    Ok(Json(state.lease_view(found, caller)?))
}

/// `POST /v1/deals/{deal}/ready`: the provider serves the deal's IPs.
async fn deal_ready(
    Caller(provider): Caller,
    State(state): State<Shared>,
    ApiPath(deal): ApiPath<u64>,
) -> Result<Json<LeaseView>, ApiError> {
    deal_move(
        &state,
        CommandKind::ProviderReady {
            deal: ipsx_engine::DealId(deal),
            provider: to_engine(provider),
        },
        deal,
        provider,
    )
    .await
}

/// `POST /v1/deals/{deal}/failed`: the provider cannot serve (its IPs are re-matched).
async fn deal_failed(
    Caller(provider): Caller,
    State(state): State<Shared>,
    ApiPath(deal): ApiPath<u64>,
) -> Result<Json<LeaseView>, ApiError> {
    deal_move(
        &state,
        CommandKind::ProviderFailed {
            deal: ipsx_engine::DealId(deal),
            provider: to_engine(provider),
        },
        deal,
        provider,
    )
    .await
}

/// `POST /v1/deals/{deal}/cancel`: the requester ends the lease early.
async fn deal_cancel(
    Caller(requester): Caller,
    State(state): State<Shared>,
    ApiPath(deal): ApiPath<u64>,
) -> Result<Json<LeaseView>, ApiError> {
    deal_move(
        &state,
        CommandKind::CancelDeal {
            deal: ipsx_engine::DealId(deal),
            requester: to_engine(requester),
        },
        deal,
        requester,
    )
    .await
}

async fn deal_rating(
    Caller(rater): Caller,
    State(state): State<Shared>,
    ApiPath(deal): ApiPath<u64>,
    ApiJson(body): ApiJson<RatingBody>,
) -> Result<Json<LeaseView>, ApiError> {
    deal_move(
        &state,
        CommandKind::Rate {
            deal: ipsx_engine::DealId(deal),
            rater: to_engine(rater),
            score: body.score,
        },
        deal,
        rater,
    )
    .await
}

/// A deal's anchored entries with their proofs, for its parties only (a stranger, or a deal
/// with no entry yet, gets `unknown_deal` alike: nothing tells a stranger a deal exists).
async fn deal_proofs(
    Caller(caller): Caller,
    State(state): State<Shared>,
    ApiPath(deal): ApiPath<u64>,
) -> Result<Json<ipsx_api::DealProofs>, ApiError> {
    let Some(anchoring) = state.anchoring.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::AnchoringDisabled,
            "this node does not anchor its deal book",
        ));
    };
    let proofs = tokio::task::spawn_blocking(move || anchoring.proofs(deal))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    let party = proofs
        .entries
        .iter()
        .map(|anchored| &anchored.entry)
        .chain(&proofs.pending)
        .any(|entry| entry.provider == caller || entry.requester == caller);
    if !party {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownDeal,
            format!("no anchored deal {deal} of yours"),
        ));
    }
    Ok(Json(proofs))
}

async fn profile(
    _: Anonymous,
    State(state): State<Shared>,
    ApiPath(address): ApiPath<String>,
) -> Result<Json<ProfileView>, ApiError> {
    let wallet = parse_address(&address)
        .map_err(|message| ApiError::bad_request(ErrorCode::BadAddress, message))?;
    let engine_wallet = to_engine(wallet);
    let (profile, average_rating) = state
        .query(move |engine| (engine.profile(engine_wallet), engine.rating(engine_wallet)))
        .await?;
    Ok(Json(ProfileView {
        address: wallet,
        deals_as_provider: profile.deals_as_provider,
        deals_as_requester: profile.deals_as_requester,
        completed: profile.completed,
        no_shows: profile.no_shows,
        dropped: profile.dropped,
        lapsed: profile.lapsed,
        cancelled: profile.cancelled,
        ratings_received: profile.ratings_received,
        rated_value: ipsx_api::TokenAmount(profile.rated_value),
        average_rating,
        uptime: profile.uptime,
        relay: state.observed.quality(wallet),
    }))
}

// ---------------------------------------------------------------------------------------------
// Wallet state

/// `GET /v1/wallet`: the caller's channels and the node's settlement details.
async fn wallet(
    Caller(caller): Caller,
    State(state): State<Shared>,
) -> Result<Json<WalletView>, ApiError> {
    let payments = match state.payments()? {
        Some(payments) => Some(payments.info(caller).await),
        None => None,
    };
    Ok(Json(WalletView {
        address: caller,
        payments,
    }))
}

/// `GET /v1/wallet/claims`: the caller's channel from the node as the chain holds it.
async fn wallet_claims(
    Caller(caller): Caller,
    State(state): State<Shared>,
) -> Result<Json<ipsx_api::ClaimsView>, ApiError> {
    let payments = state.payments()?.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::PaymentsDisabled,
            "this node runs without a chain",
        )
    })?;
    payments
        .claims_of(caller, unix_now())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BadChannel,
                "the node pays you on no channel yet (it opens one when you offer)",
            )
        })
}

/// `POST /v1/wallet/channel`: a requester registers the channel it opened to the node.
async fn register_channel(
    Caller(requester): Caller,
    State(state): State<Shared>,
    ApiJson(body): ApiJson<ChannelBody>,
) -> Result<Json<ChannelView>, ApiError> {
    let payments = state.payments()?.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::PaymentsDisabled,
            "this node runs without a chain",
        )
    })?;
    Ok(Json(
        payments
            .register_requester(requester, ipsx_channels::ChannelId(body.channel))
            .await?,
    ))
}
