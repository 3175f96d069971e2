//! How leases are printed: an aligned table for people, JSON or CSV for programs.

use std::fmt::Write as _;

use ipsx_sdk::{Address, AnchorEntryKind, LeaseView};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            other => Err(format!("unknown format {other:?} (table, json, csv)")),
        }
    }
}

/// One row per leased IP (deals without endpoints — the provider's view — get one row per IP
/// with empty credentials).
pub(crate) fn leases(deals: &[LeaseView], format: Format) -> anyhow::Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(deals)? + "\n");
    }
    let mut rows: Vec<[String; 6]> = Vec::new();
    for view in deals {
        let deal = &view.deal;
        if view.endpoints.is_empty() {
            for ip in &deal.ips {
                rows.push([
                    deal.deal.to_string(),
                    deal.status.to_string(),
                    ip.to_string(),
                    deal.end.to_string(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
        for endpoint in &view.endpoints {
            rows.push([
                deal.deal.to_string(),
                deal.status.to_string(),
                endpoint.ip.to_string(),
                deal.end.to_string(),
                endpoint.socks5h.clone().unwrap_or_default(),
                endpoint.http.clone().unwrap_or_default(),
            ]);
        }
    }
    let header = ["deal", "status", "ip", "ends", "socks5h", "http"].map(str::to_owned);
    let mut out = String::new();
    match format {
        Format::Csv => {
            for row in std::iter::once(&header).chain(&rows) {
                // No field holds a comma or quote (ids, IPs, base64url secrets, URLs of them).
                writeln!(out, "{}", row.join(","))?;
            }
        }
        Format::Table | Format::Json => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    std::iter::once(&header)
                        .chain(&rows)
                        .map(|row| row[i].len())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                writeln!(out, "{}", cells.join("  ").trim_end())?;
            }
        }
    }
    Ok(out)
}

/// A deal's anchored entries and what checking each against the chain found.
pub(crate) fn deal_check(report: &ipsx_sdk::anchor::DealCheck, anchor: Address) -> String {
    use ipsx_sdk::anchor::Verdict;
    let mut out = format!("deal {} against the DealAnchor at {anchor}\n", report.deal);
    for check in &report.entries {
        let entry = &check.entry;
        let verdict = match &check.verdict {
            Verdict::Proven => "proven on chain".to_owned(),
            Verdict::NotAnchoredYet => "epoch not anchored yet".to_owned(),
            Verdict::RootMismatch { on_chain, shown } => {
                format!("FALSE: the chain holds root {on_chain}, the node showed {shown}")
            }
            Verdict::BadProof => "FALSE: the proof does not lead to the anchored root".to_owned(),
            Verdict::OtherDeal => format!("FALSE: an entry of deal {}", entry.deal),
        };
        let kind = match entry.kind {
            AnchorEntryKind::Made => format!(
                "made   {} IPs {}..{} at {}/IP-s",
                entry.ips, entry.start, entry.end, entry.price.0
            ),
            AnchorEntryKind::Ready => format!("ready  at {}", entry.at),
            AnchorEntryKind::Ended => format!(
                "ended  at {}: {} s served, {} paid (outcome {})",
                entry.at, entry.served_seconds, entry.amount.0, entry.outcome
            ),
            AnchorEntryKind::Rated => format!(
                "rated  {} stars ({})",
                entry.stars,
                if entry.outcome == 1 {
                    "provider"
                } else {
                    "requester"
                }
            ),
        };
        out.push_str(&format!(
            "  epoch {:>4}  {kind:<60} {verdict}\n",
            check.epoch
        ));
    }
    if report.pending > 0 {
        out.push_str(&format!(
            "  {} entries in the node's open epoch (no proof yet)\n",
            report.pending
        ));
    }
    for disagreement in &report.disagreements {
        out.push_str(&format!("  DISAGREES: {disagreement}\n"));
    }
    out
}
