//! The journal's own thread: it encodes, writes and syncs each group commit while the thread
//! that applies commands goes on with the next batch, so matching and journaling use both
//! cores.
//!
//! Groups are committed in the order they are handed over. Each may carry what to do once it
//! is durable (answer its submitters): the journal thread does it right after the sync, in
//! order, so answering costs the applying thread nothing; a group whose write or sync failed
//! drops it unanswered. Reports travel back in the same order, with the buffers, so a steady
//! stream of groups allocates nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::error::StoreError;
use ipsx_engine::Command;
use rkyv::util::AlignedVec;

use crate::journal::{self, Group, GroupBuffer, JournalWriter};
use crate::replica::Replicator;

/// What to do once a group is durable.
pub(crate) type OnDurable = Box<dyn FnOnce() + Send>;

enum Job {
    /// Encode and write (and sync, by the policy) a group whose last record is `last_seq`,
    /// then run `then`. `bytes` is filled here, on the journal thread.
    Commit {
        group: Group,
        bytes: Vec<u8>,
        last_seq: u64,
        then: Option<OnDurable>,
    },
    /// Close the segment and start the next at `next_seq`.
    Rotate { next_seq: u64 },
    /// From the next commit on, hand every group to this log before writing it.
    Replicate(Box<dyn Replicator>),
}

impl Job {
    fn is_commit(&self) -> bool {
        matches!(self, Job::Commit { .. })
    }
}

/// What the thread reports per job: the outcome, and the emptied command list to reuse.
type Report = (Result<(), StoreError>, Vec<Command>);

/// The journal thread's encoding buffers, reused from group to group.
#[derive(Default)]
struct Encoder {
    scratch: AlignedVec,
    spare: Vec<Vec<u8>>,
}

impl Encoder {
    /// Encodes every commit job's group into its `bytes`.
    fn encode(&mut self, taken: &mut [Job]) {
        for job in taken {
            if let Job::Commit { group, bytes, .. } = job
                && !group.commands.is_empty()
            {
                *bytes = self.spare.pop().unwrap_or_default();
                journal::encode_group(group, bytes, &mut self.scratch);
            }
        }
    }

    /// Keeps a written group's buffer for the next (four cover the groups one sync takes).
    fn recycle(&mut self, bytes: Vec<u8>) {
        if bytes.capacity() > 0 && self.spare.len() < 4 {
            self.spare.push(bytes);
        }
    }
}

/// Does the jobs taken, in order: the commits handed to the replicated log (if any), their
/// writes, one settle (sync) for all of them, their `then`s, then a trailing rotation or
/// change of log if one was taken. Reports each job; whether all went well.
fn run(
    writer: &mut JournalWriter,
    log: &mut Option<Box<dyn Replicator>>,
    encoder: &mut Encoder,
    taken: &mut Vec<Job>,
    report: &Sender<Report>,
) -> bool {
    encoder.encode(taken);
    let mut next_seq = None;
    // The log first: a group it refuses is written nowhere, so the local journal stays a
    // prefix of the log.
    let mut outcome = match log {
        Some(log) => {
            let groups: Vec<&[u8]> = taken
                .iter()
                .filter_map(|job| match job {
                    Job::Commit { bytes, .. } if !bytes.is_empty() => Some(bytes.as_slice()),
                    _ => None,
                })
                .collect();
            if groups.is_empty() {
                Ok(())
            } else {
                log.replicate(&groups)
            }
        }
        None => Ok(()),
    };
    for job in taken.iter() {
        if let Job::Commit {
            bytes, last_seq, ..
        } = job
        {
            next_seq = Some(last_seq + 1);
            if outcome.is_ok() {
                outcome = writer.write(bytes);
            }
        }
    }
    if let (Ok(()), Some(next_seq)) = (&outcome, next_seq) {
        outcome = writer.settle(next_seq);
    }
    for job in taken.drain(..) {
        let mut commands = match job {
            Job::Commit {
                group, bytes, then, ..
            } => {
                if let (Ok(()), Some(then)) = (&outcome, then) {
                    then();
                }
                encoder.recycle(bytes);
                group.commands
            }
            Job::Rotate { next_seq } => {
                if outcome.is_ok() {
                    outcome = writer.rotate(next_seq);
                }
                Vec::new()
            }
            Job::Replicate(replicator) => {
                if outcome.is_ok() {
                    *log = Some(replicator);
                }
                Vec::new()
            }
        };
        commands.clear();
        // The first report after a failure carries the error; the rest say it came first.
        let result = match &mut outcome {
            Ok(()) => Ok(()),
            Err(error) => Err(std::mem::replace(error, StoreError::JournalStopped)),
        };
        if report.send((result, commands)).is_err() {
            return false;
        }
    }
    outcome.is_ok()
}

/// The handle of the journal thread.
pub(crate) struct JournalThread {
    jobs: Sender<Job>,
    reports: Receiver<Report>,
    /// The last record of each job handed over and not yet reported, oldest first.
    in_flight: VecDeque<u64>,
    /// Closed when the thread ends (after a failure, the report saying what failed is queued
    /// first): a thread that waits on other things can wait on this too.
    gone: Receiver<Infallible>,
    /// The last record known durable.
    durable: u64,
    spare: Vec<Vec<Command>>,
}

impl JournalThread {
    /// Starts the thread around an open writer; `durable` is the last record already on disk.
    pub(crate) fn spawn(
        mut writer: JournalWriter,
        durable: u64,
        dir: &Path,
    ) -> Result<JournalThread, StoreError> {
        let (jobs, inbox) = crossbeam_channel::unbounded::<Job>();
        let (report, reports) = crossbeam_channel::unbounded::<Report>();
        let (alive, gone) = crossbeam_channel::bounded::<Infallible>(0);
        thread::Builder::new()
            .name("ipsx-journal".into())
            .spawn(move || {
                // Dropped as the thread ends, which closes `gone`.
                let _alive = alive;
                let mut log = None;
                let mut encoder = Encoder::default();
                let mut taken = Vec::new();
                while let Ok(first) = inbox.recv() {
                    // Commits queued behind the first share its sync (and its round trip to
                    // the replicated log): under light load each batch is small, and one
                    // fdatasync for all that waits keeps latency down.
                    taken.push(first);
                    while taken.last().is_some_and(Job::is_commit)
                        && let Ok(next) = inbox.try_recv()
                    {
                        taken.push(next);
                    }
                    if !run(&mut writer, &mut log, &mut encoder, &mut taken, &report) {
                        // After a failed write the journal may hold part of a group: nothing
                        // more goes after it (the jobs still queued are dropped, unanswered).
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::io(dir, e))?;
        Ok(JournalThread {
            jobs,
            reports,
            in_flight: VecDeque::new(),
            gone,
            durable,
            spare: Vec::new(),
        })
    }

    /// Hands the group over (if it holds anything, or `then` must wait for the groups
    /// before it); returns immediately.
    pub(crate) fn start(
        &mut self,
        group: &mut GroupBuffer,
        then: Option<OnDurable>,
    ) -> Result<(), StoreError> {
        if group.is_empty() && then.is_none() {
            return Ok(());
        }
        let group_taken = if group.is_empty() {
            Group::default()
        } else {
            group.take(self.spare.pop().unwrap_or_default())
        };
        self.send(Job::Commit {
            group: group_taken,
            bytes: Vec::new(),
            last_seq: group.last_seq(),
            then,
        })?;
        self.in_flight.push_back(group.last_seq());
        Ok(())
    }

    /// Takes in the reports of jobs already done, without waiting.
    pub(crate) fn poll(&mut self) -> Result<u64, StoreError> {
        while !self.in_flight.is_empty() && !self.reports.is_empty() {
            self.wait_one()?;
        }
        Ok(self.durable)
    }

    /// Closes the segment once everything before is durable and starts the next at
    /// `next_seq`; waits for it.
    pub(crate) fn rotate(&mut self, next_seq: u64) -> Result<(), StoreError> {
        self.wait_all()?;
        self.send(Job::Rotate { next_seq })?;
        self.in_flight.push_back(next_seq - 1);
        self.wait_one().map(|_| ())
    }

    /// Hands every group after those already handed over to `log` before writing it;
    /// waits until the change is made.
    pub(crate) fn replicate_to(&mut self, log: Box<dyn Replicator>) -> Result<(), StoreError> {
        self.wait_all()?;
        let last = self.durable;
        self.send(Job::Replicate(log))?;
        self.in_flight.push_back(last);
        self.wait_one().map(|_| ())
    }

    /// Ready (closed) once the thread has ended: a writer waiting for commands selects on it
    /// too, or a failed group whose submitters all wait would leave it waiting for ever.
    pub(crate) fn gone(&self) -> &Receiver<Infallible> {
        &self.gone
    }

    /// Groups handed over and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for the oldest job in flight; returns the last record durable after it.
    pub(crate) fn wait_one(&mut self) -> Result<u64, StoreError> {
        let Some(last_seq) = self.in_flight.pop_front() else {
            return Ok(self.durable);
        };
        let (outcome, commands) = self
            .reports
            .recv()
            .map_err(|_| StoreError::JournalStopped)?;
        outcome?;
        if commands.capacity() > 0 && self.spare.len() < 2 {
            self.spare.push(commands);
        }
        self.durable = self.durable.max(last_seq);
        Ok(self.durable)
    }

    /// Waits until every job handed over is done.
    pub(crate) fn wait_all(&mut self) -> Result<u64, StoreError> {
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        Ok(self.durable)
    }

    /// Hands a job over. The thread stops after a failure, and its report of what failed may
    /// still wait unread: that is the error to give, not that the thread is gone.
    fn send(&mut self, job: Job) -> Result<(), StoreError> {
        if self.jobs.send(job).is_ok() {
            return Ok(());
        }
        while let Ok((outcome, _)) = self.reports.try_recv() {
            outcome?;
        }
        Err(StoreError::JournalStopped)
    }
}
