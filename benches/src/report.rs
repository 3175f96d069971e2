//! A benchmark run as one self-contained HTML page: for each figure, a bar per peer (the
//! medians the table prints) and, where latencies were measured, each peer's HDR percentile
//! curve — drawn by uPlot, inlined from the copy the node's dashboard embeds (the pinned npm
//! package), so the file opens anywhere, offline, and two runs can be put side by side.
//!
//! ```
//! use ipsx_benches::report::Report;
//!
//! let mut latency = ipsx_benches::latency_histogram();
//! latency.record(1_500).unwrap();
//! let mut report = Report::new("proxy-load", "3 rounds, 2 shared cores");
//! report
//!     .figure("CONNECT + 128 B", "tunnels/s")
//!     .peer("ipsx", 52_000.0, Some(&latency))
//!     .peer("dante", 18_000.0, None);
//! let html = report.html();
//! assert!(html.contains("\"ipsx\"") && html.contains("uPlot"));
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

/// uPlot, as the dashboard embeds it (copied from the pinned npm package).
const UPLOT_JS: &str = include_str!("../../gateway/src/dashboard/assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../gateway/src/dashboard/assets/vendor/uPlot.min.css");

/// The quantiles each latency curve is drawn at (and the maximum after them).
const QUANTILES: [f64; 11] = [
    0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
];

/// One peer's measurement of a figure.
#[derive(Debug, Clone)]
pub struct PeerFigure {
    /// The peer (`ipsx`, `dante`, `direct` …).
    pub peer: String,
    /// The figure's value (a median of rounds).
    pub value: f64,
    /// (quantile, nanoseconds) along its latency distribution, the last point the maximum.
    pub latency: Vec<(f64, u64)>,
}

/// One figure compared across peers.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What is measured.
    pub title: String,
    /// Its unit (`Gbit/s`, `requests/s` …).
    pub unit: String,
    /// Each peer's measurement, in the order given.
    pub peers: Vec<PeerFigure>,
}

impl Figure {
    /// Adds `peer`'s `value`, with its latency histogram (nanoseconds) if one was measured.
    pub fn peer(
        &mut self,
        peer: impl Into<String>,
        value: f64,
        latency: Option<&Histogram<u64>>,
    ) -> &mut Figure {
        let latency = latency
            .filter(|histogram| !histogram.is_empty())
            .map(|histogram| {
                let mut points: Vec<(f64, u64)> = QUANTILES
                    .iter()
                    .map(|q| (*q, histogram.value_at_quantile(*q)))
                    .collect();
                points.push((1.0, histogram.max()));
                points
            })
            .unwrap_or_default();
        self.peers.push(PeerFigure {
            peer: peer.into(),
            value,
            latency,
        });
        self
    }
}

/// A run's figures, written as one HTML page.
#[derive(Debug, Clone)]
pub struct Report {
    title: String,
    about: String,
    figures: Vec<Figure>,
}

impl Report {
    /// An empty report; `about` says how the run was made (rounds, machine, command).
    pub fn new(title: impl Into<String>, about: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            about: about.into(),
            figures: Vec::new(),
        }
    }

    /// A new figure, to add peers to.
    pub fn figure(&mut self, title: impl Into<String>, unit: impl Into<String>) -> &mut Figure {
        self.figures.push(Figure {
            title: title.into(),
            unit: unit.into(),
            peers: Vec::new(),
        });
        self.figures.last_mut().expect("just pushed")
    }

    /// The figures so far.
    pub fn figures(&self) -> &[Figure] {
        &self.figures
    }

    /// Where a harness writes its report unless told otherwise:
    /// `target/bench-reports/<name>.html` under the working directory.
    pub fn default_path(name: &str) -> PathBuf {
        Path::new("target")
            .join("bench-reports")
            .join(format!("{name}.html"))
    }

    /// Writes the page to `path` (its folder made if missing) and says where on stderr.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(path, self.html())?;
        eprintln!("report: {}", path.display());
        Ok(())
    }

    /// The page.
    pub fn html(&self) -> String {
        let mut html = String::with_capacity(UPLOT_JS.len() + 16_384);
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title}</title>\n<style>{UPLOT_CSS}\n{STYLE}</style></head>\n<body>\
             <h1>{title}</h1><p class=\"about\">{about}</p><div id=\"figures\"></div>\n\
             <script>{UPLOT_JS}</script>\n<script>const REPORT = {data};\n{SCRIPT}</script>\
             </body></html>\n",
            title = escape(&self.title),
            about = escape(&self.about),
            data = self.json(),
        );
        html
    }

    /// The figures as JSON, safe inside a `<script>` element.
    fn json(&self) -> String {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|figure| {
                serde_json::json!({
                    "title": figure.title,
                    "unit": figure.unit,
                    "peers": figure.peers.iter().map(|p| serde_json::json!({
                        "peer": p.peer,
                        "value": p.value,
                        "latency": p.latency,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        // `</` would end the script element early, whatever a peer is called.
        serde_json::Value::Array(figures)
            .to_string()
            .replace("</", "<\\/")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;color:#1d2433;margin:2rem;max-width:1100px}\
h1{margin:0}.about{color:#667085}section{border:1px solid #e4e7ec;border-radius:8px;\
padding:1rem;margin:1rem 0}h2{font-size:1.05rem;margin:0 0 .5rem}table{border-collapse:collapse;\
margin-top:.5rem;font-variant-numeric:tabular-nums}td,th{padding:.25rem .6rem;\
border-bottom:1px solid #e4e7ec;text-align:right}th:first-child,td:first-child{text-align:left}";

/// Draws each figure: a bar per peer, then the latency percentiles (x: the number of nines).
const SCRIPT: &str = r##"
const COLORS = ["#2f6fed", "#e4572e", "#12805c", "#a259ff", "#f3a712", "#29b6d1"];
const nines = (q) => (q >= 1 ? null : -Math.log10(1 - q));
const pretty = (ns) => (ns == null ? "" : ns >= 1e9 ? (ns / 1e9).toPrecision(3) + " s" : ns >= 1e6 ? (ns / 1e6).toPrecision(3) + " ms" : ns >= 1e3 ? (ns / 1e3).toPrecision(3) + " µs" : ns + " ns");
function section(figure) {
  const box = document.createElement("section");
  const title = document.createElement("h2");
  title.textContent = `${figure.title} (${figure.unit})`;
  box.appendChild(title);
  document.getElementById("figures").appendChild(box);
  return box;
}
for (const figure of REPORT) {
  const box = section(figure);
  const bars = document.createElement("div");
  box.appendChild(bars);
  const names = figure.peers.map((p) => p.peer);
  new uPlot({
    width: 900, height: 220,
    scales: { x: { time: false, range: [-0.5, names.length - 0.5] }, y: { range: (u, min, max) => [0, max * 1.1 || 1] } },
    axes: [{ values: (u, ticks) => ticks.map((t) => names[t] ?? ""), splits: () => names.map((_, i) => i) }, { label: figure.unit, size: 80 }],
    series: [{}, { label: figure.unit, fill: "rgba(47,111,237,.35)", stroke: "#2f6fed", paths: uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false } }],
    legend: { show: false },
  }, [names.map((_, i) => i), figure.peers.map((p) => p.value)], bars);
  const measured = figure.peers.filter((p) => p.latency.length);
  if (measured.length) {
    const curve = document.createElement("div");
    box.appendChild(curve);
    const qs = measured[0].latency.slice(0, -1).map(([q]) => q);
    const xs = qs.map(nines);
    new uPlot({
      width: 900, height: 280,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: "percentile", splits: () => xs.filter((x) => Math.abs(x - Math.round(x)) < 1e-9 || x === nines(0.5)), values: (u, ticks) => ticks.map((t) => (100 * (1 - Math.pow(10, -t))).toPrecision(6).replace(/\.?0+$/, "") + "%") },
             { label: "latency", values: (u, ticks) => ticks.map(pretty), size: 70 }],
      series: [{ label: "percentile" }, ...measured.map((p, i) => ({ label: p.peer, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true } }))],
    }, [xs, ...measured.map((p) => p.latency.slice(0, -1).map(([, ns]) => ns))], curve);
  }
  const table = document.createElement("table");
  const head = ["peer", figure.unit, "p50", "p99", "p99.9", "max"];
  const rows = [head, ...figure.peers.map((p) => {
    const at = (q) => { const point = p.latency.find(([x]) => x === q); return point ? pretty(point[1]) : "—"; };
    const max = p.latency.length ? pretty(p.latency[p.latency.length - 1][1]) : "—";
    return [p.peer, p.value.toLocaleString(undefined, { maximumFractionDigits: 3 }), at(0.5), at(0.99), at(0.999), max];
  })];
  rows.forEach((values, i) => {
    const tr = table.insertRow();
    values.forEach((v) => { const cell = document.createElement(i ? "td" : "th"); cell.textContent = v; tr.appendChild(cell); });
  });
  box.appendChild(table);
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_named_to_break_out_stays_inside_the_data() {
        let mut report = Report::new("t <b>", "a & b");
        report
            .figure("f", "u")
            .peer("</script><script>alert(1)</script>", 1.0, None);
        let html = report.html();
        assert!(!html.contains("</script><script>alert"));
        assert!(html.contains("t &lt;b&gt;") && html.contains("a &amp; b"));
    }

    #[test]
    fn latencies_are_drawn_at_every_quantile_then_the_maximum() {
        let mut latency = crate::latency_histogram();
        for nanos in 1..=10_000u64 {
            latency.record(nanos * 100).expect("in range");
        }
        let mut report = Report::new("t", "");
        report.figure("f", "u").peer("ipsx", 2.0, Some(&latency));
        let points = &report.figures()[0].peers[0].latency;
        assert_eq!(points.len(), QUANTILES.len() + 1);
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1), "{points:?}");
        assert_eq!(points.last().map(|p| p.1), Some(latency.max()));
    }
}
