//! A benchmark report, as someone comparing runs opens it: the HTML file alone in a real
//! headless Chromium draws a bar chart per figure and a percentile chart where latencies were
//! measured, with its table, and asks for nothing beyond the file.

use ipsx_benches::report::Report;
use ipsx_benches::{latency_histogram, record};
use std::time::Duration;

#[test]
fn a_report_draws_every_figure_offline() {
    let dashboard = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard");
    assert!(
        dashboard.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in dashboard/ (scripts/test.sh does)"
    );
    let (mut fast, mut slow) = (latency_histogram(), latency_histogram());
    for i in 1..=10_000u64 {
        record(&mut fast, Duration::from_micros(50 + i % 97));
        record(&mut slow, Duration::from_micros(120 + i % 389));
    }
    let mut report = Report::new("a run", "two peers, two figures");
    report
        .figure("CONNECT + 128 B", "tunnels/s")
        .peer("ipsx", 52_000.0, Some(&fast))
        .peer("dante", 18_500.0, Some(&slow));
    report
        .figure("bulk, 1 tunnel", "Gbit/s")
        .peer("ipsx", 21.5, None)
        .peer("dante", 19.0, None);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-report");
    std::fs::create_dir_all(&out).expect("output folder");
    let html = out.join("report.html");
    report.write(&html).expect("written");
    // Two bar charts and one percentile chart.
    let output = std::process::Command::new("node")
        .arg(dashboard.join("tests/report.mjs"))
        .arg(&html)
        .arg(out.join("report.png"))
        .arg("3")
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(out.join("report.png")).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"));
}
