//! Helpers shared by the proxy's integration tests: lease credentials, loopback targets that
//! report the address a connection came from, a proxy on two provider IPs, real clients.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use ipsx_proxy::{
    CredentialKey, Credentials, Grant, Guard, LeaseTable, LeaseUsage, Protocols, ProxyConfig,
    ProxyHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const KEY: [u8; 32] = [0x42; 32];

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn grant(lease: u64, ip: &str, protocols: Protocols) -> Grant {
    Grant {
        lease,
        ip: ip.parse().expect("ip"),
        protocols,
        not_before: now() - 10,
        not_after: now() + 600,
    }
}

pub fn credentials(grant: &Grant) -> Credentials {
    CredentialKey::new(KEY).issue(grant)
}

/// A target that answers every HTTP request with the peer address it saw.
pub async fn echo_peer_server() -> SocketAddr {
    echo_peer_server_on("127.0.0.1:0").await
}

/// [`echo_peer_server`] on a chosen address (`[::1]:0` for IPv6).
pub async fn echo_peer_server_on(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer_with_peer(stream, peer));
        }
    });
    addr
}

/// An HTTPS target (self-signed for `localhost`/127.0.0.1) answering with the peer address.
/// Returns its address and the PEM certificate for `curl --cacert`.
pub async fn tls_echo_peer_server() -> (SocketAddr, String) {
    use std::sync::Arc;
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    answer_with_peer(tls, peer).await;
                }
            });
        }
    });
    (addr, pem)
}

async fn answer_with_peer<S>(mut stream: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = peer.ip().to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A target that keeps connections open and echoes bytes back.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

pub async fn proxy(guard: Guard) -> ProxyHandle {
    let mut config = ProxyConfig::new(
        vec![
            "127.0.0.2:0".parse().expect("addr"),
            "127.0.0.3:0".parse().expect("addr"),
        ],
        CredentialKey::new(KEY),
    );
    config.guard = guard;
    ipsx_proxy::start(config).await.expect("proxy")
}

/// The lease's usage once its connections have closed. A client such as curl exits as soon as
/// it has read the response, a moment before the proxy sees the close and stops counting the
/// connection as open; this waits for that moment (at most two seconds) instead of racing it.
pub async fn usage_when_closed(leases: &LeaseTable, lease: u64) -> LeaseUsage {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let usage = leases.usage(lease).expect("the lease was metered");
        if usage.open == 0 || tokio::time::Instant::now() >= deadline {
            return usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub fn loopback_allowed() -> Guard {
    Guard {
        allow_loopback: true,
    }
}

/// What a client process said.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a program (curl, python3) off the async threads.
pub async fn run(program: &str, args: Vec<String>) -> Ran {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test.sh does): {e}"));
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// Runs curl through `proxy_url`; Ok(body) or Err(curl's exit code).
pub async fn curl(proxy_url: String, target: String) -> Result<String, i32> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-x", &proxy_url, &target])
            .output()
            .expect("curl must be installed (scripts/test.sh does)");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(output.status.code().unwrap_or(-1))
        }
    })
    .await
    .expect("join")
}

pub fn url(scheme: &str, c: &Credentials, at: SocketAddr) -> String {
    format!("{scheme}://{}:{}@{at}", c.username, c.password)
}

pub struct Connected {
    pub stream: TcpStream,
    pub reply: u8,
}

/// A minimal SOCKS5 client: user/password, CONNECT to a domain name.
pub async fn socks5_connect(
    proxy: SocketAddr,
    credentials: &Credentials,
    host: &str,
    port: u16,
) -> std::io::Result<Connected> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.write_all(&[5, 1, 2]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    assert_eq!(choice, [5, 2]);
    let mut auth = vec![1, credentials.username.len() as u8];
    auth.extend_from_slice(credentials.username.as_bytes());
    auth.push(credentials.password.len() as u8);
    auth.extend_from_slice(credentials.password.as_bytes());
    stream.write_all(&auth).await?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await?;
    assert_eq!(status, [1, 0], "authenticated");
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await?;
    Ok(Connected {
        stream,
        reply: reply[1],
    })
}
