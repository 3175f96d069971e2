//! The relay under hostile requesters, through real sockets: a relay, a provider's link dialled
//! from 127.0.0.70 over QUIC, and behind the link a stand-in for the provider's proxy that
//! counts the connections that reach it and answers every HTTP request with `200 ok`.
//!
//! * Garbage, missing, unsealed and forged credentials are refused at the relay: not one
//!   byte reaches the provider.
//! * One requester cannot hold more connections than its cap; another still gets in.
//! * A provider at its stream cap makes the relay answer 429, not queue.
//! * A carried connection that moves nothing is closed after the idle timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ipsx_credentials::{CredentialKey, Grant, Protocols, RelayKey};
use ipsx_relay::{Access, Change, Identity, Link, LinkConfig, RelayConfig, RelayHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const HOME: &str = "127.0.0.70";

struct Setup {
    relay: RelayHandle,
    key: RelayKey,
    /// Connections that reached the provider's side.
    reached: Arc<AtomicUsize>,
    _link: Arc<Link>,
}

/// A stand-in for the provider's proxy: counts connections, answers each request head.
async fn provider_side(reached: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            reached.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn setup(tune: impl FnOnce(&mut RelayConfig)) -> Setup {
    let key = RelayKey::new([3; 32]);
    let identity = Identity::generate().expect("identity");
    let mut config = RelayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        identity.clone(),
        key.clone(),
    );
    tune(&mut config);
    let relay = ipsx_relay::start(config, Arc::new(|_: Change| Box::pin(async {}) as _))
        .await
        .expect("relay");
    let reached = Arc::new(AtomicUsize::new(0));
    let target = provider_side(Arc::clone(&reached)).await;
    let mut link_config = LinkConfig::new(target);
    link_config.bind = format!("{HOME}:0").parse().expect("bind");
    let access = Access {
        relay: relay.providers,
        certificate: identity.certificate,
        ticket: key.ticket([9; 20], unix_now() + 600),
    };
    let link = Arc::new(
        Link::connect(&access, &link_config)
            .await
            .expect("welcomed"),
    );
    let serving = Arc::clone(&link);
    tokio::spawn(async move { serving.serve(target).await });
    Setup {
        relay,
        key,
        reached,
        _link: link,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Sealed credentials for a lease on the home IP (any provider key: the relay cannot check it).
fn sealed(key: &RelayKey) -> (String, String) {
    let now = unix_now();
    let credentials = key.seal(CredentialKey::new([1; 32]).issue(&Grant {
        lease: 5,
        ip: HOME.parse::<IpAddr>().expect("ip"),
        protocols: Protocols::HTTP,
        not_before: now - 5,
        not_after: now + 600,
    }));
    (credentials.username, credentials.password)
}

fn request(login: Option<(&str, &str)>) -> Vec<u8> {
    let mut head = b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n".to_vec();
    if let Some((user, pass)) = login {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        head.extend_from_slice(format!("Proxy-Authorization: Basic {basic}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Sends `bytes` and reads until the relay or the provider closes or answers.
async fn exchange(relay: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(relay).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// A connection carried to the provider, its first request answered.
async fn carried(relay: SocketAddr, login: (&str, &str)) -> TcpStream {
    let mut stream = TcpStream::connect(relay).await.expect("connect");
    stream
        .write_all(&request(Some(login)))
        .await
        .expect("write");
    let mut answer = vec![0u8; 256];
    let read = stream.read(&mut answer).await.expect("read");
    assert!(answer[..read].ends_with(b"ok"), "carried and answered");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_sealed_credentials_reaches_the_provider() {
    let setup = setup(|_| {}).await;
    let requesters = setup.relay.requesters;
    let (user, pass) = sealed(&setup.key);
    let unsealed = pass.rsplit_once('.').expect("sealed").0.to_owned();
    let forged = format!("{unsealed}.AAAAAAAAAAAAAAAA");
    let other_relay = sealed(&RelayKey::new([4; 32])).1;

    assert_eq!(
        exchange(requesters, b"\x16\x03\x01 not a proxy request\r\n\r\n").await,
        ""
    );
    for login in [
        None,
        Some((user.as_str(), unsealed.as_str())),
        Some((user.as_str(), forged.as_str())),
        Some((user.as_str(), other_relay.as_str())),
        Some(("6", pass.as_str())),
    ] {
        let answer = exchange(requesters, &request(login)).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{login:?}: {answer}");
    }
    // SOCKS5 with a forged seal: the relay answers the credentials with failure itself.
    let mut socks = TcpStream::connect(requesters).await.expect("connect");
    socks.write_all(&[5, 1, 2]).await.expect("greeting");
    let mut choice = [0u8; 2];
    socks.read_exact(&mut choice).await.expect("method");
    assert_eq!(choice, [5, 2]);
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user.as_bytes());
    auth.push(forged.len() as u8);
    auth.extend_from_slice(forged.as_bytes());
    socks.write_all(&auth).await.expect("auth");
    let mut status = [0u8; 2];
    socks.read_exact(&mut status).await.expect("status");
    assert_eq!(status, [1, 1]);
    assert_eq!(
        setup.reached.load(Ordering::SeqCst),
        0,
        "nothing reached the provider"
    );

    let answer = exchange(requesters, &request(Some((&user, &pass)))).await;
    assert!(answer.ends_with("ok"), "{answer}");
    assert_eq!(setup.reached.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requester_cannot_hold_more_than_its_cap() {
    let setup = setup(|config| config.max_per_requester = 5).await;
    let requesters = setup.relay.requesters;
    // Five connections that never finish their handshake hold the flooder's whole share.
    let mut held = Vec::new();
    for _ in 0..5 {
        let stream = TcpStream::connect(requesters).await.expect("connect");
        held.push(stream);
    }
    // The sixth is closed unanswered (after the five were counted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut sixth = TcpStream::connect(requesters).await.expect("connect");
        let _ = sixth.write_all(&request(None)).await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), sixth.read(&mut buf))
            .await
            .expect("closed or answered");
        if matches!(read, Ok(0) | Err(_)) {
            break;
        }
        // Answered 407: the five were not all counted yet.
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cap never applied"
        );
    }
    // Another requester still gets in.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind");
    let mut other = socket.connect(requesters).await.expect("connect");
    other.write_all(&request(None)).await.expect("write");
    let mut answer = [0u8; 64];
    let read = other.read(&mut answer).await.expect("read");
    assert!(answer[..read].starts_with(b"HTTP/1.1 407"));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_at_its_stream_cap_makes_the_relay_answer_busy() {
    let setup = setup(|config| config.max_streams_per_provider = 2).await;
    let requesters = setup.relay.requesters;
    let (user, pass) = sealed(&setup.key);
    let held = [
        carried(requesters, (&user, &pass)).await,
        carried(requesters, (&user, &pass)).await,
    ];
    let answer = exchange(requesters, &request(Some((&user, &pass)))).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop(held);
    // Slots come back as connections end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !exchange(requesters, &request(Some((&user, &pass))))
        .await
        .ends_with("ok")
    {
        assert!(tokio::time::Instant::now() < deadline, "slots came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_connection_that_moves_nothing_is_closed() {
    let setup = setup(|config| config.idle_timeout = Duration::from_millis(300)).await;
    let (user, pass) = sealed(&setup.key);
    let mut stream = carried(setup.relay.requesters, (&user, &pass)).await;
    let mut answer = [0u8; 64];
    // Nothing more either way: the relay closes it within two idle periods.
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)));
}
