//! One shard: a single writer thread owning a [`DurableEngine`], fed through a lock-free queue.
//!
//! The writer takes whatever is queued (up to a batch), applies each command, hands the whole
//! group to the journal thread for one write and sync, and only answers the submitters once
//! the group is durable: group commit, so an fsync is shared by every command of the batch.
//! The two threads are pipelined: while batch `k` is synced, the writer applies batch `k + 1`.
//! Readers never touch the engine: market depth is published through an atomically swapped
//! pointer, other reads run as queries on the writer right after a batch. The journal thread
//! answers each batch (submitters, readers, followers) right after its sync, so answering
//! costs the writer nothing. Every batch's events leave on the shard's output stream
//! ([`crate::output`]) once the batch is durable: followers react to it instead of polling.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use ipsx_engine::{Command, CommandKind, Engine, EngineError, Event, MarketDepth, Timestamp};

use crate::error::{StoreError, SubmitError};
use crate::journal;
use crate::output::{EventBatch, Events, Follower, Sink};
use crate::replica::{Replicator, Role};
use crate::store::{DurableEngine, Recovery, StoreConfig};

/// How a shard runs.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Where and how it stores its state.
    pub store: StoreConfig,
    /// Most commands in one group commit.
    pub batch_max: usize,
    /// Capacity of the submission queue (submitters wait when it is full).
    pub queue_capacity: usize,
    /// Move the clock this often without traffic, so timeouts and expiries fire (None: only
    /// when commands arrive — for tests that drive time themselves).
    pub tick_every: Option<Duration>,
    /// Publish market depth at most this often. It is read without settling deferred lease
    /// ends (a gauge, not a read that must be exact): IPs whose lease ended in the last
    /// moments may still count as leased until their end settles, a few batches later.
    pub depth_every: Duration,
    /// Whether it starts taking commands or following a replicated log ([`crate::replica`]).
    pub role: Role,
}

impl ShardConfig {
    /// Defaults for a store in `dir`.
    pub fn new(store: StoreConfig) -> ShardConfig {
        ShardConfig {
            store,
            batch_max: 4096,
            queue_capacity: 65_536,
            tick_every: Some(Duration::from_secs(1)),
            depth_every: Duration::from_millis(50),
            role: Role::Leader,
        }
    }
}

/// What a submitter gets back once its command is durable (or refused).
#[derive(Debug)]
pub struct Outcome {
    /// The submitter's own tag, to match answers with submissions.
    pub tag: u64,
    /// The journal record, if the command changed anything.
    pub seq: Option<u64>,
    /// The engine's verdict and what happened.
    pub result: Result<Events, EngineError>,
}

/// One command for a shard.
pub struct Submission {
    /// Command time; `None` lets the writer stamp it with the wall clock (never going back).
    pub at: Option<Timestamp>,
    /// The command.
    pub kind: CommandKind,
    /// Where to send the [`Outcome`] (none: fire and forget).
    pub reply: Option<Sender<Outcome>>,
    /// Echoed in the outcome.
    pub tag: u64,
}

/// What a read hands back to be delivered once the batch it saw is durable.
type Answer = Box<dyn FnOnce() + Send>;

/// A read of the engine as it stands after a batch; its answer waits for the batch's
/// durability.
type Query = Box<dyn FnOnce(&Engine) -> Answer + Send>;

/// What to do with an outcome: runs on the writer thread with the engine as it stands right
/// after the command's batch (keep it short: it holds up the next batch), and gives back what
/// to deliver once that batch is durable.
pub type Then = Box<dyn FnOnce(Outcome, &Engine) -> Answer + Send>;

/// A read waiting for its batch to be applied.
enum Read {
    Then(Then, Answered),
    Query(Query),
}

/// A command's answer while its batch is under way: its events are a range of the batch's.
struct Answered {
    tag: u64,
    seq: Option<u64>,
    result: Result<Range<usize>, EngineError>,
}

impl Answered {
    /// The outcome, its range of events turned into `events`.
    fn into_outcome(self, events: impl FnOnce(Range<usize>) -> Events) -> Outcome {
        Outcome {
            tag: self.tag,
            seq: self.seq,
            result: self.result.map(events),
        }
    }
}

// Submissions are the hot path and the common case: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Message {
    Submit(Submission),
    SubmitThen(CommandKind, Then),
    Query(Query),
    Snapshot(Sender<Result<(), StoreError>>),
    Follow(Sink),
    /// Records of the replicated log, for a follower.
    Replicated(Vec<u8>),
    /// Become the leader: every group from now on goes to this log first.
    Promote(Box<dyn Replicator>, Sender<Result<(), StoreError>>),
    /// Stop leading: answered once every group before it is durable.
    StepDown(Sender<Result<(), StoreError>>),
    Shutdown,
}

/// A message as the writer's queue holds it: on cache lines of its own. The queue's slots are
/// a stamp and a message; unaligned, a 256-byte message makes 264-byte slots that share lines
/// with their neighbours, so a submitter writing one slot and the writer reading the one
/// before pull the same line back and forth between the cores.
#[repr(align(64))]
struct Queued(Message);

/// Counters a shard publishes.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Last journal record made durable.
    pub durable_seq: AtomicU64,
    /// Commands handled (accepted or refused).
    pub commands: AtomicU64,
    /// Group commits done.
    pub batches: AtomicU64,
    /// Snapshots written to disk since the shard started.
    pub snapshots: AtomicU64,
}

/// A running shard.
pub struct ShardHandle {
    inbox: Sender<Queued>,
    /// Set by a writer that failed, before it drops what is queued (see [`ShardHandle::post`]).
    failed: Arc<AtomicBool>,
    /// Whether the writer takes commands; set by the writer once it does, never cleared (a
    /// leader that loses the log stops instead).
    leading: Arc<AtomicBool>,
    depth: Arc<ArcSwap<MarketDepth>>,
    stats: Arc<ShardStats>,
    recovery: Recovery,
    writer: Option<JoinHandle<Result<(), StoreError>>>,
}

impl ShardHandle {
    /// Recovers the store and starts the writer thread.
    pub fn start(config: ShardConfig) -> Result<ShardHandle, StoreError> {
        let (store, recovery) = DurableEngine::open(config.store.clone())?;
        let (inbox, queue) = crossbeam_channel::bounded(config.queue_capacity);
        let depth = Arc::new(ArcSwap::from_pointee(store.engine().depth()));
        let stats = Arc::new(ShardStats::default());
        stats.durable_seq.store(store.last_seq(), Ordering::Release);
        let failed = Arc::new(AtomicBool::new(false));
        let leading = Arc::new(AtomicBool::new(config.role == Role::Leader));
        let writer = Writer {
            leading: Arc::clone(&leading),
            store,
            queue,
            failed: Arc::clone(&failed),
            config: config.clone(),
            delivery: Arc::new(Delivery {
                followers: Mutex::new(Followers::default()),
                depth: Arc::clone(&depth),
                stats: Arc::clone(&stats),
            }),
            events: Vec::new(),
            published_from: None,
            handled: 0,
            events_per_command: 4,
        };
        let writer = thread::Builder::new()
            .name(format!("ipsx-shard-{}", config.store.engine.shard))
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io(&config.store.dir, e))?;
        Ok(ShardHandle {
            inbox,
            failed,
            leading,
            depth,
            stats,
            recovery,
            writer: Some(writer),
        })
    }

    /// Queues a submission; the outcome goes to its `reply` channel.
    pub fn send(&self, submission: Submission) -> Result<(), SubmitError> {
        self.command(Message::Submit(submission))
    }

    /// Submits a command stamped now without waiting. On the writer thread, `read` gets the
    /// outcome and the engine as it stands right after the command's batch; once that batch
    /// is durable, `answer` gets what `read` returned, on the journal thread (keep it short). For async callers, which hand the answer
    /// to a future through a oneshot channel instead of parking a thread.
    pub fn submit_then<R: Send + 'static>(
        &self,
        kind: CommandKind,
        read: impl FnOnce(Outcome, &Engine) -> R + Send + 'static,
        answer: impl FnOnce(R) + Send + 'static,
    ) -> Result<(), SubmitError> {
        let then: Then = Box::new(move |outcome, engine| {
            let read = read(outcome, engine);
            Box::new(move || answer(read))
        });
        self.command(Message::SubmitThen(kind, then))
    }

    /// Reads the engine without waiting: `read` runs after a batch, and `answer` gets its
    /// result once everything `read` saw is durable.
    pub fn query_then<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine) -> R + Send + 'static,
        answer: impl FnOnce(R) + Send + 'static,
    ) -> Result<(), SubmitError> {
        let query: Query = Box::new(move |engine| {
            let read = read(engine);
            Box::new(move || answer(read))
        });
        self.post(Message::Query(query))
    }

    /// Submits a command stamped now and waits until it is durable (or refused).
    pub fn submit(&self, kind: CommandKind) -> Result<Outcome, SubmitError> {
        self.submit_at(None, kind)
    }

    /// Submits a command with an explicit time and waits for its outcome.
    pub fn submit_at(
        &self,
        at: Option<Timestamp>,
        kind: CommandKind,
    ) -> Result<Outcome, SubmitError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Submission {
            at,
            kind,
            reply: Some(reply),
            tag: 0,
        })?;
        answer.recv().map_err(|_| SubmitError::Stopped)
    }

    /// Runs `read` on the engine between batches and returns its answer, once what it saw is
    /// durable: no caller learns of state a crash could still take back.
    pub fn query<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.query_then(read, move |read| {
            let _ = reply.send(read);
        })?;
        answer.recv().map_err(|_| SubmitError::Stopped)
    }

    /// Hands every batch from now on to `sink`, on the journal thread, once the batch is
    /// durable. A query posted after this call sees the engine no earlier than the first batch
    /// the sink gets, so a follower that reads the engine next misses nothing.
    pub fn follow_with(&self, sink: Sink) -> Result<(), SubmitError> {
        self.post(Message::Follow(sink))
    }

    /// A [`Follower`] on its own queue of `capacity` batches (see [`ShardHandle::follow_with`]).
    pub fn follow(&self, capacity: usize) -> Result<Follower, SubmitError> {
        let (follower, sink) = Follower::new(capacity);
        self.follow_with(sink)?;
        Ok(follower)
    }

    /// Hands a follower records of the replicated log, in order (whole journal records back
    /// to back, as [`Replicator::replicate`] got them). Records it already holds are skipped,
    /// so a log read again from an earlier point does no harm; a record that does not follow,
    /// fails its checksum or is refused by the engine stops the writer.
    pub fn replicate_in(&self, records: Vec<u8>) -> Result<(), SubmitError> {
        self.post(Message::Replicated(records))
    }

    /// Makes a follower the leader once everything queued before is applied and durable:
    /// from then on it takes commands, moves its clock, and hands every group to `log`
    /// before writing it. The caller makes sure the follower holds the whole log first; if
    /// it does not, the log refuses its first group and the writer stops.
    pub fn promote(&self, log: Box<dyn Replicator>) -> Result<(), SubmitError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.post(Message::Promote(log, reply))?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            _ => Err(SubmitError::Stopped),
        }
    }

    /// Stops leading, and returns once every group written before is durable (or refused): the
    /// shard takes no more commands ([`SubmitError::NotLeader`]; one that raced this call goes
    /// unanswered, as [`SubmitError::Stopped`]) and no longer moves its clock. A leader about to
    /// let its lease go calls this first, so that it writes nothing under a lease it no longer
    /// holds: the next leader's log would refuse it, and the shard would stop with an error.
    /// [`ShardHandle::promote`] makes it lead again.
    pub fn step_down(&self) -> Result<(), SubmitError> {
        self.leading.store(false, Ordering::SeqCst);
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.post(Message::StepDown(reply))?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            _ => Err(SubmitError::Stopped),
        }
    }

    /// Whether the shard takes commands (see [`Role`]).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Takes a snapshot now and waits until it is on disk.
    pub fn snapshot(&self) -> Result<(), SubmitError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.post(Message::Snapshot(reply))?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            _ => Err(SubmitError::Stopped),
        }
    }

    /// Queues a command, if this shard takes commands.
    fn command(&self, message: Message) -> Result<(), SubmitError> {
        if !self.is_leading() {
            return Err(SubmitError::NotLeader);
        }
        self.post(message)
    }

    /// Queues a message for the writer. A writer that failed drops what is queued, but a
    /// message may land just after that and wait forever (the channel keeps it while a sender
    /// lives): the flag, set before the drop and read after the send, tells this sender so.
    fn post(&self, message: Message) -> Result<(), SubmitError> {
        self.inbox
            .send(Queued(message))
            .map_err(|_| SubmitError::Stopped)?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Whether the writer thread still runs. It stops only at [`ShardHandle::shutdown`] — or
    /// when it failed (a journal or snapshot write error, a panic): then nothing can be
    /// applied any more, and the process should stop so a supervisor restarts it from disk.
    pub fn writer_alive(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
            && self
                .writer
                .as_ref()
                .is_some_and(|writer| !writer.is_finished())
    }

    /// The latest published market depth; never blocks the writer.
    pub fn depth(&self) -> Arc<MarketDepth> {
        self.depth.load_full()
    }

    /// The shard's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// What recovery found when the shard started.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Finishes queued work, takes a final snapshot and stops the writer.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StoreError> {
        let _ = self.inbox.send(Queued(Message::Shutdown));
        match self.writer.take() {
            Some(writer) => writer.join().unwrap_or_else(|_| {
                Err(StoreError::Corrupt("the shard writer panicked".to_string()))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "shard stopped with an error");
        }
    }
}

/// The wall clock in whole seconds.
pub fn wall_clock() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

struct Writer {
    store: DurableEngine,
    /// Shared with the handle; the writer ticks the clock only while it leads.
    leading: Arc<AtomicBool>,
    queue: Receiver<Queued>,
    failed: Arc<AtomicBool>,
    config: ShardConfig,
    delivery: Arc<Delivery>,
    /// The events of the batch under way: the submitters' answers, and while someone follows,
    /// every other event too (ticks, settled ends, refused commands' timers), in order.
    events: Vec<Event>,
    /// Where the followers' part of `events` starts: `None` while nobody follows the output
    /// stream (events beyond the submitters' are kept only once someone does), past 0 when the
    /// first follower joined during the batch.
    published_from: Option<usize>,
    /// Commands handled since the count was last published to [`ShardStats::commands`]: once
    /// a batch, not once a command. The counters share a cache line that other threads read
    /// (a client polling `snapshots`), and a write per command pulls that line back to the
    /// writer's core each time.
    handled: u64,
    /// Events the last batch made per command, rounded up: what the next batch reserves.
    events_per_command: usize,
}

/// What answering a durable batch needs, shared with the journal thread that does it.
struct Delivery {
    followers: Mutex<Followers>,
    depth: Arc<ArcSwap<MarketDepth>>,
    stats: Arc<ShardStats>,
}

/// The batches' followers, and the engine clock they were last shown.
#[derive(Default)]
struct Followers {
    sinks: Vec<Sink>,
    clock: Timestamp,
}

struct Pending {
    reply: Option<Sender<Outcome>>,
    answered: Answered,
}

/// A batch applied and handed to the journal thread: what to tell whom once it is durable.
#[derive(Default)]
struct Applied {
    /// Outcomes for the submitters' channels.
    pending: Vec<Pending>,
    /// Answers of the reads run right after the batch.
    answers: Vec<Answer>,
    /// The batch's events, shared by its submitters' answers and its followers.
    events: Vec<Event>,
    /// Where the followers' part of `events` starts, if anyone follows.
    published_from: Option<usize>,
    /// Followers that joined during the batch (they get it).
    new_sinks: Vec<Sink>,
    /// The engine's clock after the batch.
    at: Timestamp,
    /// The batch's last journal record (that of an earlier batch if it wrote none).
    last_seq: u64,
    /// Market depth after the batch, when due for publication.
    depth: Option<MarketDepth>,
}

impl Applied {
    /// Answers the batch, on the journal thread, once it is durable: events to the followers,
    /// outcomes to the submitters, reads' answers, depth.
    fn deliver(self, delivery: &Delivery) {
        let batch = Arc::new(EventBatch {
            seq: self.last_seq,
            at: self.at,
            events: self.events,
        });
        let stats = &delivery.stats;
        stats.durable_seq.fetch_max(self.last_seq, Ordering::AcqRel);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        {
            let mut followers = delivery
                .followers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            followers.sinks.extend(self.new_sinks);
            let published = match self.published_from {
                Some(0) => Some(Arc::clone(&batch)),
                // The first follower joined during the batch: it gets what happened since.
                Some(from) => Some(Arc::new(EventBatch {
                    seq: batch.seq,
                    at: batch.at,
                    events: batch.events[from..].to_vec(),
                })),
                None => None,
            };
            // A batch with no events is still news when it moved the clock: followers that
            // act on time (the payment hub) must know how far the engine has gone.
            let news = |p: &Arc<EventBatch>| !p.events.is_empty() || p.at > followers.clock;
            if let Some(published) = published.filter(news) {
                followers.clock = published.at;
                for sink in followers.sinks.iter_mut() {
                    sink(&published);
                }
            }
        }
        // Depth before answers: whoever got an answer reads a depth at least that new.
        if let Some(depth) = self.depth {
            delivery.depth.store(Arc::new(depth));
        }
        for Pending { reply, answered } in self.pending {
            if let Some(reply) = reply {
                let _ = reply.send(answered.into_outcome(|range| Events::of_batch(&batch, range)));
            }
        }
        for answer in self.answers {
            answer();
        }
    }
}

/// Groups a writer may have handed to the journal thread and not yet heard back about.
const COMMITS_IN_FLIGHT: usize = 2;

/// Deferred lease ends a writer settles when no command waits (about a millisecond's work).
const SETTLE_WHEN_IDLE: usize = 2_048;

/// Deferred lease ends a batch settles per command it held, on top of what each command settles
/// itself: a backlog drains faster than leases end, and a small batch stays quick.
const SETTLE_PER_BATCHED_COMMAND: usize = 1;

impl Writer {
    fn run(mut self) -> Result<(), StoreError> {
        let result = self.serve();
        if result.is_err() {
            // The channel would keep what is queued (and the answers its submitters wait for)
            // as long as a sender lives: drop it all now, so they hear the writer is gone.
            self.failed.store(true, Ordering::SeqCst);
            while self.queue.try_recv().is_ok() {}
        }
        result
    }

    /// The writer's loop, pipelined: while the journal thread writes and syncs batch `k` and
    /// then answers it, this thread collects and applies batch `k + 1`. Every read runs on the
    /// engine as it stands right after its batch, and every answer (outcomes, reads, events,
    /// depth) leaves only once that batch is durable.
    fn serve(&mut self) -> Result<(), StoreError> {
        let mut snapshot_waiters: Vec<Sender<Result<(), StoreError>>> = Vec::new();
        let mut step_down_waiters: Vec<Sender<Result<(), StoreError>>> = Vec::new();
        let mut last_tick = Instant::now();
        let mut last_depth = Instant::now();
        let idle_wait = self.config.tick_every.unwrap_or(Duration::from_secs(3600));
        loop {
            let mut stop = false;
            // Idle with lease ends still to settle: settle them rather than wait.
            let wait = if self.store.unsettled() > 0 {
                Duration::ZERO
            } else {
                idle_wait
            };
            // A journal write that failed is heard at once, not with the next message: its
            // submitters wait for answers, and may send nothing more until they get one.
            let mut first = None;
            crossbeam_channel::select! {
                recv(self.queue) -> message => match message {
                    Ok(Queued(message)) => first = Some(message),
                    Err(_) => stop = true,
                },
                recv(self.store.journal_gone()) -> _ => {
                    self.store.poll_durable()?;
                    return Err(StoreError::JournalStopped);
                }
                default(wait) => {}
            }
            // A failed write shows here, before anything more is applied.
            self.store.poll_durable()?;
            let snapshots = self.store.poll_snapshots()?;
            self.delivery
                .stats
                .snapshots
                .store(snapshots, Ordering::Relaxed);
            // The batch is what is queued now, up to `batch_max`; what arrives meanwhile waits
            // for the next one, which is applied while this one is synced. Each message is
            // taken from its queue slot as it is applied rather than moved into a batch first
            // (a copy of a few hundred bytes a command, twice).
            let expected = match first {
                Some(_) => (self.queue.len() + 1).min(self.config.batch_max),
                None => 0,
            };
            // Sized once: grown push by push, a batch of thousands reallocates (and copies)
            // its outcomes and events a dozen times, on fresh pages each time it outgrows the
            // last.
            let mut applied = Applied {
                pending: Vec::with_capacity(expected),
                ..Applied::default()
            };
            self.events.reserve(expected * self.events_per_command);
            // A follower's time comes from the leader's records.
            let leading = self.leading.load(Ordering::Relaxed);
            if leading
                && self
                    .config
                    .tick_every
                    .is_some_and(|every| last_tick.elapsed() >= every)
            {
                last_tick = Instant::now();
                let mut events = Vec::new();
                let at = wall_clock().max(self.store.engine().now());
                let _ = self.store.apply(&Command::tick(at), &mut events);
                self.keep(&events);
            }
            let mut reads: Vec<Read> = Vec::new();
            let mut batch_len = 0;
            while let Some(message) = first.take().or_else(|| {
                (batch_len < expected)
                    .then(|| self.queue.try_recv().ok())
                    .flatten()
                    .map(|Queued(message)| message)
            }) {
                batch_len += 1;
                match message {
                    // A command that passed the handle's check just before a step-down: it is
                    // not applied, and its submitter hears that the shard stopped (dropped
                    // reply).
                    Message::Submit(_) | Message::SubmitThen(..)
                        if !self.leading.load(Ordering::Relaxed) => {}
                    Message::Submit(mut submission) => {
                        let reply = submission.reply.take();
                        let answered = self.apply(submission);
                        applied.pending.push(Pending { reply, answered });
                    }
                    Message::SubmitThen(kind, then) => {
                        let answered = self.apply(Submission {
                            at: None,
                            kind,
                            reply: None,
                            tag: 0,
                        });
                        reads.push(Read::Then(then, answered));
                    }
                    Message::Query(query) => reads.push(Read::Query(query)),
                    Message::Snapshot(waiter) => snapshot_waiters.push(waiter),
                    Message::Follow(sink) => {
                        if self.published_from.is_none() {
                            self.published_from = Some(self.events.len());
                        }
                        applied.new_sinks.push(sink);
                    }
                    Message::Replicated(records) => self.follow_log(&records)?,
                    Message::Promote(log, reply) => {
                        let promoted = self.store.replicate_to(log);
                        if promoted.is_ok() {
                            self.leading.store(true, Ordering::SeqCst);
                            last_tick = Instant::now();
                        }
                        let failed = promoted.as_ref().err().map(ToString::to_string);
                        let _ = reply.send(promoted);
                        if let Some(error) = failed {
                            return Err(StoreError::Replication(error));
                        }
                    }
                    // The handle cleared `leading` before sending this.
                    Message::StepDown(reply) => step_down_waiters.push(reply),
                    Message::Shutdown => stop = true,
                }
            }
            // Reads and snapshots see the settled state; otherwise a bounded share of the
            // deferred ends settles now.
            let mut settled = Vec::new();
            if !reads.is_empty()
                || stop
                || !snapshot_waiters.is_empty()
                || self.store.snapshot_due()
            {
                self.store.settle_all(&mut settled);
            } else {
                let budget = if batch_len == 0 {
                    SETTLE_WHEN_IDLE
                } else {
                    SETTLE_PER_BATCHED_COMMAND * batch_len
                };
                self.store.settle(budget, &mut settled);
            }
            self.keep(&settled);
            let engine = self.store.engine();
            for read in reads {
                applied.answers.push(match read {
                    Read::Then(then, answered) => {
                        let events = &self.events;
                        then(
                            answered.into_outcome(|range| Events::owned(events[range].to_vec())),
                            engine,
                        )
                    }
                    Read::Query(query) => query(engine),
                });
            }
            // Depth goes out on its period, and once more as the last deferred end settles
            // (the writer may then sleep with nothing to send).
            let caught_up = !settled.is_empty() && self.store.unsettled() == 0;
            if last_depth.elapsed() >= self.config.depth_every || stop || caught_up {
                last_depth = Instant::now();
                applied.depth = Some(engine.depth());
            }
            applied.at = engine.now();
            // The next batch's buffer is sized once its length is known, from this one's events
            // per command, with one to spare.
            if batch_len > 0 {
                self.events_per_command = self.events.len().div_ceil(batch_len) + 1;
            }
            applied.events = std::mem::take(&mut self.events);
            applied.published_from = self.published_from;
            // Followed once, followed for good: the next batch is the followers' whole.
            self.published_from = self.published_from.map(|_| 0);
            applied.last_seq = self.store.last_seq();
            self.publish_handled();
            // Group commit: one write (and sync) for the whole batch, then its answers, on the
            // journal thread.
            let delivery = Arc::clone(&self.delivery);
            self.store
                .start_commit(move || applied.deliver(&delivery))?;
            while self.store.commits_in_flight() > COMMITS_IN_FLIGHT {
                self.store.wait_durable()?;
            }
            if !step_down_waiters.is_empty() {
                while self.store.commits_in_flight() > 0 {
                    self.store.wait_durable()?;
                }
                for waiter in step_down_waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            if !snapshot_waiters.is_empty() {
                let result = self.store.snapshot_and_wait();
                for waiter in snapshot_waiters.drain(..) {
                    let _ = waiter.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(StoreError::Corrupt(e.to_string())),
                    });
                }
                result?;
            } else if self.store.snapshot_due() {
                self.store.snapshot()?;
            }
            if stop {
                return self.store.snapshot_and_wait();
            }
        }
    }

    /// Applies records of the replicated log that this shard does not hold yet.
    fn follow_log(&mut self, records: &[u8]) -> Result<(), StoreError> {
        if self.leading.load(Ordering::Relaxed) {
            return Err(StoreError::Replication(
                "a leader was handed records of the log to follow".to_string(),
            ));
        }
        let mut events = Vec::new();
        journal::decode_records(records, "the replicated log", |seq, command| {
            if seq <= self.store.last_seq() {
                return Ok(());
            }
            events.clear();
            self.store.apply_replicated(seq, &command, &mut events)?;
            self.handled += 1;
            self.keep(&events);
            Ok(())
        })
    }

    /// Adds the commands handled since last time to the shard's published count.
    fn publish_handled(&mut self) {
        let handled = std::mem::take(&mut self.handled);
        if handled > 0 {
            self.delivery
                .stats
                .commands
                .fetch_add(handled, Ordering::Relaxed);
        }
    }

    /// Keeps events no submitter is answered with, for the batch's followers if any.
    fn keep(&mut self, events: &[Event]) {
        if self.published_from.is_some() {
            self.events.extend_from_slice(events);
        }
    }

    /// Applies a submission; its events join the batch's.
    fn apply(&mut self, submission: Submission) -> Answered {
        let at = submission
            .at
            .unwrap_or_else(|| wall_clock().max(self.store.engine().now()));
        let command = Command {
            at,
            kind: submission.kind,
        };
        let from = self.events.len();
        let applied = self.store.apply_owned(command, &mut self.events);
        self.handled += 1;
        // A refused command still moved the clock: the timers it fired are followers' news,
        // and nobody else's.
        if applied.result.is_err() && self.published_from.is_none() {
            self.events.truncate(from);
        }
        Answered {
            tag: submission.tag,
            seq: applied.seq,
            result: applied.result.map(|()| from..self.events.len()),
        }
    }
}
