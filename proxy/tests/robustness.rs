//! What keeps a provider's proxy up under careless or hostile clients: slow heads are cut at
//! the handshake timeout however they drip, idle tunnels at the idle timeout, caps hold
//! globally and per lease, and shutdown drains before it closes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipsx_proxy::{CredentialKey, Protocols, ProxyConfig, ProxyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(configure: impl FnOnce(&mut ProxyConfig)) -> ProxyHandle {
    let mut config = ProxyConfig::new(
        vec!["127.0.0.2:0".parse().expect("addr")],
        CredentialKey::new(KEY),
    );
    config.guard = loopback_allowed();
    configure(&mut config);
    ipsx_proxy::start(config).await.expect("proxy")
}

/// Whether the proxy closed `stream` within `within` (reading whatever it answered first).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(within, stream.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_dripping_head_is_cut_at_the_handshake_timeout_in_both_protocols() {
    let proxy = proxy_with(|c| c.handshake_timeout = Duration::from_millis(500)).await;
    let a = credentials(&grant(
        1,
        "127.0.0.2",
        Protocols::SOCKS5.union(Protocols::HTTP),
    ));
    let http_head = format!(
        "GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(100)
    );
    let mut socks_head = vec![5, 1, 2, 1, a.username.len() as u8];
    socks_head.extend_from_slice(a.username.as_bytes());
    socks_head.push(a.password.len() as u8);
    socks_head.extend_from_slice(a.password.as_bytes());
    socks_head.extend_from_slice(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
    for (what, head) in [("HTTP", http_head.into_bytes()), ("SOCKS5", socks_head)] {
        let started = Instant::now();
        let mut slow = TcpStream::connect(proxy.addrs[0]).await.expect("connect");
        let (mut reader, mut writer) = slow.split();
        let dripping = drip_half(&mut writer, &head, Duration::from_millis(50));
        let mut sink = Vec::new();
        let closed = tokio::select! {
            _ = dripping => false,
            read = reader.read_to_end(&mut sink) => read.is_ok() || read.is_err(),
        };
        let took = started.elapsed();
        assert!(
            closed,
            "{what}: the proxy closed before the head was complete"
        );
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(2_000),
            "{what}: closed after {took:?}"
        );
    }
}

async fn drip_half(writer: &mut tokio::net::tcp::WriteHalf<'_>, bytes: &[u8], gap: Duration) {
    for byte in bytes {
        if writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    // Keep pending: the test waits for the proxy's close, not the end of the drip.
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let target = echo_server().await;
    let proxy = proxy_with(|c| c.idle_timeout = Duration::from_millis(400)).await;
    let a = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    let mut busy = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    let mut idle = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    assert_eq!((busy.reply, idle.reply), (0, 0));
    let mut buf = [0u8; 4];
    for _ in 0..8 {
        busy.stream.write_all(b"ping").await.expect("write");
        busy.stream.read_exact(&mut buf).await.expect("echo");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(closed_within(&mut idle.stream, Duration::from_millis(10)).await);
    busy.stream
        .write_all(b"ping")
        .await
        .expect("still open after 1.2 s of traffic");
    busy.stream.read_exact(&mut buf).await.expect("echo");
    assert!(closed_within(&mut busy.stream, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn the_global_and_per_lease_caps_hold() {
    let target = echo_server().await;
    let proxy = proxy_with(|c| {
        c.max_connections = 3;
        c.max_per_lease = 2;
    })
    .await;
    let web = Protocols::SOCKS5
        .union(Protocols::HTTP)
        .union(Protocols::HTTPS);
    let a = credentials(&grant(1, "127.0.0.2", web));
    let b = credentials(&grant(2, "127.0.0.2", web));
    let first = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    let second = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    assert_eq!((first.reply, second.reply), (0, 0));
    let third = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("handshake");
    assert_eq!(third.reply, 2, "lease 1 is at its 2 connections");
    drop(third);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _tunnel) =
        http_status(proxy.addrs[0], &b, &format!("127.0.0.1:{}", target.port())).await;
    assert_eq!(status, "200", "another lease still has room");
    // Now 3 connections are open: the global cap closes the next one unanswered.
    let mut over = TcpStream::connect(proxy.addrs[0])
        .await
        .expect("tcp connect");
    over.write_all(&[5, 1, 2]).await.ok();
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);
    assert_eq!(proxy.open_connections(), 3);
    drop((first, second, _tunnel));
    let usage = usage_when_closed(&proxy.leases, 1).await;
    assert_eq!((usage.open, usage.connections), (0, 2));
}

/// CONNECT through the HTTP side; returns the status and keeps the tunnel open in the stream.
async fn http_status(
    at: std::net::SocketAddr,
    c: &ipsx_proxy::Credentials,
    authority: &str,
) -> (String, TcpStream) {
    use base64::Engine;
    let mut stream = TcpStream::connect(at).await.expect("connect");
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let request =
        format!("CONNECT {authority} HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("read");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (text[9..12].to_string(), stream)
}

#[tokio::test]
async fn drain_lets_open_tunnels_finish_then_closes_the_rest() {
    let target = echo_server().await;
    let proxy = proxy_with(|_| {}).await;
    let a = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    let mut finishing = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    let proxy = std::sync::Arc::new(proxy);
    let draining = tokio::spawn({
        let proxy = std::sync::Arc::clone(&proxy);
        async move { proxy.drain(Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(proxy.addrs[0]).await.is_err(),
        "no new connections while draining"
    );
    let mut buf = [0u8; 4];
    finishing
        .stream
        .write_all(b"last")
        .await
        .expect("open tunnels keep working");
    finishing.stream.read_exact(&mut buf).await.expect("echo");
    assert!(!draining.is_finished());
    drop(finishing);
    let left = tokio::time::timeout(Duration::from_secs(2), draining)
        .await
        .expect("drain ends when the last tunnel does")
        .expect("join");
    assert_eq!(left, 0);

    // With a deadline, tunnels still open at it are closed.
    let proxy = proxy_with(|_| {}).await;
    let mut stuck = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    assert_eq!(proxy.drain(Duration::from_millis(300)).await, 1);
    assert!(closed_within(&mut stuck.stream, Duration::from_secs(1)).await);
}
