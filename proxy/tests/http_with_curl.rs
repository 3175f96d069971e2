//! The same provider serves HTTP proxy clients on its SOCKS port: curl with `-x http://` for
//! plain HTTP (absolute URI) and for HTTPS through CONNECT to a TLS target, each answered from
//! the leased IP. Every refusal comes back as a clear status with an RFC 9209 `Proxy-Status`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::*;
use ipsx_proxy::{CredentialKey, Credentials, Guard, Protocols};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WEB: Protocols = Protocols::HTTP.union(Protocols::HTTPS);

/// curl through an HTTP proxy: (status of the final response, or of the proxy's answer to
/// CONNECT when the tunnel was refused; body).
async fn curl_http(proxy: &str, target: &str, extra: &[&str]) -> (u16, String) {
    let mut args: Vec<String> = [
        "-sS",
        "--max-time",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_connect}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["-x".to_string(), proxy.to_string(), target.to_string()]);
    let ran = run("curl", args).await;
    let (body, codes) = ran.stdout.rsplit_once('\n').unwrap_or(("", "0 0"));
    let codes: Vec<u16> = codes
        .split_whitespace()
        .map(|c| c.parse().unwrap_or(0))
        .collect();
    let status = match codes.as_slice() {
        [0, connect] => *connect,
        [code, _] => *code,
        _ => 0,
    };
    (status, body.to_string())
}

fn http_url(c: &Credentials, at: SocketAddr) -> String {
    url("http", c, at)
}

#[tokio::test]
async fn plain_http_is_forwarded_from_each_leases_ip() {
    let target = echo_peer_server().await;
    let proxy = proxy(loopback_allowed()).await;
    let a = credentials(&grant(1, "127.0.0.2", WEB));
    let b = credentials(&grant(2, "127.0.0.3", WEB));
    let page = format!("http://{target}/index.html?q=1");
    let (status, body) = curl_http(&http_url(&a, proxy.addrs[0]), &page, &[]).await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.2"));
    let (status, body) = curl_http(&http_url(&b, proxy.addrs[1]), &page, &[]).await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.3"));
    // A name resolved on the provider's side.
    let named = format!("http://localhost:{}/", target.port());
    let (status, body) = curl_http(&http_url(&a, proxy.addrs[0]), &named, &[]).await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.2"));
    let usage = usage_when_closed(&proxy.leases, 1).await;
    assert_eq!((usage.connections, usage.open), (2, 0));
    assert!(
        usage.bytes_up > 60 && usage.bytes_down > 2 * 60,
        "{usage:?}"
    );
}

#[tokio::test]
async fn https_goes_through_connect_from_the_leased_ip() {
    let (target, pem) = tls_echo_peer_server().await;
    let ca = tempfile_with(&pem);
    let proxy = proxy(loopback_allowed()).await;
    let b = credentials(&grant(2, "127.0.0.3", WEB));
    let page = format!("https://localhost:{}/", target.port());
    let (status, body) = curl_http(
        &http_url(&b, proxy.addrs[1]),
        &page,
        &["--cacert", ca.to_str().expect("path")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.3"));
    // curl also tunnels plain HTTP when asked (-p): same CONNECT path, lease needs HTTPS.
    let plain = echo_peer_server().await;
    let (status, body) = curl_http(
        &http_url(&b, proxy.addrs[1]),
        &format!("http://{plain}/"),
        &["-p"],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.3"));
    let http_only = credentials(&grant(3, "127.0.0.3", Protocols::HTTP));
    let (status, _) = curl_http(
        &http_url(&http_only, proxy.addrs[1]),
        &page,
        &["--cacert", ca.to_str().expect("path")],
    )
    .await;
    assert_eq!(status, 403, "CONNECT needs the lease's HTTPS protocol");
}

fn tempfile_with(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ipsx-proxy-test-ca-{}-{}.pem",
        std::process::id(),
        now()
    ));
    std::fs::write(&path, contents).expect("write CA");
    path
}

/// Sends a raw request head (asking the proxy to close after answering) and returns the whole
/// answer.
async fn raw(at: SocketAddr, request: &str) -> String {
    let request = request.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
    let mut stream = TcpStream::connect(at).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers and closes")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn basic(c: &Credentials) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    format!("Proxy-Authorization: Basic {token}\r\n")
}

#[tokio::test]
async fn every_refusal_has_a_status_and_a_proxy_status() {
    let target = echo_peer_server().await;
    let guarded_proxy = proxy(Guard::default()).await;
    let proxy = proxy(loopback_allowed()).await;
    let at = proxy.addrs[0];
    let a = credentials(&grant(1, "127.0.0.2", WEB));
    let b = credentials(&grant(2, "127.0.0.3", WEB));
    let get = |auth: String, uri: String| format!("GET {uri} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let page = format!("http://{target}/");

    let mut expired = grant(3, "127.0.0.2", WEB);
    expired.not_after = now() - 1;
    let forged = CredentialKey::new([1; 32]).issue(&grant(1, "127.0.0.2", WEB));
    let wrong_secret = Credentials {
        password: b.password.clone(),
        ..a.clone()
    };
    let socks_only = credentials(&grant(4, "127.0.0.2", Protocols::SOCKS5));
    let cases: Vec<(&str, SocketAddr, String, &str, &str)> = vec![
        (
            "no credentials",
            at,
            get(String::new(), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "another lease's secret",
            at,
            get(basic(&wrong_secret), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "lease 2 on lease 1's IP",
            at,
            get(basic(&b), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "expired",
            at,
            get(basic(&credentials(&expired)), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "forged",
            at,
            get(basic(&forged), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "not base64",
            at,
            get("Proxy-Authorization: Basic !!!\r\n".into(), page.clone()),
            "407",
            "http_request_denied",
        ),
        (
            "HTTP not leased",
            at,
            get(basic(&socks_only), page.clone()),
            "403",
            "http_request_denied",
        ),
        (
            "SMTP not leased",
            at,
            format!("CONNECT 127.0.0.1:25 HTTP/1.1\r\n{}\r\n", basic(&a)),
            "403",
            "http_request_denied",
        ),
        (
            "origin-form",
            at,
            get(basic(&a), "/".into()),
            "400",
            "http_protocol_error",
        ),
        (
            "https absolute URI",
            at,
            get(basic(&a), format!("https://{target}/")),
            "400",
            "http_protocol_error",
        ),
        (
            "CONNECT without port",
            at,
            format!("CONNECT localhost HTTP/1.1\r\n{}\r\n", basic(&a)),
            "400",
            "http_protocol_error",
        ),
        (
            "connection refused",
            at,
            get(basic(&a), "http://127.0.0.1:1/".into()),
            "502",
            "connection_refused",
        ),
        (
            "unknown name",
            at,
            get(basic(&a), "http://no-such-host.invalid/".into()),
            "502",
            "dns_error",
        ),
        (
            "guarded loopback",
            guarded_proxy.addrs[0],
            get(basic(&a), page.clone()),
            "403",
            "destination_ip_prohibited",
        ),
        (
            "guarded metadata",
            guarded_proxy.addrs[0],
            get(basic(&a), "http://169.254.169.254/latest/".into()),
            "403",
            "destination_ip_prohibited",
        ),
        (
            "guarded decimal",
            guarded_proxy.addrs[0],
            format!(
                "CONNECT 2130706433:{} HTTP/1.1\r\n{}\r\n",
                target.port(),
                basic(&a)
            ),
            "403",
            "destination_ip_prohibited",
        ),
        (
            "guarded name",
            guarded_proxy.addrs[0],
            format!(
                "CONNECT localhost:{} HTTP/1.1\r\n{}\r\n",
                target.port(),
                basic(&a)
            ),
            "403",
            "destination_ip_prohibited",
        ),
    ];
    for (what, at, request, status, error) in cases {
        let answer = raw(at, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        assert!(
            answer.contains(&format!("Proxy-Status: ipsx; error={error}; details=\"")),
            "{what}: {answer}"
        );
        assert_eq!(
            answer.contains("Proxy-Authenticate: Basic"),
            status == "407",
            "{what}: {answer}"
        );
    }
    // Heads that do not parse are answered by the HTTP implementation itself, then closed.
    for (what, request, status) in [
        ("garbage", "GET\u{0}\r\n\r\n".to_owned(), "400"),
        (
            "head too large",
            format!("GET {page} HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)),
            "431",
        ),
    ] {
        let answer = raw(at, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
    }
    // Refused requests were not metered; a good one still passes.
    for lease in [2, 3, 4] {
        assert_eq!(proxy.leases.usage(lease), None, "lease {lease}");
    }
    let (status, body) = curl_http(&http_url(&a, at), &page, &[]).await;
    assert_eq!((status, body.as_str()), (200, "127.0.0.2"));
    // curl reports the proxy's refusal as such.
    let (status, body) = curl_http(&format!("http://{at}"), &page, &[]).await;
    assert_eq!(status, 407);
    assert_eq!(body, "lease credentials required\n");
}
