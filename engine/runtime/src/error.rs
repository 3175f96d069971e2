//! Errors of the runtime: storage and the shard plumbing.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The journal or the snapshots could not be read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Data on disk is damaged somewhere recovery cannot simply stop.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The journal stopped after a write or sync failed: nothing more goes after the group
    /// that failed (the first report of the failure says what it was).
    #[error("the journal stopped after an earlier write failed")]
    JournalStopped,
    /// The replicated log (see [`crate::replica`]) did not take a group: another writer
    /// appended first (this shard no longer leads), or the log could not be reached in time.
    /// Nothing of the group was written locally or acknowledged.
    #[error("the replicated log did not take the group: {0}")]
    Replication(String),
    /// The journal does not continue where the snapshot ends.
    #[error("the journal has a gap: expected record {expected}, found {found}")]
    Gap {
        /// The sequence number recovery needed.
        expected: u64,
        /// The one it found.
        found: u64,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A submission could not be handled.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// The shard's writer has stopped (shut down, or failed on storage).
    #[error("the engine shard has stopped")]
    Stopped,
    /// The command names countries (or none, with several shards) that no single shard owns.
    #[error(
        "this request spans markets held by different shards; name countries of one shard, \
         or run with a single shard"
    )]
    CrossShard,
    /// The shard follows a replicated log and takes no commands: another node leads.
    #[error("this node follows the cluster's leader and takes no commands")]
    NotLeader,
    /// The id names a shard this node does not run.
    #[error("no shard {0} on this node")]
    UnknownShard(u16),
}
