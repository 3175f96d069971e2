//! The node as one of a cluster (`ipsx node --cluster …`): its engine is a replica behind the
//! cluster's log (`ipsx_engine_cluster`), and what the node keeps beside the engine that every
//! node must hold alike goes through the cluster's shared values.
//!
//! ```text
//!  writes ─► leader's shard ─► JetStream log ─► every node's shard ─► its feed, streams, history
//!  writes on a follower ─► 503 not_leader {leader: URL}        (the SDK retries there)
//!  POST /v1/providers (leader) ─► shared value provider-<address> ─► every node's registry
//!  session key: the first node's, from the shared value session-key (tokens valid on all)
//!  payments (leader only): every hub write ─► payments log ─► every follower's book and store
//!  a follower's event stream and wallet ─► 503 not_leader (the hub runs on the leader)
//! ```
//!
//! A node that loses its place (lease lost, fenced off) is marked failed: the process exits
//! and its supervisor restarts it from disk, where it follows again.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;
use ipsx_api::{ClusterRole, ClusterView, ErrorCode};
use ipsx_engine_cluster::{ClusterError, ClusterNode, OpLog, Shared, Status};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::payments::{Ledger, Payments, PaymentsConfig};
use crate::registry::{ProviderEntry, Registry};
use crate::server::AppState;

/// The shared value that holds the cluster's session key.
const SESSION_KEY: &str = "session-key";

/// How long a node keeps trying to read the cluster's session key at start.
const START_WITHIN: Duration = Duration::from_secs(60);

/// How long one attempt to read the session key at start may take.
const START_ATTEMPT: Duration = Duration::from_secs(1);

/// How soon a registry watch that ended (or a failed read at start) is tried again.
const REWATCH_AFTER: Duration = Duration::from_millis(200);

/// What a node in a cluster keeps of it.
pub(crate) struct ClusterLink {
    /// This node's id.
    pub(crate) node: String,
    /// Where the node stands, as its campaign reports it.
    pub(crate) status: watch::Receiver<Status>,
    /// The cluster's shared values.
    pub(crate) shared: Shared,
    /// The payment side's writes, when the node runs with payments.
    pub(crate) payments_log: Option<OpLog>,
}

impl ClusterLink {
    /// The refusal of a write on a node that does not lead, naming the leader when known.
    pub(crate) fn not_leader(&self) -> ApiError {
        let leader = match &*self.status.borrow() {
            Status::Following {
                leader: Some(leader),
            } if !leader.advertise.is_empty() => Some(leader.advertise.clone()),
            _ => None,
        };
        let message = match &leader {
            Some(url) => format!("this node follows the cluster's leader: send writes to {url}"),
            None => "this node does not lead the cluster and no leader is known yet; retry \
                     shortly or at another node"
                .to_owned(),
        };
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotLeader,
            message,
        );
        error.retry_after = Some(1);
        error.leader = leader;
        error
    }

    /// Refuses unless this node leads (for writes with work before the engine: probes,
    /// registrations).
    pub(crate) fn require_leader(&self) -> Result<(), ApiError> {
        match &*self.status.borrow() {
            Status::Leading { .. } => Ok(()),
            _ => Err(self.not_leader()),
        }
    }

    /// Registers a provider through the shared values: the key it had anywhere in the cluster
    /// (or `fresh`), with its new port and route; every node's registry follows.
    pub(crate) async fn register_provider(
        &self,
        registry: &Arc<Registry>,
        provider: Address,
        port: u16,
        relayed: bool,
        fresh: [u8; 32],
    ) -> Result<ProviderEntry, ApiError> {
        let key = provider_key(provider);
        let entry = loop {
            let existing = self.shared.get(&key).await.map_err(unreachable)?;
            let (key_bytes, revision) = match &existing {
                Some(entry) => match decode_provider(&entry.value) {
                    Some((stored, _, _)) => (stored, entry.revision),
                    None => (fresh, entry.revision),
                },
                None => (fresh, 0),
            };
            let value = encode_provider(key_bytes, port, relayed);
            if let Some(written) = self
                .shared
                .put(&key, value, revision)
                .await
                .map_err(unreachable)?
            {
                break written;
            }
            // The same provider registered on another call in between: read it again.
        };
        let (key_bytes, port, relayed) = decode_provider(&entry.value)
            .ok_or_else(|| unreachable("the provider's entry did not read back"))?;
        store(registry, provider, key_bytes, port, relayed).await
    }

    /// Copies a provider's shared entry into this node's registry, if the cluster has one.
    pub(crate) async fn fetch_provider(
        &self,
        registry: &Arc<Registry>,
        provider: Address,
    ) -> Result<(), ApiError> {
        let Some(entry) = self
            .shared
            .get(&provider_key(provider))
            .await
            .map_err(unreachable)?
        else {
            return Ok(());
        };
        if let Some((key, port, relayed)) = decode_provider(&entry.value) {
            store(registry, provider, key, port, relayed).await?;
        }
        Ok(())
    }
}

/// The cluster's session key: the first node's, so a session made on one node is good on all.
/// Tried again for a while: at start JetStream may still be electing the stream's leader.
pub(crate) async fn session_key(shared: &Shared, ours: [u8; 32]) -> Result<[u8; 32], ClusterError> {
    let deadline = tokio::time::Instant::now() + START_WITHIN;
    let entry = loop {
        // A stream JetStream just created answers nothing until its replicas elect a leader:
        // short attempts rather than the full call timeout.
        let attempt = tokio::time::timeout(
            START_ATTEMPT,
            shared.create(SESSION_KEY, Bytes::copy_from_slice(&ours)),
        )
        .await
        .unwrap_or_else(|_| Err(ClusterError::JetStream("no answer yet".into())));
        match attempt {
            Ok(entry) => break entry,
            Err(ClusterError::JetStream(why)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("reading the cluster's session key: {why}; trying again");
                tokio::time::sleep(REWATCH_AFTER).await;
            }
            Err(error) => return Err(error),
        }
    };
    entry.value.as_ref().try_into().map_err(|_| {
        ClusterError::Config(format!(
            "the cluster's shared {SESSION_KEY} is {} bytes, not 32",
            entry.value.len()
        ))
    })
}

/// Keeps this node's registry in step with the shared provider entries until `stop`.
pub(crate) async fn follow_registry(
    shared: Shared,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let watched = shared.watch().await;
        match watched {
            Ok(entries) => {
                let mut entries = std::pin::pin!(entries);
                loop {
                    let next = tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        next = entries.next() => next,
                    };
                    let Some(Ok(entry)) = next else { break };
                    let Some(provider) = entry
                        .key
                        .strip_prefix("provider-")
                        .and_then(|hex| hex.parse::<Address>().ok())
                    else {
                        continue;
                    };
                    match decode_provider(&entry.value) {
                        Some((key, port, relayed)) => {
                            if let Err(error) = store(&registry, provider, key, port, relayed).await
                            {
                                tracing::error!(%provider, "registry: {}", error.message());
                            }
                        }
                        None => {
                            tracing::warn!(%provider, "a shared provider entry of the wrong size")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!("watching the cluster's shared values: {error}"),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(REWATCH_AFTER) => {}
        }
    }
}

/// Follows the node's status: once it leads, sets the engine's deal retention (a journaled
/// setting only a leader can change); once it stopped, marks the node failed so the process
/// exits and is restarted from disk.
pub(crate) async fn follow_status(
    state: Arc<AppState>,
    mut status: watch::Receiver<Status>,
    retention: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut retention_set = false;
    loop {
        let now = status.borrow_and_update().clone();
        match now {
            Status::Leading { term } if !retention_set => {
                retention_set = true;
                tracing::info!(term, "this node leads the cluster");
                if let Ok(shard) = state.shard() {
                    let set = tokio::task::spawn_blocking(move || {
                        crate::server::set_deal_retention(&shard, retention)
                    })
                    .await;
                    if let Ok(Err(error)) = set {
                        tracing::warn!("setting the deal retention as leader: {error}");
                    }
                }
            }
            Status::Stopped(why) => {
                state.fail(format!("this node left the cluster: {why}"));
                return;
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// The payment side in a cluster. While the node follows, it applies the payments log to its
/// own book and proof store. Once it leads, it claims the log (after everything the previous
/// leader wrote), starts the hub from its book as a restarted node would, and has the feed
/// meter every running deal again; from then on every write of the hub goes through the log
/// before it counts (`payments::ledger`).
pub(crate) async fn run_payments(
    state: Arc<AppState>,
    log: OpLog,
    mut status: watch::Receiver<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let (Some(config), Some(ledger)) =
        (state.payments.config.clone(), state.payments.ledger.clone())
    else {
        return;
    };
    let apply = {
        let ledger = Arc::clone(&ledger);
        move |seq: u64, entry: Bytes| {
            off_the_workers(|| ledger.apply_at(seq, &entry)).map_err(|e| e.to_string())
        }
    };
    let after = match ledger.book.applied() {
        Ok(after) => after,
        Err(error) => return state.fail(format!("reading the payments cursor: {error}")),
    };
    let (halt, halted) = watch::channel(false);
    let mut following = tokio::spawn({
        let (log, apply) = (log.clone(), apply.clone());
        async move { log.follow(after, apply, halted).await }
    });
    let leads = tokio::select! {
        led = status.wait_for(|s| matches!(s, Status::Leading { .. } | Status::Stopped(_))) => {
            led.is_ok_and(|s| matches!(*s, Status::Leading { .. }))
        }
        _ = stop.wait_for(|stop| *stop) => false,
        // Following ends on its own only when an entry could not be applied.
        followed = &mut following => {
            let why = followed_badly(followed).unwrap_or_else(|| "it ended".to_owned());
            return state.fail(format!("following the payments log: {why}"));
        }
    };
    halt.send_replace(true);
    if !leads {
        return;
    }
    if let Some(why) = followed_badly(following.await) {
        return state.fail(format!("following the payments log: {why}"));
    }
    match take_over_payments(&log, &ledger, config, apply).await {
        Ok(payments) => {
            let payments = Arc::new(payments);
            state.payments.run(Arc::clone(&payments));
            tokio::spawn(payments.watch(crate::payments::TAKEOVER_LOOKBACK, stop.clone()));
            state.feed_restart.notify_one();
            tracing::info!("this node runs the payment hub");
        }
        Err(error) => return state.fail(format!("taking over the payment hub: {error}")),
    }
    // A leader whose hub writes the log no longer takes gives way, as one whose engine
    // records it no longer takes: it exits, and the next leader claims the log.
    tokio::select! {
        why = ledger.broken() => state.fail(format!("the payments log took no more writes: {why}")),
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// Why following the payments log failed, if it did.
fn followed_badly(
    followed: Result<Result<u64, ClusterError>, tokio::task::JoinError>,
) -> Option<String> {
    match followed {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(error) => Some(error.to_string()),
    }
}

/// Claims the payments log and starts the hub from the book and store it brought up to date.
async fn take_over_payments(
    log: &OpLog,
    ledger: &Arc<Ledger>,
    config: PaymentsConfig,
    apply: impl FnMut(u64, Bytes) -> Result<(), String> + Send,
) -> Result<Payments, String> {
    let after = ledger.book.applied().map_err(|e| e.to_string())?;
    let (writer, claim) = log.claim(after, apply).await.map_err(|e| e.to_string())?;
    ledger.book.set_applied(claim).map_err(|e| e.to_string())?;
    ledger.lead(writer);
    Payments::start(config, Arc::clone(ledger), crate::feed::unix_now())
        .await
        .map_err(|e| e.to_string())
}

/// Runs blocking disk work from async code: in place on a multi-threaded runtime (its other
/// workers go on), directly on a single-threaded one.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// `GET /v1/cluster`: where this node stands.
pub(crate) async fn view(State(state): State<Arc<AppState>>) -> Json<ClusterView> {
    let applied = state
        .shard()
        .map(|shard| {
            shard
                .stats()
                .durable_seq
                .load(std::sync::atomic::Ordering::Acquire)
        })
        .unwrap_or(0);
    let Some(link) = &state.cluster else {
        return Json(ClusterView {
            node: None,
            role: ClusterRole::Single,
            term: None,
            leader: None,
            applied,
        });
    };
    let (role, term, leader) = match &*link.status.borrow() {
        Status::Following { leader } => (
            ClusterRole::Following,
            None,
            leader.as_ref().map(|leader| leader.advertise.clone()),
        ),
        Status::CatchingUp { term } => (ClusterRole::CatchingUp, Some(*term), None),
        Status::Leading { term } => (
            ClusterRole::Leading,
            Some(*term),
            Some(state.public_url.clone()),
        ),
        Status::Stopped(_) => (ClusterRole::Stopped, None, None),
    };
    Json(ClusterView {
        node: Some(link.node.clone()),
        role,
        term,
        leader,
        applied,
    })
}

/// A cluster node inside the gateway's runtime: it must be shut down (or dropped) off it, as
/// it blocks on a runtime of its own.
pub(crate) struct NodeSlot(pub(crate) Option<ClusterNode>);

impl Drop for NodeSlot {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            // Dropping blocks on the node's own runtime, which a runtime thread may not do.
            let _ = std::thread::Builder::new()
                .name("ipsx-cluster-drop".into())
                .spawn(move || drop(node));
        }
    }
}

fn provider_key(provider: Address) -> String {
    format!("provider-{}", alloy_primitives::hex::encode(provider.0))
}

/// A provider's shared entry: its proxy key, port and route.
fn encode_provider(key: [u8; 32], port: u16, relayed: bool) -> Bytes {
    let mut value = Vec::with_capacity(35);
    value.extend_from_slice(&key);
    value.extend_from_slice(&port.to_be_bytes());
    value.push(u8::from(relayed));
    Bytes::from(value)
}

fn decode_provider(value: &[u8]) -> Option<([u8; 32], u16, bool)> {
    let value: &[u8; 35] = value.try_into().ok()?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&value[..32]);
    let relayed = match value[34] {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some((key, u16::from_be_bytes([value[32], value[33]]), relayed))
}

async fn store(
    registry: &Arc<Registry>,
    provider: Address,
    key: [u8; 32],
    port: u16,
    relayed: bool,
) -> Result<ProviderEntry, ApiError> {
    let registry = Arc::clone(registry);
    tokio::task::spawn_blocking(move || registry.store(provider, key, port, relayed))
        .await
        .map_err(|e| crate::server::internal(e.to_string()))?
        .map_err(|e| crate::server::internal(e.to_string()))
}

fn unreachable(error: impl std::fmt::Display) -> ApiError {
    let mut refusal = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ClusterUnreachable,
        format!("the cluster's shared values cannot be reached: {error}"),
    );
    refusal.retry_after = Some(1);
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_entry_reads_back_and_bad_ones_are_refused() {
        let value = encode_provider([7; 32], 1080, true);
        assert_eq!(decode_provider(&value), Some(([7; 32], 1080, true)));
        assert_eq!(decode_provider(&value[..34]), None);
        let mut odd = value.to_vec();
        odd[34] = 2;
        assert_eq!(decode_provider(&odd), None);
        assert_eq!(
            provider_key(Address::repeat_byte(0xab)),
            format!("provider-{}", "ab".repeat(20))
        );
    }
}
