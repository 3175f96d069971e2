//! Three nats-servers and three engine nodes on loopback, leasing under load. A nats-server is
//! killed with SIGKILL, then the leading node: another node takes over within seconds, and
//! every deal any leader acknowledged is on every node, which all reach the same state hash,
//! with no IP booked twice at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipsx_engine::DealId;
use ipsx_engine_cluster::check;
use ipsx_engine_cluster::local::LocalNats;

/// A node's process and the pipe whose closing stops it.
type Running = (Child, Option<ChildStdin>);

/// A node process kept running the way a supervisor (systemd's `Restart=`) would: a node that
/// stops leading or following exits with status 3 and is started again from its disk.
struct Node {
    name: String,
    data: PathBuf,
    nats: Vec<String>,
    /// Everything it printed, across restarts (an `exited` line marks each end).
    lines: Arc<Mutex<Vec<String>>>,
    process: Arc<Mutex<Option<Running>>>,
    /// What the supervisor does when the process is gone.
    mode: Arc<AtomicU8>,
    supervisor: Option<thread::JoinHandle<()>>,
}

const RESTART: u8 = 0;
const HOLD: u8 = 1;
const STOPPING: u8 = 2;

impl Node {
    fn start(name: &str, data: &Path, nats: &[String]) -> Node {
        let mut node = Node {
            name: name.to_string(),
            data: data.to_path_buf(),
            nats: nats.to_vec(),
            lines: Arc::default(),
            process: Arc::default(),
            mode: Arc::new(AtomicU8::new(RESTART)),
            supervisor: None,
        };
        *node.process.lock().expect("process") = Some(node.spawn());
        let (process, mode, lines) = (
            Arc::clone(&node.process),
            Arc::clone(&node.mode),
            Arc::clone(&node.lines),
        );
        let respawn = node.spawner();
        node.supervisor = Some(thread::spawn(move || {
            loop {
                thread::sleep(Duration::from_millis(20));
                let mut slot = process.lock().expect("process");
                let ended = match slot.as_mut() {
                    Some((child, _)) => child.try_wait().expect("status").is_some(),
                    None => true,
                };
                if !ended {
                    continue;
                }
                if slot.is_some() {
                    lines.lock().expect("lines").push("exited".into());
                    *slot = None;
                }
                match mode.load(Ordering::SeqCst) {
                    RESTART => *slot = Some(respawn()),
                    STOPPING => return,
                    _ => {}
                }
            }
        }));
        node
    }

    /// What starts the process again, for the supervisor.
    fn spawner(&self) -> impl Fn() -> Running + Send + 'static {
        let (name, data, nats, lines) = (
            self.name.clone(),
            self.data.clone(),
            self.nats.clone(),
            Arc::clone(&self.lines),
        );
        move || spawn(&name, &data, &nats, &lines)
    }

    fn spawn(&self) -> Running {
        spawn(&self.name, &self.data, &self.nats, &self.lines)
    }

    fn printed(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| line.starts_with(prefix))
            .count()
    }

    /// Whether its running process's last word is that it leads.
    fn leads(&self) -> bool {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .rev()
            .find(|line| !line.starts_with("ack"))
            .is_some_and(|line| line.starts_with("leading"))
    }

    /// Every `ack <seq> <deal>` line.
    fn acks(&self) -> Vec<(u64, u64)> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| {
                let mut words = line.strip_prefix("ack ")?.split(' ');
                Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
            })
            .collect()
    }

    /// SIGKILL, and no restart until [`Node::resume`].
    fn kill(&self) {
        self.mode.store(HOLD, Ordering::SeqCst);
        if let Some((mut child, _)) = self.process.lock().expect("process").take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
            self.lines.lock().expect("lines").push("exited".into());
        }
    }

    /// Lets the supervisor start it again.
    fn resume(&self) {
        self.mode.store(RESTART, Ordering::SeqCst);
    }

    /// Closes stdin (a clean stop) and waits for the process.
    fn stop(mut self) {
        self.mode.store(STOPPING, Ordering::SeqCst);
        let taken = self.process.lock().expect("process").take();
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let status = child.wait().expect("node exits");
            if !(status.success() || status.code() == Some(3)) {
                dump_logs();
            }
            assert!(
                status.success() || status.code() == Some(3),
                "{} stopped with {status}",
                self.name
            );
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.join().expect("supervisor");
        }
    }
}

fn spawn(name: &str, data: &Path, nats: &[String], lines: &Arc<Mutex<Vec<String>>>) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipsx-engine-cluster"))
        .args(["run", "--node", name, "--load", "2"])
        .arg("--data")
        .arg(data)
        .arg("--nats")
        .arg(nats.join(","))
        .arg("--advertise")
        .arg(format!("http://{name}.invalid"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    let sink = Arc::clone(lines);
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    let stdin = child.stdin.take();
    (child, stdin)
}

/// Polls `done` until it holds, failing with `what` after a deadline.
fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            dump_logs();
            panic!("timed out waiting: {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

thread_local! {
    /// The folder of the nodes' logs, printed when the story fails.
    static LOGS: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

fn dump_logs() {
    let Some(dir) = LOGS.with(|logs| logs.borrow().clone()) else {
        return;
    };
    let nats = std::fs::read_dir(dir.join("nats"))
        .into_iter()
        .flatten()
        .flatten();
    for entry in std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .chain(nats)
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text
                .lines()
                .filter(|line| !line.contains("sending again"))
                .rev()
                .take(25)
                .collect();
            eprintln!("==== {}", path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn leader(nodes: &[Node]) -> Option<usize> {
    nodes.iter().position(Node::leads)
}

fn acknowledged(nodes: &[Node]) -> usize {
    nodes.iter().map(|node| node.printed("ack")).sum()
}

#[test]
fn the_cluster_survives_a_dead_nats_server_and_a_dead_leader_and_loses_no_acknowledged_deal() {
    // IPSX_KEEP=1 keeps the folder (logs, stores) for a look after a failure.
    let dir = tempfile::Builder::new()
        .prefix("ipsx-failover-")
        .disable_cleanup(std::env::var_os("IPSX_KEEP").is_some())
        .tempdir()
        .expect("temp dir");
    LOGS.with(|logs| *logs.borrow_mut() = Some(dir.path().to_path_buf()));
    let mut servers = LocalNats::start(&dir.path().join("nats"), 3).expect("nats-server runs");
    let nats = servers.urls();
    let nodes: Vec<Node> = (1..=3)
        .map(|n| Node::start(&format!("n{n}"), &dir.path().join(format!("n{n}")), &nats))
        .collect();

    // One node leads and leases.
    wait(
        "a leader acknowledging deals",
        Duration::from_secs(90),
        || acknowledged(&nodes) >= 300,
    );

    // A nats-server dies: two of three still make a quorum, and leasing goes on (if the
    // streams' leaders were on it, JetStream elects others; the node leading may lose its
    // lease meanwhile, stop and be restarted: another then leads).
    servers.kill(2).expect("kill nats-server");
    let before = acknowledged(&nodes);
    wait(
        "leases after a nats-server died",
        Duration::from_secs(90),
        || acknowledged(&nodes) >= before + 300,
    );

    // The leader dies mid-load, and stays dead for now.
    wait("a leader", Duration::from_secs(60), || {
        leader(&nodes).is_some()
    });
    let first = leader(&nodes).expect("a leader");
    nodes[first].kill();
    let killed_at = Instant::now();
    wait("another node to lead", Duration::from_secs(60), || {
        leader(&nodes).is_some_and(|index| index != first)
    });
    let failover = killed_at.elapsed();
    let before = acknowledged(&nodes);
    wait(
        "the new leader acknowledging deals",
        Duration::from_secs(90),
        || acknowledged(&nodes) >= before + 300,
    );
    eprintln!("failover took {failover:?}");

    // The old leader comes back from its disk and follows; the dead server comes back too.
    servers.restart(2).expect("nats-server back");
    let seen = nodes[first].lines.lock().expect("lines").len();
    nodes[first].resume();
    wait("the old leader to follow", Duration::from_secs(60), || {
        let lines = nodes[first].lines.lock().expect("lines");
        lines[seen..]
            .iter()
            .any(|line| line.starts_with("following"))
    });

    // Stop everything cleanly, then bring each node's disk up to the log's end.
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for node in &nodes {
        acked.extend(node.acks());
    }
    let datas: Vec<PathBuf> = nodes.iter().map(|node| node.data.clone()).collect();
    for node in nodes {
        node.stop();
    }
    let mut states = Vec::new();
    for data in &datas {
        states.push(
            check::caught_up(data, &nats, "ipsx", Duration::from_secs(60))
                .expect("a stopped node catches up with the log"),
        );
    }
    let (end, hash, engine) = &states[0];
    for (other_end, other_hash, _) in &states[1..] {
        assert_eq!(other_end, end);
        assert_eq!(other_hash, hash, "every node reaches the same state");
    }

    // Every acknowledged deal is there, each under one record, and no deal was acknowledged
    // twice (two leaders would have made the same id twice).
    let mut by_deal: BTreeMap<u64, u64> = BTreeMap::new();
    for (seq, deal) in &acked {
        assert!(seq <= end, "acknowledged record {seq} is in the log");
        if let Some(earlier) = by_deal.insert(*deal, *seq) {
            panic!("deal {deal} acknowledged by records {earlier} and {seq}");
        }
        assert!(
            engine.deal(DealId(*deal)).is_some(),
            "acknowledged deal {deal} is on every node"
        );
    }
    assert!(acked.len() >= 900, "{} deals acknowledged", acked.len());
    assert_eq!(
        check::double_booked(engine),
        None,
        "no IP held twice at once"
    );
}
