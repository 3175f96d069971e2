//! `ipsx-engine-cluster`: run engine replicas through NATS JetStream without the rest of the
//! node.
//!
//! * `nats` — start a JetStream cluster of `nats-server` processes on loopback and print
//!   their URLs (until stdin closes or Ctrl-C).
//! * `run` — one cluster node on its own data folder. It prints a line whenever its status
//!   changes (`following`, `catching-up`, `leading`, `stopped`). With `--load`, while it
//!   leads it places a synthetic market (if the engine holds no offer) and leases single IPs
//!   from several threads, printing `ack <seq> <deal>` for every deal acknowledged. It stops
//!   cleanly when stdin closes; it exits with status 3 when it stopped leading or following
//!   (restart it to follow again).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipsx_engine::{CommandKind, Event};
use ipsx_engine_cluster::local::LocalNats;
use ipsx_engine_cluster::{ClusterConfig, ClusterNode, Status};
use ipsx_engine_runtime::workload::MarketShape;
use ipsx_engine_runtime::{FsyncPolicy, ShardConfig, ShardHandle, StoreConfig, SubmitError};

#[derive(Parser)]
#[command(
    name = "ipsx-engine-cluster",
    version,
    about = "IPSX engine replicas sequenced through NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start nats-server processes with JetStream, routed as one cluster on 127.0.0.1.
    Nats {
        /// Where their configuration, logs and stores go.
        #[arg(long, default_value = "target/ipsx-nats")]
        dir: PathBuf,
        /// How many servers.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
    /// Run one cluster node.
    Run {
        /// This node's journal and snapshots.
        #[arg(long)]
        data: PathBuf,
        /// NATS server URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nats: Vec<String>,
        /// The cluster's name (its streams are IPSX_<name>_LOG and IPSX_<name>_LEASE).
        #[arg(long, default_value = "ipsx")]
        name: String,
        /// This node's id, unique in the cluster.
        #[arg(long)]
        node: String,
        /// Where clients reach this node, told to the others' clients.
        #[arg(long, default_value = "")]
        advertise: String,
        /// Copies JetStream keeps of each stream.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Lease length in milliseconds: a dead leader is replaced after about this long.
        #[arg(long, default_value_t = 3_000)]
        lease_ms: u64,
        /// fdatasync the local journal after every group (the log is the first copy).
        #[arg(long)]
        fsync: bool,
        /// While leading, lease single IPs from this many threads.
        #[arg(long, default_value_t = 0)]
        load: usize,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Action::Nats { dir, count } => nats(dir, count),
        Action::Run {
            data,
            nats,
            name,
            node,
            advertise,
            replicas,
            lease_ms,
            fsync,
            load,
        } => {
            let mut cluster = ClusterConfig::new(nats, &name, &node, &advertise);
            cluster.replicas = replicas;
            cluster.lease = Duration::from_millis(lease_ms);
            let mut store = StoreConfig::new(data);
            store.fsync = if fsync {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Never
            };
            run(ShardConfig::new(store), cluster, load)
        }
    }
}

fn nats(dir: PathBuf, count: usize) -> Result<()> {
    let servers = LocalNats::start(&dir, count).context("starting nats-server")?;
    println!("{}", servers.urls().join(","));
    std::io::stdout().flush()?;
    // Until stdin closes (Ctrl-C ends the process, and the servers with it).
    for _ in std::io::stdin().lock().lines() {}
    Ok(())
}

/// Exit status of a node that stopped leading or following.
const STOPPED: i32 = 3;

fn run(shard: ShardConfig, cluster: ClusterConfig, load: usize) -> Result<()> {
    let node = ClusterNode::start(shard, cluster).context("joining the cluster")?;
    let closed = Arc::new(AtomicBool::new(false));
    {
        let closed = Arc::clone(&closed);
        thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {}
            closed.store(true, Ordering::SeqCst);
        });
    }
    let mut status = node.watch();
    let mut loaders = Vec::new();
    let mut said = None;
    loop {
        let now = status.borrow_and_update().clone();
        if said.as_ref() != Some(&now) {
            say(&now);
            said = Some(now.clone());
        }
        match now {
            Status::Leading { .. } if load > 0 && loaders.is_empty() => {
                place_market(node.shard())?;
                for worker in 0..load {
                    let shard = Arc::clone(node.shard());
                    let closed = Arc::clone(&closed);
                    loaders.push(thread::spawn(move || lease_until(&shard, worker, &closed)));
                }
            }
            Status::Stopped(_) => {
                closed.store(true, Ordering::SeqCst);
                for loader in loaders {
                    let _ = loader.join();
                }
                std::process::exit(STOPPED);
            }
            _ => {}
        }
        if closed.load(Ordering::SeqCst) {
            break;
        }
        // Wake on a change, or every 100 ms to look at stdin's flag.
        let last = said.clone();
        node.wait_for(Duration::from_millis(100), |status| {
            Some(status) != last.as_ref()
        });
    }
    for loader in loaders {
        let _ = loader.join();
    }
    node.shutdown().context("stopping")?;
    Ok(())
}

fn say(status: &Status) {
    let line = match status {
        Status::Following {
            leader: Some(leader),
        } => {
            format!("following {} {}", leader.node, leader.advertise)
        }
        Status::Following { leader: None } => "following".to_string(),
        Status::CatchingUp { term } => format!("catching-up {term}"),
        Status::Leading { term } => format!("leading {term}"),
        Status::Stopped(why) => format!("stopped {why}"),
    };
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// The synthetic market leases come from: 20 countries, 200 offers of 50 IPs.
const SHAPE: MarketShape = MarketShape {
    countries: 20,
    offers: 200,
    ips_per_offer: 50,
    providers: 40,
};

/// Places the market unless the engine already holds offers (a node that took over).
fn place_market(shard: &ShardHandle) -> Result<()> {
    if shard.query(|engine| engine.offers().len())? > 0 {
        return Ok(());
    }
    for index in 0..SHAPE.offers {
        shard.submit(CommandKind::PlaceOffer(SHAPE.offer(index)))?;
    }
    Ok(())
}

/// Leases one IP for 5 s at a time until told to stop or the shard stops taking commands;
/// prints each deal acknowledged.
fn lease_until(shard: &ShardHandle, worker: usize, closed: &AtomicBool) {
    let mut index = worker;
    while !closed.load(Ordering::SeqCst) {
        match shard.submit(CommandKind::SubmitRequest(SHAPE.lease(index, 1, 5))) {
            Ok(outcome) => {
                if let (Some(seq), Ok(events)) = (outcome.seq, &outcome.result) {
                    let mut out = std::io::stdout().lock();
                    for event in events {
                        if let Event::DealMade { deal, .. } = event {
                            let _ = writeln!(out, "ack {seq} {}", deal.0);
                        }
                    }
                    let _ = out.flush();
                }
            }
            Err(SubmitError::Stopped | SubmitError::NotLeader) => return,
            Err(_) => {}
        }
        index += 64;
    }
}
