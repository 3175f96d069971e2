//! What can go wrong in a cluster node.

use ipsx_engine_runtime::{StoreError, SubmitError};
use thiserror::Error;

/// A cluster node could not start or go on.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// No NATS server of the list answered, or JetStream did not become ready in time.
    #[error("cannot reach NATS JetStream at {servers}: {reason}")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// What the last attempt said.
        reason: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// This node's disk holds records the cluster's log does not: it belongs to another
    /// cluster, or the log was deleted. Joining would fork the market.
    #[error(
        "the local store holds records up to {local} but the cluster's log ends at {log}; \
         it belongs to another cluster (or the log was deleted): start from an empty data folder"
    )]
    LocalAhead {
        /// The last record on disk.
        local: u64,
        /// The last record of the log.
        log: u64,
    },
    /// The shard's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shard stopped.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Another node appended to a log this node was writing: it no longer leads.
    #[error("another node wrote entry {at} of the log: this node no longer leads")]
    Fenced {
        /// The sequence this node tried to write.
        at: u64,
    },
    /// An entry read from a log could not be applied.
    #[error("applying entry {seq} of the log: {why}")]
    Apply {
        /// Its sequence.
        seq: u64,
        /// Why.
        why: String,
    },
    /// The settings make no sense.
    #[error("invalid cluster settings: {0}")]
    Config(String),
}

impl ClusterError {
    pub(crate) fn jetstream(error: impl std::fmt::Display) -> ClusterError {
        ClusterError::JetStream(error.to_string())
    }
}
