//! How a node joins a cluster.

use std::time::Duration;

use crate::error::ClusterError;

/// A node's cluster settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port` or `host:port`); the client fails
    /// over between them.
    pub servers: Vec<String>,
    /// The cluster's name: its streams are `IPSX_<name>_LOG` (the records) and
    /// `IPSX_<name>_LEASE` (who leads). Letters, digits, `-` and `_`.
    pub name: String,
    /// This node's id, unique in the cluster.
    pub node: String,
    /// Where clients reach this node (its API URL), told to clients of the other nodes.
    pub advertise: String,
    /// Copies JetStream keeps of each stream (3 across three servers; 1 for a single server).
    pub replicas: usize,
    /// A leader that has not renewed its lease for this long is replaced. Failover takes
    /// about this long; shorter leases cost more renewals (one every third of it).
    pub lease: Duration,
    /// How long a leader waits for JetStream to acknowledge a group before it gives up (and
    /// stops: a group neither refused nor acknowledged leaves its fate unknown).
    pub ack_timeout: Duration,
}

impl ClusterConfig {
    /// Defaults for a three-server cluster.
    pub fn new(servers: Vec<String>, name: &str, node: &str, advertise: &str) -> ClusterConfig {
        ClusterConfig {
            servers,
            name: name.to_string(),
            node: node.to_string(),
            advertise: advertise.to_string(),
            replicas: 3,
            lease: Duration::from_secs(3),
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// Refuses settings JetStream or the lease cannot work with.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let fine = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if self.servers.is_empty() {
            return Err(ClusterError::Config("no NATS server given".into()));
        }
        if !fine(&self.name) {
            return Err(ClusterError::Config(format!(
                "cluster name {:?}: use 1-64 letters, digits, '-' or '_'",
                self.name
            )));
        }
        if !fine(&self.node) {
            return Err(ClusterError::Config(format!(
                "node id {:?}: use 1-64 letters, digits, '-' or '_'",
                self.node
            )));
        }
        if self.advertise.contains('\n') {
            return Err(ClusterError::Config(
                "the advertised URL holds a line break".into(),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ClusterError::Config(format!(
                "{} replicas: JetStream keeps 1 to 5",
                self.replicas
            )));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(ClusterError::Config(
                "a lease under 300 ms would be renewed faster than JetStream answers".into(),
            ));
        }
        Ok(())
    }

    /// The stream of records.
    pub fn log_stream(&self) -> String {
        format!("IPSX_{}_LOG", self.name)
    }

    /// The subject records are appended on.
    pub fn log_subject(&self) -> String {
        format!("ipsx.{}.log", self.name)
    }

    /// The stream that holds the lease.
    pub fn lease_stream(&self) -> String {
        format!("IPSX_{}_LEASE", self.name)
    }

    /// The subject of the lease.
    pub fn lease_subject(&self) -> String {
        format!("ipsx.{}.lease", self.name)
    }

    /// The stream of values the nodes share ([`crate::shared`]).
    pub fn shared_stream(&self) -> String {
        format!("IPSX_{}_SHARED", self.name)
    }

    /// The subject prefix of shared values (one subject per key below it).
    pub fn shared_prefix(&self) -> String {
        format!("ipsx.{}.shared", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_change_a_subject_are_refused() {
        let good = ClusterConfig::new(vec!["127.0.0.1:4222".into()], "eu", "n1", "http://a");
        assert!(good.validate().is_ok());
        for name in ["", "a.b", "a*", "a>", "a b"] {
            let mut bad = good.clone();
            bad.name = name.into();
            assert!(bad.validate().is_err(), "{name:?}");
            let mut bad = good.clone();
            bad.node = name.into();
            assert!(bad.validate().is_err(), "{name:?}");
        }
        let mut bad = good.clone();
        bad.servers.clear();
        assert!(bad.validate().is_err());
    }
}
