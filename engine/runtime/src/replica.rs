//! A shard's journal replicated through a log shared by several nodes.
//!
//! The engine is deterministic: nodes that apply the same records in the same order reach the
//! same state. A cluster (see the `ipsx-engine-cluster` crate) keeps one sequenced log per
//! shard; one node leads and appends, the others follow:
//!
//! ```text
//!  leader:   submitters ─► writer applies ─► journal thread: Replicator::replicate(group)
//!                                              │  (the log took every record, in order)
//!                                              ├─► local write + sync ─► answers
//!  follower: log ─► ShardHandle::replicate_in(records) ─► writer applies the same records
//!                                              └─► local write ─► events to its followers
//! ```
//!
//! The leader hands each group to the log *before* writing it locally, so a node's journal
//! is always a prefix of the log: when the log refuses a group (another node appended first),
//! nothing of it was written or acknowledged here, and the writer stops; restarted from disk,
//! the node follows the log again. A follower takes no commands
//! ([`crate::SubmitError::NotLeader`]) and does not move its clock on its own: time comes
//! from the leader's records.

use crate::error::StoreError;

/// Where a leading shard's records must be durable before they are written locally and
/// acknowledged.
pub trait Replicator: Send + 'static {
    /// Appends `groups` (whole journal records, back to back, continuing the log where it
    /// ends) and returns once the log holds every one of them. On an error nothing after the
    /// failed record may count as appended, and the shard stops.
    fn replicate(&mut self, groups: &[&[u8]]) -> Result<(), StoreError>;
}

/// Whether a shard takes commands or follows another node's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Takes commands (and moves its clock): a node on its own, or a cluster's leader.
    #[default]
    Leader,
    /// Applies records handed in through [`crate::ShardHandle::replicate_in`] until
    /// promoted with [`crate::ShardHandle::promote`].
    Follower,
}
