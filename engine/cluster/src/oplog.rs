//! A fenced log of opaque entries beside the engine's: for state the node keeps outside the
//! engine that a new leader must take over exactly (the payment hub's book and proofs).
//!
//! ```text
//!  leader:   claim ─► (catch up, then an empty entry fenced on the end it read) ─► OpWriter
//!            OpWriter::append(entry) ─► IPSX_<name>_<LOG> (fence: expected last seq) ─► seq
//!  follower: OpLog::follow(after) ─► apply(seq, entry) for every entry, in order
//! ```
//!
//! One node writes at a time: [`OpLog::claim`] reads the log to its end and appends a claim
//! fenced on that end; every later entry of the writer is fenced on the one before. Once a
//! claim is in, the previous writer's next entry is refused ([`ClusterError::Fenced`]), and
//! everything it wrote before is behind the claim, so the new writer has read it. Entries are
//! applied at least once and in order (a node keeps its own cursor), so applying one twice
//! must do no harm.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::node;

/// How long [`OpLog::open`] waits for JetStream to create or find the stream.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// How long one attempt to open a consumer, or to read one entry, may take.
const ATTEMPT: Duration = Duration::from_secs(1);

/// How long a follower waits for an entry before it asks whether the log holds more.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// How soon a failed read or append is tried again.
const AGAIN_AFTER: Duration = Duration::from_millis(100);

/// What applying an entry can say: the entry could not be applied, and following stops.
pub type ApplyError = String;

/// A fenced log of entries, as every node reads it.
#[derive(Clone)]
pub struct OpLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    node: String,
    patience: Duration,
}

impl OpLog {
    /// Connects and creates the log `IPSX_<cluster>_<name>` if it is missing. `name` is one
    /// word of capitals (`PAYMENTS`).
    pub async fn open(config: &ClusterConfig, name: &str) -> Result<OpLog, ClusterError> {
        config.validate()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ClusterError::Config(format!(
                "log name {name:?}: use capital letters only"
            )));
        }
        let client = node::connect(config, "oplog").await?;
        let js = node::context(config, &client);
        let subject = format!("ipsx.{}.{}", config.name, name.to_ascii_lowercase());
        let settings = stream::Config {
            name: format!("IPSX_{}_{name}", config.name),
            subjects: vec![subject.clone()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let stream = node::create_stream(&js, config, settings, OPEN_WITHIN).await?;
        Ok(OpLog {
            client,
            js,
            stream,
            subject,
            node: config.node.clone(),
            patience: config.ack_timeout.max(Duration::from_secs(5)),
        })
    }

    /// The log's last sequence.
    pub async fn end(&self) -> Result<u64, ClusterError> {
        let mut stream = self.stream.clone();
        crate::log::last_seq(&mut stream).await
    }

    /// Applies the entries after `after` up to the log's end as read now, one read each;
    /// the last sequence applied (claims included).
    pub async fn catch_up(
        &self,
        after: u64,
        apply: &mut (impl FnMut(u64, Bytes) -> Result<(), ApplyError> + Send),
    ) -> Result<u64, ClusterError> {
        let end = self.end().await?;
        let deadline = Instant::now() + self.patience;
        let mut applied = after;
        while applied < end {
            let seq = applied + 1;
            let read = tokio::time::timeout(ATTEMPT, self.stream.get_raw_message(seq)).await;
            match read {
                Ok(Ok(message)) => {
                    take(seq, message.payload, apply)?;
                    applied = seq;
                }
                _ if Instant::now() < deadline => tokio::time::sleep(AGAIN_AFTER).await,
                Ok(Err(error)) => return Err(ClusterError::jetstream(error)),
                Err(_) => {
                    return Err(ClusterError::JetStream(format!(
                        "entry {seq} of the log could not be read"
                    )));
                }
            }
        }
        Ok(applied)
    }

    /// Applies every entry after `after` as it comes, until `stop` turns true; the last
    /// sequence applied.
    pub async fn follow(
        &self,
        after: u64,
        mut apply: impl FnMut(u64, Bytes) -> Result<(), ApplyError> + Send,
        mut stop: watch::Receiver<bool>,
    ) -> Result<u64, ClusterError> {
        let mut applied = after;
        loop {
            let config = consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                },
                ..Default::default()
            };
            let opened = tokio::time::timeout(ATTEMPT, async {
                let consumer = self.stream.create_consumer(config).await.ok()?;
                consumer.messages().await.ok()
            })
            .await;
            let Ok(Some(mut messages)) = opened else {
                tokio::select! {
                    _ = tokio::time::sleep(AGAIN_AFTER) => continue,
                    _ = stop.wait_for(|stop| *stop) => return Ok(applied),
                }
            };
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(QUIET_FOR, messages.next()) => next,
                    _ = stop.wait_for(|stop| *stop) => return Ok(applied),
                };
                let message = match next {
                    Ok(Some(Ok(message))) => message,
                    Ok(_) => break,
                    // Quiet: fine if the log holds nothing more, a stuck consumer otherwise.
                    Err(_) => match self.end().await {
                        Ok(end) if end > applied => break,
                        _ => continue,
                    },
                };
                let seq = message
                    .info()
                    .map_err(ClusterError::jetstream)?
                    .stream_sequence;
                if seq <= applied {
                    continue;
                }
                if seq != applied + 1 {
                    // Nothing is ever removed from this log: a gap is a consumer gone wrong.
                    break;
                }
                take(seq, message.payload.clone(), &mut apply)?;
                applied = seq;
            }
        }
    }

    /// Makes this node the log's only writer: applies what it has not yet (after `after`),
    /// then appends a claim fenced on the log's end — again if another writer got in
    /// between. The previous writer's appends are refused from then on.
    pub async fn claim(
        &self,
        after: u64,
        mut apply: impl FnMut(u64, Bytes) -> Result<(), ApplyError> + Send,
    ) -> Result<(OpWriter, u64), ClusterError> {
        let mut applied = after;
        let deadline = Instant::now() + self.patience;
        loop {
            applied = self.catch_up(applied, &mut apply).await?;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Sequence", applied.to_string().as_str());
            let published = self
                .js
                .publish_with_headers(self.subject.clone(), headers, Bytes::new())
                .await;
            let acked = match published {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            match acked {
                Ok(ack) => {
                    tracing::info!(node = %self.node, claim = ack.sequence, "writing the log");
                    let writer = OpWriter {
                        js: self.js.clone(),
                        subject: self.subject.clone(),
                        term: ack.sequence,
                        last: ack.sequence,
                        broken: None,
                        patience: self.patience,
                    };
                    return Ok((writer, ack.sequence));
                }
                // Another writer appended after what was read: read that too.
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(error) if Instant::now() >= deadline => {
                    return Err(ClusterError::jetstream(error));
                }
                Err(_) => tokio::time::sleep(AGAIN_AFTER).await,
            }
        }
    }
}

/// Hands a non-empty entry to `apply`; claims (empty entries) only move the cursor.
fn take(
    seq: u64,
    entry: Bytes,
    apply: &mut (impl FnMut(u64, Bytes) -> Result<(), ApplyError> + Send),
) -> Result<(), ClusterError> {
    if entry.is_empty() {
        return Ok(());
    }
    apply(seq, entry).map_err(|why| ClusterError::Apply { seq, why })
}

/// The log's writer, from [`OpLog::claim`].
pub struct OpWriter {
    js: jetstream::Context,
    subject: String,
    /// The claim's sequence: it names this writer's entries for de-duplication.
    term: u64,
    last: u64,
    /// Why an append failed for good: a writer whose entry may or may not be in the log
    /// appends nothing more.
    broken: Option<String>,
    patience: Duration,
}

impl OpWriter {
    /// Appends `entry` (not empty) once JetStream acknowledges it: its sequence. A refusal by
    /// the fence is [`ClusterError::Fenced`]: another node writes now. Anything else is sent
    /// again with the same de-duplication id until the patience runs out; after that this
    /// writer refuses every append.
    pub async fn append(&mut self, entry: Bytes) -> Result<u64, ClusterError> {
        if let Some(why) = &self.broken {
            return Err(ClusterError::JetStream(why.clone()));
        }
        if entry.is_empty() {
            return Err(ClusterError::Config("an empty entry is a claim".into()));
        }
        let seq = self.last + 1;
        let deadline = Instant::now() + self.patience;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}-{seq}", self.term).as_str());
            headers.insert(
                "Nats-Expected-Last-Sequence",
                self.last.to_string().as_str(),
            );
            let published = self
                .js
                .publish_with_headers(self.subject.clone(), headers, entry.clone())
                .await;
            let acked = match published {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            let why = match acked {
                Ok(ack) if ack.sequence == seq => {
                    self.last = seq;
                    return Ok(seq);
                }
                Ok(ack) => format!("the log holds entry {seq} at {}", ack.sequence),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    let fenced = ClusterError::Fenced { at: seq };
                    self.broken = Some(fenced.to_string());
                    return Err(fenced);
                }
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                self.broken = Some(format!("entry {seq} was not appended: {why}"));
                return Err(ClusterError::JetStream(why));
            }
            tokio::time::sleep(AGAIN_AFTER).await;
        }
    }

    /// The last sequence this writer appended (or its claim).
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalNats;
    use std::sync::{Arc, Mutex};

    fn collect(
        into: &Arc<Mutex<Vec<(u64, Bytes)>>>,
    ) -> impl FnMut(u64, Bytes) -> Result<(), ApplyError> + Send + use<> {
        let into = Arc::clone(into);
        move |seq, entry| {
            into.lock().expect("lock").push((seq, entry));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_writer_fences_off_the_old_and_followers_see_every_entry_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = LocalNats::start(dir.path(), 1).expect("nats-server runs");
        let mut config = ClusterConfig::new(nats.urls(), "ops", "n1", "");
        config.replicas = 1;
        assert!(
            OpLog::open(&config, "pay-ments").await.is_err(),
            "a bad name"
        );
        let log = OpLog::open(&config, "PAYMENTS").await.expect("open");

        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopping) = watch::channel(false);
        let follower = {
            let log = log.clone();
            let apply = collect(&seen);
            tokio::spawn(async move { log.follow(0, apply, stopping).await })
        };

        let (mut old, claim) = log.claim(0, collect(&seen)).await.expect("claim");
        assert_eq!(claim, 1);
        assert_eq!(old.append(Bytes::from_static(b"a")).await.expect("a"), 2);
        assert_eq!(old.append(Bytes::from_static(b"b")).await.expect("b"), 3);

        // A second node claims (after catching up from nothing): the old writer is refused
        // from then on, even after the claim it missed.
        let caught = Arc::new(Mutex::new(Vec::new()));
        let (mut new, claim) = log.claim(0, collect(&caught)).await.expect("claim");
        assert_eq!(claim, 4);
        assert_eq!(
            *caught.lock().expect("lock"),
            vec![(2, Bytes::from_static(b"a")), (3, Bytes::from_static(b"b"))],
            "the new writer read everything before its claim"
        );
        let refused = old.append(Bytes::from_static(b"stale")).await;
        assert!(
            matches!(refused, Err(ClusterError::Fenced { at: 4 })),
            "{refused:?}"
        );
        assert!(old.append(Bytes::from_static(b"later")).await.is_err());
        assert_eq!(new.append(Bytes::from_static(b"c")).await.expect("c"), 5);
        assert!(
            new.append(Bytes::new()).await.is_err(),
            "empty entries are claims"
        );

        // The follower applied each entry once, in order, claims left out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().expect("lock").len() < 3 {
            assert!(Instant::now() < deadline, "the follower caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send_replace(true);
        let last = follower.await.expect("join").expect("followed");
        assert_eq!(last, 5);
        let seen = seen.lock().expect("lock").clone();
        let entries: Vec<&[u8]> = seen.iter().map(|(_, e)| e.as_ref()).collect();
        assert_eq!(entries, vec![&b"a"[..], b"b", b"c"]);

        // Catching up from a cursor reads only what is after it.
        let rest = Arc::new(Mutex::new(Vec::new()));
        let last = log
            .catch_up(3, &mut collect(&rest))
            .await
            .expect("caught up");
        assert_eq!(last, 5);
        assert_eq!(
            *rest.lock().expect("lock"),
            vec![(5, Bytes::from_static(b"c"))]
        );
    }
}
