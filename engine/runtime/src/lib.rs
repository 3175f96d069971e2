//! # ipsx-engine-runtime — the engine's thin shell of threads and files
//!
//! [`ipsx_engine`] is a pure state machine; this crate gives it time, queues and a disk:
//!
//! ```text
//!  submitters ──► bounded lock-free queue ──► shard writer thread (one per shard)
//!                                              │ apply each command of batch k to the Engine
//!                                              │ keep each accepted command for the group
//!                                              │ run the batch's reads (answers held back)
//!                                              ├──► journal thread: encode, one write + fdatasync
//!                                              │    for batch k, while the writer applies k+1
//!                                              │    then, on that thread, batch k's events
//!                                              │    to every follower (output stream),
//!                                              │    answers to submitters and readers, depth
//!                                              │    published (ArcSwap)
//!                                              ▼
//!                                   state frozen (copy-on-write) for the snapshot thread when due
//! ```
//!
//! * [`journal`]: append-only segments of CRC-checked records, group commit, a configurable
//!   [`FsyncPolicy`]; a torn tail is cut on recovery. Under a syncing policy a helper thread
//!   keeps zero-filled room ahead of the writes, so a sync writes the data and not the file's
//!   size too (`room.rs`).
//! * [`store::DurableEngine`]: engine + journal + rkyv snapshots; recovery is the newest
//!   readable snapshot plus the journal after it, decoded on a helper thread while the
//!   caller applies.
//! * [`shard::ShardHandle`]: the single writer of one shard; no mutex on the matching path,
//!   readers get depth snapshots or run queries between batches.
//! * [`output`]: the shard's output stream — each durable batch's events, timers' included, for
//!   followers that react instead of polling; a follower that falls behind is told it lagged.
//! * [`replica`]: a shard that follows a replicated log (another node's records), or leads it
//!   (each group handed to the log before it is written here); `ipsx-engine-cluster` puts
//!   NATS JetStream behind it.
//! * [`exchange::Exchange`]: several shards, markets (countries) assigned to them.
//!
//! A command is acknowledged only after its batch is written (and synced, under
//! [`FsyncPolicy::Always`]): what a client was told survives `kill -9`.
//!
//! ## Example
//!
//! ```
//! use ipsx_engine::{CommandKind, Timestamp};
//! use ipsx_engine_runtime::{ShardConfig, ShardHandle, StoreConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let shard = ShardHandle::start(ShardConfig::new(StoreConfig::new(dir.path())))?;
//! let outcome = shard.submit_at(Some(Timestamp(1_000)), CommandKind::Tick)?;
//! assert_eq!(outcome.seq, Some(1));
//! shard.shutdown()?;
//!
//! let again = ShardHandle::start(ShardConfig::new(StoreConfig::new(dir.path())))?;
//! assert_eq!(again.recovery().last_seq, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod disk;
pub mod error;
pub mod exchange;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz;
pub mod journal;
mod journal_thread;
pub mod output;
mod read_ahead;
pub mod replica;
mod restock;
mod room;
pub mod shard;
mod snapshot_file;
pub mod store;
pub mod workload;

pub use error::{StoreError, SubmitError};
pub use exchange::Exchange;
pub use journal::FsyncPolicy;
pub use output::{EventBatch, Events, Followed, Follower, Sink};
pub use replica::{Replicator, Role};
pub use shard::{Outcome, ShardConfig, ShardHandle, Submission, Then, wall_clock};
pub use snapshot_file::SnapshotBytes;
pub use store::{DurableEngine, Recovery, StoreConfig};
