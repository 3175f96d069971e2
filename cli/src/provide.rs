//! `ipsx provide`: the provider's daemon. From a TOML file of IPs, geo, kind, protocols, window
//! and price it registers with the node, places the offers, runs the egress proxy on those IPs
//! with the key the node gave it, reports ready for each new deal of its IPs, and cuts a deal's
//! connections as soon as the deal ends early (cancelled, voided, payment lapsed).
//!
//! ```toml
//! node = "http://127.0.0.1:7700"
//! key_file = "provider.key"
//! port = 1080
//!
//! [[offer]]
//! ips = ["127.0.0.2", "127.0.0.3"]
//! country = "DE"
//! kind = "residential"
//! protocols = ["socks5", "http", "https"]
//! price = 2
//! hours = 24
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ipsx_proxy::{CredentialKey, Guard, ProxyConfig};
use ipsx_sdk::{Client, OfferBody, TokenAmount, Wallet};
use serde::Deserialize;

/// The daemon's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvideConfig {
    /// The node's API.
    #[serde(default = "default_node")]
    pub(crate) node: String,
    /// The provider wallet's private key file (hex), relative to the config file.
    pub(crate) key_file: PathBuf,
    /// The proxy's port on every IP.
    #[serde(default = "default_port")]
    pub(crate) port: u16,
    /// Let leases reach loopback destinations: local demos only.
    #[serde(default)]
    pub(crate) allow_loopback: bool,
    /// What to offer.
    #[serde(rename = "offer")]
    pub(crate) offers: Vec<OfferConfig>,
}

/// One offer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferConfig {
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) country: String,
    #[serde(default)]
    pub(crate) city: Option<String>,
    #[serde(default = "default_kind")]
    pub(crate) kind: String,
    #[serde(default = "default_protocols")]
    pub(crate) protocols: Vec<String>,
    pub(crate) price: u64,
    #[serde(default = "default_hours")]
    pub(crate) hours: u64,
    #[serde(default)]
    pub(crate) asn: u32,
}

fn default_node() -> String {
    "http://127.0.0.1:7700".to_owned()
}

fn default_port() -> u16 {
    1080
}

fn default_kind() -> String {
    "residential".to_owned()
}

fn default_protocols() -> Vec<String> {
    ["socks5", "http", "https"].map(str::to_owned).to_vec()
}

fn default_hours() -> u64 {
    24
}

impl ProvideConfig {
    /// Reads and checks a config file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        if config.offers.is_empty() {
            bail!("{}: no [[offer]]", path.display());
        }
        if config.offers.iter().any(|offer| offer.ips.is_empty()) {
            bail!("{}: an [[offer]] lists no ips", path.display());
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let key_file = base.join(&config.key_file);
        Ok((config, key_file))
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub(crate) async fn run(config_path: &Path) -> anyhow::Result<()> {
    let (config, key_file) = ProvideConfig::load(config_path)?;
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let wallet: Wallet = key
        .trim()
        .parse()
        .context("the wallet key must be 32 bytes of hex")?;
    let mut node = Client::new(&config.node);
    node.sign_in(&wallet)
        .await
        .with_context(|| format!("signing in to {}", config.node))?;
    let registered = node.register_provider(config.port).await?;

    let ips: Vec<IpAddr> = config.offers.iter().flat_map(|o| o.ips.clone()).collect();
    let mut proxy_config = ProxyConfig::new(
        ips.iter()
            .map(|ip| SocketAddr::new(*ip, config.port))
            .collect(),
        CredentialKey::from_hex(&registered.proxy_key)?,
    );
    proxy_config.guard = Guard {
        allow_loopback: config.allow_loopback,
    };
    let proxy = ipsx_proxy::start(proxy_config)
        .await
        .context("starting the proxy (is every offered IP on this machine?)")?;
    println!("serving {} IPs on port {}", ips.len(), config.port);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for offer in &config.offers {
        let mut body = OfferBody::new(
            offer.ips.clone(),
            &offer.country,
            &offer.kind,
            offer.protocols.clone(),
            now + offer.hours * 3600,
            TokenAmount(u128::from(offer.price)),
        );
        body.city = offer.city.clone();
        body.asn = offer.asn;
        let placed = node.place_offer(&body).await?;
        println!(
            "offer {} ({} IPs, {})",
            placed.offer, placed.ips, offer.country
        );
    }

    let ours: HashSet<IpAddr> = ips.into_iter().collect();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut cut: HashSet<u64> = HashSet::new();
    let me = wallet.address();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            interrupted = tokio::signal::ctrl_c() => { interrupted?; break; }
            _ = terminate.recv() => break,
        }
        let deals = match node.deals().await {
            Ok(deals) => deals,
            Err(error) => {
                tracing::warn!(%error, "reading deals failed; retrying");
                continue;
            }
        };
        for view in deals.iter().filter(|view| view.deal.provider == me) {
            let deal = &view.deal;
            match deal.status.as_str() {
                "pending" if deal.ips.iter().all(|ip| ours.contains(ip)) => {
                    match node.ready(deal.deal).await {
                        Ok(_) => println!(
                            "deal {} ready: {} IPs for {} until {}",
                            deal.deal,
                            deal.ips.len(),
                            deal.requester,
                            deal.end
                        ),
                        Err(error) => tracing::warn!(deal = deal.deal, %error, "ready refused"),
                    }
                }
                "cancelled" | "voided" | "payment_lapsed" | "provider_dropped"
                    if cut.insert(deal.deal) =>
                {
                    proxy.leases.cut(deal.deal);
                    println!("deal {} {}: cut", deal.deal, deal.status);
                }
                _ => {}
            }
        }
    }
    println!("stopping: draining the proxy");
    proxy.drain(Duration::from_secs(10)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_reads_with_defaults_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("provide.toml");
        std::fs::write(
            &path,
            "key_file = \"p.key\"\n[[offer]]\nips = [\"127.0.0.2\"]\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        let (config, key_file) = ProvideConfig::load(&path).expect("loads");
        assert_eq!(config.port, 1080);
        assert_eq!(config.offers[0].protocols, ["socks5", "http", "https"]);
        assert_eq!(key_file, dir.path().join("p.key"));

        std::fs::write(&path, "key_file = \"p.key\"\noffer = []\n").expect("write");
        assert!(ProvideConfig::load(&path).is_err(), "no offers");
        std::fs::write(
            &path,
            "key_file = \"p.key\"\nprot = 1\n[[offer]]\nips = []\ncountry = \"DE\"\nprice = 2\n",
        )
        .expect("write");
        let error = ProvideConfig::load(&path).expect_err("unknown field");
        assert!(format!("{error:#}").contains("prot"), "{error:#}");
    }
}
