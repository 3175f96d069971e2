//! A crawler written in Python, as fleets write them: Debian's `requests` with SOCKS support
//! (PySocks) through `socks5h://`, `socks5://` and `http://` proxies, and PySocks' own UDP
//! ASSOCIATE. Runs `/usr/bin/python3` with the Debian packages scripts/test.sh installs.

mod common;

use std::net::SocketAddr;

use common::*;
use ipsx_proxy::{Credentials, Protocols};
use tokio::net::UdpSocket;

const PYTHON: &str = "/usr/bin/python3";

const FETCH: &str = r#"
import sys, requests
proxy, url = sys.argv[1], sys.argv[2]
try:
    r = requests.get(url, proxies={"http": proxy, "https": proxy}, timeout=5)
    print(r.status_code, r.text)
except requests.exceptions.RequestException as e:
    print("refused", type(e).__name__)
"#;

async fn fetch(proxy: String, url: String) -> String {
    let ran = run(PYTHON, vec!["-c".into(), FETCH.into(), proxy, url]).await;
    assert_eq!(ran.code, Some(0), "python failed: {}", ran.stderr);
    ran.stdout.trim().to_string()
}

#[tokio::test]
async fn requests_crawls_through_socks5h_socks5_and_http_from_the_leased_ip() {
    let target = echo_peer_server().await;
    let proxy = proxy(loopback_allowed()).await;
    let all = Protocols::SOCKS5
        .union(Protocols::HTTP)
        .union(Protocols::HTTPS);
    let a = credentials(&grant(1, "127.0.0.2", all));
    let b = credentials(&grant(2, "127.0.0.3", all));
    let page = format!("http://localhost:{}/", target.port());
    for scheme in ["socks5h", "socks5", "http"] {
        assert_eq!(
            fetch(url(scheme, &a, proxy.addrs[0]), page.clone()).await,
            "200 127.0.0.2",
            "{scheme}"
        );
        assert_eq!(
            fetch(url(scheme, &b, proxy.addrs[1]), page.clone()).await,
            "200 127.0.0.3",
            "{scheme}"
        );
    }
    let wrong = Credentials {
        password: b.password.clone(),
        ..a.clone()
    };
    assert!(
        fetch(url("socks5h", &wrong, proxy.addrs[0]), page.clone())
            .await
            .starts_with("refused"),
    );
    assert_eq!(
        fetch(url("http", &wrong, proxy.addrs[0]), page).await,
        "407 lease credentials refused"
    );
}

const UDP_ROUND_TRIP: &str = r#"
import sys, socket, socks
host, port, user, password, target_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, host, port, username=user, password=password)
s.settimeout(5)
s.bind(("", 0))
s.sendto(b"who am i", ("127.0.0.1", target_port))
data, source = s.recvfrom(2048)
print(data.decode(), source[0], source[1])
"#;

#[tokio::test]
async fn pysocks_udp_associate_leaves_from_the_leased_ip() {
    let target = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let target_addr: SocketAddr = target.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = target.recv_from(&mut buf).await {
            let _ = target.send_to(from.ip().to_string().as_bytes(), from).await;
        }
    });
    let proxy = proxy(loopback_allowed()).await;
    let b = credentials(&grant(
        5,
        "127.0.0.3",
        Protocols::SOCKS5.union(Protocols::VPN),
    ));
    let at = proxy.addrs[1];
    let ran = run(
        PYTHON,
        vec![
            "-c".into(),
            UDP_ROUND_TRIP.into(),
            at.ip().to_string(),
            at.port().to_string(),
            b.username.clone(),
            b.password.clone(),
            target_addr.port().to_string(),
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "python failed: {}", ran.stderr);
    assert_eq!(
        ran.stdout.trim(),
        format!("127.0.0.3 127.0.0.1 {}", target_addr.port())
    );
    let usage = proxy.leases.usage(5).expect("metered");
    assert_eq!((usage.bytes_up, usage.bytes_down), (8, 9));
}
