//! Processes the load harnesses start (the `ipsx` binary, nginx) and wait for.

use std::process::{Child, Command};
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
