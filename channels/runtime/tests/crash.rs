//! Kill -9 in the middle of a proof stream loses nothing: every amount the receiver
//! acknowledged is in its store, the payer's store holds at least every amount it sent, and a
//! restarted payer never signs an amount it signed before (the receiver would refuse it).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ipsx_channels::ChannelId;
use ipsx_channels_runtime::store::ProofStore;

fn last_number(lines: &[String], prefix: &str) -> u128 {
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0, |n| n.trim().parse().expect("number"))
}

fn run_and_kill(dir: &std::path::Path, after_acks: usize) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipsx-channels"))
        .args(["stream", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut acks = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if line.starts_with("ack ") {
            acks += 1;
        }
        lines.push(line);
        if acks >= after_acks {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    lines
}

#[test]
fn killing_the_stream_loses_no_acknowledged_proof_and_never_resigns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut previous_sent = 0;
    for (round, acks) in [(1, 300), (2, 57), (3, 1)] {
        let lines = run_and_kill(dir.path(), acks);
        let start = lines.first().expect("start line");
        let acked = last_number(&lines, "ack ");
        let sent = last_number(&lines, "sent ");
        assert!(acked > 0, "round {round}: {start}");
        assert!(
            start.starts_with(&format!("start signed={previous_sent} ")),
            "round {round}: a restarted payer starts from its persisted amount: {start}"
        );
        let first_sent: u128 = lines
            .iter()
            .find_map(|l| l.strip_prefix("sent "))
            .expect("sent")
            .parse()
            .expect("n");
        assert!(
            first_sent > previous_sent,
            "round {round}: a restarted payer signs above {previous_sent}, got {first_sent}"
        );
        let payer = ProofStore::open(&dir.path().join("payer.redb")).expect("payer store");
        let receiver = ProofStore::open(&dir.path().join("receiver.redb")).expect("receiver store");
        let stored = receiver
            .latest_received(ChannelId(1))
            .expect("read")
            .expect("a proof");
        assert!(
            stored.amount >= acked,
            "round {round}: acked {acked}, stored {}",
            stored.amount
        );
        let highest = payer.highest_signed(ChannelId(1)).expect("read");
        assert!(
            highest >= sent,
            "round {round}: sent {sent}, persisted {highest}"
        );
        assert!(highest >= stored.amount);
        previous_sent = highest;
    }
    // A clean run after the kills: the stream goes on from where it stood.
    let output = Command::new(env!("CARGO_BIN_EXE_ipsx-channels"))
        .args(["stream", "--steps", "10", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("ack {}", previous_sent + 10 * 1_000)),
        "{text}"
    );
}
