//! A provider with two IPs (loopback aliases 127.0.0.2 and 127.0.0.3) serves two leases through
//! SOCKS5 (TCP CONNECT and UDP ASSOCIATE); curl is the client and a local target answers with the address the connection came
//! from, so each test sees the IP traffic really left from. Every refusal has its test.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ipsx_proxy::{CredentialKey, Credentials, Guard, Protocols, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[tokio::test]
async fn each_lease_egresses_from_its_own_ip() {
    let target = echo_peer_server().await;
    let proxy = proxy(loopback_allowed()).await;
    let a = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    let b = credentials(&grant(2, "127.0.0.3", Protocols::SOCKS5));
    for scheme in ["socks5h", "socks5"] {
        let body = curl(url(scheme, &a, proxy.addrs[0]), format!("http://{target}/")).await;
        assert_eq!(body.as_deref(), Ok("127.0.0.2"), "{scheme}");
        let body = curl(url(scheme, &b, proxy.addrs[1]), format!("http://{target}/")).await;
        assert_eq!(body.as_deref(), Ok("127.0.0.3"), "{scheme}");
    }
    // DNS on the provider side: a name, resolved there.
    let named = format!("http://localhost:{}/", target.port());
    assert_eq!(
        curl(url("socks5h", &a, proxy.addrs[0]), named)
            .await
            .as_deref(),
        Ok("127.0.0.2")
    );
    let usage = usage_when_closed(&proxy.leases, 1).await;
    assert_eq!(usage.connections, 3);
    assert_eq!(usage.open, 0);
    assert!(
        usage.bytes_up > 3 * 40 && usage.bytes_down > 3 * 60,
        "{usage:?}"
    );
}

#[tokio::test]
async fn one_lease_of_two_ips_egresses_from_each_ip_it_is_used_on() {
    let target = echo_peer_server().await;
    let proxy = proxy(loopback_allowed()).await;
    // A deal of two IPs: one lease id, one credential per IP.
    let on_2 = credentials(&grant(9, "127.0.0.2", Protocols::SOCKS5));
    let on_3 = credentials(&grant(9, "127.0.0.3", Protocols::SOCKS5));
    for _ in 0..2 {
        let body = curl(
            url("socks5h", &on_2, proxy.addrs[0]),
            format!("http://{target}/"),
        )
        .await;
        assert_eq!(body.as_deref(), Ok("127.0.0.2"));
        let body = curl(
            url("socks5h", &on_3, proxy.addrs[1]),
            format!("http://{target}/"),
        )
        .await;
        assert_eq!(body.as_deref(), Ok("127.0.0.3"));
    }
    assert_eq!(proxy.leases.usage(9).expect("metered").connections, 4);
}

#[tokio::test]
async fn wrong_expired_foreign_and_missing_credentials_are_refused() {
    let target = format!("http://{}/", echo_peer_server().await);
    let proxy = proxy(loopback_allowed()).await;
    let a = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    let b = credentials(&grant(2, "127.0.0.3", Protocols::SOCKS5));
    let at = proxy.addrs[0];

    let no_credentials = format!("socks5h://{at}");
    assert!(curl(no_credentials, target.clone()).await.is_err());
    let wrong = Credentials {
        password: b.password.clone(),
        ..a.clone()
    };
    assert!(
        curl(url("socks5h", &wrong, at), target.clone())
            .await
            .is_err(),
        "another lease's secret"
    );
    assert!(
        curl(url("socks5h", &b, at), target.clone()).await.is_err(),
        "lease 2's own credentials on lease 1's IP"
    );
    let mut expired = grant(3, "127.0.0.2", Protocols::SOCKS5);
    expired.not_after = now() - 1;
    assert!(
        curl(url("socks5h", &credentials(&expired), at), target.clone())
            .await
            .is_err()
    );
    let mut early = grant(4, "127.0.0.2", Protocols::SOCKS5);
    early.not_before = now() + 60;
    assert!(
        curl(url("socks5h", &credentials(&early), at), target.clone())
            .await
            .is_err()
    );
    let forged = CredentialKey::new([1; 32]).issue(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    assert!(
        curl(url("socks5h", &forged, at), target.clone())
            .await
            .is_err()
    );
    // Nothing refused was metered.
    for lease in [1, 2, 3, 4] {
        assert_eq!(proxy.leases.usage(lease), None, "lease {lease}");
    }
    assert_eq!(
        curl(url("socks5h", &a, at), target).await.as_deref(),
        Ok("127.0.0.2")
    );
}

#[tokio::test]
async fn only_leased_protocols_pass() {
    let smtp_target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let smtp_port = smtp_target.local_addr().expect("addr").port();
    let proxy = proxy(loopback_allowed()).await;
    let web_only = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    // Port 25 itself needs root to listen on; the check is on the destination port, so ask for
    // it and expect the refusal before any connect.
    let mut client = socks5_connect(proxy.addrs[0], &web_only, "127.0.0.1", 25)
        .await
        .expect("handshake");
    assert_eq!(
        client.reply, 2,
        "port 25 without SMTP: not allowed by ruleset"
    );
    client.stream.shutdown().await.ok();
    let http_only = credentials(&grant(
        2,
        "127.0.0.2",
        Protocols::HTTP.union(Protocols::HTTPS),
    ));
    let refused = socks5_connect(proxy.addrs[0], &http_only, "127.0.0.1", smtp_port)
        .await
        .expect("handshake");
    assert_eq!(refused.reply, 2, "a lease without SOCKS5 cannot use SOCKS5");
    let with_smtp = credentials(&grant(
        3,
        "127.0.0.2",
        Protocols::SOCKS5.union(Protocols::SMTP),
    ));
    let allowed = socks5_connect(proxy.addrs[0], &with_smtp, "127.0.0.1", smtp_port)
        .await
        .expect("handshake");
    assert_eq!(allowed.reply, 0);
}

#[tokio::test]
async fn the_default_guard_refuses_the_providers_network_however_spelled() {
    let target = echo_peer_server().await;
    let port = target.port();
    let proxy = proxy(Guard::default()).await;
    let a = credentials(&grant(1, "127.0.0.2", Protocols::SOCKS5));
    let at = proxy.addrs[0];
    for host in [
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "0.0.0.0".to_string(),
        "2130706433".to_string(),
        "0x7f000001".to_string(),
        "0177.0.0.1".to_string(),
        "127.1".to_string(),
        "169.254.169.254".to_string(),
        "10.0.0.1".to_string(),
        "192.168.1.1".to_string(),
    ] {
        let refused = socks5_connect(at, &a, &host, port)
            .await
            .expect("handshake");
        assert_eq!(refused.reply, 2, "{host} must be refused as not allowed");
    }
    // curl sees the refusal too.
    assert!(
        curl(url("socks5h", &a, at), format!("http://{target}/"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_cut_lease_closes_within_a_second_and_refuses_new_connections() {
    let target = echo_server().await;
    let proxy = proxy(loopback_allowed()).await;
    let a = credentials(&grant(7, "127.0.0.2", Protocols::SOCKS5));
    let mut open = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("connect");
    assert_eq!(open.reply, 0);
    open.stream.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    open.stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");

    proxy.leases.cut(7);
    let closed = tokio::time::timeout(Duration::from_secs(1), open.stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed within a second: {closed:?}"
    );
    let again = socks5_connect(proxy.addrs[0], &a, "127.0.0.1", target.port())
        .await
        .expect("handshake");
    assert_eq!(again.reply, 2);
    let usage = proxy.leases.usage(7).expect("usage");
    assert!(
        usage.cut && usage.open == 0 && usage.bytes_up == 4 && usage.bytes_down == 4,
        "{usage:?}"
    );
    // The window began 10 s ago and stopped at the cut.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = proxy.leases.usage(7).expect("usage");
    assert!((10..=12).contains(&later.seconds), "{later:?}");
    assert_eq!(later.seconds, usage.seconds, "no seconds after the cut");
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let mut config = ProxyConfig::new(
        vec!["127.0.0.2:0".parse().expect("addr")],
        CredentialKey::new(KEY),
    );
    config.handshake_timeout = Duration::from_millis(300);
    let proxy = ipsx_proxy::start(config).await.expect("proxy");
    let mut slow = TcpStream::connect(proxy.addrs[0]).await.expect("connect");
    slow.write_all(&[5]).await.expect("one byte");
    let mut buf = [0u8; 8];
    let closed = tokio::time::timeout(Duration::from_secs(2), slow.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    // A greeting that is neither SOCKS5 nor HTTP is answered and closed at once.
    let mut wrong = TcpStream::connect(proxy.addrs[0]).await.expect("connect");
    wrong.write_all(&[4, 1, 0, 80]).await.expect("write");
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_millis(500), wrong.read_to_end(&mut answer)).await;
    assert!(matches!(closed, Ok(Ok(_))), "{closed:?}");
}

#[tokio::test]
async fn ipv6_leases_egress_from_the_leased_v6_address() {
    let target = echo_peer_server_on("[::1]:0").await;
    let mut config = ProxyConfig::new(
        vec!["[::1]:0".parse().expect("addr")],
        CredentialKey::new(KEY),
    );
    config.guard = loopback_allowed();
    let proxy = ipsx_proxy::start(config).await.expect("proxy");
    let v6 = credentials(&grant(61, "::1", Protocols::SOCKS5));
    let body = curl(
        url("socks5h", &v6, proxy.addrs[0]),
        format!("http://{target}/"),
    )
    .await;
    assert_eq!(body.as_deref(), Ok("::1"));
    // An IPv6 lease cannot reach an IPv4-only destination: there is no v4 address to leave from.
    let v4_target = echo_peer_server().await;
    let refused = socks5_connect(proxy.addrs[0], &v6, "127.0.0.1", v4_target.port())
        .await
        .expect("handshake");
    assert_eq!(refused.reply, 8, "address type not supported");
}

/// UDP ASSOCIATE needs the lease's VPN protocol on top of SOCKS5.
const UDP: Protocols = Protocols::SOCKS5.union(Protocols::VPN);

/// A UDP target that answers each datagram with the address it came from.
async fn udp_echo_peer() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(from.ip().to_string().as_bytes(), from).await;
        }
    });
    addr
}

/// Asks for a UDP association; returns the control connection and the reply.
async fn udp_associate_reply(
    proxy: SocketAddr,
    credentials: &Credentials,
) -> (TcpStream, [u8; 10]) {
    let mut control = TcpStream::connect(proxy).await.expect("connect");
    control.write_all(&[5, 1, 2]).await.expect("greet");
    let mut choice = [0u8; 2];
    control.read_exact(&mut choice).await.expect("method");
    let mut auth = vec![1, credentials.username.len() as u8];
    auth.extend_from_slice(credentials.username.as_bytes());
    auth.push(credentials.password.len() as u8);
    auth.extend_from_slice(credentials.password.as_bytes());
    control.write_all(&auth).await.expect("auth");
    let mut status = [0u8; 2];
    control.read_exact(&mut status).await.expect("auth status");
    assert_eq!(status, [1, 0]);
    control
        .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .expect("associate");
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.expect("reply");
    (control, reply)
}

/// Opens a UDP association; returns the control connection and the relay address.
async fn udp_associate(proxy: SocketAddr, credentials: &Credentials) -> (TcpStream, SocketAddr) {
    let (control, reply) = udp_associate_reply(proxy, credentials).await;
    assert_eq!(
        &reply[..4],
        &[5, 0, 0, 1],
        "UDP ASSOCIATE succeeded with an IPv4 relay"
    );
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, relay)
}

fn udp_datagram(target: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0, 0, 0, 1];
    match target.ip() {
        std::net::IpAddr::V4(v4) => datagram.extend_from_slice(&v4.octets()),
        std::net::IpAddr::V6(_) => unreachable!("IPv4 targets here"),
    }
    datagram.extend_from_slice(&target.port().to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

#[tokio::test]
async fn udp_associate_sends_from_the_leased_ip_and_relays_replies() {
    let target = udp_echo_peer().await;
    let proxy = proxy(loopback_allowed()).await;
    let b = credentials(&grant(71, "127.0.0.3", UDP));
    let (control, relay) = udp_associate(proxy.addrs[1], &b).await;
    assert_eq!(relay.ip().to_string(), "127.0.0.3");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    client
        .send_to(&udp_datagram(target, b"who am i"), relay)
        .await
        .expect("send");
    let mut buf = [0u8; 2048];
    let (len, from) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
        .await
        .expect("a reply within 2 s")
        .expect("recv");
    assert_eq!(from, relay);
    let expected_header = udp_datagram(target, b"");
    assert_eq!(
        &buf[..expected_header.len()],
        &expected_header[..],
        "reply names its source"
    );
    assert_eq!(
        &buf[expected_header.len()..len],
        b"127.0.0.3",
        "left from the leased IP"
    );
    let usage = proxy.leases.usage(71).expect("metered");
    assert_eq!((usage.bytes_up, usage.bytes_down), (8, 9));

    // A stranger on the relay's port is ignored; so is a guarded destination.
    let stranger = UdpSocket::bind("127.0.0.4:0").await.expect("bind");
    stranger
        .send_to(&udp_datagram(target, b"sneak"), relay)
        .await
        .expect("send");
    let guarded = udp_datagram("169.254.169.254:53".parse().expect("addr"), b"meta");
    client.send_to(&guarded, relay).await.expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.leases.usage(71).expect("usage").bytes_up, 8);

    // Closing the control connection ends the association.
    drop(control);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.leases.usage(71).expect("usage").open, 0);
}

#[tokio::test]
async fn udp_replies_only_come_from_destinations_the_client_contacted() {
    let target = udp_echo_peer().await;
    let proxy = proxy(loopback_allowed()).await;
    let a = credentials(&grant(72, "127.0.0.2", UDP));
    let (_control, relay) = udp_associate(proxy.addrs[0], &a).await;
    let tcp_only = credentials(&grant(73, "127.0.0.2", Protocols::SOCKS5));
    let (_, refused) = udp_associate_reply(proxy.addrs[0], &tcp_only).await;
    assert_eq!(
        refused[1], 2,
        "UDP without the lease's VPN protocol is not allowed"
    );
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    client
        .send_to(&udp_datagram(target, b"hello"), relay)
        .await
        .expect("send");
    let mut buf = [0u8; 2048];
    let (_, _) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
        .await
        .expect("reply")
        .expect("recv");
    // The egress port is now known to the target; another host writing to it is not relayed.
    let egress_port = {
        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let at = echo.local_addr().expect("addr");
        client
            .send_to(&udp_datagram(at, b"x"), relay)
            .await
            .expect("send");
        let (_, from) = echo.recv_from(&mut buf).await.expect("recv");
        assert_eq!(from.ip().to_string(), "127.0.0.2");
        from.port()
    };
    let intruder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    intruder
        .send_to(b"unsolicited", ("127.0.0.2", egress_port))
        .await
        .expect("send");
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await;
    assert!(
        nothing.is_err(),
        "unsolicited datagram must not reach the client"
    );
}
