//! Who leads: a lease held as the one message on the lease subject of a JetStream stream whose
//! messages age out after the lease's length.
//!
//! Every change is a compare-and-set on the subject's last sequence
//! (`Nats-Expected-Last-Subject-Sequence`), so of two nodes reaching for a vacant lease one
//! wins. The holder renews it every third of its length; a dead holder's message ages out and
//! the lease is vacant again. A node that lets go publishes an empty message (vacant at
//! once). The winning message's sequence is the leader's *term*: it only grows.
//!
//! The lease keeps leaders from contending; it is not what keeps the market whole. That is
//! the log's fence: a stale leader's appends are refused whatever it believes.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;

use crate::error::ClusterError;

/// A node holding the lease, as read from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its node id.
    pub node: String,
    /// Where its clients reach it.
    pub advertise: String,
    /// The lease message's sequence when read (the term it was won under, or a renewal).
    pub revision: u64,
}

/// What the lease subject holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Nothing, or an empty message at this sequence (0: never held or aged out).
    Vacant(u64),
    /// Held.
    Held(Leader),
}

/// The lease of one cluster.
pub(crate) struct Lease {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    /// What this node writes when it holds the lease.
    claim: Bytes,
}

impl Lease {
    pub(crate) fn new(
        js: jetstream::Context,
        stream: stream::Stream,
        subject: String,
        node: &str,
        advertise: &str,
    ) -> Lease {
        Lease {
            js,
            stream,
            subject,
            claim: Bytes::from(format!("{node}\n{advertise}")),
        }
    }

    /// Reads who holds the lease.
    pub(crate) async fn holder(&self) -> Result<Holder, ClusterError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject)
            .await
        {
            Ok(message) => Ok(parse(&message.payload, message.sequence)),
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(Holder::Vacant(0))
            }
            Err(error) => Err(ClusterError::jetstream(error)),
        }
    }

    /// Takes the lease if it is vacant: the term won, or who holds it (`None` when another
    /// node won the race, unread).
    pub(crate) async fn acquire(&self) -> Result<Result<u64, Option<Leader>>, ClusterError> {
        match self.holder().await? {
            Holder::Held(leader) => Ok(Err(Some(leader))),
            Holder::Vacant(revision) => {
                Ok(self.swap(revision, self.claim.clone()).await?.ok_or(None))
            }
        }
    }

    /// Renews a held lease; the new revision, or `None` when it is no longer this node's.
    pub(crate) async fn renew(&self, revision: u64) -> Result<Option<u64>, ClusterError> {
        self.swap(revision, self.claim.clone()).await
    }

    /// Lets a held lease go at once (an empty message); whether it was still held.
    pub(crate) async fn release(&self, revision: u64) -> Result<bool, ClusterError> {
        Ok(self.swap(revision, Bytes::new()).await?.is_some())
    }

    /// Publishes `payload` if the subject's last message is still `revision`.
    async fn swap(&self, revision: u64, payload: Bytes) -> Result<Option<u64>, ClusterError> {
        publish_if_last(&self.js, self.subject.clone(), revision, payload).await
    }
}

/// Publishes `payload` on `subject` if the subject's last message is still at `revision` (0:
/// none): the new message's sequence, or `None` when another write came first.
pub(crate) async fn publish_if_last(
    js: &jetstream::Context,
    subject: String,
    revision: u64,
    payload: Bytes,
) -> Result<Option<u64>, ClusterError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        revision.to_string().as_str(),
    );
    let ack = js
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(ClusterError::jetstream)?;
    match ack.await {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(error) => Err(ClusterError::jetstream(error)),
    }
}

/// Reads a lease message: `node\nadvertise`, or empty for vacant. Anything else is treated
/// as held by an unnamed node (it will age out).
fn parse(payload: &[u8], revision: u64) -> Holder {
    if payload.is_empty() {
        return Holder::Vacant(revision);
    }
    let text = String::from_utf8_lossy(payload);
    let (node, advertise) = text.split_once('\n').unwrap_or((&text, ""));
    Holder::Held(Leader {
        node: node.to_string(),
        advertise: advertise.to_string(),
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_message_reads_as_its_holder_or_vacant() {
        assert_eq!(parse(b"", 7), Holder::Vacant(7));
        assert_eq!(
            parse(b"n2\nhttp://127.0.0.1:9000", 9),
            Holder::Held(Leader {
                node: "n2".into(),
                advertise: "http://127.0.0.1:9000".into(),
                revision: 9
            })
        );
        assert!(matches!(
            parse(b"odd", 3),
            Holder::Held(Leader { revision: 3, .. })
        ));
    }
}
