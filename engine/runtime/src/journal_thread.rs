//! The journal's own thread: it writes and syncs each group commit while the thread that
//! applies commands goes on with the next batch, so matching and `fdatasync` use both cores.
//!
//! Groups are committed in the order they are handed over and reported back in that order;
//! the caller answers a batch's submitters only once its group is reported durable. Buffers
//! travel back with the reports, so a steady stream of groups allocates nothing.

use std::collections::VecDeque;
use std::path::Path;
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::error::StoreError;
use crate::journal::{GroupBuffer, JournalWriter};

enum Job {
    /// Write (and sync, by the policy) a group whose last record is `last_seq`.
    Commit { bytes: Vec<u8>, last_seq: u64 },
    /// Close the segment and start the next at `next_seq`.
    Rotate { next_seq: u64 },
}

/// What the thread reports per job: the outcome, and the emptied buffer to reuse.
type Report = (Result<(), StoreError>, Vec<u8>);

/// The handle of the journal thread.
pub(crate) struct JournalThread {
    jobs: Sender<Job>,
    reports: Receiver<Report>,
    /// The last record of each job handed over and not yet reported, oldest first.
    in_flight: VecDeque<u64>,
    /// The last record known durable.
    durable: u64,
    spare: Vec<Vec<u8>>,
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
        thread::Builder::new()
            .name("ipsx-journal".into())
            .spawn(move || {
                for job in inbox {
                    let (outcome, mut bytes) = match job {
                        Job::Commit { bytes, last_seq } => {
                            (writer.commit(&bytes, last_seq + 1), bytes)
                        }
                        Job::Rotate { next_seq } => (writer.rotate(next_seq), Vec::new()),
                    };
                    bytes.clear();
                    if report.send((outcome, bytes)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::io(dir, e))?;
        Ok(JournalThread {
            jobs,
            reports,
            in_flight: VecDeque::new(),
            durable,
            spare: Vec::new(),
        })
    }

    /// Hands the group over, if it holds anything; returns immediately.
    pub(crate) fn start(&mut self, group: &mut GroupBuffer) -> Result<(), StoreError> {
        if group.is_empty() {
            return Ok(());
        }
        let spare = self.spare.pop().unwrap_or_default();
        let bytes = group.take(spare);
        self.send(Job::Commit {
            bytes,
            last_seq: group.last_seq(),
        })?;
        self.in_flight.push_back(group.last_seq());
        Ok(())
    }

    /// Closes the segment once everything before is durable and starts the next at
    /// `next_seq`; waits for it.
    pub(crate) fn rotate(&mut self, next_seq: u64) -> Result<(), StoreError> {
        self.wait_all()?;
        self.send(Job::Rotate { next_seq })?;
        self.in_flight.push_back(next_seq - 1);
        self.wait_one().map(|_| ())
    }

    /// Groups handed over and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The last record known durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// Waits for the oldest job in flight; returns the last record durable after it.
    pub(crate) fn wait_one(&mut self) -> Result<u64, StoreError> {
        let Some(last_seq) = self.in_flight.pop_front() else {
            return Ok(self.durable);
        };
        let (outcome, bytes) = self.reports.recv().map_err(|_| stopped())?;
        outcome?;
        if bytes.capacity() > 0 && self.spare.len() < 2 {
            self.spare.push(bytes);
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

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Corrupt("the journal thread has stopped".to_string())
}
