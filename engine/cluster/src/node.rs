//! A cluster node: a shard that follows the log until it wins the lease, then leads.
//!
//! ```text
//!           ┌─────────── lease vacant: acquire ───────────┐
//!           │                                              ▼
//!  Following (log ─► shard)                      Catching up (renewing the lease)
//!           ▲                                              │ shard holds the log's end
//!           │                                              ▼
//!   restart from disk  ◄── lease lost / fence refused ── Leading (shard ─► log)
//! ```
//!
//! A node never steps down in place: a leader that loses its lease (or whose append the fence
//! refuses) has applied commands the log may not hold, so its shard stops and the node
//! reports [`Status::Stopped`]. Its owner restarts it from disk, where the journal is a
//! prefix of the log (see `ipsx_engine_runtime::replica`), and it follows again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use ipsx_engine_runtime::{Role, ShardConfig, ShardHandle};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::lease::{Leader, Lease};
use crate::log::{self, JetStreamLog};

/// How long a node waits for NATS and JetStream at start.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// How long [`ClusterNode::shutdown`] waits for other holders of the shard to let go.
const SHARD_RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// How soon a leader tries again after a renewal failed.
const RENEW_RETRY: Duration = Duration::from_millis(50);

/// How often a node catching up looks whether it holds the log's end.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);

/// Where a node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Applies the leader's records; takes no commands.
    Following {
        /// The leader, when known.
        leader: Option<Leader>,
    },
    /// Won the lease; applying the rest of the log before taking commands.
    CatchingUp {
        /// The term it won.
        term: u64,
    },
    /// Takes commands; every record goes to the log before it is acknowledged.
    Leading {
        /// The term it leads under.
        term: u64,
    },
    /// Stopped: lost the lease, was fenced off, or the log or the shard failed. Restart the
    /// node from disk to follow again.
    Stopped(String),
}

/// A running cluster node.
pub struct ClusterNode {
    runtime: Option<Runtime>,
    /// Taken out only by [`ClusterNode::shutdown`].
    shard: Option<Arc<ShardHandle>>,
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    campaign: Option<JoinHandle<()>>,
    /// The log stream, for reads.
    log: stream::Stream,
}

impl ClusterNode {
    /// Connects to the cluster, recovers the shard from disk as a follower, and starts
    /// following the log and reaching for the lease.
    pub fn start(shard: ShardConfig, cluster: ClusterConfig) -> Result<ClusterNode, ClusterError> {
        cluster.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ipsx-cluster")
            .enable_all()
            .build()
            .map_err(|e| {
                ClusterError::Config(format!("cannot start the cluster's runtime: {e}"))
            })?;
        let joined = runtime.block_on(join(&cluster))?;
        let mut shard = shard;
        shard.role = Role::Follower;
        let handle = Arc::new(ShardHandle::start(shard)?);
        let local = handle.recovery().last_seq;
        let mut log_stream = joined.log.clone();
        let end = runtime.block_on(log::last_seq(&mut log_stream))?;
        if local > end {
            return Err(ClusterError::LocalAhead { local, log: end });
        }
        let (status_tx, status) = watch::channel(Status::Following { leader: None });
        let (stop, stop_rx) = watch::channel(false);
        let campaign = Campaign {
            config: cluster,
            joined,
            shard: Arc::clone(&handle),
            status: status_tx,
            deposed: Arc::new(AtomicBool::new(false)),
            runtime: runtime.handle().clone(),
        };
        let campaign = runtime.spawn(campaign.run(local, stop_rx));
        Ok(ClusterNode {
            runtime: Some(runtime),
            shard: Some(handle),
            status,
            stop,
            campaign: Some(campaign),
            log: log_stream,
        })
    }

    /// The node's shard: reads at any time, commands while [`Status::Leading`].
    pub fn shard(&self) -> &Arc<ShardHandle> {
        self.shard
            .as_ref()
            .expect("the shard is taken only by shutdown")
    }

    /// The last record the cluster's log holds (a follower's lag is this minus its shard's
    /// durable record).
    pub fn log_end(&self) -> Result<u64, ClusterError> {
        let mut stream = self.log.clone();
        self.runtime
            .as_ref()
            .expect("running")
            .block_on(log::last_seq(&mut stream))
    }

    /// Where the node stands now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Follows the node's status as it changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until `pred` holds for the status, or `within` passes; the status then.
    pub fn wait_for(&self, within: Duration, pred: impl FnMut(&Status) -> bool) -> Status {
        let mut status = self.status.clone();
        let runtime = self.runtime.as_ref().expect("running");
        runtime.block_on(async {
            let _ = tokio::time::timeout(within, status.wait_for(pred)).await;
        });
        self.status()
    }

    /// Steps the shard down if it leads (its last groups go to the log first), lets the lease
    /// go (if held), stops following, and shuts the shard down with a final
    /// snapshot.
    ///
    /// Clones of [`ClusterNode::shard`] held elsewhere (calls still finishing) are waited for,
    /// up to ten seconds.
    pub fn shutdown(mut self) -> Result<(), ClusterError> {
        self.stop_tasks();
        let mut shard = self.shard.take().expect("the shard is taken only here");
        let deadline = Instant::now() + SHARD_RELEASE_WITHIN;
        loop {
            match Arc::try_unwrap(shard) {
                Ok(shard) => return Ok(shard.shutdown()?),
                Err(_) if Instant::now() >= deadline => {
                    return Err(ClusterError::Config(
                        "the shard is still shared: drop every clone of it before shutting down"
                            .into(),
                    ));
                }
                Err(shared) => {
                    shard = shared;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn stop_tasks(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(runtime), Some(campaign)) = (&self.runtime, self.campaign.take()) {
            let _ = runtime.block_on(campaign);
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop_tasks();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The cluster's connections and streams.
struct Joined {
    client: async_nats::Client,
    js: jetstream::Context,
    log: stream::Stream,
    /// The lease has a connection of its own: a renewal must not wait behind a leader's
    /// thousands of records in flight.
    lease_js: jetstream::Context,
}

async fn join(config: &ClusterConfig) -> Result<Joined, ClusterError> {
    let deadline = Instant::now() + CONNECT_WITHIN;
    let client = connect(config, "log").await?;
    let lease_client = connect(config, "lease").await?;
    let js = context(config, &client);
    let log = log::ensure_streams(&js, config, deadline).await?;
    Ok(Joined {
        lease_js: context(config, &lease_client),
        client,
        js,
        log,
    })
}

/// A connection to the cluster's NATS servers, named after the node and its `role`; the
/// client fails over between the servers on its own.
pub(crate) async fn connect(
    config: &ClusterConfig,
    role: &str,
) -> Result<async_nats::Client, ClusterError> {
    let unreachable = |reason: String| ClusterError::Unreachable {
        servers: config.servers.join(","),
        reason,
    };
    let options = async_nats::ConnectOptions::new()
        .name(format!("ipsx-{}-{role}", config.node))
        .retry_on_initial_connect();
    tokio::time::timeout(CONNECT_WITHIN, options.connect(config.servers.clone()))
        .await
        .map_err(|_| unreachable("no server answered".into()))?
        .map_err(|e| unreachable(e.to_string()))
}

/// A JetStream context whose calls give up after the cluster's `ack_timeout`.
pub(crate) fn context(config: &ClusterConfig, client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        // A big group waits for room rather than failing.
        .backpressure_on_inflight(true)
        .build(client.clone())
}

/// Creates the stream `settings` names if it is missing (or finds it), trying again while
/// JetStream elects its leaders, for up to `within`.
pub(crate) async fn create_stream(
    js: &jetstream::Context,
    config: &ClusterConfig,
    settings: jetstream::stream::Config,
    within: Duration,
) -> Result<jetstream::stream::Stream, ClusterError> {
    let deadline = Instant::now() + within;
    loop {
        match js.get_or_create_stream(settings.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(stream = %settings.name, "not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(ClusterError::Unreachable {
                    servers: config.servers.join(","),
                    reason: format!("JetStream did not create {}: {error}", settings.name),
                });
            }
        }
    }
}

/// The task that follows, reaches for the lease, promotes and renews.
struct Campaign {
    config: ClusterConfig,
    joined: Joined,
    shard: Arc<ShardHandle>,
    status: watch::Sender<Status>,
    deposed: Arc<AtomicBool>,
    runtime: Handle,
}

/// Where the campaign stands.
#[derive(Clone, Copy)]
enum Stage {
    Following,
    CatchingUp {
        term: u64,
        revision: u64,
        renewed: Instant,
        target: u64,
    },
    Leading {
        term: u64,
        revision: u64,
        renewed: Instant,
    },
}

impl Campaign {
    async fn run(self, local: u64, mut stop: watch::Receiver<bool>) {
        let lease = Lease::new(
            self.joined.lease_js.clone(),
            match self
                .joined
                .lease_js
                .get_stream(self.config.lease_stream())
                .await
            {
                Ok(stream) => stream,
                Err(error) => return self.stopped(format!("the lease stream: {error}")),
            },
            self.config.lease_subject(),
            &self.config.node,
            &self.config.advertise,
        );
        let (follow_stop, follow_stopped) = watch::channel(false);
        let mut follower = Some(tokio::spawn(log::follow(
            self.joined.log.clone(),
            self.joined.client.clone(),
            Arc::clone(&self.shard),
            local,
            follow_stopped,
        )));
        let renew_every = self.config.lease / 3;
        let mut stage = Stage::Following;
        let outcome: Result<(), String> = loop {
            let pause = match stage {
                Stage::CatchingUp { .. } => CATCH_UP_POLL,
                _ => renew_every,
            };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
            if !self.shard.writer_alive() {
                break Err("the shard stopped: its writer failed".into());
            }
            if let Some(task) = follower.as_mut()
                && task.is_finished()
            {
                let ended = match follower.take() {
                    Some(task) => task.await,
                    None => continue,
                };
                break Err(match ended {
                    Ok(Ok(seq)) => format!("following the log ended after record {seq}"),
                    Ok(Err(error)) => format!("following the log: {error}"),
                    Err(error) => format!("following the log: {error}"),
                });
            }
            stage = match self.step(stage, &lease, &follow_stop, &mut follower).await {
                Ok(next) => next,
                Err(why) => break Err(why),
            };
        };
        let _ = follow_stop.send(true);
        if let Some(task) = follower {
            let _ = task.await;
        }
        let held = match stage {
            Stage::CatchingUp { revision, .. } | Stage::Leading { revision, .. } => Some(revision),
            Stage::Following => None,
        };
        if let Some(revision) = held {
            if outcome.is_ok() && matches!(stage, Stage::Leading { .. }) {
                self.step_down().await;
            }
            // Stopped or failed: nothing more may be appended under this lease.
            self.deposed.store(true, Ordering::SeqCst);
            if let Err(error) = self.bounded(lease.release(revision)).await {
                tracing::warn!(%error, "could not let the lease go; it ages out");
            }
        }
        match outcome {
            Ok(()) => {}
            Err(why) => self.stopped(why),
        }
    }

    /// A leader's clean stop: its shard writes what it has queued under the lease it still
    /// holds, then stops taking commands and moving its clock, before the lease goes. Without
    /// this, a tick written between the lease's release and the shard's shutdown is refused
    /// by the log and the shard stops with an error. Bounded like a lease call: if the log
    /// cannot take the last groups in time, the lease goes anyway (nothing unwritten was
    /// acknowledged).
    async fn step_down(&self) {
        let shard = Arc::clone(&self.shard);
        let stepped = tokio::time::timeout(
            self.config.lease / 3,
            tokio::task::spawn_blocking(move || shard.step_down()),
        )
        .await;
        let failed = match stepped {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(error))) => error.to_string(),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "not in time".to_string(),
        };
        tracing::warn!(error = %failed, "the shard did not step down cleanly; letting the lease go");
    }

    /// One turn of the campaign.
    async fn step(
        &self,
        stage: Stage,
        lease: &Lease,
        follow_stop: &watch::Sender<bool>,
        follower: &mut Option<JoinHandle<Result<u64, ClusterError>>>,
    ) -> Result<Stage, String> {
        match stage {
            Stage::Following => match self.bounded(lease.acquire()).await {
                Ok(Ok(term)) => {
                    let mut log_stream = self.joined.log.clone();
                    let target = log::last_seq(&mut log_stream)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!(node = %self.config.node, term, target, "won the lease; catching up");
                    self.status.send_replace(Status::CatchingUp { term });
                    Ok(Stage::CatchingUp {
                        term,
                        revision: term,
                        renewed: Instant::now(),
                        target,
                    })
                }
                Ok(Err(leader)) => {
                    self.status.send_if_modified(|status| {
                        // Each renewal moves the lease's revision: watchers hear only of
                        // another leader, while a read sees the latest revision.
                        let changed = match &*status {
                            Status::Following { leader: known } => {
                                known.as_ref().map(|l| (&l.node, &l.advertise))
                                    != leader.as_ref().map(|l| (&l.node, &l.advertise))
                            }
                            _ => true,
                        };
                        *status = Status::Following { leader };
                        changed
                    });
                    Ok(Stage::Following)
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the lease");
                    Ok(Stage::Following)
                }
            },
            Stage::CatchingUp {
                term,
                revision,
                renewed,
                target,
            } => {
                let (revision, renewed) = self.keep(lease, revision, renewed).await?;
                if self.shard.stats().durable_seq.load(Ordering::Acquire) < target {
                    return Ok(Stage::CatchingUp {
                        term,
                        revision,
                        renewed,
                        target,
                    });
                }
                // Hold the log's end: stop following, then lead from where the shard stands.
                let _ = follow_stop.send(true);
                if let Some(task) = follower.take() {
                    match task.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(format!("following the log: {error}")),
                        Err(error) => return Err(format!("following the log: {error}")),
                    }
                }
                let appender = JetStreamLog {
                    js: self.joined.js.clone(),
                    subject: self.config.log_subject(),
                    term,
                    runtime: self.runtime.clone(),
                    deposed: Arc::clone(&self.deposed),
                    patience: self.config.ack_timeout,
                };
                let shard = Arc::clone(&self.shard);
                tokio::task::spawn_blocking(move || shard.promote(Box::new(appender)))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("promoting the shard: {e}"))?;
                tracing::info!(node = %self.config.node, term, "leading");
                self.status.send_replace(Status::Leading { term });
                Ok(Stage::Leading {
                    term,
                    revision,
                    renewed,
                })
            }
            Stage::Leading {
                term,
                revision,
                renewed,
            } => {
                let (revision, renewed) = self.keep(lease, revision, renewed).await?;
                Ok(Stage::Leading {
                    term,
                    revision,
                    renewed,
                })
            }
        }
    }

    /// Renews a held lease when a third of it has passed; gives up (deposing this node) when
    /// another holds it, or when JetStream has not answered for two thirds of it: by then it
    /// may have aged out.
    async fn keep(
        &self,
        lease: &Lease,
        revision: u64,
        renewed: Instant,
    ) -> Result<(u64, Instant), String> {
        if renewed.elapsed() < self.config.lease / 3 {
            return Ok((revision, renewed));
        }
        loop {
            let attempt = Instant::now();
            match self.bounded(lease.renew(revision)).await {
                Ok(Some(revision)) => return Ok((revision, attempt)),
                Ok(None) => {
                    self.deposed.store(true, Ordering::SeqCst);
                    return Err("another node holds the lease".into());
                }
                // A stream leader moving or a server dying: try again soon, while the lease
                // surely still holds.
                Err(error) if renewed.elapsed() < self.config.lease * 2 / 3 => {
                    tracing::warn!(%error, "could not renew the lease; trying again");
                    tokio::time::sleep(RENEW_RETRY).await;
                }
                Err(error) => {
                    self.deposed.store(true, Ordering::SeqCst);
                    return Err(format!("the lease could not be renewed in time: {error}"));
                }
            }
        }
    }

    /// A lease call that gives up after a third of the lease: a connection to a server that
    /// just died must not hold the campaign past the lease's end.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        tokio::time::timeout(self.config.lease / 3, call)
            .await
            .unwrap_or_else(|_| Err(ClusterError::JetStream("the lease call timed out".into())))
    }

    fn stopped(&self, why: String) {
        tracing::error!(node = %self.config.node, %why, "cluster node stopped");
        self.status.send_replace(Status::Stopped(why));
    }
}
