//! # ipsx-engine-cluster — engine replicas sequenced through NATS JetStream
//!
//! The engine is a deterministic state machine with a state hash; this crate runs it on
//! several nodes behind one replicated, sequenced log, the way exchanges put a
//! single-threaded matcher behind a replicated journal (LMAX, Aeron Cluster):
//!
//! ```text
//!   leader node                       JetStream (R3: three nats-servers)        follower nodes
//!   commands ─► shard applies ─► record k ─► stream IPSX_<name>_LOG, seq k ─► ordered consumer
//!              ▲ answer after    (fence: expected last seq k-1,             │  ─► shard applies
//!              │ the log acked    de-dup id <term>-<k>)                      │     record k
//!              └─ local journal + snapshots on every node (a restart replays only the tail)
//!
//!   lease: stream IPSX_<name>_LEASE, one message aging out after `lease`; compare-and-set
//! ```
//!
//! * [`ClusterNode`]: a shard that follows the log, reaches for the lease when it is vacant,
//!   catches up, then leads; a leader that loses the lease or is fenced off stops
//!   ([`Status::Stopped`]) and is restarted from disk by its owner.
//! * [`log`](crate::log): the record stream, the leader's appender and the followers' reader.
//! * [`lease`](crate::lease): who leads, and the term the de-duplication ids carry.
//! * [`shared`]: small values every node must hold alike (a shared secret, providers'
//!   proxy keys), one JetStream subject per key, written by compare-and-set.
//! * [`oplog`]: a fenced log of opaque entries beside the engine's, for what a new leader
//!   must take over exactly (the payment hub's book and proofs): one writer at a time, by
//!   claim.
//! * [`check`]: a stopped node's market brought to the log's end, and the double-booking
//!   check, for stories and drills.
//! * [`local`]: nats-server processes on loopback, for tests, benchmarks and trying it out.
//!
//! Nothing a leader acknowledged can be lost while a majority of the servers lives: it
//! answers only after JetStream acknowledged the record, which JetStream does once a quorum
//! of the stream's replicas stored it.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ipsx_engine::CommandKind;
//! use ipsx_engine_cluster::{ClusterConfig, ClusterNode, Status};
//! use ipsx_engine_runtime::{ShardConfig, StoreConfig};
//!
//! let servers = vec!["nats://127.0.0.1:4222".to_string()];
//! let mut cluster = ClusterConfig::new(servers, "eu", "node-1", "http://127.0.0.1:8080");
//! cluster.replicas = 1;
//! let node = ClusterNode::start(ShardConfig::new(StoreConfig::new("data/node-1")), cluster)?;
//! if let Status::Leading { .. } =
//!     node.wait_for(Duration::from_secs(10), |s| matches!(s, Status::Leading { .. }))
//! {
//!     node.shard().submit(CommandKind::Tick)?;
//! }
//! node.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
pub mod config;
pub mod error;
pub mod lease;
pub mod local;
pub mod log;
pub mod node;
pub mod oplog;
pub mod shared;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use lease::Leader;
pub use node::{ClusterNode, Status};
pub use oplog::{OpLog, OpWriter};
pub use shared::{Entry, Shared};
