//! What the `ipsx` process tests share: processes that die with the test, their stdout as
//! lines, a site that answers with the caller's IP, curl, and a local chain with the real
//! contracts.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod paying;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ipsx_channels::SigningKey;
use ipsx_channels_runtime::chain::ChainClient;
use ipsx_channels_runtime::devnet::{DeploySettings, Deployment, deploy_local, spawn_anvil};
use ipsx_sdk::Wallet;

pub const IPSX: &str = env!("CARGO_BIN_EXE_ipsx");
pub const TOKEN: u128 = 1_000_000_000_000_000_000;

/// A child process killed when the test ends.
pub struct Process(pub Child);

impl Process {
    /// SIGTERM, then waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ipsx ARGS` and hands back its stdout lines as they come.
/// A request for `count` IPs in `country` carrying HTTP, for `seconds`, at most `max_price`
/// per IP-second.
pub fn http_lease(count: u32, seconds: u64, country: &str, max_price: u128) -> ipsx_sdk::LeaseBody {
    ipsx_sdk::LeaseBody::new(count, seconds, ipsx_sdk::TokenAmount(max_price))
        .countries([country])
        .protocols([ipsx_sdk::Protocol::Http])
}

/// The wall clock in unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn spawn(args: &[&str]) -> (Process, mpsc::Receiver<String>) {
    let mut child = Command::new(IPSX)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("ipsx starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even once nobody listens: a process whose stdout closes dies on its
        // next line (a broken pipe), which a test that dropped the lines did not ask for.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    (Process(child), receiver)
}

/// The next line starting with `prefix` (20 s at most).
pub fn wait_for(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within 20 s"));
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// A site answering every request with the IP it came from.
pub fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{peer}",
                    peer.len()
                );
            });
        }
    });
    addr
}

pub fn curl(proxy: &str, url: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "-x", proxy, url])
        .output()
        .expect("curl must be installed (scripts/test.sh does)")
}

/// A port free on all of `ips`.
pub fn free_port(ips: &[&str]) -> u16 {
    // A port handed out is free only until its process binds it: one handed out already in
    // this test is never handed out again (three nodes started at once got the same one).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind(format!("{}:0", ips[0]))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port)
            && ips
                .iter()
                .all(|ip| TcpListener::bind(format!("{ip}:{port}")).is_ok())
        {
            given.push(port);
            return port;
        }
    }
}

/// anvil with the real contracts: wallet 0 is the node (and treasury) with 1,000 IPSX
/// deposited for provider channels, wallet 1 a fleet holding 100 IPSX, wallets 2… providers.
pub struct Chain {
    pub anvil: alloy::node_bindings::AnvilInstance,
    pub deployment: Deployment,
    pub node: ChainClient,
}

impl Chain {
    pub async fn start() -> Self {
        let anvil = spawn_anvil().expect("anvil (run `npm ci` in contracts/)");
        let node_key = key(&anvil, 0);
        let deployment = deploy_local(
            &anvil.endpoint(),
            &node_key,
            DeploySettings {
                commission_bps: 250,
                challenge_period: 3_600,
                treasury: node_key.address(),
            },
        )
        .await
        .expect("deploy");
        let node = ChainClient::connect(&anvil.endpoint(), deployment.centralizer, node_key)
            .await
            .expect("node client");
        node.deposit_with_permit(1_000 * TOKEN)
            .await
            .expect("node deposit");
        node.transfer_tokens(key(&anvil, 1).address(), 100 * TOKEN)
            .await
            .expect("fund the fleet");
        Self {
            anvil,
            deployment,
            node,
        }
    }

    pub fn wallet(&self, index: usize) -> Wallet {
        let bytes: [u8; 32] = self.anvil.keys()[index].to_bytes().into();
        Wallet::from_bytes(&bytes.into()).expect("anvil key")
    }

    /// `key_file` holding wallet `index`'s key.
    pub fn key_file(&self, dir: &std::path::Path, index: usize) -> std::path::PathBuf {
        let path = dir.join(format!("wallet-{index}.key"));
        let bytes: [u8; 32] = self.anvil.keys()[index].to_bytes().into();
        std::fs::write(&path, alloy_primitives::hex::encode(bytes)).expect("key file");
        path
    }

    /// `ipsx node` with payments and deal anchoring on `listen` (`127.0.0.1:0` for any port), keeping its state
    /// in `dir/node`; returns the process, its URL and its lines.
    pub fn node(
        &self,
        dir: &std::path::Path,
        listen: &str,
        extra: &[&str],
    ) -> (Process, String, mpsc::Receiver<String>) {
        let key_file = self.key_file(dir, 0);
        let data = dir.join("node");
        let centralizer = self.deployment.centralizer.to_string();
        let anchor = self.deployment.anchor.to_string();
        let rpc = self.anvil.endpoint();
        let mut args = vec![
            "node",
            "--listen",
            listen,
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--rpc-url",
            &rpc,
            "--centralizer",
            &centralizer,
            "--node-key-file",
            key_file.to_str().expect("utf-8"),
            "--provider-deposit",
            "100000000000000000000",
            "--anchor",
            &anchor,
        ];
        args.extend_from_slice(extra);
        let (process, lines) = spawn(&args);
        let url = format!(
            "http://{}",
            wait_for(&lines, "listening ").trim_start_matches("listening ")
        );
        (process, url, lines)
    }

    /// `ipsx provide` serving `offer` on `port`, once its offer is placed.
    pub fn provider(
        &self,
        dir: &std::path::Path,
        node: &str,
        port: u16,
        offer: Offer<'_>,
    ) -> (Process, mpsc::Receiver<String>) {
        let Offer {
            wallet: index,
            ips,
            country,
            price,
        } = offer;
        let key_file = self.key_file(dir, index);
        let config = dir.join(format!("provider-{index}.toml"));
        let ips: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "node = \"{node}\"\nkey_file = \"{}\"\nport = {port}\nallow_loopback = true\n\
                 rpc_url = \"{}\"\ndata_dir = \"provider-{index}\"\nsettle_every_secs = 3600\n\
                 [[offer]]\nips = [{}]\ncountry = \"{country}\"\nprotocols = [\"socks5\", \"http\", \"https\"]\n\
                 price = {price}\nhours = 1\n",
                key_file.display(),
                self.anvil.endpoint(),
                ips.join(", ")
            ),
        )
        .expect("config");
        let (process, lines) = spawn(&["provide", "--config", config.to_str().expect("utf-8")]);
        wait_for(&lines, "offer ");
        (process, lines)
    }
}

impl Chain {
    /// `ipsx provide` behind the node's relay, dialling from `bind` (its "public" IP on
    /// loopback), once its offer is placed; `extra` lines go into its config.
    pub fn relayed_provider(
        &self,
        dir: &std::path::Path,
        node: &str,
        wallet: usize,
        bind: &str,
        country: &str,
        price: u128,
    ) -> (Process, mpsc::Receiver<String>, std::path::PathBuf) {
        let key_file = self.key_file(dir, wallet);
        let config = dir.join(format!("relayed-{wallet}.toml"));
        std::fs::write(
            &config,
            format!(
                "node = \"{node}\"\nkey_file = \"{}\"\nallow_loopback = true\nrelay = true\n\
                 relay_bind = \"{bind}:0\"\nrpc_url = \"{}\"\ndata_dir = \"relayed-{wallet}\"\n\
                 settle_every_secs = 3600\n[[offer]]\ncountry = \"{country}\"\n\
                 protocols = [\"socks5\", \"http\", \"https\"]\nprice = {price}\nhours = 1\n",
                key_file.display(),
                self.anvil.endpoint(),
            ),
        )
        .expect("config");
        let (process, lines) = spawn(&["provide", "--config", config.to_str().expect("utf-8")]);
        wait_for(&lines, "offer ");
        (process, lines, config)
    }
}

/// What a provider process offers.
pub struct Offer<'a> {
    /// Its anvil wallet.
    pub wallet: usize,
    pub ips: &'a [&'a str],
    pub country: &'a str,
    /// Per IP-second.
    pub price: u128,
}

pub fn key(anvil: &alloy::node_bindings::AnvilInstance, index: usize) -> SigningKey {
    let bytes: [u8; 32] = anvil.keys()[index].to_bytes().into();
    SigningKey::from_bytes(&bytes).expect("anvil key")
}

/// An HTTPS site (self-signed for `localhost` and 127.0.0.1) answering with the IP each
/// request came from. Returns its address and the PEM certificate (for `curl --cacert`).
pub async fn tls_site() -> (SocketAddr, String) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, pem)
}
