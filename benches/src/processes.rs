//! Processes the load harnesses start (the `ipsx` binary, nginx) and wait for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use std::time::{Duration, Instant};

/// A child process, killed with the harness.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx's master: SIGTERM so it stops its workers too (a SIGKILL would orphan them).
pub struct Nginx(pub Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Waits (10 s at most) until `url` answers at all.
pub async fn wait_http(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if reqwest::get(url).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} does not answer")
}

/// Starts `ipsx ARGS` and returns it with the rest of the line starting with `prefix`.
pub fn spawn_ipsx(ipsx: &Path, args: &[&str], prefix: &str) -> anyhow::Result<(Process, String)> {
    let mut child = Command::new(ipsx)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p ipsx-cli)",
                ipsx.display()
            )
        })?;
    let stdout = child.stdout.take().context("stdout")?;
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let found = loop {
        let line = lines.next().context("the process ended early")??;
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_owned();
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((process, found))
}
