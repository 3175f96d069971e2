//! Small values every node of a cluster must hold alike, beside the log: a secret the nodes
//! share, a provider's proxy key. One JetStream stream per cluster (`IPSX_<name>_SHARED`),
//! one subject per key (`ipsx.<name>.shared.<key>`), only the last message of each kept.
//!
//! ```text
//!  leader: create/put (compare-and-set on the key's last sequence) ─► IPSX_<name>_SHARED
//!  every node: watch (each key's last value, then every change)   ◄─┘  ─► its local copy
//! ```
//!
//! These values are not engine state: the engine's log orders commands, this stream only
//! keeps the latest of each key. Writers compare-and-set, so two nodes that write the same
//! key at once cannot both win, and [`Shared::create`] hands everyone the value that stood
//! first.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::lease::publish_if_last;
use crate::node;

/// How long [`Shared::open`] waits for JetStream to create or find the stream.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// One key's value as the stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// The stream sequence it was written at: what a compare-and-set names.
    pub revision: u64,
}

/// The cluster's shared values.
#[derive(Clone)]
pub struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl Shared {
    /// Connects to the cluster's NATS servers and creates the stream if it is missing.
    pub async fn open(config: &ClusterConfig) -> Result<Shared, ClusterError> {
        config.validate()?;
        let client = node::connect(config, "shared").await?;
        let js = node::context(config, &client);
        let settings = stream::Config {
            name: config.shared_stream(),
            subjects: vec![format!("{}.>", config.shared_prefix())],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            ..Default::default()
        };
        let stream = node::create_stream(&js, config, settings, OPEN_WITHIN).await?;
        Ok(Shared {
            client,
            js,
            stream,
            prefix: config.shared_prefix(),
        })
    }

    /// The value `key` holds, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        let subject = self.subject(key)?;
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(Entry {
                key: key.to_owned(),
                value: message.payload,
                revision: message.sequence,
            })),
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(error) => Err(ClusterError::jetstream(error)),
        }
    }

    /// Sets `key` to `value` unless it holds a value already; the value that stands (this
    /// one, or the one written first).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<Entry, ClusterError> {
        loop {
            if let Some(existing) = self.get(key).await? {
                return Ok(existing);
            }
            if let Some(entry) = self.put(key, value.clone(), 0).await? {
                return Ok(entry);
            }
            // Another node wrote it between the read and the write: read theirs.
        }
    }

    /// Sets `key` to `value` if its last write is still `revision` (0: never written); the
    /// new entry, or `None` when another write came first.
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<Entry>, ClusterError> {
        let subject = self.subject(key)?;
        let written = publish_if_last(&self.js, subject, revision, value.clone()).await?;
        Ok(written.map(|revision| Entry {
            key: key.to_owned(),
            value,
            revision,
        }))
    }

    /// Every key's last value, then every write from then on. The stream ends (or yields an
    /// error) if the consumer fails; watch again then — values come again, and applying a
    /// value twice must do no harm.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<Entry, ClusterError>> + use<>, ClusterError> {
        let config = consumer::push::OrderedConfig {
            deliver_subject: self.client.new_inbox(),
            filter_subject: format!("{}.>", self.prefix),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        };
        let consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(ClusterError::jetstream)?;
        let messages = consumer.messages().await.map_err(ClusterError::jetstream)?;
        let prefix = format!("{}.", self.prefix);
        Ok(messages.map(move |message| {
            let message = message.map_err(ClusterError::jetstream)?;
            let info = message.info().map_err(ClusterError::jetstream)?;
            let key = message
                .subject
                .strip_prefix(prefix.as_str())
                .unwrap_or(&message.subject)
                .to_owned();
            Ok(Entry {
                key,
                value: message.payload.clone(),
                revision: info.stream_sequence,
            })
        }))
    }

    fn subject(&self, key: &str) -> Result<String, ClusterError> {
        let fine = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !fine {
            return Err(ClusterError::Config(format!(
                "shared key {key:?}: use 1-128 letters, digits, '-' or '_'"
            )));
        }
        Ok(format!("{}.{key}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalNats;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_value_stands_and_watchers_see_every_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = LocalNats::start(dir.path(), 1).expect("nats-server runs");
        let mut config = ClusterConfig::new(nats.urls(), "shared", "n1", "http://a");
        config.replicas = 1;
        let one = Shared::open(&config).await.expect("open");
        let two = Shared::open(&config).await.expect("open again");

        let first = one
            .create("secret", Bytes::from_static(b"first"))
            .await
            .expect("create");
        let second = two
            .create("secret", Bytes::from_static(b"second"))
            .await
            .expect("create again");
        assert_eq!(first, second, "the value written first stands for everyone");
        assert_eq!(second.value, Bytes::from_static(b"first"));

        // A stale compare-and-set is refused and changes nothing.
        let moved = one
            .put("p", Bytes::from_static(b"v1"), 0)
            .await
            .expect("put")
            .expect("first write");
        assert_eq!(
            two.put("p", Bytes::from_static(b"stale"), 0)
                .await
                .expect("put"),
            None
        );
        two.put("p", Bytes::from_static(b"v2"), moved.revision)
            .await
            .expect("put")
            .expect("a write naming the last revision");

        let mut watch = Box::pin(one.watch().await.expect("watch"));
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < 2 {
            let entry = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("a value within 10 s")
                .expect("the watch goes on")
                .expect("an entry");
            seen.insert(entry.key, entry.value);
        }
        assert_eq!(seen["secret"], Bytes::from_static(b"first"));
        assert_eq!(seen["p"], Bytes::from_static(b"v2"), "only the last value");

        assert!(matches!(one.get("a.b").await, Err(ClusterError::Config(_))));
    }
}
