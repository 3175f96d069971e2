//! A leader and a follower sharing one log: the follower reaches the leader's state, takes no
//! commands, and a leader whose log refuses a group writes and acknowledges none of it.
//!
//! The log here is a vector behind a mutex with the one rule a real replicated log enforces
//! (a record must follow the last one); the cluster crate's tests run the same story over
//! NATS JetStream.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipsx_engine_runtime::journal::split_records;
use ipsx_engine_runtime::workload::mixed_stream;
use ipsx_engine_runtime::{
    Replicator, Role, ShardConfig, ShardHandle, StoreConfig, StoreError, SubmitError,
};

/// The shared log: each record's bytes, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Vec<u8>>>>);

impl Log {
    fn len(&self) -> u64 {
        self.0.lock().expect("the log").len() as u64
    }

    /// Records `from + 1 ..= to`, back to back.
    fn after(&self, from: u64, to: u64) -> Vec<u8> {
        self.0.lock().expect("the log")[from as usize..to as usize].concat()
    }

    /// Record `seq`'s bytes.
    fn record(&self, seq: u64) -> Vec<u8> {
        self.0.lock().expect("the log")[seq as usize - 1].clone()
    }

    fn push(&self, record: Vec<u8>) {
        self.0.lock().expect("the log").push(record);
    }
}

/// Appends to the log as a leader would, refusing a record that does not follow.
struct Appender(Log);

impl Replicator for Appender {
    fn replicate(&mut self, groups: &[&[u8]]) -> Result<(), StoreError> {
        let mut log = self.0.0.lock().expect("the log");
        for (seq, record) in groups.iter().flat_map(|group| split_records(group)) {
            if seq != log.len() as u64 + 1 {
                return Err(StoreError::Replication(format!(
                    "record {seq} does not follow the log's {}",
                    log.len()
                )));
            }
            log.push(record.to_vec());
        }
        Ok(())
    }
}

fn shard(dir: &Path, role: Role) -> ShardHandle {
    let mut config = ShardConfig::new(StoreConfig::new(dir));
    config.tick_every = None;
    config.role = role;
    ShardHandle::start(config).expect("shard starts")
}

fn state(shard: &ShardHandle) -> [u8; 32] {
    shard.query(|engine| engine.state_hash()).expect("read")
}

fn durable(shard: &ShardHandle) -> u64 {
    shard.stats().durable_seq.load(Ordering::Acquire)
}

/// Polls until the shard holds record `seq` durably, or fails after a deadline.
fn wait_for(shard: &ShardHandle, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while durable(shard) < seq {
        assert!(shard.writer_alive(), "the follower stopped before {seq}");
        assert!(
            Instant::now() < deadline,
            "the follower never reached {seq}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls until the shard's writer has stopped, or fails after a deadline.
fn wait_until_stopped(shard: &ShardHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while shard.writer_alive() {
        assert!(Instant::now() < deadline, "the writer goes on");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A node that starts following and is promoted to lead through `log`.
fn leader(dir: &Path, log: &Log) -> ShardHandle {
    let shard = shard(dir, Role::Follower);
    shard
        .promote(Box::new(Appender(log.clone())))
        .expect("promoted");
    assert!(shard.is_leading());
    shard
}

/// Submits stream commands `range`; returns the records acknowledged.
fn submit(shard: &ShardHandle, range: std::ops::Range<u64>) -> Vec<u64> {
    range
        .filter_map(|index| {
            let command = mixed_stream(index);
            let outcome = shard
                .submit_at(Some(command.at), command.kind)
                .expect("answered");
            outcome.seq
        })
        .collect()
}

#[test]
fn a_follower_applying_the_leaders_log_reaches_the_same_state_and_takes_no_commands() {
    let (a, b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let log = Log::default();
    let lead = leader(a.path(), &log);
    let acknowledged = submit(&lead, 0..3_000);
    assert!(acknowledged.len() > 1_000, "most of the stream is accepted");
    // Everything acknowledged is in the log, in order, and nothing else.
    assert_eq!(log.len(), *acknowledged.last().expect("acknowledged"));

    let follower = shard(b.path(), Role::Follower);
    assert!(matches!(
        follower.submit(mixed_stream(0).kind),
        Err(SubmitError::NotLeader)
    ));
    // In three pieces, the second read again from an earlier point (a consumer restarted):
    // records it holds are skipped.
    follower.replicate_in(log.after(0, 500)).expect("queued");
    follower
        .replicate_in(log.after(200, 1_500))
        .expect("queued");
    follower
        .replicate_in(log.after(1_500, log.len()))
        .expect("queued");
    wait_for(&follower, log.len());
    assert_eq!(state(&follower), state(&lead));

    // Restarted from its own disk, the follower needs only what came after.
    drop(follower);
    let follower = shard(b.path(), Role::Follower);
    assert_eq!(follower.recovery().last_seq, log.len());
    let more = submit(&lead, 3_000..3_500);
    follower
        .replicate_in(log.after(follower.recovery().last_seq, log.len()))
        .expect("queued");
    wait_for(&follower, *more.last().expect("acknowledged"));
    assert_eq!(state(&follower), state(&lead));
}

#[test]
fn a_leader_whose_log_refuses_a_group_acknowledges_and_writes_none_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::default();
    let lead = leader(dir.path(), &log);
    let acknowledged = submit(&lead, 0..400);
    let before = log.len();
    assert_eq!(before, *acknowledged.last().expect("acknowledged"));

    // Another node took over and appended: this one's next group no longer follows.
    log.push(log.record(1));
    let command = mixed_stream(400);
    let refused = lead.submit_at(Some(command.at), command.kind);
    assert!(
        matches!(refused, Err(SubmitError::Stopped)),
        "the submitter hears the shard stopped, not a success: {refused:?}"
    );
    wait_until_stopped(&lead);
    drop(lead);

    // Nothing of the refused group reached the local journal: it is still a prefix of the log.
    let again = shard(dir.path(), Role::Follower);
    assert_eq!(again.recovery().last_seq, before);
}

#[test]
fn a_leader_that_steps_down_writes_nothing_more_and_stops_cleanly_once_another_leads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::default();
    // A leader whose clock ticks every millisecond: while it leads, each turn of its writer
    // journals a tick, and hands it to the log.
    let mut config = ShardConfig::new(StoreConfig::new(dir.path()));
    config.tick_every = Some(Duration::from_millis(1));
    config.role = Role::Follower;
    let lead = ShardHandle::start(config).expect("shard starts");
    lead.promote(Box::new(Appender(log.clone())))
        .expect("promoted");
    submit(&lead, 0..200);

    lead.step_down().expect("stepped down");
    // Everything written before is in the log.
    let written = durable(&lead);
    assert_eq!(log.len(), written);
    assert!(!lead.is_leading());
    assert!(matches!(
        lead.submit(mixed_stream(200).kind),
        Err(SubmitError::NotLeader)
    ));

    // The lease goes to another node, which appends: a group from this one no longer follows.
    log.push(log.record(1));
    // Turns of the writer, over more than a dozen tick periods: none journals a tick.
    let started = Instant::now();
    let mut turns = 0;
    while turns < 20 || started.elapsed() < Duration::from_millis(20) {
        state(&lead);
        turns += 1;
    }
    assert!(lead.writer_alive(), "the writer wrote under a lost lease");
    assert_eq!(durable(&lead), written);
    lead.shutdown()
        .expect("a shard that stepped down stops cleanly");
}

#[test]
fn a_follower_handed_a_forged_record_stops_without_applying_it() {
    let (a, b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let log = Log::default();
    let lead = leader(a.path(), &log);
    submit(&lead, 0..200);
    let follower = shard(b.path(), Role::Follower);
    follower.replicate_in(log.after(0, 100)).expect("queued");
    wait_for(&follower, 100);

    // Record 101 with one byte of its command changed: the checksum no longer matches.
    let mut forged = log.record(101);
    let last = forged.len() - 1;
    forged[last] ^= 0x40;
    let _ = follower.replicate_in(forged);
    let deadline = Instant::now() + Duration::from_secs(30);
    while follower.writer_alive() {
        assert!(
            Instant::now() < deadline,
            "the follower took a forged record"
        );
        thread::sleep(Duration::from_millis(1));
    }
    drop(follower);
    let again = shard(b.path(), Role::Follower);
    assert_eq!(again.recovery().last_seq, 100);
}
