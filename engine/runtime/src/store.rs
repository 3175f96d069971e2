//! A durable engine: every accepted command is journaled; snapshots bound recovery time.
//!
//! Recovery loads the newest readable snapshot, replays the journal after it (decoded ahead on
//! a helper thread, see `read_ahead.rs`, while another builds the record chunks the engine
//! grows into, see `restock.rs`), and cuts a torn tail (a record a crash
//! interrupted). For a snapshot the writer only freezes the state (a [`FrozenState`] sharing
//! its records copy-on-write); a helper thread builds the canonical [`ipsx_engine::Snapshot`]
//! from it, serialises it and writes the file.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ipsx_engine::{
    Command, Engine, EngineConfig, EngineError, Event, FrozenState, SETTLE_PER_COMMAND,
};

use crate::error::StoreError;
use crate::journal::{self, FsyncPolicy, GroupBuffer, JournalWriter};
use crate::journal_thread::JournalThread;
use crate::read_ahead::scan_segment_ahead;
use crate::replica::Replicator;
use crate::restock::{Restocker, TEND_EVERY};
use crate::snapshot_file::{self, SnapshotBytes};

/// Where and how a shard keeps its state.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Folder of the journal segments and snapshots (created if missing).
    pub dir: PathBuf,
    /// When journal writes are forced to stable storage.
    pub fsync: FsyncPolicy,
    /// Take a snapshot after this many journaled commands (0: never on its own).
    pub snapshot_every: u64,
    /// Engine settings for a fresh store (a recovered store keeps those of its snapshot).
    pub engine: EngineConfig,
}

impl StoreConfig {
    /// Defaults: fsync on every group commit, a snapshot every million commands.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            snapshot_every: 1_000_000,
            engine: EngineConfig::default(),
        }
    }
}

/// What recovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Sequence number of the snapshot recovery started from, if any.
    pub snapshot_seq: Option<u64>,
    /// Journal records replayed after it.
    pub replayed: u64,
    /// The last sequence number applied.
    pub last_seq: u64,
    /// Bytes of a torn record cut from the journal's tail.
    pub torn_bytes: u64,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// An engine whose accepted commands are journaled before they are acknowledged.
pub struct DurableEngine {
    engine: Engine,
    /// Records of the group under way (encoded on this thread).
    group: GroupBuffer,
    /// Writes and syncs groups on its own thread.
    journal: JournalThread,
    dir: PathBuf,
    snapshot_every: u64,
    since_snapshot: u64,
    snapshot_writer: Sender<TakenSnapshot>,
    snapshot_results: Receiver<Result<(), StoreError>>,
    snapshots_in_flight: usize,
    /// Snapshots on disk since the store opened.
    snapshots_written: u64,
}

impl DurableEngine {
    /// Opens (or creates) the store in `config.dir` and recovers its state.
    pub fn open(config: StoreConfig) -> Result<(DurableEngine, Recovery), StoreError> {
        let started = Instant::now();
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let (mut engine, snapshot_seq) = load_newest_snapshot(&dir, config.engine)?;
        let mut last_seq = snapshot_seq.unwrap_or(0);
        let mut replayed = 0u64;
        let mut events = Vec::new();
        let segments = journal::segments(&dir)?;
        let mut restocker = (!segments.is_empty()).then(Restocker::spawn).flatten();
        let mut tail = None;
        let mut torn_bytes = 0;
        for (index, segment) in segments.iter().enumerate() {
            let is_last = index + 1 == segments.len();
            if let Some(next) = segments.get(index + 1)
                && next.first_seq <= last_seq + 1
            {
                continue; // wholly covered by the snapshot
            }
            let scan = scan_segment_ahead(&segment.path, |seq, command| {
                if seq <= last_seq {
                    return Ok(());
                }
                if seq != last_seq + 1 {
                    return Err(StoreError::Gap {
                        expected: last_seq + 1,
                        found: seq,
                    });
                }
                events.clear();
                replay(&mut engine, command, &mut events, seq)?;
                last_seq = seq;
                replayed += 1;
                if replayed.is_multiple_of(TEND_EVERY)
                    && let Some(restocker) = restocker.as_mut()
                {
                    restocker.tend(&mut engine);
                }
                Ok(())
            })?;
            if scan.torn_tail {
                if !is_last {
                    return Err(StoreError::Corrupt(format!(
                        "{}: damaged record in the middle of the journal",
                        segment.path.display()
                    )));
                }
                let size = fs::metadata(&segment.path)
                    .map_err(|e| StoreError::io(&segment.path, e))?
                    .len();
                torn_bytes = size - scan.valid_len;
                tracing::warn!(
                    path = %segment.path.display(),
                    torn_bytes,
                    "cutting a torn record from the journal's tail"
                );
            }
            if is_last {
                if segment.first_seq > last_seq + 1 {
                    return Err(StoreError::Gap {
                        expected: last_seq + 1,
                        found: segment.first_seq,
                    });
                }
                tail = Some((segment.path.clone(), scan.valid_len));
            }
        }
        let writer = JournalWriter::open(&dir, last_seq, tail, config.fsync)?;
        let journal = JournalThread::spawn(writer, last_seq, &dir)?;
        let (snapshot_writer, snapshot_results) = spawn_snapshot_writer(dir.clone());
        let recovery = Recovery {
            snapshot_seq,
            replayed,
            last_seq,
            torn_bytes,
            elapsed: started.elapsed(),
        };
        tracing::info!(?recovery, dir = %dir.display(), "store recovered");
        Ok((
            DurableEngine {
                engine,
                group: GroupBuffer::after(last_seq),
                journal,
                dir,
                snapshot_every: config.snapshot_every,
                since_snapshot: replayed,
                snapshot_writer,
                snapshot_results,
                snapshots_in_flight: 0,
                snapshots_written: 0,
            },
            recovery,
        ))
    }

    /// Applies a command and buffers it for the journal. Returns the record's sequence number.
    /// Not durable until [`DurableEngine::commit`]; acknowledge only after that.
    ///
    /// Lease ends that fell due are deferred and settled a few at a time
    /// ([`Engine::apply_deferring`]): call [`DurableEngine::settle`] between batches and
    /// [`DurableEngine::settle_all`] before reading. The journal holds commands only, and a
    /// replay (which expires eagerly) reaches the same settled state.
    ///
    /// A refused command is journaled as a clock tick when refusing it still moved the clock
    /// (timers fired), so a replay moves the clock the same way.
    pub fn apply(&mut self, command: &Command, events: &mut Vec<Event>) -> ApplyResult {
        match self.try_apply(command, events) {
            Ok(()) => self.keep(command.clone()),
            Err(refused) => refused,
        }
    }

    /// [`DurableEngine::apply`] for a caller done with the command: the journal keeps it as
    /// is, where `apply` keeps a copy.
    pub fn apply_owned(&mut self, command: Command, events: &mut Vec<Event>) -> ApplyResult {
        match self.try_apply(&command, events) {
            Ok(()) => self.keep(command),
            Err(refused) => refused,
        }
    }

    /// Applies `command`; `Err` holds the answer to a refused one (journaled as a tick if
    /// refusing it moved the clock).
    fn try_apply(&mut self, command: &Command, events: &mut Vec<Event>) -> Result<(), ApplyResult> {
        let clock_before = self.engine.now();
        self.engine
            .apply_deferring(command, SETTLE_PER_COMMAND, events)
            .map_err(|error| {
                let seq = (self.engine.now() != clock_before).then(|| {
                    self.since_snapshot += 1;
                    self.group.push(Command::tick(command.at))
                });
                ApplyResult {
                    seq,
                    result: Err(error),
                }
            })
    }

    /// Journals an accepted command.
    fn keep(&mut self, command: Command) -> ApplyResult {
        self.since_snapshot += 1;
        ApplyResult {
            seq: Some(self.group.push(command)),
            result: Ok(()),
        }
    }

    /// Makes everything applied so far durable (one write, and a sync as the policy says).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.journal.start(&mut self.group, None)?;
        self.journal.wait_all().map(|_| ())
    }

    /// Applies a record another node's engine accepted (a follower of a replicated log): it
    /// must be the next record and be accepted here too, or this engine has diverged.
    pub fn apply_replicated(
        &mut self,
        seq: u64,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        let expected = self.group.last_seq() + 1;
        if seq != expected {
            return Err(StoreError::Gap {
                expected,
                found: seq,
            });
        }
        self.engine
            .apply_deferring(command, SETTLE_PER_COMMAND, events)
            .map_err(|error| {
                StoreError::Corrupt(format!(
                    "replicated record {seq} was accepted by the leader but is refused here \
                     ({error}): the nodes run different engine versions or settings"
                ))
            })?;
        self.since_snapshot += 1;
        self.group.append(command);
        Ok(())
    }

    /// From the next group on, hands every group to `log` before writing it locally (see
    /// [`crate::replica`]); waits until every group before is durable.
    pub fn replicate_to(&mut self, log: Box<dyn Replicator>) -> Result<(), StoreError> {
        self.journal.start(&mut self.group, None)?;
        self.journal.replicate_to(log)
    }

    /// Hands the group under way to the journal thread and returns at once: the next
    /// commands can be applied while it is written. Once it is durable, the journal thread
    /// runs `then` (not at all if the write fails), after the `then` of every group before.
    pub fn start_commit(&mut self, then: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
        self.journal.start(&mut self.group, Some(Box::new(then)))
    }

    /// Waits for the oldest group handed over by [`DurableEngine::start_commit`]; returns the
    /// last durable record.
    pub fn wait_durable(&mut self) -> Result<u64, StoreError> {
        self.journal.wait_one()
    }

    /// Takes in the groups already durable without waiting; returns the last durable record
    /// (or the error of a group that failed).
    pub fn poll_durable(&mut self) -> Result<u64, StoreError> {
        self.journal.poll()
    }

    /// Closed once the journal thread has ended (it ends only when a write or sync failed,
    /// or at shutdown): [`DurableEngine::poll_durable`] then says what failed.
    pub(crate) fn journal_gone(&self) -> &crossbeam_channel::Receiver<std::convert::Infallible> {
        self.journal.gone()
    }

    /// Groups handed over and not yet durable.
    pub fn commits_in_flight(&self) -> usize {
        self.journal.in_flight()
    }

    /// The engine (read-only: changes go through [`DurableEngine::apply`]). Exact once
    /// settled ([`DurableEngine::settle_all`]); until then deals that ended may read as running.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Settles up to `budget` deferred lease ends (see [`Engine::settle`]): their events are
    /// appended to `events`. Settling is not journaled: it changes when, not what.
    pub fn settle(&mut self, budget: usize, events: &mut Vec<Event>) -> usize {
        self.engine.settle(budget, events)
    }

    /// Settles every deferred lease end, so reads are exact.
    pub fn settle_all(&mut self, events: &mut Vec<Event>) {
        self.engine.settle_all(events);
    }

    /// Deals whose deferred end is not settled yet.
    pub fn unsettled(&self) -> usize {
        self.engine.unsettled()
    }

    /// The last journaled sequence number (applied, not necessarily durable: the last durable
    /// one is what [`DurableEngine::wait_durable`] returns).
    pub fn last_seq(&self) -> u64 {
        self.group.last_seq()
    }

    /// Whether enough commands have passed since the last snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.snapshot_every > 0 && self.since_snapshot >= self.snapshot_every
    }

    /// Freezes the state and hands it to the snapshot thread, which builds, serialises and
    /// writes the snapshot; the journal starts a new segment. Skipped (returns `false`) while
    /// the previous snapshot is still being written.
    pub fn snapshot(&mut self) -> Result<bool, StoreError> {
        self.collect_snapshot_results(false)?;
        if self.snapshots_in_flight > 0 {
            return Ok(false);
        }
        self.commit()?;
        // A snapshot is of the settled state; a caller that publishes events settles first.
        self.engine.settle_all(&mut Vec::new());
        // The writer only freezes the state (shares its records, copy-on-write): for a book of
        // a million deals, copying it into canonical form and serialising take a second, and
        // the writer would apply no command meanwhile. The snapshot thread does both.
        let snapshot = (self.last_seq(), self.engine.freeze());
        // The new segment must exist before the snapshot thread prunes the ones it covers.
        self.journal.rotate(self.last_seq() + 1)?;
        self.snapshot_writer
            .send(snapshot)
            .map_err(|_| StoreError::Corrupt("the snapshot thread has stopped".to_string()))?;
        self.snapshots_in_flight += 1;
        self.since_snapshot = 0;
        Ok(true)
    }

    /// Takes a snapshot and waits until it is on disk.
    pub fn snapshot_and_wait(&mut self) -> Result<(), StoreError> {
        self.collect_snapshot_results(true)?;
        self.snapshot()?;
        self.collect_snapshot_results(true)
    }

    fn collect_snapshot_results(&mut self, wait: bool) -> Result<(), StoreError> {
        while self.snapshots_in_flight > 0 {
            let result = if wait {
                self.snapshot_results.recv().map_err(|_| {
                    StoreError::Corrupt("the snapshot thread has stopped".to_string())
                })?
            } else {
                match self.snapshot_results.try_recv() {
                    Ok(result) => result,
                    Err(_) => return Ok(()),
                }
            };
            self.snapshots_in_flight -= 1;
            result?;
            self.snapshots_written += 1;
        }
        Ok(())
    }

    /// Hears from the snapshot thread without waiting: a failed snapshot is reported here, as
    /// soon as it is known. Returns how many snapshots are on disk since the store opened.
    pub fn poll_snapshots(&mut self) -> Result<u64, StoreError> {
        self.collect_snapshot_results(false)?;
        Ok(self.snapshots_written)
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What [`DurableEngine::apply`] did.
#[derive(Debug)]
pub struct ApplyResult {
    /// The journal record written for it, if any.
    pub seq: Option<u64>,
    /// The engine's verdict.
    pub result: Result<(), EngineError>,
}

fn replay(
    engine: &mut Engine,
    command: &Command,
    events: &mut Vec<Event>,
    seq: u64,
) -> Result<(), StoreError> {
    engine.apply(command, events).map_err(|error| {
        StoreError::Corrupt(format!(
            "journal record {seq} was accepted once but is refused on replay ({error}); \
             the journal does not belong to this engine version"
        ))
    })
}

fn load_newest_snapshot(
    dir: &Path,
    config: EngineConfig,
) -> Result<(Engine, Option<u64>), StoreError> {
    for (seq, path) in snapshot_file::list(dir)? {
        match snapshot_file::read(&path) {
            Ok((_, snapshot, stock)) => {
                if snapshot.config != config {
                    tracing::warn!(
                        stored = ?snapshot.config,
                        requested = ?config,
                        "keeping the engine settings the snapshot was taken with"
                    );
                }
                return Ok((Engine::restore_stocked(snapshot, stock), Some(seq)));
            }
            Err(error) => {
                tracing::warn!(%error, "skipping an unreadable snapshot; trying an older one");
            }
        }
    }
    Ok((Engine::new(config), None))
}

/// The state the writer froze, with the last journal record it includes, on its way to the
/// snapshot thread.
type TakenSnapshot = (u64, FrozenState);

/// The helper thread that builds, serialises and writes snapshot files and prunes what they
/// make obsolete.
fn spawn_snapshot_writer(
    dir: PathBuf,
) -> (Sender<TakenSnapshot>, Receiver<Result<(), StoreError>>) {
    let (to_writer, inbox) = crossbeam_channel::bounded::<TakenSnapshot>(1);
    let (report, results) = crossbeam_channel::bounded(4);
    thread::Builder::new()
        .name("ipsx-snapshot".into())
        .spawn(move || {
            // Building and serialising a big book takes seconds of CPU; on a small machine that
            // must not come out of the writer's or the journal thread's share.
            lower_own_priority();
            // Only a crash leaves a removal unfinished: once per start is enough, and here it
            // delays neither recovery nor any answer.
            if let Err(error) = crate::disk::finish_removals(&dir) {
                tracing::warn!(%error, "could not finish removing old store files");
            }
            // The last snapshot's size, plus an eighth: the next one is about as big.
            let mut room = 0;
            for (seq, frozen) in inbox {
                let snapshot = frozen.canonical();
                // The writer copies no more chunks once the view is gone.
                drop(frozen);
                let bytes = SnapshotBytes::with_room(seq, &snapshot, room);
                room = bytes.body.len() + bytes.body.len() / 8;
                drop(snapshot);
                let outcome = write_and_prune(&dir, &bytes);
                if let Err(error) = &outcome {
                    tracing::error!(%error, "snapshot failed");
                }
                if report.send(outcome).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the snapshot thread");
    (to_writer, results)
}

/// The niceness the snapshot thread takes: the lowest priority there is.
const SNAPSHOT_NICENESS: i32 = 19;

/// Gives the calling thread the lowest scheduling priority (on Linux, a thread's niceness is
/// its own). Failing leaves it as it was: snapshots are then only slower to leave room.
fn lower_own_priority() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), SNAPSHOT_NICENESS) {
        tracing::warn!(%error, "could not lower the snapshot thread's priority");
    }
}

fn write_and_prune(dir: &Path, bytes: &SnapshotBytes) -> Result<(), StoreError> {
    let started = Instant::now();
    snapshot_file::write(dir, bytes)?;
    // Keep two snapshots, and the journal from the older one on, in case the newer is damaged.
    if let Some(oldest_kept) = snapshot_file::prune(dir, 2)? {
        journal::prune(dir, oldest_kept)?;
    }
    tracing::info!(
        seq = bytes.seq,
        bytes = bytes.body.len(),
        elapsed = ?started.elapsed(),
        "snapshot written"
    );
    Ok(())
}
