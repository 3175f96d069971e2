//! A malicious site against the HTTP proxy side. Crawlers keep their proxy connection alive
//! (curl with several URLs, a Python `requests` Session): every request on it must be routed
//! on its own, so a site never receives a request meant for another host, and never sees the
//! lease's credentials to replay them. Requests framed two ways (`Content-Length` with
//! `Transfer-Encoding`) are refused, and a tunnel ends at the lease's end to the sub-second.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ipsx_proxy::Protocols;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WEB: Protocols = Protocols::HTTP.union(Protocols::HTTPS);
const PYTHON: &str = "/usr/bin/python3";

/// A site that records every byte it receives, on every connection, and answers each request
/// head with `200` naming itself, keeping the connection open.
struct RecordingSite {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl RecordingSite {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Self::serve(stream, name, Arc::clone(&record)));
            }
        });
        Self { addr, seen }
    }

    async fn serve(mut stream: TcpStream, name: &'static str, seen: Arc<Mutex<Vec<u8>>>) {
        let mut pending = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let Ok(read) = stream.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            seen.lock()
                .expect("lock")
                .extend_from_slice(&buffer[..read]);
            pending.extend_from_slice(&buffer[..read]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                    name.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    fn request_lines(&self) -> Vec<String> {
        self.seen()
            .split("\r\n")
            .filter(|line| line.contains(" HTTP/1."))
            .map(str::to_owned)
            .collect()
    }
}

/// curl through the HTTP proxy at `proxy_url`, fetching `urls` in turn on one connection.
async fn curl_through(proxy_url: &str, extra: &[&str], urls: &[String]) -> Ran {
    let mut args: Vec<String> = ["-sS", "--max-time", "5", "-x", proxy_url]
        .iter()
        .chain(extra)
        .map(|arg| (*arg).to_owned())
        .collect();
    args.extend(urls.iter().cloned());
    run("curl", args).await
}

#[tokio::test]
async fn a_malicious_site_never_receives_other_requests_or_the_lease_credentials() {
    let evil = RecordingSite::start("evil").await;
    let honest = RecordingSite::start("honest").await;
    let proxy = proxy(loopback_allowed()).await;
    let lease = credentials(&grant(1, "127.0.0.2", WEB));
    let proxy_url = url("http", &lease, proxy.addrs[0]);

    // curl fetches both URLs over one kept-alive proxy connection.
    let ran = curl_through(
        &proxy_url,
        &[],
        &[
            format!("http://{}/first", evil.addr),
            format!("http://{}/second", honest.addr),
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "curl: {}", ran.stderr);
    assert_eq!(ran.stdout, "evilhonest");
    assert!(
        ran.stderr.is_empty(),
        "curl reused its proxy connection: {}",
        ran.stderr
    );

    // A Python requests Session does the same, back and forth.
    let session = r#"
import sys, requests
proxy = sys.argv[1]
with requests.Session() as s:
    s.proxies = {"http": proxy}
    print(",".join(s.get(u, timeout=5).text for u in sys.argv[2:]))
"#;
    let ran = run(
        PYTHON,
        vec![
            "-c".into(),
            session.into(),
            proxy_url,
            format!("http://{}/third", honest.addr),
            format!("http://{}/fourth", evil.addr),
            format!("http://{}/fifth", honest.addr),
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "python: {}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "honest,evil,honest");

    // Each site got exactly its own requests, in origin form with its own Host.
    assert_eq!(
        evil.request_lines(),
        vec!["GET /first HTTP/1.1", "GET /fourth HTTP/1.1"]
    );
    assert_eq!(
        honest.request_lines(),
        vec![
            "GET /second HTTP/1.1",
            "GET /third HTTP/1.1",
            "GET /fifth HTTP/1.1"
        ]
    );
    for site in [&evil, &honest] {
        let seen = site.seen().to_ascii_lowercase();
        assert!(
            !seen.contains("proxy-"),
            "a Proxy-* field reached a site: {seen}"
        );
        assert!(
            !seen.contains(&lease.password.to_ascii_lowercase()),
            "the lease secret reached a site: {seen}"
        );
        assert!(
            seen.contains(&format!("host: {}\r\n", site.addr)),
            "Host names the site: {seen}"
        );
    }
}

#[tokio::test]
async fn the_host_field_always_names_the_request_target() {
    let site = RecordingSite::start("site").await;
    let proxy = proxy(loopback_allowed()).await;
    let lease = credentials(&grant(1, "127.0.0.2", WEB));
    let ran = curl_through(
        &url("http", &lease, proxy.addrs[0]),
        &["-H", "Host: bank.example"],
        &[format!("http://{}/", site.addr)],
    )
    .await;
    assert_eq!(ran.code, Some(0), "curl: {}", ran.stderr);
    let seen = site.seen().to_ascii_lowercase();
    assert!(seen.contains(&format!("host: {}\r\n", site.addr)), "{seen}");
    assert!(!seen.contains("bank.example"), "{seen}");
}

#[tokio::test]
async fn a_request_framed_two_ways_is_refused_and_reaches_no_site() {
    let site = RecordingSite::start("site").await;
    let proxy = proxy(loopback_allowed()).await;
    let lease = credentials(&grant(1, "127.0.0.2", WEB));
    let token = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", lease.username, lease.password),
    );
    // The chunked body hides a second request from a parser that trusts Content-Length.
    let smuggle = format!(
        "POST http://{site}/ HTTP/1.1\r\nHost: {site}\r\nProxy-Authorization: Basic {token}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET http://{site}/smuggled HTTP/1.1\r\nHost: {site}\r\n\r\n",
        site = site.addr
    );
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.expect("connect");
    stream.write_all(smuggle.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers and closes")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then closed: {answer}"
    );
    assert_eq!(site.seen(), "", "nothing reached the site");
}

/// The wall clock's fraction of the current second.
fn fraction() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    f64::from(now.subsec_millis()) / 1000.0
}

#[tokio::test]
async fn a_tunnel_opened_in_the_leases_last_second_closes_at_the_lease_end() {
    let target = echo_server().await;
    let proxy = proxy(loopback_allowed()).await;
    // Late in the lease's last second: rounding the time left to whole seconds would keep the
    // tunnel open for most of the next one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(0.55..0.8).contains(&fraction()) {
        assert!(std::time::Instant::now() < deadline, "clock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lease = grant(7, "127.0.0.2", WEB);
    lease.not_after = now() + 1;
    let lease_end = UNIX_EPOCH + Duration::from_secs(lease.not_after);
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, {
        let c = credentials(&lease);
        format!("{}:{}", c.username, c.password)
    });
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.expect("connect");
    stream
        .write_all(
            format!("CONNECT {target} HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).await.expect("read");
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &head[..read]
    );
    // The tunnel is open; wait for the proxy to close it.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    let late = SystemTime::now()
        .duration_since(lease_end)
        .unwrap_or(Duration::ZERO);
    assert!(
        late < Duration::from_millis(300),
        "the tunnel outlived its lease by {late:?}"
    );
    assert!(
        SystemTime::now() >= lease_end,
        "closed before the lease ended"
    );
}
