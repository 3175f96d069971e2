//! `cluster-load`: acknowledged lease calls per second and their latency through a cluster
//! whose log is NATS JetStream (three nats-servers, R3), next to one node on its local journal
//! with fdatasync — and JetStream alone, to show where the time goes.
//!
//! Each peer gets the same synthetic market and the same stream of single-IP IOC leases,
//! `--in-flight` at a time from one driver thread; a call's latency runs from submission to
//! its acknowledgement (durable: synced locally, or acknowledged by a JetStream quorum).
//!
//! * `local fsync` — `ShardHandle` with `FsyncPolicy::Always`;
//! * `cluster R3` — a `ClusterNode` leading (its local journal unsynced: the log is the first
//!   copy), records appended to the R3 stream before any answer;
//! * `JetStream alone` — records of the same size published straight to an R3 stream with the
//!   same headers and in-flight count: the ceiling the cluster can reach.
//!
//! ```text
//! cargo run --release -p ipsx-benches --bin cluster-load -- --runs 3 --seconds 5
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use ipsx_engine::CommandKind;
use ipsx_engine_cluster::local::LocalNats;
use ipsx_engine_cluster::{ClusterConfig, ClusterNode, Status};
use ipsx_engine_runtime::workload::MarketShape;
use ipsx_engine_runtime::{FsyncPolicy, ShardConfig, ShardHandle, StoreConfig, Submission};

#[derive(Parser)]
#[command(about = "Lease calls through a JetStream-sequenced cluster vs a local journal")]
struct Args {
    /// Rounds per peer (medians reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of load per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Calls in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Where the HTML report goes [default: target/bench-reports/cluster-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
}

const SHAPE: MarketShape = MarketShape {
    countries: 20,
    offers: 400,
    ips_per_offer: 100,
    providers: 80,
};

/// One round's calls per second and latency.
struct Round {
    rate: f64,
    latency: Histogram<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let nats = LocalNats::start(&dir.path().join("nats"), 3).context("starting nats-server")?;
    let mut rounds: Vec<(&str, Vec<Round>)> = vec![
        ("local fsync", Vec::new()),
        ("cluster R3", Vec::new()),
        ("JetStream alone", Vec::new()),
    ];
    for run in 0..args.runs {
        // Peers alternate within a round, so noise on the shared machine hits them alike.
        let local = {
            let mut store = StoreConfig::new(dir.path().join(format!("local-{run}")));
            store.fsync = FsyncPolicy::Always;
            let shard = ShardHandle::start(ShardConfig::new(store))?;
            let round = drive(&shard, &args)?;
            shard.shutdown()?;
            round
        };
        rounds[0].1.push(local);
        let cluster = {
            let mut store = StoreConfig::new(dir.path().join(format!("cluster-{run}")));
            store.fsync = FsyncPolicy::Never;
            let config = ClusterConfig::new(nats.urls(), &format!("bench{run}"), "leader", "");
            let node = ClusterNode::start(ShardConfig::new(store), config)?;
            let status = node.wait_for(Duration::from_secs(60), |status| {
                matches!(status, Status::Leading { .. })
            });
            if !matches!(status, Status::Leading { .. }) {
                bail!("the cluster node did not come to lead: {status:?}");
            }
            let round = drive(node.shard(), &args)?;
            node.shutdown()?;
            round
        };
        rounds[1].1.push(cluster);
        rounds[2].1.push(jetstream_alone(&nats.urls(), run, &args)?);
    }
    print_and_report(&rounds, &args)
}

/// Places the market, then keeps `in_flight` single-IP leases going for `seconds`.
fn drive(shard: &ShardHandle, args: &Args) -> Result<Round> {
    for index in 0..SHAPE.offers {
        shard.submit(CommandKind::PlaceOffer(SHAPE.offer(index)))?;
    }
    let (reply, answers) = crossbeam_channel::unbounded();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut next = 0usize;
    let submit = |next: &mut usize| -> Result<()> {
        shard.send(Submission {
            at: None,
            // Five-second leases: IPs come back, the market never runs dry.
            kind: CommandKind::SubmitRequest(SHAPE.lease(*next, 1, 5)),
            reply: Some(reply.clone()),
            tag: *next as u64,
        })?;
        *next += 1;
        Ok(())
    };
    let started = Instant::now();
    let mut starts = std::collections::HashMap::new();
    for _ in 0..args.in_flight {
        starts.insert(next as u64, Instant::now());
        submit(&mut next)?;
    }
    let mut done = 0u64;
    let until = started + Duration::from_secs_f64(args.seconds);
    while let Ok(outcome) = answers.recv() {
        if let Some(at) = starts.remove(&outcome.tag) {
            latency.record(at.elapsed().as_nanos() as u64)?;
        }
        done += 1;
        if Instant::now() < until {
            starts.insert(next as u64, Instant::now());
            submit(&mut next)?;
        } else if starts.is_empty() {
            break;
        }
    }
    Ok(Round {
        rate: done as f64 / started.elapsed().as_secs_f64(),
        latency,
    })
}

/// Publishes record-sized messages to an R3 stream with the cluster's headers, `in_flight`
/// at a time: JetStream's own ceiling on this machine.
fn jetstream_alone(urls: &[String], run: usize, args: &Args) -> Result<Round> {
    use async_nats::jetstream::{self, stream};
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = async_nats::connect(urls.to_vec()).await?;
        let js = jetstream::new(client);
        let name = format!("ALONE{run}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let made = js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("alone.{run}")],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match made {
                Ok(_) => break,
                Err(error) if Instant::now() > deadline => bail!("no stream: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // About a lease record's size.
        let payload = bytes::Bytes::from(vec![7u8; 120]);
        let mut latency = Histogram::<u64>::new(3)?;
        let mut in_flight = VecDeque::new();
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.seconds);
        let mut seq = 0u64;
        let mut done = 0u64;
        loop {
            while in_flight.len() < args.in_flight && Instant::now() < until {
                seq += 1;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("1-{seq}").as_str());
                headers.insert(
                    "Nats-Expected-Last-Sequence",
                    (seq - 1).to_string().as_str(),
                );
                let ack = js
                    .publish_with_headers(format!("alone.{run}"), headers, payload.clone())
                    .await?;
                in_flight.push_back((Instant::now(), ack));
            }
            let Some((at, ack)) = in_flight.pop_front() else {
                break;
            };
            ack.await?;
            latency.record(at.elapsed().as_nanos() as u64)?;
            done += 1;
        }
        Ok(Round {
            rate: done as f64 / started.elapsed().as_secs_f64(),
            latency,
        })
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_and_report(rounds: &[(&str, Vec<Round>)], args: &Args) -> Result<()> {
    let about = format!(
        "{} rounds of {} s, {} calls in flight, single-IP IOC leases; 3 nats-servers (R3) on \
         loopback; medians of rounds, latency from the median round",
        args.runs, args.seconds, args.in_flight
    );
    let mut page = ipsx_benches::report::Report::new("cluster-load", about.clone());
    println!("{about}");
    println!(
        "{:<16} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "peer", "calls/s", "p50 µs", "p99 µs", "max µs", "vs local"
    );
    let local_rate = {
        let mut rates: Vec<f64> = rounds[0].1.iter().map(|r| r.rate).collect();
        median(&mut rates)
    };
    let figure = page.figure("acknowledged lease calls", "calls/s");
    for (peer, peer_rounds) in rounds {
        let mut rates: Vec<f64> = peer_rounds.iter().map(|r| r.rate).collect();
        let rate = median(&mut rates);
        let middle = peer_rounds
            .iter()
            .min_by(|a, b| (a.rate - rate).abs().total_cmp(&(b.rate - rate).abs()))
            .expect("a round");
        let micros = |q: f64| middle.latency.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "{:<16} {:>14.0} {:>10.0} {:>10.0} {:>10.0} {:>9.2}x",
            peer,
            rate,
            micros(0.5),
            micros(0.99),
            middle.latency.max() as f64 / 1_000.0,
            rate / local_rate
        );
        figure.peer(*peer, rate, Some(&middle.latency));
    }
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| ipsx_benches::report::Report::default_path("cluster-load"));
    page.write(&path)?;
    Ok(())
}
