//! What a cluster's stories check once their nodes stopped: a node's market brought to the
//! log's end, and that no IP was held by two deals at once. For tests and drills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipsx_engine::{DealId, Engine, Timestamp};
use ipsx_engine_runtime::{ShardConfig, StoreConfig};

use crate::{ClusterConfig, ClusterError, ClusterNode, Status};

/// Opens a stopped node's engine folder as a member of cluster `name` that does not tick,
/// brings it to the log's end, and reads it: the log's last record, the state hash, and the
/// engine.
pub fn caught_up(
    engine_dir: &Path,
    servers: &[String],
    name: &str,
    within: Duration,
) -> Result<(u64, [u8; 32], Engine), ClusterError> {
    let mut shard = ShardConfig::new(StoreConfig::new(engine_dir));
    shard.tick_every = None;
    let cluster = ClusterConfig::new(servers.to_vec(), name, "checker", "");
    let node = ClusterNode::start(shard, cluster)?;
    let end = node.log_end()?;
    let deadline = Instant::now() + within;
    while node.shard().stats().durable_seq.load(Ordering::Acquire) < end {
        if let Status::Stopped(why) = node.status() {
            return Err(ClusterError::Config(format!("the checker stopped: {why}")));
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Config(format!(
                "not caught up with the log (record {end}) within {within:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (hash, engine) = node.shard().query(|engine| {
        let snapshot = engine.snapshot();
        (engine.state_hash(), Engine::restore(snapshot))
    })?;
    node.shutdown()?;
    Ok((end, hash, engine))
}

/// Two deals that held one IP at once, if any: a deal holds its IPs from its start until its
/// end or its close, whichever comes first.
pub fn double_booked(engine: &Engine) -> Option<(IpAddr, DealId, DealId)> {
    let mut held: HashMap<IpAddr, Vec<(Timestamp, Timestamp, DealId)>> = HashMap::new();
    for deal in engine.deals() {
        let until = deal
            .closed_at
            .map_or(deal.end, |closed| closed.min(deal.end));
        for ip in &deal.ips {
            held.entry(*ip)
                .or_default()
                .push((deal.start, until, deal.id));
        }
    }
    held.into_iter().find_map(|(ip, mut spans)| {
        spans.sort();
        spans
            .windows(2)
            .find(|pair| pair[0].1 > pair[1].0)
            .map(|pair| (ip, pair[0].2, pair[1].2))
    })
}
