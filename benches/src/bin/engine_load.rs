//! Load harness for the matching engine: throughput and HDR-histogram latency percentiles on a
//! market of about a million IPs, each scenario run several times and the median reported.
//!
//! ```text
//! cargo run --release -p ipsx-benches --bin engine-load -- --runs 5
//! ```

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use ipsx_benches::{LeaseDriver, OfferChurn, build_market, latency_histogram, median, percentiles};
use ipsx_engine::{Command, CommandKind, Engine, Timestamp};
use ipsx_engine_runtime::workload::MarketShape;
use ipsx_engine_runtime::{
    DurableEngine, FsyncPolicy, ShardConfig, ShardHandle, StoreConfig, Submission,
};
use stats_alloc::StatsAlloc;
use tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(about = "IPSX engine load harness")]
struct Args {
    /// Runs of each scenario (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Offers in the market (of 100 IPs each).
    #[arg(long, default_value_t = 10_000)]
    offers: usize,
    /// Commands written and replayed in the journal scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    journal_commands: u64,
    /// Only these scenarios (comma separated: offers,lease1,lease100,snapshot,replay,journal).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Requests in flight from the client in the shard scenario (many: throughput; few:
    /// acknowledgement latency without queueing).
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// Where the journal scenarios write (a temporary folder by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the HTML report goes [default: target/bench-reports/engine-load.html].
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Every heap allocation goes through this counter, so each scenario reports how many its
/// operations cost (the engine's hot path aims at none). Under it is jemalloc, what the `ipsx`
/// binary allocates with: the engine's figures are the node's, not glibc's.
#[global_allocator]
static ALLOCATOR: StatsAlloc<Jemalloc> = StatsAlloc::new(Jemalloc);

/// Allocations made so far by the whole process.
fn allocations() -> u64 {
    ALLOCATOR.stats().allocations as u64
}

struct Report {
    name: &'static str,
    unit: &'static str,
    /// What the figure should reach, as printed.
    target: &'static str,
    rates: Vec<f64>,
    latencies: Option<[Duration; 4]>,
    histogram: Option<hdrhistogram::Histogram<u64>>,
    /// Allocations per operation, per run.
    allocations: Vec<f64>,
}

impl Report {
    fn new(name: &'static str, unit: &'static str, target: &'static str) -> Report {
        Report {
            name,
            unit,
            target,
            rates: Vec::new(),
            latencies: None,
            histogram: None,
            allocations: Vec::new(),
        }
    }

    /// The run's latencies (nanoseconds).
    fn latency(&mut self, histogram: &hdrhistogram::Histogram<u64>) {
        self.latencies = Some(percentiles(histogram));
        self.histogram = Some(histogram.clone());
    }

    fn median_rate(&self) -> f64 {
        median(&mut self.rates.clone())
    }

    /// Prints the figure's line and adds it to the HTML `page`.
    fn print(mut self, page: &mut ipsx_benches::report::Report) {
        let runs = self.rates.len();
        let rate = median(&mut self.rates);
        page.figure(
            format!("{} (target {})", self.name.trim(), self.target),
            format!("{}/s", self.unit),
        )
        .peer("ipsx engine", rate, self.histogram.as_ref());
        let spread = format!(
            "[{:.2} .. {:.2}] M",
            self.rates.first().copied().unwrap_or(0.0) / 1e6,
            self.rates.last().copied().unwrap_or(0.0) / 1e6
        );
        print!(
            "{:<48} {:>8.3} M {}/s  (median of {runs}, range {spread}; target {})",
            self.name,
            rate / 1e6,
            self.unit,
            self.target
        );
        if !self.allocations.is_empty() {
            print!("  allocs/op {:.3}", median(&mut self.allocations));
        }
        if let Some([p50, p99, p999, max]) = self.latencies {
            print!("  latency p50 {p50:.2?} p99 {p99:.2?} p99.9 {p999:.2?} max {max:.2?}");
        }
        println!();
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let shape = MarketShape {
        offers: args.offers,
        ..MarketShape::MILLION
    };
    let run_for = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut page = ipsx_benches::report::Report::new(
        "engine-load: the matching engine, figure by figure",
        format!(
            "medians of {} runs of {} s; a market of {} offers",
            args.runs, args.seconds, args.offers
        ),
    );
    let market = build_market(&shape);
    println!(
        "market: {} IPs in {} offers over {} countries, built in {:.2?}",
        shape.total_ips(),
        shape.offers,
        shape.countries,
        started.elapsed()
    );

    if wants("offers") {
        let mut report = Report::new("offer add+cancel (1-IP offers)", "ops", ">= 2 M");
        for _ in 0..args.runs {
            let mut churn = OfferChurn::new(market.clone());
            let (mut ops, started, allocated) = (0u64, Instant::now(), allocations());
            while started.elapsed() < run_for {
                for _ in 0..1_000 {
                    churn.add_and_cancel();
                }
                ops += 2_000;
            }
            report
                .rates
                .push(ops as f64 / started.elapsed().as_secs_f64());
            report
                .allocations
                .push((allocations() - allocated) as f64 / ops as f64);
        }
        report.print(&mut page);
    }

    for (name, count, per_second, target, deferring, wanted) in [
        (
            "single-IP lease requests (IOC)",
            1u32,
            100_000u64,
            ">= 1 M, p99 <= 5 us, no stalls",
            true,
            wants("lease1"),
        ),
        (
            "  the same, expiring eagerly",
            1u32,
            100_000u64,
            "(comparison)",
            false,
            wants("lease1"),
        ),
        (
            "IPs leased in 100-IP requests (IOC)",
            100,
            1_000,
            ">= 5 M",
            true,
            wants("lease100"),
        ),
    ] {
        if !wanted {
            continue;
        }
        let unit = if count == 1 { "requests" } else { "IPs" };
        let mut report = Report::new(name, unit, target);
        let mut histogram = latency_histogram();
        for run in 0..args.runs {
            let mut driver = LeaseDriver::new(market.clone(), shape, per_second);
            if !deferring {
                driver = driver.eager();
            }
            driver.warm_up(count);
            let (mut leased, mut requests) = (0u64, 0u64);
            let (started, allocated) = (Instant::now(), allocations());
            while started.elapsed() < run_for {
                for at in 0..256u64 {
                    let unsettled = driver.engine().unsettled();
                    let before = Instant::now();
                    leased += u64::from(driver.lease(count));
                    let took = before.elapsed();
                    histogram.saturating_record(took.as_nanos() as u64);
                    if deferring && took > SLOW_REQUEST {
                        // Every run sends the same requests from the same state: a stall the
                        // engine causes shows up at the same request in each run, one from
                        // the machine anywhere.
                        eprintln!(
                            "slow request: #{} of run {run} took {took:.1?} (deferred timers \
                             {unsettled} before, {} after)",
                            requests + at,
                            driver.engine().unsettled()
                        );
                    }
                }
                requests += 256;
            }
            report
                .rates
                .push(leased as f64 / started.elapsed().as_secs_f64());
            report
                .allocations
                .push((allocations() - allocated) as f64 / requests as f64);
        }
        report.latency(&histogram);
        report.print(&mut page);
    }

    if wants("snapshot") {
        snapshot_pause(&market, &shape);
    }

    if wants("replay") || wants("journal") {
        let dir = match &args.dir {
            Some(dir) => dir.clone(),
            None => tempfile::tempdir()?.keep(),
        };
        journal_scenarios(&dir, &args, &market, &shape, run_for, &wants, &mut page)?;
        if args.dir.is_none() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    page.write(
        &args
            .report
            .clone()
            .unwrap_or_else(|| ipsx_benches::report::Report::default_path("engine-load")),
    )?;
    Ok(())
}

/// A request slower than this, where expiry is deferred, is reported on its own: with
/// deferred expiry no request should come near it.
const SLOW_REQUEST: Duration = Duration::from_millis(10);

/// What a periodic snapshot costs. The shard's writer takes it between two batches and applies
/// no command meanwhile: it settles what is deferred and freezes the state (shares its records
/// copy-on-write). The snapshot thread then builds the canonical form, serialises and writes
/// it. Measured on the book single-IP leases keep in the steady state: the writer's pause, the
/// snapshot thread's work, and what the frozen view costs the writer afterwards (it copies each
/// chunk of records it writes while the view lives), against the same traffic without one.
/// (No target of its own, but the writer's part is a pause every `snapshot_every` commands.)
fn snapshot_pause(market: &Engine, shape: &MarketShape) {
    let mut driver = LeaseDriver::new(market.clone(), *shape, 100_000);
    driver.warm_up(1);
    let started = Instant::now();
    let frozen = driver.freeze();
    let paused = started.elapsed();
    // The view held over ten simulated seconds: every deal of the frozen book ends and leaves
    // meanwhile, so every chunk is written (the worst case: the snapshot thread lets go after
    // about a second).
    let leases = 1_000_000;
    let with_view = timed_leases(&mut driver, leases);
    let started = Instant::now();
    let snapshot = frozen.canonical();
    let built = started.elapsed();
    let started = Instant::now();
    let bytes = snapshot.serialise();
    let serialised = started.elapsed();
    drop((frozen, snapshot));
    let without_view = timed_leases(&mut driver, leases);
    println!(
        "snapshot of a steady single-IP book ({} deals, {:.0} MB): the writer pauses {:.0?} \
         (settle + freeze); the snapshot thread builds it in {:.0?} and serialises in {:.0?}",
        driver.engine().deal_count(),
        bytes.len() as f64 / 1e6,
        paused,
        built,
        serialised,
    );
    for (name, (rate, histogram)) in [("with the view", with_view), ("without", without_view)] {
        println!(
            "  {leases} leases after it, {name:>13}: {:.3} M/s, p99 {:.1} us, p99.99 {:.1} us, \
             max {:.1} us",
            rate / 1e6,
            histogram.value_at_quantile(0.99) as f64 / 1e3,
            histogram.value_at_quantile(0.9999) as f64 / 1e3,
            histogram.max() as f64 / 1e3,
        );
    }
}

/// Sends `count` single-IP leases through `driver`; their rate and latencies.
fn timed_leases(driver: &mut LeaseDriver, count: u64) -> (f64, hdrhistogram::Histogram<u64>) {
    let mut histogram = latency_histogram();
    let started = Instant::now();
    for _ in 0..count {
        let before = Instant::now();
        driver.lease(1);
        histogram.saturating_record(before.elapsed().as_nanos() as u64);
    }
    (count as f64 / started.elapsed().as_secs_f64(), histogram)
}

fn journal_scenarios(
    dir: &std::path::Path,
    args: &Args,
    market: &Engine,
    shape: &MarketShape,
    run_for: Duration,
    wants: &dyn Fn(&str) -> bool,
    page: &mut ipsx_benches::report::Report,
) -> Result<()> {
    if wants("replay") {
        // A journal as a busy node writes it: the market's offers, then single-IP leases with
        // the clock moving one second per 100,000 requests (leases end and are voided).
        let store_dir = dir.join("replay");
        let mut config = StoreConfig::new(&store_dir);
        config.fsync = FsyncPolicy::Never;
        config.snapshot_every = 0;
        config.engine = market.config();
        let (mut store, _) = DurableEngine::open(config.clone())?;
        let mut events = Vec::new();
        for index in 0..shape.offers {
            let command = Command {
                at: market.now(),
                kind: CommandKind::PlaceOffer(shape.offer(index)),
            };
            let _ = store.apply(&command, &mut events);
            events.clear();
        }
        let mut now = market.now().0;
        for index in 0..args.journal_commands {
            if index.is_multiple_of(100_000) {
                now += 1;
            }
            let command = Command {
                at: Timestamp(now),
                kind: CommandKind::SubmitRequest(shape.lease(
                    index as usize,
                    1,
                    ipsx_benches::LEASE_SECONDS,
                )),
            };
            let _ = store.apply(&command, &mut events);
            events.clear();
            if index % 4096 == 0 {
                store.commit()?;
            }
        }
        store.commit()?;
        let records = store.last_seq();
        drop(store);
        let mut decode = Report::new(
            "journal decode only (read + CRC + rkyv)",
            "records",
            "the bound for replay",
        );
        let mut replay = Report::new(
            "journal replay (recovery: decode + apply)",
            "commands",
            ">= 5 M",
        );
        for _ in 0..args.runs {
            let started = Instant::now();
            let decoded = ipsx_engine_runtime::journal::scan(&store_dir, |_, command| {
                std::hint::black_box(command);
            })?;
            decode
                .rates
                .push(decoded as f64 / started.elapsed().as_secs_f64());
            let (_, recovery) = DurableEngine::open(config.clone())?;
            replay
                .rates
                .push(recovery.replayed as f64 / recovery.elapsed.as_secs_f64());
        }
        println!(
            "(journal of {records} records: {} offers, then single-IP leases)",
            shape.offers
        );
        decode.print(page);
        replay.print(page);

        // The same state recovered from a snapshot instead: read, check, rebuild.
        let (mut store, _) = DurableEngine::open(config.clone())?;
        store.snapshot_and_wait()?;
        let deals = store.engine().deal_count();
        drop(store);
        let mut loads = Vec::new();
        for _ in 0..args.runs {
            let (_, recovery) = DurableEngine::open(config.clone())?;
            assert_eq!(recovery.replayed, 0, "recovered from the snapshot alone");
            loads.push(recovery.elapsed.as_secs_f64());
        }
        loads.sort_by(f64::total_cmp);
        println!(
            "recovery from a snapshot of {deals} deals: {:.2} s (median of {}, range [{:.2} .. {:.2}])",
            loads[loads.len() / 2],
            loads.len(),
            loads[0],
            loads[loads.len() - 1],
        );
    }

    if wants("journal") {
        // The same single-IP lease stream, through the engine alone and through a shard whose
        // writer journals every group with fdatasync before answering.
        let mut bare = Report::new("single-IP leases, engine alone", "requests", "-");
        let mut durable = Report::new(
            "single-IP leases, shard + journal + fsync, acked",
            "requests",
            ">= 70% of alone",
        );
        let mut paced = Report::new("  the same, 64 in flight", "requests", "ack p99 <= 2 ms");
        let mut snapshotting = Report::new(
            "  the same, a snapshot every 500,000, over two written",
            "requests",
            "no stalls: ack max",
        );
        let (mut histogram, mut paced_histogram, mut snapshot_histogram) = (
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
        );
        // Per run: the shard's rate over the engine's, and the CPU time each spent per request.
        let (mut ratios, mut bare_cpu) = (Vec::new(), Vec::new());
        let (mut writer_cpu, mut journal_cpu, mut client_cpu) =
            (Vec::new(), Vec::new(), Vec::new());
        for run in 0..args.runs {
            // Both sides measure the steady state, as `lease1` does: leases have been ending
            // and finished deals leaving for a while, and the deal book is as big as it gets
            // (a book still growing pays for fresh pages, which a node pays once).
            let mut driver = LeaseDriver::new(market.clone(), *shape, 100_000);
            driver.warm_up(1);
            let cpu_before = thread_cpu("self");
            let (mut sent, started) = (0u64, Instant::now());
            while started.elapsed() < run_for {
                for _ in 0..256 {
                    driver.lease(1);
                }
                sent += 256;
            }
            let bare_rate = sent as f64 / started.elapsed().as_secs_f64();
            bare.rates.push(bare_rate);
            if let (Some(before), Some(after)) = (cpu_before, thread_cpu("self")) {
                bare_cpu.push((after - before).as_secs_f64() * 1e6 / sent as f64);
            }
            // The third run snapshots as a node does (the default is every million commands;
            // half that puts several in one measured run): the writer freezes the state, the
            // snapshot thread builds and writes it, and no answer may wait on that.
            for (in_flight, snapshot_every, report, histogram) in [
                (args.in_flight, 0, &mut durable, &mut histogram),
                (64, 0, &mut paced, &mut paced_histogram),
                (
                    64,
                    SNAPSHOT_EVERY,
                    &mut snapshotting,
                    &mut snapshot_histogram,
                ),
            ] {
                let store_dir = dir.join(format!("shard-{run}-{in_flight}-{snapshot_every}"));
                let mut store = StoreConfig::new(&store_dir);
                store.fsync = FsyncPolicy::Always;
                store.snapshot_every = snapshot_every;
                // The market's settings (deal retention above all), as the engine alone has:
                // with the default day-long retention no deal would leave the book, and the
                // shard would measure a book growing instead of the steady state.
                store.engine = market.config();
                let mut config = ShardConfig::new(store);
                config.tick_every = None;
                // A snapshot's cost to answers is felt until its file is on disk, seconds after
                // it was taken: that run lasts until two were written while it measured.
                let snapshots = if snapshot_every > 0 { 2 } else { 0 };
                let (rate, latency, cpu) =
                    through_shard(config, market, shape, run_for, in_flight, snapshots)?;
                if in_flight == args.in_flight {
                    ratios.push(rate / bare_rate);
                    writer_cpu.extend(cpu.writer);
                    journal_cpu.extend(cpu.journal);
                    client_cpu.extend(cpu.client);
                }
                report.rates.push(rate);
                histogram.add(latency)?;
                std::fs::remove_dir_all(&store_dir)?;
            }
        }
        durable.latency(&histogram);
        paced.latency(&paced_histogram);
        snapshotting.latency(&snapshot_histogram);
        let kept = 100.0 * durable.median_rate() / bare.median_rate();
        bare.print(page);
        durable.print(page);
        paced.print(page);
        snapshotting.print(page);
        println!("journaling keeps {kept:.0}% of the engine's throughput (target >= 70%)");
        // The ratio of medians moves with the machine from one run to the next; the runs'
        // own ratios (each shard run right after its engine run) and the CPU time per request
        // move less. The writer's CPU per acked request against the engine's own is the share
        // of the writer's work that is matching: the ratio the shard reaches when its writer
        // is the bottleneck and has a core to itself.
        let percent = |values: &[f64]| {
            let shown: Vec<String> = values.iter().map(|v| format!("{:.0}", 100.0 * v)).collect();
            shown.join(" / ")
        };
        let in_order = percent(&ratios);
        println!(
            "  per run (shard / engine alone): {in_order} %, median {:.0} %",
            100.0 * median(&mut ratios)
        );
        if !bare_cpu.is_empty() && !writer_cpu.is_empty() {
            let (engine, writer) = (median(&mut bare_cpu), median(&mut writer_cpu));
            println!(
                "  CPU per request: engine alone {engine:.2} us, shard writer {writer:.2} us \
                 (acked): matching is {:.0} % of the writer's work",
                100.0 * engine / writer
            );
        }
        if !journal_cpu.is_empty() && !client_cpu.is_empty() {
            // Two cores for three busy threads: what the journal thread (encoding, `write`,
            // `fdatasync` in the kernel) and this client take is what the writer cannot have.
            println!(
                "  the other threads per request: journal {:.2} us, client {:.2} us",
                median(&mut journal_cpu),
                median(&mut client_cpu)
            );
        }
    }
    Ok(())
}

/// Commands between two snapshots in the shard scenario that takes them (a node's default is a
/// million; half that puts one in every few seconds of this load).
const SNAPSHOT_EVERY: u64 = 500_000;

/// The longest a run waits for the snapshots it must see written.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(120);

/// Leases through a shard from one client with many requests in flight; returns requests per
/// second and the submit-to-durable-answer latency histogram. The measured part lasts
/// `run_for`, and longer if need be, until the shard has written `snapshots` snapshots in it.
fn through_shard(
    config: ShardConfig,
    market: &Engine,
    shape: &MarketShape,
    run_for: Duration,
    in_flight: usize,
    snapshots: u64,
) -> Result<(f64, hdrhistogram::Histogram<u64>, ThreadsCpu)> {
    // The shard recovers an empty store; load the market through it, unmeasured.
    let writer = format!("ipsx-shard-{}", config.store.engine.shard);
    let shard = ShardHandle::start(config)?;
    let (reply, answers) = crossbeam_channel::bounded(8_192);
    for offer in market.offers() {
        let Some(spec) = market.offer_spec(offer.id) else {
            continue;
        };
        shard.send(Submission {
            at: Some(market.now()),
            kind: CommandKind::PlaceOffer(spec),
            reply: Some(reply.clone()),
            tag: 0,
        })?;
    }
    for _ in market.offers() {
        answers.recv()?;
    }
    let mut histogram = latency_histogram();
    let mut sent_at = vec![Instant::now(); in_flight];
    let (mut sent, mut done) = (0u64, 0u64);
    let mut now = market.now().0;
    let mut lease = |sent: u64| {
        if sent.is_multiple_of(100_000) {
            now += 1;
        }
        Submission {
            at: Some(ipsx_engine::Timestamp(now)),
            kind: CommandKind::SubmitRequest(shape.lease(
                sent as usize,
                1,
                ipsx_benches::LEASE_SECONDS,
            )),
            reply: Some(reply.clone()),
            tag: sent,
        }
    };
    // The same warm-up as the engine alone, unmeasured.
    let warm_up = 100_000 * ipsx_benches::WARM_UP_SECONDS;
    while done < warm_up {
        while sent - done < in_flight as u64 && sent < warm_up {
            shard.send(lease(sent))?;
            sent += 1;
        }
        answers.recv()?;
        done += 1;
    }
    let writer_before = thread_cpu(&writer);
    let journal_before = thread_cpu("ipsx-journal");
    let client_before = thread_cpu("self");
    let (warmed, started) = (done, Instant::now());
    let written = |shard: &ShardHandle| shard.stats().snapshots.load(Ordering::Relaxed);
    let snapshots_before = written(&shard);
    let measuring = |shard: &ShardHandle| -> Result<bool> {
        let elapsed = started.elapsed();
        let seen = written(shard) - snapshots_before;
        if seen < snapshots && elapsed >= SNAPSHOT_DEADLINE {
            anyhow::bail!("only {seen} of {snapshots} snapshots written in {elapsed:.0?}");
        }
        Ok(elapsed < run_for || seen < snapshots)
    };
    while measuring(&shard)? || done < sent {
        while sent - done < in_flight as u64 && measuring(&shard)? {
            let slot = (sent % in_flight as u64) as usize;
            sent_at[slot] = Instant::now();
            shard.send(lease(sent))?;
            sent += 1;
        }
        let outcome = answers.recv()?;
        let slot = (outcome.tag % in_flight as u64) as usize;
        histogram.saturating_record(sent_at[slot].elapsed().as_nanos() as u64);
        done += 1;
    }
    let rate = (done - warmed) as f64 / started.elapsed().as_secs_f64();
    let per_request = |name: &str, before: Option<Duration>| {
        before
            .zip(thread_cpu(name))
            .map(|(before, after)| (after - before).as_secs_f64() * 1e6 / (done - warmed) as f64)
    };
    let cpu = ThreadsCpu {
        writer: per_request(&writer, writer_before),
        journal: per_request("ipsx-journal", journal_before),
        client: per_request("self", client_before),
    };
    shard.shutdown()?;
    Ok((rate, histogram, cpu))
}

/// CPU time per request, microseconds, of the threads a shard run keeps busy.
struct ThreadsCpu {
    writer: Option<f64>,
    journal: Option<f64>,
    client: Option<f64>,
}

/// CPU time (user + system) a thread of this process has run: the calling thread for
/// `"self"`, else the first thread named `name`. From `/proc` (clock ticks, 10 ms here: a
/// run of seconds reads it to a fraction of a percent); `None` where there is no `/proc`.
fn thread_cpu(name: &str) -> Option<Duration> {
    let stat = if name == "self" {
        std::fs::read_to_string("/proc/thread-self/stat").ok()?
    } else {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .find_map(|task| {
                let path = task.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                (comm.trim_end() == name)
                    .then(|| std::fs::read_to_string(path.join("stat")).ok())
                    .flatten()
            })?
    };
    // The fields after the command name (which is in parentheses and may hold spaces):
    // state is the first of them, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux the project supports.
    Some(Duration::from_millis(ticks * 10))
}
