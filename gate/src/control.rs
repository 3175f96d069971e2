//! The gate's I/O shell around [`Pools`]: it runs the pool's actions against the node (lease
//! calls, cancels), pays every second for everything held, follows the node's events (leases
//! cut, voided, ended), ticks the pool's clock, and hands requests their exits with retries.
//!
//! ```text
//! request ─► exit_for(target) ─► Pools::pick ─► Ready ─► attempt through the exit
//!                 ▲                   │ Wait               │ exit's fault: Pools::failed, retry
//!                 └── notify ◄── lease task ◄── Action::Lease
//! ledger task (one): pays every second (Payer), runs cancels between payments, applies the
//!                    node's lease_ended / cut_off events to the pool
//! ticker task: Pools::tick every 500 ms (idle sessions, lease ends, warm refills)
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipsx_sdk::{
    Client, DealView, EventStream, LeaseBody, Next, Payer, StreamEvent, TokenAmount, Wallet,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::pool::{Action, Exit, NewExit, Pick, PoolConfig, Pools, Upstream};
use crate::refusal::GateError;
use crate::target::{Filter, Stickiness, Target};
use crate::upstream::{Outcome, Upstreams};

/// How the gate runs (the pool's rules are in [`PoolConfig`]).
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Where crawlers connect (HTTP proxy and SOCKS5 on the same port).
    pub listen: std::net::SocketAddr,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The password crawlers must give (required when `listen` is not loopback).
    pub password: Option<String>,
    /// The exits' pool.
    pub pool: PoolConfig,
    /// Protocols every leased IP must carry: the gate forwards `http://` requests and opens
    /// tunnels with `CONNECT`.
    pub protocols: Vec<ipsx_sdk::Protocol>,
    /// Exits tried per non-sticky request before giving up.
    pub max_tries: u32,
    /// How long a request may wait for an exit.
    pub exit_timeout: Duration,
    /// Connecting to an exit's proxy.
    pub connect_timeout: Duration,
    /// Largest request body forwarded (bodies are kept so a request can be retried).
    pub max_body: usize,
    /// Rate providers whose exits were dropped as bad (1 star) once their deal is cancelled.
    pub rate_bad_exits: bool,
}

impl GateConfig {
    /// Defaults: `127.0.0.1:24000`, no metrics port, no password.
    pub fn new(pool: PoolConfig) -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 24_000)),
            metrics: None,
            password: None,
            pool,
            protocols: vec![ipsx_sdk::Protocol::Http, ipsx_sdk::Protocol::Https],
            max_tries: 3,
            exit_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_body: 8 << 20,
            rate_bad_exits: false,
        }
    }
}

/// What the ledger task is asked to do.
enum Command {
    /// Cancel a deal (and rate it, if it was bad and rating is on).
    Cancel { deal: u64, bad: bool },
    /// A deal just leased: its terms are checked against it when the node reports them.
    Expect(DealView),
    /// Cancel everything, pay up to the end, stop.
    Shutdown(oneshot::Sender<u128>),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) config: GateConfig,
    pools: Mutex<Pools>,
    changed: Notify,
    pub(crate) upstreams: Upstreams,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) targets: crate::server::Targets,
    node: Client,
    commands: mpsc::UnboundedSender<Command>,
    next_conn: AtomicU64,
}

/// A request's result when it went through: the exit's answer, or a refusal the provider's
/// proxy made about the target.
pub(crate) type Through<T> = Result<(T, Exit), http::Response<hyper::body::Incoming>>;

impl Shared {
    fn new(config: GateConfig, node: Client, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            pools: Mutex::new(Pools::new(config.pool.clone())),
            upstreams: Upstreams::new(config.connect_timeout),
            config,
            changed: Notify::new(),
            metrics: Arc::new(Metrics::default()),
            targets: crate::server::Targets::default(),
            node,
            commands,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A gate with no listener, node or tasks: for driving its parsers by hand.
    #[cfg(fuzzing)]
    pub(crate) fn detached(config: GateConfig) -> Self {
        let commands = mpsc::unbounded_channel().0;
        Self::new(config, Client::new("http://127.0.0.1:9"), commands)
    }

    fn pools(&self) -> MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on the pool, then carries out the actions it asked for (outside the lock).
    fn with_pools<R>(self: &Arc<Self>, change: impl FnOnce(&mut Pools) -> R) -> R {
        let (result, actions) = {
            let mut pools = self.pools();
            let result = change(&mut pools);
            (result, pools.take_actions())
        };
        self.act(actions);
        result
    }

    pub(crate) fn connection(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Client connection `conn` closed.
    pub(crate) fn closed(self: &Arc<Self>, conn: u64) {
        self.with_pools(|pools| pools.release(conn));
    }

    fn act(self: &Arc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Lease {
                    filter,
                    count,
                    secs,
                    max_price,
                } => {
                    let body = lease_body(&filter, count, secs, max_price, &self.config.protocols);
                    let shared = Arc::clone(self);
                    tokio::spawn(async move {
                        let answer = shared.node.lease(&body).await;
                        shared.leased(&filter, answer);
                    });
                }
                Action::Cancel { deal, bad } => {
                    self.metrics.cancels.inc();
                    let _ = self.commands.send(Command::Cancel { deal, bad });
                }
            }
        }
    }

    fn leased(
        self: &Arc<Self>,
        filter: &Filter,
        answer: Result<ipsx_sdk::Leased, ipsx_sdk::SdkError>,
    ) {
        let now = now_ms();
        self.with_pools(|pools| match answer {
            Ok(leased) => {
                self.metrics.leases.inc();
                self.metrics.ips_leased.inc_by(u64::from(leased.leased));
                let mut exits = Vec::new();
                for lease in leased.deals {
                    for endpoint in lease.endpoints.iter().filter(|e| e.http.is_some()) {
                        exits.push(NewExit {
                            deal: lease.deal.deal,
                            upstream: Upstream::new(
                                endpoint.ip,
                                endpoint.proxy,
                                &endpoint.username,
                                &endpoint.password,
                            ),
                            end: lease.deal.end,
                            price: lease.deal.price.0,
                        });
                    }
                    let _ = self.commands.send(Command::Expect(lease.deal));
                }
                pools.leased(filter, exits, now);
            }
            Err(error) => {
                tracing::warn!(%filter, %error, "lease call refused");
                let code = error
                    .code()
                    .map_or("node_unreachable", ipsx_sdk::ErrorCode::as_str);
                pools.lease_failed(filter, code, &error.to_string(), now);
            }
        });
        self.changed.notify_waiters();
    }

    /// An exit for `target`, waiting for a lease under way until `deadline`.
    async fn exit_for(
        self: &Arc<Self>,
        target: &Target,
        conn: u64,
        deadline: Instant,
    ) -> Result<Exit, GateError> {
        // Most picks find an exit at once: only a pick that has to wait registers for the
        // pool's news, then looks again (so news between the two looks is not missed).
        let mut registered = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            if registered {
                notified.as_mut().enable();
            }
            match self.with_pools(|pools| pools.pick(target, conn, now_ms())) {
                Ok(Pick::Ready(exit)) => return Ok(exit),
                Ok(Pick::Wait) if !registered => registered = true,
                Ok(Pick::Wait) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(GateError::LeaseTimeout(
                            u64::try_from(self.config.exit_timeout.as_millis()).unwrap_or(u64::MAX),
                        ));
                    }
                }
                Err(refusal) => return Err(GateError::from_pool(refusal)),
            }
        }
    }

    /// Runs `attempt` through an exit for `target`, retrying a non-sticky request on other
    /// exits when the exit is at fault.
    pub(crate) async fn through<T, F, Fut>(
        self: &Arc<Self>,
        target: &Target,
        conn: u64,
        mut attempt: F,
    ) -> Result<Through<T>, GateError>
    where
        F: FnMut(Exit) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let deadline = Instant::now() + self.config.exit_timeout;
        let sticky = matches!(target.stickiness, Stickiness::Session { .. });
        let mut tries = 0;
        loop {
            let exit = self.exit_for(target, conn, deadline).await?;
            let started = Instant::now();
            match attempt(exit.clone()).await {
                Outcome::Served(served) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if self.with_pools(|pools| pools.succeeded(exit.key, micros)) {
                        self.metrics.exits_dropped.inc();
                    }
                    return Ok(Ok((served, exit)));
                }
                Outcome::Refused(response) => return Ok(Err(response)),
                Outcome::Busy(response) => {
                    // No fault of the exit: another one may have room.
                    tries += 1;
                    if sticky || tries >= self.config.max_tries {
                        return Ok(Err(response));
                    }
                    self.metrics.retries.inc();
                }
                Outcome::Exit { fatal, reason } => {
                    tries += 1;
                    tracing::info!(deal = exit.key.deal, ip = %exit.key.ip, fatal, %reason, "exit failed");
                    let dropped = self.with_pools(|pools| pools.failed(exit.key, fatal, &reason));
                    if dropped {
                        self.metrics.exits_dropped.inc();
                    }
                    // A sticky request never moves: the next pick reports its session gone if
                    // the exit was dropped, and otherwise the failure is the answer.
                    let give_up = if sticky {
                        !dropped
                    } else {
                        tries >= self.config.max_tries
                    };
                    if give_up {
                        return Err(GateError::ExitsFailed {
                            tries,
                            last: reason,
                        });
                    }
                    if !sticky {
                        self.metrics.retries.inc();
                    }
                }
            }
        }
    }
}

fn lease_body(
    filter: &Filter,
    count: u32,
    secs: u64,
    max_price: u128,
    protocols: &[ipsx_sdk::Protocol],
) -> LeaseBody {
    let mut body = LeaseBody::new(count, secs, TokenAmount(max_price))
        .countries(filter.countries.iter().cloned())
        .protocols(protocols.iter().copied())
        .kinds(filter.kinds.iter().map(|k| k.api()));
    body.city = filter.city.clone();
    body.asn_include = filter.asn.into_iter().collect();
    body.min_rating = filter.min_rating;
    body
}

/// A running gate.
pub struct GateHandle {
    /// Where crawlers connect.
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ledger: tokio::task::JoinHandle<()>,
}

/// A moment's figures, for the terminal line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// IPs held.
    pub ips: usize,
    /// Sticky sessions alive.
    pub sessions: usize,
    /// Requests served or refused so far.
    pub requests: u64,
    /// Base units per second the held leases accrue.
    pub spend_rate: u128,
    /// Base units the node accepted in all.
    pub paid: u64,
}

impl GateHandle {
    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        let pools = self.shared.pools();
        Snapshot {
            ips: pools.held_ips(),
            sessions: pools.sessions(),
            requests: self.shared.metrics.requests_total(),
            spend_rate: pools.held_rate(),
            paid: self.shared.metrics.paid.load(Ordering::Relaxed),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops serving, cancels every lease held, pays up to their end and returns what the
    /// node accepted in all on the wallet's channel (0 on a node without payments).
    pub async fn shutdown(self) -> u128 {
        for task in &self.tasks {
            task.abort();
        }
        let (done, paid) = oneshot::channel();
        let _ = self.shared.commands.send(Command::Shutdown(done));
        let paid = paid.await.unwrap_or(0);
        let _ = self.ledger.await;
        paid
    }
}

/// Starts the gate for the signed-in `node` client. With a `payer` (a node that takes
/// payments), it pays every second for everything it holds.
pub async fn start(
    config: GateConfig,
    node: Client,
    wallet: Option<Wallet>,
) -> std::io::Result<GateHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics {
        Some(at) => Some(crate::metrics::bind(at).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let events = match &wallet {
        Some(wallet) => Events::Paying(Box::new(
            Payer::connect(&node, wallet)
                .await
                .map_err(std::io::Error::other)?,
        )),
        None => match node.stream().await {
            Ok(stream) => Events::Watching(Box::new(stream)),
            Err(_) => Events::lost(),
        },
    };
    let (commands, inbox) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(config, node, commands));
    let mut tasks = vec![
        tokio::spawn(crate::server::serve(listener, Arc::clone(&shared))),
        tokio::spawn(tick(Arc::clone(&shared))),
    ];
    if let Some(listener) = metrics_listener {
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&shared.metrics),
        )));
    }
    let ledger = tokio::spawn(ledger(Arc::clone(&shared), wallet, events, inbox));
    Ok(GateHandle {
        addr,
        metrics_addr,
        shared,
        tasks,
        ledger,
    })
}

/// Where the node's events come from.
enum Events {
    /// The payer's stream (it pays every second too).
    Paying(Box<Payer>),
    /// A node without payments: its event stream only.
    Watching(Box<EventStream>),
    /// The stream is gone (the node restarted, say): connect again at `retry_at`.
    Lost {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// What the ledger does next.
enum Step {
    Event(StreamEvent),
    Command(Option<Command>),
    /// The stream closed or failed.
    Closed,
    /// Connected again after a loss.
    Reconnected,
    /// A reconnection failed; it is tried again later.
    StillLost,
}

/// The longest wait between two attempts to reach a lost node.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Events {
    fn lost() -> Self {
        Self::Lost {
            retry_at: Instant::now() + Duration::from_secs(1),
            backoff: Duration::from_secs(1),
        }
    }

    async fn next(
        &mut self,
        node: &Client,
        wallet: Option<&Wallet>,
        inbox: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Step {
        match self {
            Self::Paying(payer) => match payer.next_or(inbox).await {
                Ok(Next::Event(event)) => Step::Event(event),
                Ok(Next::Command(command)) => Step::Command(command),
                Ok(Next::Closed) => Step::Closed,
                Err(error) => {
                    tracing::warn!(%error, "the payment stream failed");
                    Step::Closed
                }
            },
            Self::Watching(stream) => {
                tokio::select! {
                    command = inbox.recv() => Step::Command(command),
                    event = stream.next() => match event {
                        Some(Ok(event)) => Step::Event(event),
                        _ => Step::Closed,
                    },
                }
            }
            Self::Lost { retry_at, backoff } => {
                tokio::select! {
                    command = inbox.recv() => return Step::Command(command),
                    () = tokio::time::sleep_until(*retry_at) => {}
                }
                match Self::connect(node, wallet).await {
                    Ok(events) => {
                        *self = events;
                        Step::Reconnected
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the node is still out of reach");
                        *backoff = (*backoff * 2).min(MAX_BACKOFF);
                        *retry_at = Instant::now() + *backoff;
                        Step::StillLost
                    }
                }
            }
        }
    }

    async fn connect(node: &Client, wallet: Option<&Wallet>) -> Result<Self, ipsx_sdk::SdkError> {
        Ok(match wallet {
            Some(wallet) => Self::Paying(Box::new(Payer::connect(node, wallet).await?)),
            None => Self::Watching(Box::new(node.stream().await?)),
        })
    }
}

/// The one task that pays, cancels and follows the node's events, in turn: a cancel's answer
/// (the second the lease stopped) reaches the payer before its next payment.
async fn ledger(
    shared: Arc<Shared>,
    wallet: Option<Wallet>,
    mut events: Events,
    mut inbox: mpsc::UnboundedReceiver<Command>,
) {
    // Every deal leased and not yet ended, as leased (a new payer checks the node's terms
    // against them).
    let mut held: std::collections::BTreeMap<u64, DealView> = std::collections::BTreeMap::new();
    loop {
        match events.next(&shared.node, wallet.as_ref(), &mut inbox).await {
            Step::Event(event) => {
                if let Some((deal, why)) = ended(&event) {
                    held.remove(&deal);
                    shared.with_pools(|pools| pools.ended(deal, &why));
                    shared.changed.notify_waiters();
                }
                if let (StreamEvent::ProofAccepted { amount, .. }, Events::Paying(_)) =
                    (&event, &events)
                {
                    shared.metrics.paid.store(
                        u64::try_from(amount.0).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
            }
            Step::Command(Some(Command::Expect(deal))) => {
                if let Events::Paying(payer) = &mut events {
                    payer.expect(&deal);
                }
                held.insert(deal.deal, deal);
            }
            Step::Command(Some(Command::Cancel { deal, bad })) => {
                held.remove(&deal);
                cancel(&shared, &mut events, deal, bad).await;
            }
            Step::Command(Some(Command::Shutdown(done))) => {
                if matches!(events, Events::Lost { .. })
                    && let Ok(connected) = Events::connect(&shared.node, wallet.as_ref()).await
                {
                    events = connected;
                    expect_all(&mut events, &held);
                }
                for deal in std::mem::take(&mut held).into_keys() {
                    cancel(&shared, &mut events, deal, false).await;
                }
                let paid = match events {
                    Events::Paying(payer) => payer.finish().await.unwrap_or_else(|error| {
                        tracing::error!(%error, "the last payment failed");
                        0
                    }),
                    Events::Watching(_) | Events::Lost { .. } => 0,
                };
                let _ = done.send(paid);
                return;
            }
            Step::Command(None) => return,
            Step::Closed => {
                tracing::warn!("the node's event stream closed; connecting again");
                events = Events::lost();
            }
            Step::Reconnected => {
                tracing::info!("connected to the node again; paying on");
                expect_all(&mut events, &held);
            }
            Step::StillLost => {}
        }
    }
}

/// A new payer learns the deals it pays for.
fn expect_all(events: &mut Events, held: &std::collections::BTreeMap<u64, DealView>) {
    if let Events::Paying(payer) = events {
        for deal in held.values() {
            payer.expect(deal);
        }
    }
}

fn ended(event: &StreamEvent) -> Option<(u64, String)> {
    match event {
        StreamEvent::LeaseEnded { terms, status, .. } => Some((terms.deal, status.to_string())),
        StreamEvent::CutOff { deal, .. } => Some((*deal, "cut_off".to_owned())),
        _ => None,
    }
}

async fn cancel(shared: &Arc<Shared>, events: &mut Events, deal: u64, bad: bool) {
    match shared.node.cancel_deal(deal).await {
        Ok(view) => {
            if let (Events::Paying(payer), Some(at)) = (&mut *events, view.deal.closed_at) {
                payer.closed(deal, at);
            }
            if bad
                && shared.config.rate_bad_exits
                && let Err(error) = shared.node.rate(deal, 1).await
            {
                tracing::info!(deal, %error, "could not rate a dropped exit's provider");
            }
        }
        Err(error) => tracing::info!(deal, %error, "cancel refused (the lease may have ended)"),
    }
}

/// The pool's clock, and the gauges.
async fn tick(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rounds = 0u64;
    loop {
        ticker.tick().await;
        rounds += 1;
        let (ips, sessions, rate) = shared.with_pools(|pools| {
            pools.tick(now_ms());
            (pools.held_ips(), pools.sessions(), pools.held_rate())
        });
        shared.changed.notify_waiters();
        shared
            .metrics
            .ips_held
            .set(i64::try_from(ips).unwrap_or(i64::MAX));
        shared
            .metrics
            .sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        shared
            .metrics
            .spend_rate
            .store(u64::try_from(rate).unwrap_or(u64::MAX), Ordering::Relaxed);
        if rounds.is_multiple_of(20) {
            shared.upstreams.forget(|key| shared.pools().holds(key));
        }
    }
}
