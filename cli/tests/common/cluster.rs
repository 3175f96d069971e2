//! A cluster of `ipsx node --cluster` processes as an operator runs them: each under a
//! supervisor that starts it again when it exits, and the calls that find who leads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipsx_sdk::{ClusterRole, ClusterView};

use super::{IPSX, free_port};

/// An `ipsx node` process kept running by a supervisor thread, as systemd's `Restart=` would.
pub struct Supervised {
    pub url: String,
    pub data: PathBuf,
    pid: Arc<AtomicU32>,
    pub starts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// While set, a node that exits is not started again (its machine is down).
    held: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Supervised {
    /// Starts `ipsx node --cluster` as node `id` (data and log under `dir`), with `extra`
    /// arguments.
    pub fn start(id: &str, dir: &Path, nats: &[String], extra: &[&str]) -> Supervised {
        let port = free_port(&["127.0.0.1"]);
        let url = format!("http://127.0.0.1:{port}");
        let data = dir.join(id);
        let log = dir.join(format!("{id}.log"));
        let args: Vec<String> = [
            "node",
            "--no-offer-probe",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.display().to_string(),
            "--cluster",
            &nats.join(","),
            "--node-id",
            id,
            // The fleet's two tasks lease as fast as the cluster answers.
            "--session-rate",
            "100000",
        ]
        .iter()
        .chain(extra)
        .map(|arg| arg.to_string())
        .collect();
        let pid = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (pid, starts, stop) = (Arc::clone(&pid), Arc::clone(&starts), Arc::clone(&stop));
            let held = Arc::clone(&held);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (lock, turned) = &*held;
                    drop(
                        turned
                            .wait_while(lock.lock().expect("hold"), |held| *held)
                            .expect("hold"),
                    );
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let stderr = File::options()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .expect("log file");
                    let mut child = Command::new(IPSX)
                        .args(&args)
                        .env("RUST_LOG", "info")
                        .stdout(Stdio::null())
                        .stderr(stderr)
                        .spawn()
                        .expect("ipsx node starts");
                    pid.store(child.id(), Ordering::SeqCst);
                    starts.fetch_add(1, Ordering::SeqCst);
                    // Stopped while starting it: the stop signalled the pid before this one.
                    if stop.load(Ordering::SeqCst) {
                        let _ = child.kill();
                    }
                    let _ = child.wait();
                }
            })
        };
        Supervised {
            url,
            data,
            pid,
            starts,
            stop,
            held,
            thread: Some(thread),
        }
    }

    pub fn hold(&self, held: bool) {
        let (lock, turned) = &*self.held;
        *lock.lock().expect("hold") = held;
        turned.notify_all();
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.pid.load(Ordering::SeqCst).to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the node for good (SIGTERM: a clean stop) and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.signal("-TERM");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.hold(false);
        self.signal("-KILL");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A folder for a story's nodes and servers, removed at the end unless `IPSX_KEEP` is set
/// (then kept for a look after a failure, and named on stderr). Hold the guard to the end.
pub fn story_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path().to_path_buf();
    match std::env::var_os("IPSX_KEEP") {
        Some(_) => {
            eprintln!("keeping {}", temp.keep().display());
            (root, None)
        }
        None => (root, Some(temp)),
    }
}

pub async fn view(http: &reqwest::Client, node: &Supervised) -> Option<ClusterView> {
    let response = http
        .get(format!("{}/v1/cluster", node.url))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Polls until `done` holds, or panics naming `what` after `within`.
pub async fn until<T>(what: &str, within: Duration, mut done: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = done().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (60 s at most) until every node answers.
pub async fn all_up(http: &reqwest::Client, nodes: &[Supervised]) {
    until("every node up", Duration::from_secs(60), async || {
        for node in nodes {
            view(http, node).await?;
        }
        Some(())
    })
    .await;
}

/// The node that leads, once one does.
pub async fn leader(http: &reqwest::Client, nodes: &[Supervised], within: Duration) -> usize {
    until("a leader", within, async || {
        let mut leading = None;
        for (at, node) in nodes.iter().enumerate() {
            // A node that is down does not answer; the others still tell.
            if view(http, node)
                .await
                .is_some_and(|view| view.role == ClusterRole::Leading)
            {
                leading = Some(at);
            }
        }
        leading
    })
    .await
}
