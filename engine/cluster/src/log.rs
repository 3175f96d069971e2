//! The replicated log: one JetStream stream per cluster, one message per journal record, so
//! the stream's sequence number *is* the record's.
//!
//! A leader appends each record with two headers:
//! * `Nats-Expected-Last-Sequence: seq - 1` — the fence. JetStream takes the record only
//!   if the stream ends right before it, so a stale leader (one that missed another's
//!   appends) is refused instead of forking the market;
//! * `Nats-Msg-Id: <term>-<seq>` — de-duplication. A leader that re-sends after a lost ack
//!   gets a duplicate ack for the same place; a new leader (another term) never matches an
//!   old leader's id, so it cannot be told "already stored" for a record it did not write.
//!
//! Followers read the stream in order through an ordered consumer from the record after the
//! last one on their disk, and hand the records to their shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use ipsx_engine_runtime::journal::split_records;
use ipsx_engine_runtime::{Replicator, ShardHandle, StoreError};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::error::ClusterError;

/// How soon a leader sends again what the log did not acknowledge.
const RESEND_AFTER: Duration = Duration::from_millis(50);

/// Bytes of records handed to the shard in one go, about.
const HANDOVER_BYTES: usize = 1 << 20;

/// How long a follower waits for a record before it asks whether the log holds more (and
/// replaces its consumer if so).
const QUIET_FOR: Duration = Duration::from_secs(2);

/// How long one attempt to open a consumer on the log may take.
const OPEN_ATTEMPT: Duration = Duration::from_secs(1);

/// How soon a follower tries again to open the log.
const REOPEN_AFTER: Duration = Duration::from_millis(200);

/// Creates the cluster's streams if they are missing (or finds them), retrying while
/// JetStream elects its leaders; returns the log stream.
pub(crate) async fn ensure_streams(
    js: &jetstream::Context,
    config: &ClusterConfig,
    deadline: Instant,
) -> Result<stream::Stream, ClusterError> {
    let log = stream::Config {
        name: config.log_stream(),
        subjects: vec![config.log_subject()],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        // Long enough for any re-send after a lost ack.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let lease = stream::Config {
        name: config.lease_stream(),
        subjects: vec![config.lease_subject()],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        // A lease not renewed ages out: that is how a dead leader's lease ends.
        max_age: config.lease,
        max_messages_per_subject: 1,
        ..Default::default()
    };
    let mut last_error;
    loop {
        match js.get_or_create_stream(log.clone()).await {
            Ok(stream) => match js.get_or_create_stream(lease.clone()).await {
                Ok(_) => return Ok(stream),
                Err(error) => last_error = error.to_string(),
            },
            Err(error) => last_error = error.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Unreachable {
                servers: config.servers.join(","),
                reason: format!("JetStream did not create the cluster's streams: {last_error}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last record the log holds.
pub(crate) async fn last_seq(stream: &mut stream::Stream) -> Result<u64, ClusterError> {
    let info = stream.info().await.map_err(ClusterError::jetstream)?;
    Ok(info.state.last_sequence)
}

/// A leader's appender: the [`Replicator`] its shard's journal thread calls.
pub(crate) struct JetStreamLog {
    pub(crate) js: jetstream::Context,
    pub(crate) subject: String,
    /// The lease's revision this node leads under.
    pub(crate) term: u64,
    pub(crate) runtime: Handle,
    /// Set when the lease is lost: nothing more is appended.
    pub(crate) deposed: Arc<AtomicBool>,
    /// How long a group may take to be appended before the leader gives up and stops.
    pub(crate) patience: Duration,
}

impl Replicator for JetStreamLog {
    fn replicate(&mut self, groups: &[&[u8]]) -> Result<(), StoreError> {
        if self.deposed.load(Ordering::SeqCst) {
            return Err(StoreError::Replication(
                "this node lost its lease: another node leads".into(),
            ));
        }
        self.runtime.block_on(self.append(groups))
    }
}

impl JetStreamLog {
    /// Sends every record pipelined (one round trip for the lot) and awaits the acks in
    /// order. The first record not acknowledged decides: refused by the fence, another node
    /// appended and this one must stop; anything else (no stream leader for a moment, a
    /// server gone, no answer in time) is sent again from that record on, with the same
    /// de-duplication ids, so a copy that was stored after all is acknowledged, not doubled.
    async fn append(&self, groups: &[&[u8]]) -> Result<(), StoreError> {
        let records: Vec<(u64, &[u8])> = groups
            .iter()
            .flat_map(|group| split_records(group))
            .collect();
        let deadline = Instant::now() + self.patience;
        let mut from = 0;
        while from < records.len() {
            let (done, failure) = self.send(&records[from..]).await;
            from += done;
            let Some((seq, kind, why)) = failure else {
                continue;
            };
            if kind == Some(PublishErrorKind::WrongLastSequence) || Instant::now() >= deadline {
                tracing::error!(seq, %why, "the log did not take a record; this leader stops");
                return Err(StoreError::Replication(format!(
                    "record {seq} was not appended: {why}"
                )));
            }
            tracing::warn!(seq, %why, "appending to the log; sending again");
            tokio::time::sleep(RESEND_AFTER).await;
        }
        Ok(())
    }

    /// Sends `records` and awaits their acks in order: how many were appended, and why the
    /// first that was not failed.
    async fn send(
        &self,
        records: &[(u64, &[u8])],
    ) -> (usize, Option<(u64, Option<PublishErrorKind>, String)>) {
        let mut acks = Vec::with_capacity(records.len());
        for (seq, record) in records {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}-{seq}", self.term).as_str());
            headers.insert(
                "Nats-Expected-Last-Sequence",
                (seq - 1).to_string().as_str(),
            );
            match self
                .js
                .publish_with_headers(
                    self.subject.clone(),
                    headers,
                    Bytes::copy_from_slice(record),
                )
                .await
            {
                Ok(ack) => acks.push((*seq, ack)),
                Err(error) => {
                    if acks.is_empty() {
                        return (0, Some((*seq, Some(error.kind()), error.to_string())));
                    }
                    break;
                }
            }
        }
        for (done, (seq, ack)) in acks.into_iter().enumerate() {
            match ack.await {
                // A duplicate ack names where the first copy went: it must be this place.
                Ok(ack) if ack.sequence == seq => {}
                Ok(ack) => {
                    return (
                        done,
                        Some((
                            seq,
                            Some(PublishErrorKind::WrongLastSequence),
                            format!("the log holds it at {} instead", ack.sequence),
                        )),
                    );
                }
                Err(error) => return (done, Some((seq, Some(error.kind()), error.to_string()))),
            }
        }
        (records.len(), None)
    }
}

/// Reads the log from the record after `after` and hands records to `shard`, until `stop`
/// turns true (then it returns the last record handed over) or the shard stops.
pub(crate) async fn follow(
    mut stream: stream::Stream,
    client: async_nats::Client,
    shard: Arc<ShardHandle>,
    after: u64,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, ClusterError> {
    let mut handed = after;
    let mut batch = Vec::new();
    // Each turn reads through one ordered consumer from the record after the last handed
    // over; a consumer that fails or goes quiet while the log has more is replaced.
    loop {
        let config = consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: handed + 1,
            },
            ..Default::default()
        };
        // Bounded well under the JetStream call timeout: while a dead server's streams elect
        // new leaders, a short attempt tried again finds the new one sooner.
        let opened = tokio::time::timeout(OPEN_ATTEMPT, async {
            match stream.create_consumer(config).await {
                Ok(consumer) => consumer.messages().await.map_err(ClusterError::jetstream),
                Err(error) => Err(ClusterError::jetstream(error)),
            }
        })
        .await;
        let messages = opened.unwrap_or_else(|_| {
            Err(ClusterError::JetStream(format!(
                "no consumer within {OPEN_ATTEMPT:?}"
            )))
        });
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                // JetStream cannot place a consumer while a dead server's groups elect new
                // leaders; the stream's leader may still answer reads by sequence.
                let (records, last) = read_by_sequence(&stream, handed).await?;
                if !records.is_empty() {
                    hand_over(&shard, records).await?;
                    handed = last;
                    continue;
                }
                tracing::warn!(%error, after = handed, "opening the log; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(REOPEN_AFTER) => continue,
                    _ = stop.wait_for(|stop| *stop) => return Ok(handed),
                }
            }
        };
        loop {
            let first = tokio::select! {
                message = tokio::time::timeout(QUIET_FOR, messages.next()) => message,
                _ = stop.wait_for(|stop| *stop) => return Ok(handed),
            };
            let first = match first {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    tracing::warn!(%error, after = handed, "reading the log; reopening");
                    break;
                }
                Ok(None) => {
                    tracing::warn!(after = handed, "the log's consumer ended; reopening");
                    break;
                }
                // Quiet: fine if the log holds nothing more, a stuck consumer otherwise.
                Err(_) => match last_seq(&mut stream).await {
                    Ok(end) if end > handed => {
                        tracing::warn!(
                            after = handed,
                            end,
                            "the log's consumer is stuck; reopening"
                        );
                        break;
                    }
                    _ => continue,
                },
            };
            // Take what has already arrived, so a follower catching up hands over big groups.
            let mut next = Some(first);
            while let Some(message) = next {
                let position = message
                    .info()
                    .map_err(ClusterError::jetstream)?
                    .stream_sequence;
                let seq = record_at(&message.payload, position)?;
                batch.extend_from_slice(&message.payload);
                handed = seq;
                if batch.len() >= HANDOVER_BYTES {
                    break;
                }
                next = match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => Some(message),
                    _ => None,
                };
            }
            hand_over(&shard, std::mem::take(&mut batch)).await?;
        }
    }
}

/// The record a log message at stream `position` carries: its first record's seq, which must
/// be the position.
fn record_at(payload: &[u8], position: u64) -> Result<u64, ClusterError> {
    let Some((seq, _)) = split_records(payload).next() else {
        return Err(ClusterError::JetStream(format!(
            "log message {position} holds no whole record"
        )));
    };
    if seq != position {
        return Err(ClusterError::JetStream(format!(
            "log message {position} carries record {seq}: the log was not written by IPSX \
             leaders"
        )));
    }
    Ok(seq)
}

/// Hands records to the shard; its queue may be full, so this waits off the async workers.
async fn hand_over(shard: &Arc<ShardHandle>, records: Vec<u8>) -> Result<(), ClusterError> {
    let shard = Arc::clone(shard);
    tokio::task::spawn_blocking(move || shard.replicate_in(records))
        .await
        .map_err(ClusterError::jetstream)??;
    Ok(())
}

/// Reads the records after `after` one message at a time by sequence, which the stream's
/// leader answers without a consumer: the records read back to back and the last one's seq.
/// Stops at the log's end, after about [`HANDOVER_BYTES`], or at the first read that fails or
/// is slow (the caller tries its consumer again then).
async fn read_by_sequence(
    stream: &stream::Stream,
    after: u64,
) -> Result<(Vec<u8>, u64), ClusterError> {
    let mut records = Vec::new();
    let mut last = after;
    while records.len() < HANDOVER_BYTES {
        let read = tokio::time::timeout(OPEN_ATTEMPT, stream.get_raw_message(last + 1)).await;
        let Ok(Ok(message)) = read else { break };
        last = record_at(&message.payload, message.sequence)?;
        records.extend_from_slice(&message.payload);
    }
    Ok((records, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalNats;

    /// A record as the journal lays it out (the appender reads only the length and seq).
    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_stale_leader_is_fenced_off_and_a_resent_record_is_not_doubled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let servers = LocalNats::start(dir.path(), 1).expect("nats-server runs");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut config = ClusterConfig::new(servers.urls(), "fence", "n1", "");
        config.replicas = 1;
        let (js, mut stream) = runtime.block_on(async {
            let client = async_nats::connect(servers.urls()).await.expect("connects");
            let js = jetstream::new(client);
            let deadline = Instant::now() + Duration::from_secs(30);
            let stream = ensure_streams(&js, &config, deadline)
                .await
                .expect("streams");
            (js, stream)
        });
        let appender = |term| JetStreamLog {
            js: js.clone(),
            subject: config.log_subject(),
            term,
            runtime: runtime.handle().clone(),
            deposed: Arc::new(AtomicBool::new(false)),
            patience: Duration::from_secs(5),
        };
        let mut old = appender(1);
        let (one, two) = (record(1, b"one"), record(2, b"two"));
        old.replicate(&[&one, &two]).expect("appended");

        // The old leader re-sends record 2 after a lost ack: the log acknowledges the copy it
        // holds, at the same place, and holds it once.
        old.replicate(&[&two])
            .expect("a re-sent record is acknowledged");
        assert_eq!(runtime.block_on(last_seq(&mut stream)).expect("info"), 2);

        // A new leader (term 2) appends record 3; the old one, which missed it, tries its own
        // record 3 and is refused, even re-sending under its old id.
        let mut new = appender(2);
        new.replicate(&[&record(3, b"new")]).expect("appended");
        let refused = old.replicate(&[&record(3, b"stale")]);
        assert!(
            matches!(&refused, Err(StoreError::Replication(why)) if why.contains("record 3")),
            "{refused:?}"
        );
        assert_eq!(runtime.block_on(last_seq(&mut stream)).expect("info"), 3);

        // A deposed leader appends nothing at all.
        new.deposed.store(true, Ordering::SeqCst);
        assert!(new.replicate(&[&record(4, b"late")]).is_err());
        assert_eq!(runtime.block_on(last_seq(&mut stream)).expect("info"), 3);

        // Without a consumer, a follower reads the records after its last one by sequence:
        // the winners, back to back, up to the log's end.
        let (read, last) = runtime
            .block_on(read_by_sequence(&stream, 1))
            .expect("read");
        assert_eq!(last, 3);
        assert_eq!(read, [two, record(3, b"new")].concat());
    }
}
