//! `ipsx-engine`: run the matching engine on its own.
//!
//! * `demo` — a synthetic market through a durable shard: offers in many countries, a fleet
//!   leasing, providers reporting ready, depth and deals, then a restart from disk that must
//!   come back to the same state hash.
//! * `crash-writer` — feeds the deterministic mixed stream and prints one line per
//!   acknowledged command; the crash test kills it with SIGKILL and checks the recovery.
//! * `inspect` — recovers a store and prints what it holds.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ipsx_engine::{CommandKind, DealStatus, Event, Protocol, Timestamp};
use ipsx_engine_runtime::workload::{self, EPOCH, MarketShape};
use ipsx_engine_runtime::{
    DurableEngine, FsyncPolicy, ShardConfig, ShardHandle, StoreConfig, Submission,
};

#[derive(Parser)]
#[command(
    name = "ipsx-engine",
    version,
    about = "The IPSX matching engine, standalone"
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Clone, Copy, ValueEnum)]
enum Fsync {
    Always,
    Never,
}

impl From<Fsync> for FsyncPolicy {
    fn from(fsync: Fsync) -> Self {
        match fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Never => FsyncPolicy::Never,
        }
    }
}

#[derive(Subcommand)]
enum Action {
    /// Run a synthetic market through a durable shard, then restart it from disk.
    Demo {
        /// Where the journal and snapshots go (emptied first).
        #[arg(long, default_value = "target/ipsx-demo")]
        data: PathBuf,
        /// Offers to place.
        #[arg(long, default_value_t = 2_000)]
        offers: usize,
        /// IPs per offer.
        #[arg(long, default_value_t = 50)]
        ips_per_offer: u32,
        /// Countries the offers spread over.
        #[arg(long, default_value_t = 40)]
        countries: usize,
        /// Lease requests the fleet sends.
        #[arg(long, default_value_t = 5_000)]
        leases: usize,
        /// IPs per lease request.
        #[arg(long, default_value_t = 10)]
        ips_per_lease: u32,
    },
    /// Feed the deterministic mixed stream, printing `ack <seq> <index>` per durable command.
    CrashWriter {
        /// Store folder.
        #[arg(long)]
        data: PathBuf,
        /// Commands to send.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// First stream index (to continue after a restart).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Commands in flight at once.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Snapshot every this many commands.
        #[arg(long, default_value_t = 2_000)]
        snapshot_every: u64,
        /// Journal sync policy.
        #[arg(long, value_enum, default_value = "always")]
        fsync: Fsync,
    },
    /// Recover a store and print what it holds.
    Inspect {
        /// Store folder.
        #[arg(long)]
        data: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Action::Demo {
            data,
            offers,
            ips_per_offer,
            countries,
            leases,
            ips_per_lease,
        } => demo(
            data,
            MarketShape {
                countries: countries.clamp(1, 249),
                offers,
                ips_per_offer: ips_per_offer.clamp(1, 256),
                providers: (offers as u64 / 5).max(1),
            },
            leases,
            ips_per_lease,
        ),
        Action::CrashWriter {
            data,
            count,
            from,
            in_flight,
            snapshot_every,
            fsync,
        } => crash_writer(data, from, count, in_flight, snapshot_every, fsync.into()),
        Action::Inspect { data } => inspect(data),
    }
}

fn shard_config(data: PathBuf, fsync: FsyncPolicy, snapshot_every: u64) -> ShardConfig {
    let mut store = StoreConfig::new(data);
    store.fsync = fsync;
    store.snapshot_every = snapshot_every;
    let mut config = ShardConfig::new(store);
    // Synthetic time: the commands carry their own timestamps.
    config.tick_every = None;
    config
}

/// Sends `commands` with up to `window` in flight; calls `done` with each outcome in order.
fn pipeline(
    shard: &ShardHandle,
    commands: impl Iterator<Item = (Timestamp, CommandKind)>,
    window: usize,
    mut done: impl FnMut(u64, ipsx_engine_runtime::Outcome) -> Result<()>,
) -> Result<()> {
    let (reply, answers) =
        crossbeam_channel::bounded::<ipsx_engine_runtime::Outcome>(window.max(1));
    // This loop holds a sender of its own answer channel, so a writer that stopped (a failed
    // journal write drops what it queued, unanswered) never closes it: ask the shard.
    let answer = || loop {
        match answers.recv_timeout(Duration::from_millis(50)) {
            Ok(outcome) => return Ok(outcome),
            Err(_) if !shard.writer_alive() => bail!("the shard's writer stopped"),
            Err(_) => {}
        }
    };
    let mut outstanding = 0usize;
    for (tag, (at, kind)) in commands.enumerate() {
        if outstanding == window.max(1) {
            let outcome = answer()?;
            outstanding -= 1;
            done(outcome.tag, outcome)?;
        }
        shard.send(Submission {
            at: Some(at),
            kind,
            reply: Some(reply.clone()),
            tag: tag as u64,
        })?;
        outstanding += 1;
    }
    for _ in 0..outstanding {
        let outcome = answer()?;
        done(outcome.tag, outcome)?;
    }
    Ok(())
}

fn demo(data: PathBuf, shape: MarketShape, leases: usize, ips_per_lease: u32) -> Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("emptying {}", data.display()))?;
    }
    println!(
        "IPSX engine demo: {} offers x {} IPs = {} IPs over {} countries, store in {}",
        shape.offers,
        shape.ips_per_offer,
        shape.total_ips(),
        shape.countries,
        data.display()
    );
    let shard = ShardHandle::start(shard_config(data.clone(), FsyncPolicy::Always, 0))?;

    let started = Instant::now();
    let mut refused = 0u64;
    pipeline(
        &shard,
        (0..shape.offers).map(|i| (EPOCH, CommandKind::PlaceOffer(shape.offer(i)))),
        256,
        |_, outcome| {
            refused += u64::from(outcome.result.is_err());
            Ok(())
        },
    )?;
    let elapsed = started.elapsed();
    println!(
        "[1/4] placed {} offers in {:.2?} ({:.0} offers/s, journaled with fsync per group commit; {refused} refused)",
        shape.offers,
        elapsed,
        shape.offers as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let mut deals = Vec::new();
    let mut leased_ips = 0u64;
    pipeline(
        &shard,
        (0..leases).map(|i| {
            (
                Timestamp(EPOCH.0 + 1),
                CommandKind::SubmitRequest(shape.lease(i, ips_per_lease, 600)),
            )
        }),
        256,
        |_, outcome| {
            for event in outcome.result.iter().flat_map(|events| events.iter()) {
                if let &Event::DealMade {
                    deal,
                    provider,
                    ips,
                    ..
                } = event
                {
                    deals.push((deal, provider));
                    leased_ips += u64::from(ips);
                }
            }
            Ok(())
        },
    )?;
    let elapsed = started.elapsed();
    println!(
        "[2/4] the fleet sent {leases} requests of {ips_per_lease} IPs: {} deals, {leased_ips} IPs leased in {:.2?} ({:.0} IPs/s)",
        deals.len(),
        elapsed,
        leased_ips as f64 / elapsed.as_secs_f64()
    );

    // Providers report ready for all but every tenth deal, which will be voided and re-matched.
    let ready: Vec<_> = deals
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, (deal, provider))| {
            (
                Timestamp(EPOCH.0 + 2),
                CommandKind::ProviderReady {
                    deal: *deal,
                    provider: *provider,
                },
            )
        })
        .collect();
    let readied = ready.len();
    pipeline(&shard, ready.into_iter(), 256, |_, _| Ok(()))?;
    let after_timeout = Timestamp(EPOCH.0 + 1 + 31);
    let voided = shard.submit_at(Some(after_timeout), CommandKind::Tick)?;
    let events = voided.result.unwrap_or_default();
    let voids = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::DealStatusChanged {
                    to: DealStatus::Voided,
                    ..
                }
            )
        })
        .count();
    let replacements = events
        .iter()
        .filter(|e| matches!(e, Event::DealMade { .. }))
        .count();
    println!(
        "[3/4] {readied} deals active; {voids} providers missed the 30 s ready deadline: voided, {replacements} replacement deals made"
    );

    let depth = shard.depth();
    let mut by_country: Vec<(String, u64)> = Vec::new();
    for level in depth
        .levels
        .iter()
        .filter(|l| l.protocol == Protocol::Socks5)
    {
        match by_country.last_mut() {
            Some((code, ips)) if code == level.country.code() => *ips += level.ips,
            _ => by_country.push((level.country.code().to_string(), level.ips)),
        }
    }
    let shown: Vec<String> = by_country
        .iter()
        .take(8)
        .map(|(code, ips)| format!("{code}:{ips}"))
        .collect();
    println!(
        "      unleased SOCKS5 IPs per country (first 8 of {}): {}",
        by_country.len(),
        shown.join(" ")
    );

    let hash = shard.query(|engine| engine.state_hash())?;
    let durable = shard
        .stats()
        .durable_seq
        .load(std::sync::atomic::Ordering::Acquire);
    shard.shutdown()?;
    let restarted = Instant::now();
    let shard = ShardHandle::start(shard_config(data, FsyncPolicy::Always, 0))?;
    let recovered = shard.query(|engine| engine.state_hash())?;
    println!(
        "[4/4] restarted from disk in {:.2?} (snapshot at {:?}, {} journal records replayed): state hash {} {}",
        restarted.elapsed(),
        shard.recovery().snapshot_seq,
        shard.recovery().replayed,
        hex(&recovered[..8]),
        if recovered == hash {
            "= before the restart"
        } else {
            "DIFFERS from before the restart"
        }
    );
    if recovered != hash || shard.recovery().last_seq != durable {
        bail!("recovery did not restore the acknowledged state");
    }
    shard.shutdown()?;
    Ok(())
}

fn crash_writer(
    data: PathBuf,
    from: u64,
    count: u64,
    in_flight: usize,
    snapshot_every: u64,
    fsync: FsyncPolicy,
) -> Result<()> {
    let shard = ShardHandle::start(shard_config(data, fsync, snapshot_every))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "recovered {}", shard.recovery().last_seq)?;
    out.flush()?;
    let fed = pipeline(
        &shard,
        (from..from + count).map(|i| {
            let command = workload::mixed_stream(i);
            (command.at, command.kind)
        }),
        in_flight,
        |tag, outcome| {
            let seq = outcome.seq.map_or("-".to_string(), |s| s.to_string());
            writeln!(out, "ack {seq} {}", from + tag)?;
            out.flush()?;
            Ok(())
        },
    );
    drop(out);
    // A writer that stopped says why when it is joined.
    shard.shutdown().context("the shard stopped")?;
    fed
}

fn inspect(data: PathBuf) -> Result<()> {
    let (store, recovery) = DurableEngine::open(StoreConfig::new(data))?;
    let engine = store.engine();
    println!("recovery: {recovery:?}");
    println!("clock: {}", engine.now());
    println!("offers: {}", engine.offers().count());
    println!("deals: {}", engine.deals().len());
    println!("resting requests: {}", engine.resting_requests().count());
    println!("state hash: {}", hex(&engine.state_hash()));
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
