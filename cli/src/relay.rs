//! `ipsx relay`: a relay run apart from the node (another machine, another region). It serves
//! providers and requesters exactly as the node's own relay, and reports to the node over its
//! API: every presence change before the provider is welcomed, and a heartbeat with the
//! providers' measures every 10 s. Reports are tagged with the relay key the node keeps in
//! `DATA_DIR/relay.key` (`ipsx node --accept-relays`); each has a sequence number and a send
//! time, so a copied report is refused.
//!
//! ```text
//! ipsx relay --node https://node.example --key-file relay.key \
//!   --quic 198.51.100.7:4433 --listen 198.51.100.7:1081 --data-dir relay-data
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::Address;
use anyhow::Context;
use clap::Args;
use ipsx_sdk::{PresenceChange, ProviderQuality, RelayReport, RelayView};

use crate::unix_now;

/// Flags of `ipsx relay`.
#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:7700", env = "IPSX_NODE")]
    node: String,
    /// The node's relay key (64 hex digits, from the node's `DATA_DIR/relay.key`).
    #[arg(long)]
    key_file: PathBuf,
    /// The UDP address providers dial (QUIC), as they reach it.
    #[arg(long)]
    quic: SocketAddr,
    /// The TCP address requesters connect to, as they reach it.
    #[arg(long)]
    listen: SocketAddr,
    /// Where the relay keeps its certificate.
    #[arg(long, default_value = "ipsx-relay")]
    data_dir: PathBuf,
    /// Seconds a provider whose connection dropped keeps its IP, offers and deals.
    #[arg(long, default_value_t = 10)]
    grace: u64,
}

/// Reports to the node, in order, each retried until the node has taken it.
struct Reporter {
    http: reqwest::Client,
    url: String,
    key: ipsx_credentials::RelayKey,
    relay: RelayView,
    /// Starts at the launch time in milliseconds, so a restarted relay keeps counting up.
    seq: AtomicU64,
}

impl Reporter {
    async fn send(&self, changes: Vec<PresenceChange>, quality: Vec<ProviderQuality>) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.try_send(&changes, &quality).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, "reporting to the node failed; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    async fn try_send(
        &self,
        changes: &[PresenceChange],
        quality: &[ProviderQuality],
    ) -> anyhow::Result<()> {
        let report = RelayReport {
            relay: self.relay.clone(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            sent_at: unix_now(),
            changes: changes.to_vec(),
            quality: quality.to_vec(),
        };
        let body = serde_json::to_vec(&report)?;
        let answer = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-ipsx-relay-tag", self.key.report_tag(&body))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "the node answered {}: {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
        Ok(())
    }
}

/// Runs the relay until SIGINT/SIGTERM.
pub(crate) async fn run(args: RelayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.quic.ip().is_unspecified() && !args.listen.ip().is_unspecified(),
        "the relay's addresses are told to providers and requesters: give the ones they reach"
    );
    let text = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("reading {}", args.key_file.display()))?;
    let key = ipsx_credentials::RelayKey::from_hex(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.key_file.display()))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let identity = ipsx_relay::Identity::load_or_generate(&args.data_dir.join("relay.identity"))?;
    // Bound first: the addresses the node hands out must be the real ones (ports included).
    let slot: Arc<std::sync::OnceLock<Arc<Reporter>>> = Arc::default();
    let reports = Arc::clone(&slot);
    let on_change: ipsx_relay::OnChange = Arc::new(move |change| {
        let reporter = reports.get().cloned();
        Box::pin(async move {
            let Some(reporter) = reporter else {
                return;
            };
            let (provider, ip, present) = match change {
                ipsx_relay::Change::Up { provider, ip } => (provider, ip, true),
                ipsx_relay::Change::Gone { provider, ip } => (provider, ip, false),
            };
            let change = PresenceChange {
                provider: Address::from(provider),
                ip,
                present,
            };
            reporter.send(vec![change], Vec::new()).await;
        })
    });
    let mut config =
        ipsx_relay::RelayConfig::new(args.quic, args.listen, identity.clone(), key.clone());
    config.grace = Duration::from_secs(args.grace);
    let relay = ipsx_relay::start(config, on_change).await?;
    let reporter = Arc::new(Reporter {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        url: format!("{}/v1/relays/report", args.node.trim_end_matches('/')),
        key,
        relay: RelayView {
            providers: relay.providers,
            requesters: relay.requesters,
            certificate: alloy_primitives::hex::encode(&identity.certificate),
        },
        seq: AtomicU64::new(u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis(),
        )?),
    });
    // The node learns of the relay before any provider can be sent to it.
    reporter.send(Vec::new(), Vec::new()).await;
    let _ = slot.set(Arc::clone(&reporter));
    println!(
        "relay quic {} requesters {}",
        relay.providers, relay.requesters
    );
    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = heartbeat.tick() => {}
        }
        let quality = relay
            .qualities()
            .into_iter()
            .map(|measured| {
                let (provider, quality) = crate::node::relay_quality(measured);
                ProviderQuality { provider, quality }
            })
            .collect();
        reporter.send(Vec::new(), quality).await;
    }
    relay.shutdown();
    Ok(())
}
