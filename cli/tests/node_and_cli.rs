//! The `ipsx` binary as people run it: a node process, a provider registering and offering, a
//! fleet leasing by filter with JSON / CSV / table output — then the node is killed with
//! SIGKILL and restarted on its data directory, and every acknowledged deal is still there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const IPSX: &str = env!("CARGO_BIN_EXE_ipsx");

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(data: &Path) -> Node {
    let mut command = Command::new(IPSX);
    command
        // These offers are the market's alone: no proxy serves them to prove them through.
        .args([
            "node",
            "--no-offer-probe",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data);
    spawn_node(command)
}

/// Starts a node from `command` and reads the address it prints first.
fn spawn_node(mut command: Command) -> Node {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("ipsx node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the node prints its address");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Node {
        child,
        url: format!("http://{addr}"),
    }
}

fn ipsx(node: &Node, key: &Path, args: &[&str]) -> Output {
    Command::new(IPSX)
        .args(args)
        .args(["--node", &node.url, "--key-file"])
        .arg(key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ipsx runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ipsx failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_fleet_leases_with_the_cli_and_a_killed_node_keeps_its_deals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let provider_key = dir.path().join("provider.key");
    let fleet_key = dir.path().join("fleet.key");
    std::fs::write(&provider_key, format!("0x{}", "11".repeat(32))).expect("key");
    std::fs::write(&fleet_key, "22".repeat(32)).expect("key");

    let mut node = start_node(&data);
    let registered = ok(&ipsx(&node, &provider_key, &["register", "--port", "1080"]));
    assert!(registered.contains("proxy key "), "{registered}");
    let offered = ok(&ipsx(
        &node,
        &provider_key,
        &[
            "offer",
            "--ip",
            "127.0.0.2",
            "--ip",
            "127.0.0.3",
            "--country",
            "DE",
            "--price",
            "2",
        ],
    ));
    assert!(offered.ends_with("(2 IPs)\n"), "{offered}");

    let leased = ok(&ipsx(
        &node,
        &fleet_key,
        &[
            "lease",
            "--count",
            "2",
            "--country",
            "DE",
            "--duration",
            "60",
            "--max-price",
            "5",
            "--format",
            "json",
        ],
    ));
    let deals: Value = serde_json::from_str(&leased).expect("JSON output");
    let endpoints: Vec<&Value> = deals
        .as_array()
        .expect("a list of deals")
        .iter()
        .flat_map(|deal| deal["endpoints"].as_array().expect("endpoints"))
        .collect();
    assert_eq!(endpoints.len(), 2);
    assert!(endpoints.iter().all(|e| {
        e["socks5h"]
            .as_str()
            .is_some_and(|url| url.starts_with("socks5h://") && url.ends_with(":1080"))
    }));

    let csv = ok(&ipsx(&node, &fleet_key, &["deals", "--format", "csv"]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "deal,status,ip,ends,socks5h,http");
    assert_eq!(lines.len(), 3, "{csv}");
    let table = ok(&ipsx(&node, &fleet_key, &["deals"]));
    assert!(table.starts_with("deal  status"), "{table}");

    // Bad input: a clear error, non-zero exit, nothing leased.
    let refused = ipsx(
        &node,
        &fleet_key,
        &[
            "lease",
            "--count",
            "1",
            "--country",
            "QQ",
            "--duration",
            "60",
            "--max-price",
            "5",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown_country"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // kill -9, restart on the same data: the deals are all there.
    node.child.kill().expect("SIGKILL");
    node.child.wait().expect("reaped");
    let node = start_node(&data);
    let after = ok(&ipsx(&node, &fleet_key, &["deals", "--format", "csv"]));
    // Same deals, IPs, ends and credentials (the status may have moved on with the clock: an
    // unready deal is voided 30 s after its start).
    let without_status = |csv: &str| -> Vec<String> {
        csv.lines()
            .map(|line| {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells.remove(1);
                cells.join(",")
            })
            .collect()
    };
    assert_eq!(
        without_status(&after),
        without_status(&csv),
        "acknowledged deals survive kill -9"
    );
}

/// The disk fills under the node (a file-size limit stands in for a full disk): the engine's
/// writer cannot append to its journal and stops. Health must say so, calls answer
/// `engine_down`, and the process exits non-zero so that its supervisor restarts it.
#[test]
fn a_node_whose_engine_stopped_says_so_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    // SIGXFSZ ignored, so a write past the limit fails with EFBIG instead of killing the node.
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"",
            IPSX,
            "node",
            "--no-offer-probe",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stderr(Stdio::piped());
    let mut node = spawn_node(command);
    let base = node.url.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        // `None` once the node has stopped answering.
        let health = |http: reqwest::Client| {
            let url = format!("{base}/v1/health");
            async move {
                let response = http.get(url).send().await.ok()?;
                let status = response.status();
                let body: Value = response.json().await.ok()?;
                Some((status, body["status"].as_str().unwrap_or("").to_owned()))
            }
        };
        assert_eq!(
            health(http.clone()).await,
            Some((reqwest::StatusCode::OK, "ok".into()))
        );
        let wallet = ipsx_sdk::Wallet::from_bytes(&[0x11; 32].into()).expect("wallet");
        let mut client = ipsx_sdk::Client::new(base.clone());
        client.sign_in(&wallet).await.expect("sign in");
        // Offers of 50,000 listed IPs each: a journal record of about a megabyte apiece.
        let mut refused = None;
        for block in 0..8u32 {
            let ips = (0..50_000u32)
                .map(|n| {
                    std::net::IpAddr::from(std::net::Ipv4Addr::from(
                        0xC612_0000 + block * 65_536 + n,
                    ))
                })
                .collect();
            let offer = ipsx_sdk::OfferBody {
                ips,
                cidr: None,
                country: "DE".into(),
                region: None,
                city: None,
                asn: 64500,
                kind: ipsx_sdk::IpKind::Datacenter,
                protocols: vec![ipsx_sdk::Protocol::Socks5],
                from: None,
                until: unix_now() + 3600,
                min_lease: 5,
                max_lease: 3600,
                price: ipsx_sdk::TokenAmount(1),
                tenants: 1,
            };
            if let Err(error) = client.place_offer(&offer).await {
                refused = Some(error);
                break;
            }
        }
        let refused = refused.expect("the disk filled before 8 offers");
        assert_eq!(
            refused.code(),
            Some(ipsx_sdk::ErrorCode::EngineDown),
            "{refused}"
        );
        // The node stops within a second of noticing; until then health tells the truth.
        if let Some(answer) = health(http.clone()).await {
            assert_eq!(
                answer,
                (
                    reqwest::StatusCode::SERVICE_UNAVAILABLE,
                    "engine_down".into()
                )
            );
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node kept running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "a failed node exits non-zero: {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut node.child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("the node failed"), "{stderr}");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
