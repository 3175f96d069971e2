//! `nats-server` processes with JetStream on loopback: a one-machine cluster for tests,
//! benchmarks and trying the cluster out (`ipsx-engine-cluster nats`).
//!
//! Each server gets its own store folder and a free client port (and, with more than one
//! server, a route port; the servers route to each other as one JetStream cluster). The
//! binary is `nats-server` from `PATH`, or `$NATS_SERVER`. Servers are killed (SIGKILL) when
//! the [`LocalNats`] is dropped.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server of a [`LocalNats`].
struct Server {
    name: String,
    client: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Running `nats-server` processes forming one JetStream cluster on 127.0.0.1.
pub struct LocalNats {
    servers: Vec<Server>,
}

impl LocalNats {
    /// Starts `count` servers with their files under `dir`, and waits until each accepts
    /// connections. (JetStream then elects its leaders; a client retries until it answers.)
    pub fn start(dir: &Path, count: usize) -> io::Result<LocalNats> {
        fs::create_dir_all(dir)?;
        let mut clients = free_ports(2 * count)?;
        let routes = clients.split_off(count);
        let mut servers = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("nats-{}", index + 1);
            let store = dir.join(format!("{name}-store"));
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n",
                clients[index],
                store.display()
            );
            if count > 1 {
                let peers: Vec<String> = routes
                    .iter()
                    .map(|port| format!("nats-route://127.0.0.1:{port}"))
                    .collect();
                let _ = write!(
                    config,
                    "cluster {{\n  name: ipsx\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[index],
                    peers.join(", ")
                );
            }
            let path = dir.join(format!("{name}.conf"));
            fs::write(&path, config)?;
            servers.push(Server {
                log: dir.join(format!("{name}.log")),
                name,
                client: clients[index],
                config: path,
                child: None,
            });
        }
        let mut nats = LocalNats { servers };
        for index in 0..count {
            nats.spawn(index)?;
        }
        for index in 0..count {
            nats.wait_listening(index)?;
        }
        Ok(nats)
    }

    /// The servers' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| format!("nats://127.0.0.1:{}", server.client))
            .collect()
    }

    /// Kills server `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) -> io::Result<()> {
        if let Some(mut child) = self.servers[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts server `index` again on its port and store, and waits until it listens.
    pub fn restart(&mut self, index: usize) -> io::Result<()> {
        self.kill(index)?;
        self.spawn(index)?;
        self.wait_listening(index)
    }

    fn spawn(&mut self, index: usize) -> io::Result<()> {
        let server = &mut self.servers[index];
        let binary = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}): install nats-server (scripts/test.sh installs \
                         Debian's, pinned) or point NATS_SERVER at one",
                        binary.to_string_lossy()
                    ),
                )
            })?;
        server.child = Some(child);
        Ok(())
    }

    fn wait_listening(&mut self, index: usize) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = SocketAddr::from(([127, 0, 0, 1], self.servers[index].client));
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let server = &mut self.servers[index];
            let exited = match server.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() >= deadline {
                let log = fs::read_to_string(&server.log).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{} did not start listening on {address}; its log:\n{log}",
                    server.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            let _ = self.kill(index);
        }
    }
}

/// `count` distinct free loopback ports. The listeners are held until all are picked: one
/// dropped before the next bind lets the kernel hand the same port out twice, and two servers
/// of one cluster then claim the same route port.
fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}
