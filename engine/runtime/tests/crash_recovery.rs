//! A process writing to its journal is killed with SIGKILL; on restart exactly the commands it
//! acknowledged (and possibly a few it had made durable but not yet acknowledged, never a gap)
//! are applied — checked against a fresh engine fed the same deterministic stream.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};

use ipsx_engine::{Engine, EngineConfig};
use ipsx_engine_runtime::workload::mixed_stream;
use ipsx_engine_runtime::{DurableEngine, StoreConfig};

/// An acknowledged command: its journal record (if it changed anything) and stream index.
struct Ack {
    seq: Option<u64>,
    index: u64,
}

fn spawn_writer(dir: &Path, from: u64, count: u64, fsync: &str) -> Child {
    Process::new(env!("CARGO_BIN_EXE_ipsx-engine"))
        .args(["crash-writer", "--data"])
        .arg(dir)
        .args([
            "--from",
            &from.to_string(),
            "--count",
            &count.to_string(),
            "--snapshot-every",
            "700",
            "--in-flight",
            "64",
            "--fsync",
            fsync,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the ipsx-engine binary starts")
}

/// Reads acks until `kill_after` of them (then SIGKILL) or the end of the output.
fn collect_acks(child: &mut Child, kill_after: Option<usize>) -> Vec<Ack> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acks = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 output");
        let mut words = line.split_whitespace();
        if words.next() != Some("ack") {
            continue;
        }
        let seq = words.next().expect("seq").parse().ok();
        let index = words.next().expect("index").parse().expect("index number");
        acks.push(Ack { seq, index });
        if kill_after == Some(acks.len()) {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    child.wait().expect("the writer exits");
    acks
}

/// Feeds the stream to a fresh engine, journaling as the store does, until `records` journal
/// records exist. Returns the engine, the next stream index, and each index's record.
fn expected_state(records: u64) -> (Engine, u64, Vec<Option<u64>>) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut events = Vec::new();
    let mut seq = 0u64;
    let mut produced = Vec::new();
    let mut index = 0u64;
    while seq < records {
        let command = mixed_stream(index);
        let clock_before = engine.now();
        let accepted = engine.apply(&command, &mut events).is_ok();
        if accepted || engine.now() != clock_before {
            seq += 1;
            produced.push(Some(seq));
        } else {
            produced.push(None);
        }
        events.clear();
        index += 1;
    }
    (engine, index, produced)
}

fn recover(dir: &Path) -> DurableEngine {
    DurableEngine::open(StoreConfig::new(dir))
        .expect("recovery succeeds")
        .0
}

fn check_acks_applied(acks: &[Ack], recovered: &DurableEngine) -> u64 {
    let highest_ack = acks.iter().filter_map(|a| a.seq).max().unwrap_or(0);
    assert!(
        recovered.last_seq() >= highest_ack,
        "acknowledged up to record {highest_ack}, recovered only {}",
        recovered.last_seq()
    );
    let (expected, next_index, produced) = expected_state(recovered.last_seq());
    for ack in acks {
        assert_eq!(
            produced.get(ack.index as usize).copied().flatten(),
            ack.seq,
            "stream command {} was acknowledged as record {:?}",
            ack.index,
            ack.seq
        );
    }
    assert_eq!(
        recovered.engine().state_hash(),
        expected.state_hash(),
        "the recovered state is not the acknowledged prefix of the stream"
    );
    next_index
}

fn kill_mid_stream_then_resume(fsync: &str) {
    let dir = tempfile::tempdir().expect("temp dir");

    let mut writer = spawn_writer(dir.path(), 0, 1_000_000, fsync);
    let acks = collect_acks(&mut writer, Some(6_000));
    assert_eq!(
        acks.len(),
        6_000,
        "the writer acknowledged commands before the kill"
    );
    let recovered = recover(dir.path());
    let next_index = check_acks_applied(&acks, &recovered);
    drop(recovered);

    // Kill it again right after a restart, then let a third run finish cleanly.
    let mut writer = spawn_writer(dir.path(), next_index, 1_000_000, fsync);
    let more = collect_acks(&mut writer, Some(1_500));
    let recovered = recover(dir.path());
    let next_index = check_acks_applied(&more, &recovered);
    drop(recovered);

    let mut writer = spawn_writer(dir.path(), next_index, 2_000, fsync);
    let last = collect_acks(&mut writer, None);
    assert_eq!(last.len(), 2_000);
    let recovered = recover(dir.path());
    check_acks_applied(&last, &recovered);
}

#[test]
fn sigkill_loses_nothing_acknowledged_with_fsync() {
    kill_mid_stream_then_resume("always");
}

#[test]
fn sigkill_loses_nothing_acknowledged_without_fsync() {
    // Killing a process leaves the OS page cache intact: written means kept.
    kill_mid_stream_then_resume("never");
}

/// Journal bytes the disk takes before it refuses more, in the test below.
const DISK_LIMIT_KIB: u64 = 512;

/// The disk refuses a journal write (a file-size limit stands in for a full disk: the write
/// fails with EFBIG where it would with ENOSPC). The writer must stop with the OS's error — not
/// hang with submitters waiting, not acknowledge what is not on disk — and a restart must hold
/// every acknowledged command and go on from there.
#[test]
fn a_refused_journal_write_stops_the_writer_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    // SIGXFSZ ignored, so the write fails instead of killing the process; `timeout` turns a
    // hang into a failure of this test rather than of the whole run.
    // bash's `ulimit -f` counts KiB (POSIX sh's may count 512-byte blocks).
    let mut writer = Process::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {DISK_LIMIT_KIB}; exec timeout -s KILL 120 \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_ipsx-engine"))
        .args(["crash-writer", "--data"])
        .arg(dir.path())
        .args(["--count", "1000000", "--snapshot-every", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ipsx-engine binary starts under a file-size limit");
    let mut stderr = writer.stderr.take().expect("piped stderr");
    let acks = collect_acks(&mut writer, None);
    let status = writer.wait().expect("the writer exits");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut said).expect("utf-8 stderr");

    assert!(
        !status.success(),
        "the writer went on after a refused write"
    );
    assert!(
        said.contains("File too large"),
        "the writer should say what the disk said; it said: {said}"
    );
    assert!(
        !acks.is_empty(),
        "commands were acknowledged before the disk refused"
    );
    let journal: u64 = std::fs::read_dir(dir.path())
        .expect("store folder")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert_eq!(
        journal,
        DISK_LIMIT_KIB * 1024,
        "the journal filled the disk"
    );

    // Restarted with room again: every acknowledged command is there (the group cut by the
    // refusal is a torn tail), and the shard goes on where that prefix ends.
    let recovered = recover(dir.path());
    let next_index = check_acks_applied(&acks, &recovered);
    drop(recovered);
    let mut writer = spawn_writer(dir.path(), next_index, 2_000, "always");
    let more = collect_acks(&mut writer, None);
    assert_eq!(more.len(), 2_000);
    check_acks_applied(&more, &recover(dir.path()));
}
