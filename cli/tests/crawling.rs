//! A crawler fleet behind one proxy URL: `ipsx gate` on a real node settling on anvil with the
//! real contracts, `ipsx provide` daemons on loopback aliases in two countries, and real
//! clients — Scrapy, curl, Python requests — pointed at the gate's one port.
//!
//! * Scrapy crawls 200 pages with `USER-country-de`: every request leaves from a leased DE IP;
//!   with `session-N` per request the IPs spread; with one session id they all leave from one.
//! * curl and requests through the HTTP and SOCKS5 sides; HTTPS through CONNECT; a bad
//!   parameter is named in `Proxy-Status` and leases nothing; a malicious origin cannot make
//!   the gate drop a healthy exit. The fleet's spend on chain equals the node's meter, to the
//!   wei.
//! * The node killed and restarted mid-crawl: the gate connects again by itself, pays on and
//!   ends paid to the wei.
//! * A provider killed mid-crawl: non-sticky requests are retried on other IPs and all succeed;
//!   a sticky session on the dead provider gets `502 session_gone`; a new session works.
//! * A gate with a password serves nobody without it; one reachable from other machines will not
//!   start without one. Budget limits: `429 max_ips` and `402 spend_limit`, nothing leased
//!   beyond them.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;

use common::{Chain, Offer, Process, TOKEN, free_port, site, spawn, tls_site, wait_for};

const PRICE: u128 = TOKEN / 1_000;
const DE_A: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
const DE_B: [&str; 2] = ["127.0.0.4", "127.0.0.5"];
const FR: [&str; 2] = ["127.0.0.6", "127.0.0.7"];

/// A running `ipsx gate`.
struct Gate {
    process: Process,
    lines: mpsc::Receiver<String>,
    addr: String,
    metrics: String,
}

impl Gate {
    fn start(chain: &Chain, dir: &Path, node: &str, extra: &[&str]) -> Self {
        let key = chain.key_file(dir, 1);
        let rpc = chain.anvil.endpoint();
        let mut args = vec![
            "gate",
            "--node",
            node,
            "--key-file",
            key.to_str().expect("utf-8"),
            "--rpc-url",
            &rpc,
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--deposit",
            "50000000000000000000",
        ];
        args.extend_from_slice(extra);
        let (process, lines) = spawn(&args);
        let addr = wait_for(&lines, "listening ")
            .trim_start_matches("listening ")
            .to_owned();
        let metrics = wait_for(&lines, "metrics ")
            .trim_start_matches("metrics ")
            .to_owned();
        Self {
            process,
            lines,
            addr,
            metrics,
        }
    }

    fn proxy(&self, scheme: &str, username: &str) -> String {
        format!("{scheme}://{username}:x@{}", self.addr)
    }

    /// A counter or gauge from `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(&self.metrics)
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Waits (10 s at most) for a metric to read `value` (gauges move on the gate's tick).
    async fn metric_reaches(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {now}, not {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: it cancels every lease, pays up to their end and prints what was paid.
    fn stop(mut self) -> u128 {
        self.process.terminate();
        std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(30)).ok())
            .find_map(|line| line.strip_prefix("paid ").map(str::to_owned))
            .expect("the gate reports what it paid")
            .parse()
            .expect("a number")
    }
}

/// An exchange: anvil, a paying node and providers for `offers`.
struct Exchange {
    chain: Chain,
    dir: tempfile::TempDir,
    node_process: Process,
    /// The node's stdout lines (kept so it can always print).
    _node_lines: mpsc::Receiver<String>,
    node: String,
    listen: String,
    /// Each provider with its stdout lines (kept so it can always print).
    providers: Vec<(Process, mpsc::Receiver<String>)>,
}

impl Exchange {
    async fn start(offers: &[(usize, &[&str], &str)]) -> Self {
        let chain = Chain::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        // A fixed port, so a restarted node is found where it was.
        let listen = format!("127.0.0.1:{}", free_port(&["127.0.0.1"]));
        let (node_process, node, node_lines) = chain.node(dir.path(), &listen, &[]);
        let providers = offers
            .iter()
            .map(|&(wallet, ips, country)| {
                let port = free_port(ips);
                chain.provider(
                    dir.path(),
                    &node,
                    port,
                    Offer {
                        wallet,
                        ips,
                        country,
                        price: PRICE,
                    },
                )
            })
            .collect();
        Self {
            chain,
            dir,
            node_process,
            _node_lines: node_lines,
            node,
            listen,
            providers,
        }
    }

    fn gate(&self, extra: &[&str]) -> Gate {
        Gate::start(&self.chain, self.dir.path(), &self.node, extra)
    }

    /// `kill -9` of the node, then the same node again (same data, key and address).
    fn restart_node(&mut self) {
        let _ = self.node_process.0.kill();
        let _ = self.node_process.0.wait();
        let (process, url, lines) = self.chain.node(self.dir.path(), &self.listen, &[]);
        assert_eq!(url, self.node);
        self.node_process = process;
        self._node_lines = lines;
    }
}

/// What curl saw: status, headers (lower-case names), body.
struct Seen {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

fn curl(proxy: &str, url: &str, extra: &[&str]) -> Seen {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-i", "-x", proxy])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl must be installed (scripts/test.sh does)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // A CONNECT answer comes first in HTTPS transcripts: read the last response.
    let last = text
        .rfind("HTTP/1.1 ")
        .map_or(text.as_str(), |at| &text[at..]);
    let (head, body) = last.split_once("\r\n\r\n").unwrap_or((last, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "curl via {proxy} to {url}: no answer: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Runs the Scrapy spider; returns (status, source IP) per page.
fn scrapy(site: &str, gate: &str, user: &str, pages: usize, sessions: &str) -> Vec<(u16, String)> {
    let out = tempfile::NamedTempFile::with_suffix(".json").expect("temp file");
    let spider = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crawl/spider.py");
    let output = Command::new("/usr/bin/scrapy")
        .arg("runspider")
        .arg(&spider)
        .args(["-a", &format!("site={site}")])
        .args(["-a", &format!("gate={gate}")])
        .args(["-a", &format!("user={user}")])
        .args(["-a", &format!("pages={pages}")])
        .args(["-a", &format!("sessions={sessions}")])
        .arg("-O")
        .arg(out.path())
        .output()
        .expect("Debian's python3-scrapy must be installed (scripts/test.sh does)");
    assert!(
        output.status.success(),
        "scrapy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.path()).expect("items")).expect("JSON items");
    items
        .iter()
        .map(|item| {
            (
                u16::try_from(item["status"].as_u64().unwrap_or(0)).unwrap_or(0),
                item["ip"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn set(ips: &[&str]) -> HashSet<String> {
    ips.iter().map(|ip| (*ip).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_crawls_through_one_gate_url_and_pays_to_the_wei() {
    let exchange = Exchange::start(&[(2, &DE_A, "DE"), (3, &DE_B, "DE"), (4, &FR, "FR")]).await;
    let gate = exchange.gate(&[
        "--max-price",
        &PRICE.to_string(),
        "--warm",
        "2",
        "--batch",
        "2",
    ]);
    let site = format!("http://{}", site());
    let de: HashSet<String> = set(&DE_A).union(&set(&DE_B)).cloned().collect();

    // Scrapy, one proxy URL, 200 pages: every request leaves from a DE IP the gate leased.
    let crawled = scrapy(&site, &gate.addr, "fleet-country-de", 200, "none");
    assert_eq!(crawled.len(), 200, "every page answered");
    assert!(
        crawled.iter().all(|(status, _)| *status == 200),
        "{crawled:?}"
    );
    let ips: HashSet<String> = crawled.iter().map(|(_, ip)| ip.clone()).collect();
    assert!(ips.is_subset(&de), "only DE IPs: {ips:?}");
    assert!(ips.len() >= 2, "spread over the pool: {ips:?}");

    // A session per request: spread over the DE IPs; one session id: one IP.
    let spread = scrapy(&site, &gate.addr, "fleet-country-de", 200, "per-request");
    assert!(spread.iter().all(|(status, _)| *status == 200));
    let spread_ips: HashSet<String> = spread.iter().map(|(_, ip)| ip.clone()).collect();
    assert!(spread_ips.is_subset(&de), "{spread_ips:?}");
    assert!(spread_ips.len() >= 3, "sessions spread: {spread_ips:?}");
    let sticky = scrapy(&site, &gate.addr, "fleet-country-de", 200, "one");
    let sticky_ips: HashSet<String> = sticky.iter().map(|(_, ip)| ip.clone()).collect();
    assert_eq!(sticky_ips.len(), 1, "one session, one exit: {sticky_ips:?}");
    assert!(sticky_ips.is_subset(&de));

    // curl through both sides of the one port, and HTTPS through CONNECT.
    let fr = set(&FR);
    let http = curl(&gate.proxy("http", "fleet-country-fr"), &site, &[]);
    assert_eq!(http.status, 200);
    assert!(fr.contains(&http.body), "{}", http.body);
    assert_eq!(http.headers.get("x-ipsx-exit"), Some(&http.body));
    let socks = curl(
        &gate.proxy("socks5h", "fleet-country-fr-session-s"),
        &site,
        &[],
    );
    assert_eq!(socks.status, 200);
    assert!(fr.contains(&socks.body), "{}", socks.body);
    let (tls, pem) = tls_site().await;
    let ca = exchange.dir.path().join("site.pem");
    std::fs::write(&ca, pem).expect("pem");
    let https = curl(
        &gate.proxy("http", "fleet-country-fr-session-s"),
        &format!("https://localhost:{}/", tls.port()),
        &["--cacert", ca.to_str().expect("utf-8")],
    );
    assert_eq!(https.status, 200);
    assert_eq!(
        https.body, socks.body,
        "the same session leaves from the same IP"
    );

    // Python requests, HTTP and SOCKS5 proxies, a session each.
    let script = format!(
        "import requests\n\
         for scheme in ('http', 'socks5h'):\n\
         \x20   proxy = f'{{scheme}}://fleet-country-de-session-py{{scheme}}:x@{gate}'\n\
         \x20   with requests.Session() as s:\n\
         \x20       s.proxies = {{'http': proxy, 'https': proxy}}\n\
         \x20       seen = {{s.get('{site}/a', timeout=20).text for _ in range(5)}}\n\
         \x20       print(scheme, ','.join(sorted(seen)))\n",
        gate = gate.addr
    );
    let python = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    for line in String::from_utf8_lossy(&python.stdout).lines() {
        let (_, seen) = line.split_once(' ').expect("scheme ips");
        assert!(!seen.contains(','), "one session, one IP: {line}");
        assert!(de.contains(seen), "{line}");
    }

    // A bad parameter is named, and nothing is leased for it.
    let leased_before = gate.metric("ipsx_gate_ips_leased").await;
    let bad = curl(&gate.proxy("http", "fleet-colour-red"), &site, &[]);
    assert_eq!(bad.status, 400);
    let status = bad.headers.get("proxy-status").expect("Proxy-Status");
    assert!(
        status.starts_with("ipsx-gate; error=http_request_error") && status.contains("colour"),
        "{status}"
    );
    assert_eq!(
        bad.headers.get("x-ipsx-error").map(String::as_str),
        Some("bad_parameter")
    );
    let unknown = curl(&gate.proxy("http", "fleet-country-zz"), &site, &[]);
    assert_eq!(unknown.status, 400, "the node does not know ZZ");
    assert!(unknown.headers["proxy-status"].contains("country"));
    assert_eq!(gate.metric("ipsx_gate_ips_leased").await, leased_before);

    // A malicious origin answering like a proxy refusing the lease: the crawler sees the
    // origin's answer (no Proxy-Status survives the provider), the exit stays in service.
    let evil = evil_origin();
    let before = curl(
        &gate.proxy("http", "fleet-country-de-session-e"),
        &site,
        &[],
    );
    let fake = curl(
        &gate.proxy("http", "fleet-country-de-session-e"),
        &format!("http://{evil}/"),
        &[],
    );
    assert_eq!(fake.status, 407);
    assert!(
        !fake.headers.contains_key("proxy-status"),
        "{:?}",
        fake.headers
    );
    let after = curl(
        &gate.proxy("http", "fleet-country-de-session-e"),
        &site,
        &[],
    );
    assert_eq!((after.status, &after.body), (200, &before.body));
    assert_eq!(gate.metric("ipsx_gate_exits_dropped").await, 0);

    // Stop: every lease cancelled and paid up to its end. The node's meter, the fleet's
    // signature and the chain agree to the wei.
    let paid = gate.stop();
    assert!(paid > 0);
    let mut fleet = ipsx_sdk::Client::new(&exchange.node);
    fleet
        .sign_in(&exchange.chain.wallet(1))
        .await
        .expect("sign in");
    let deals = fleet.deals().await.expect("deals");
    assert!(deals.len() >= 3, "{} deals", deals.len());
    assert!(
        deals.iter().all(|d| d.deal.status.is_over()),
        "every lease ended"
    );
    let inbound = settled(&fleet, paid).await;
    assert_eq!(inbound.owed.0, paid, "the node metered what the gate paid");
    assert_eq!(inbound.amount.0, paid, "and accepted it");
    let channel = ipsx_channels::ChannelId(inbound.channel);
    let Exchange {
        chain,
        mut node_process,
        providers,
        ..
    } = exchange;
    node_process.terminate();
    drop(providers);
    let on_chain = chain.node.channel(channel).await.expect("channel");
    assert_eq!(on_chain.claimed, paid, "claimed on chain: what was metered");
}

/// A site answering every request like a proxy that refuses the lease.
fn evil_origin() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Status: ipsx; error=http_request_denied; details=\"lease cut\"\r\n\
                  Proxy-Authenticate: Basic realm=\"ipsx lease\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_crawl_is_failed_over() {
    let mut exchange = Exchange::start(&[(2, &DE_A, "DE"), (3, &DE_B, "DE")]).await;
    let gate = exchange.gate(&[
        "--max-price",
        &PRICE.to_string(),
        "--warm",
        "4",
        "--batch",
        "4",
    ]);
    let site = format!("http://{}", site());
    let (doomed, survivor) = (set(&DE_A), set(&DE_B));
    let proxy = gate.proxy("http", "fleet-country-de");
    let warm: HashSet<String> = (0..8).map(|_| curl(&proxy, &site, &[]).body).collect();
    assert_eq!(warm.len(), 4, "both providers' IPs serve: {warm:?}");
    // A session on the provider about to die.
    let on_doomed = (0..20)
        .map(|n| format!("fleet-country-de-session-k{n}"))
        .find(|user| doomed.contains(&curl(&gate.proxy("http", user), &site, &[]).body))
        .expect("a session lands on the first provider");

    let _ = exchange.providers[0].0.0.kill();
    let _ = exchange.providers[0].0.0.wait();

    for _ in 0..20 {
        let seen = curl(&proxy, &site, &[]);
        assert_eq!(seen.status, 200, "retried on another exit: {}", seen.body);
        assert!(survivor.contains(&seen.body), "{}", seen.body);
    }
    assert!(gate.metric("ipsx_gate_retries").await > 0);
    let gone = curl(&gate.proxy("http", &on_doomed), &site, &[]);
    assert_eq!(gone.status, 502);
    assert_eq!(gone.headers["x-ipsx-error"], "session_gone");
    assert!(
        gone.headers["proxy-status"].starts_with("ipsx-gate; error=destination_unavailable"),
        "{:?}",
        gone.headers
    );
    let again = curl(&gate.proxy("http", &on_doomed), &site, &[]);
    assert_eq!(
        again.status, 502,
        "the session stays gone until it times out"
    );
    let fresh = curl(&gate.proxy("http", &format!("{on_doomed}x")), &site, &[]);
    assert_eq!(fresh.status, 200);
    assert!(survivor.contains(&fresh.body));
    gate.stop();
}

#[test]
fn a_gate_reachable_from_other_machines_needs_a_password() {
    let output = Command::new(common::IPSX)
        .args(["gate", "--listen", "0.0.0.0:24000"])
        .env("IPSX_PRIVATE_KEY", "11".repeat(32))
        .env_remove("IPSX_GATE_PASSWORD")
        .output()
        .expect("ipsx runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--password"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_limits_answer_with_their_status_and_lease_nothing_beyond() {
    let exchange = Exchange::start(&[(2, &DE_A, "DE"), (3, &DE_B, "DE")]).await;
    let site = format!("http://{}", site());

    // A gate with a password: nothing is served (or leased) without it.
    let gate = exchange.gate(&["--max-price", &PRICE.to_string(), "--password", "s3cret"]);
    let missing = curl(&format!("http://{}", gate.addr), &site, &[]);
    assert_eq!(missing.status, 407);
    assert_eq!(missing.headers["x-ipsx-error"], "auth_required");
    let wrong = curl(&gate.proxy("http", "fleet-country-de"), &site, &[]);
    assert_eq!(wrong.status, 407);
    let socks = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-x"])
        .arg(gate.proxy("socks5h", "fleet-country-de"))
        .arg(&site)
        .output()
        .expect("curl");
    assert!(!socks.status.success(), "SOCKS5 with the wrong password");
    assert_eq!(gate.metric("ipsx_gate_ips_leased").await, 0);
    let right = curl(
        &format!("http://fleet:s3cret_country-de@{}", gate.addr),
        &site,
        &[],
    );
    assert_eq!(right.status, 200, "the password with parameters after it");
    assert!(set(&DE_A).union(&set(&DE_B)).any(|ip| *ip == right.body));
    gate.stop();

    // At most 2 IPs: two rotating connections hold them; a third is refused with 429.
    let gate = exchange.gate(&[
        "--max-price",
        &PRICE.to_string(),
        "--max-ips",
        "2",
        "--warm",
        "1",
        "--batch",
        "1",
    ]);
    let first = tunnel(&gate.addr, "fleet-rotate");
    let second = tunnel(&gate.addr, "fleet-rotate");
    let refused = curl(&gate.proxy("http", "fleet-rotate"), &site, &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["x-ipsx-error"], "max_ips");
    assert!(refused.headers["proxy-status"].contains("connection_limit_reached"));
    gate.metric_reaches("ipsx_gate_ips_held", 2).await;
    assert_eq!(
        gate.metric("ipsx_gate_ips_leased").await,
        2,
        "nothing beyond"
    );
    drop((first, second));
    gate.stop();

    // 90 s of one IP's price a minute: one IP (60 s worth) fits, a second would not.
    let budget = (PRICE * 90).to_string();
    let gate = exchange.gate(&[
        "--max-price",
        &PRICE.to_string(),
        "--max-spend-per-minute",
        &budget,
        "--warm",
        "1",
        "--batch",
        "1",
    ]);
    let held = tunnel(&gate.addr, "fleet-rotate");
    let refused = curl(&gate.proxy("http", "fleet-rotate"), &site, &[]);
    assert_eq!(refused.status, 402, "{}", refused.body);
    assert_eq!(refused.headers["x-ipsx-error"], "spend_limit");
    assert_eq!(
        gate.metric("ipsx_gate_ips_leased").await,
        1,
        "nothing beyond"
    );
    drop(held);
    gate.stop();
}

/// A CONNECT tunnel through the gate held open (a rotating connection keeps its exit).
fn tunnel(gate: &str, username: &str) -> std::net::TcpStream {
    use std::io::{BufRead, BufReader, Write};
    let site = site();
    let mut stream = std::net::TcpStream::connect(gate).expect("gate");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:x"));
    write!(
        stream,
        "CONNECT {site} HTTP/1.1\r\nHost: {site}\r\nProxy-Authorization: Basic {token}\r\n\r\n"
    )
    .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_pays_on_through_a_node_restart_to_the_wei() {
    let mut exchange = Exchange::start(&[(2, &DE_A, "DE")]).await;
    let gate = exchange.gate(&["--max-price", &PRICE.to_string(), "--warm", "2"]);
    let site = format!("http://{}", site());
    let proxy = gate.proxy("http", "fleet-country-de");
    assert_eq!(curl(&proxy, &site, &[]).status, 200);
    // Paid for a while, then the node dies without warning and comes back.
    let before = wait_paid_above(&gate, 0).await;
    exchange.restart_node();
    // The gate connects again by itself and pays on; its leases and exits are still good.
    wait_paid_above(&gate, before).await;
    let after = curl(&proxy, &site, &[]);
    assert_eq!(after.status, 200);
    assert!(set(&DE_A).contains(&after.body));

    let paid = gate.stop();
    let mut fleet = ipsx_sdk::Client::new(&exchange.node);
    fleet
        .sign_in(&exchange.chain.wallet(1))
        .await
        .expect("sign in");
    let inbound = settled(&fleet, paid).await;
    assert_eq!(inbound.owed.0, paid, "the node metered what the gate paid");
    assert_eq!(
        inbound.amount.0, paid,
        "and accepted it, across the restart"
    );
}

/// The fleet's channel as the node sees it once its meter reached `paid` (the node's hub folds
/// lease ends in on its next second; 10 s at most).
async fn settled(fleet: &ipsx_sdk::Client, paid: u128) -> ipsx_sdk::ChannelView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let inbound = common::paying::inbound(fleet).await;
        if inbound.owed.0 == paid || tokio::time::Instant::now() > deadline {
            return inbound;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (20 s at most) until the node has accepted more than `floor` from the gate.
async fn wait_paid_above(gate: &Gate, floor: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let paid = gate.metric("ipsx_gate_paid").await;
        if paid > floor {
            return paid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gate's payments stalled at {paid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
