//! Providers behind NAT, as the node sees them. A relay tells the node which public IP each
//! relayed provider's connection comes from ([`PresenceHook::up`]) and when a provider is gone
//! from an IP ([`PresenceHook::gone`]). The node lets a relayed provider offer only that IP,
//! points requesters at the relay for its deals (credentials sealed for the relay), and when
//! it is gone withdraws its offers on that IP and ends its deals there as dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::Address;
use axum::http::StatusCode;
use ipsx_api::RelayQuality;
use ipsx_credentials::RelayKey;
use ipsx_engine::{CommandKind, DealStatus, OfferId};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::market::to_engine;
use crate::server::{AppState, lock};

/// Reads what the relay measures of every provider it has seen.
pub type QualitySource = Arc<dyn Fn() -> Vec<(Address, RelayQuality)> + Send + Sync>;

/// The relay a node runs, as providers and requesters are told of it.
#[derive(Clone)]
pub struct RelaySettings {
    /// Shared with the relay: tickets and credential seals.
    pub key: RelayKey,
    /// Where providers dial (QUIC).
    pub providers: SocketAddr,
    /// Where requesters connect (SOCKS5 / HTTP).
    pub requesters: SocketAddr,
    /// The relay's certificate (DER), which providers pin.
    pub certificate: Vec<u8>,
    /// How long a ticket stays valid, seconds. Default one hour (a ticket only opens a
    /// connection; one that is up stays up).
    pub ticket_lifetime: u64,
    /// The relay's measures, read every `note_every` for profiles and `min_uptime` filters.
    pub quality: Option<QualitySource>,
    /// How often the relay's measures are read. Default 10 s.
    pub note_every: Duration,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("providers", &self.providers)
            .field("requesters", &self.requesters)
            .finish_non_exhaustive()
    }
}

impl RelaySettings {
    /// Settings with the default ticket lifetime.
    pub fn new(
        key: RelayKey,
        providers: SocketAddr,
        requesters: SocketAddr,
        certificate: Vec<u8>,
    ) -> Self {
        Self {
            key,
            providers,
            requesters,
            certificate,
            ticket_lifetime: 3600,
            quality: None,
            note_every: Duration::from_secs(10),
        }
    }
}

/// The node's view of relayed providers: the IP each connected one comes from, and the
/// relay's last measures.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    ips: Mutex<HashMap<Address, IpAddr>>,
    quality: Mutex<HashMap<Address, RelayQuality>>,
}

impl Observed {
    pub(crate) fn ip(&self, provider: Address) -> Option<IpAddr> {
        lock(&self.ips).get(&provider).copied()
    }

    pub(crate) fn quality(&self, provider: Address) -> Option<RelayQuality> {
        lock(&self.quality).get(&provider).copied()
    }
}

/// Uptime moves the engine's copy only by whole percents: notes are journaled commands.
const NOTE_STEP: u16 = 100;

/// Reads the relay's measures every `note_every`, keeps them for profiles, and notes each
/// provider's uptime in the engine when it moved by a percent or more (so `min_uptime`
/// filters match on it deterministically).
pub(crate) async fn follow_quality(
    state: Arc<AppState>,
    source: QualitySource,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut noted: HashMap<Address, u16> = HashMap::new();
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let measures = source();
        let changed: Vec<(Address, u16)> = measures
            .iter()
            .filter(|(provider, quality)| {
                noted
                    .get(provider)
                    .is_none_or(|before| before.abs_diff(quality.uptime) >= NOTE_STEP)
            })
            .map(|(provider, quality)| (*provider, quality.uptime))
            .collect();
        *lock(&state.observed.quality) = measures.into_iter().collect();
        for (provider, uptime) in changed {
            let noting = state
                .submit(CommandKind::NoteUptime {
                    provider: to_engine(provider),
                    uptime,
                })
                .await;
            match noting {
                Ok(_) => {
                    noted.insert(provider, uptime);
                }
                Err(error) => tracing::warn!(%provider, error = %error.message, "noting uptime"),
            }
        }
    }
}

/// Checks that a relayed provider offers exactly the IP its relay connection comes from.
pub(crate) fn check_offer(observed: Option<IpAddr>, offered: &[IpAddr]) -> Result<(), ApiError> {
    let Some(observed) = observed else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "relay_not_connected",
            "you registered as relayed: connect to the relay first (POST /v1/relay/access), \
             then offer the IP it sees",
        ));
    };
    if let Some(other) = offered.iter().find(|ip| ip.to_canonical() != observed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_not_observed",
            format!(
                "a relayed provider may offer only the IP its connection comes from \
                 ({observed}), not {other}"
            ),
        ));
    }
    Ok(())
}

/// What a relay calls when a provider's presence changes.
#[derive(Clone)]
pub struct PresenceHook(pub(crate) Arc<AppState>);

impl std::fmt::Debug for PresenceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresenceHook(..)")
    }
}

impl PresenceHook {
    /// `provider` is connected from `ip`; it may offer `ip` from now on.
    pub fn up(&self, provider: Address, ip: IpAddr) {
        tracing::info!(%provider, %ip, "relayed provider up");
        lock(&self.0.observed.ips).insert(provider, ip.to_canonical());
    }

    /// `provider` no longer serves `ip`: its offers naming `ip` are withdrawn and its deals on
    /// `ip` end (dropped if they were running, voided and re-matched if still pending).
    pub fn gone(&self, provider: Address, ip: IpAddr) {
        let ip = ip.to_canonical();
        {
            let mut observed = lock(&self.0.observed.ips);
            if observed.get(&provider) == Some(&ip) {
                observed.remove(&provider);
            }
        }
        tracing::info!(%provider, %ip, "relayed provider gone");
        let state = Arc::clone(&self.0);
        tokio::spawn(async move {
            if let Err(error) = withdraw(&state, provider, ip).await {
                tracing::warn!(%provider, %ip, error = %error.message, "withdrawing failed");
            }
        });
    }
}

/// Cancels `provider`'s offers naming `ip` and fails its live deals on `ip`.
async fn withdraw(state: &AppState, provider: Address, ip: IpAddr) -> Result<(), ApiError> {
    let party = to_engine(provider);
    let (offers, deals) = state
        .query(move |engine| {
            let offers: Vec<OfferId> = engine
                .offers_of(party)
                .filter(|offer| {
                    engine
                        .offer_ips(offer.id)
                        .is_some_and(|ips| ips.iter().any(|held| held.to_canonical() == ip))
                })
                .map(|offer| offer.id)
                .collect();
            let deals: Vec<ipsx_engine::DealId> = engine
                .deals_of(party)
                .filter(|deal| {
                    deal.provider == party
                        && matches!(deal.status(), DealStatus::Pending | DealStatus::Active)
                        && deal.ips.iter().any(|held| held.to_canonical() == ip)
                })
                .map(|deal| deal.id)
                .collect();
            (offers, deals)
        })
        .await?;
    for offer in offers {
        state
            .submit(CommandKind::CancelOffer {
                offer,
                provider: party,
            })
            .await?;
    }
    for deal in deals {
        // A deal that ended meanwhile refuses the move; that is fine.
        if let Err(error) = state
            .submit(CommandKind::ProviderFailed {
                deal,
                provider: party,
            })
            .await
        {
            tracing::debug!(?deal, error = %error.message, "deal already over");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_provider_offers_only_its_observed_ip() {
        let home: IpAddr = "203.0.113.7".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(
            check_offer(None, &[home]).map_err(|e| e.code),
            Err("relay_not_connected")
        );
        assert_eq!(
            check_offer(Some(home), &[home, other]).map_err(|e| e.code),
            Err("ip_not_observed")
        );
        assert_eq!(check_offer(Some(home), &[home]), Ok(()));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        assert_eq!(check_offer(Some(home), &[mapped]), Ok(()));
    }
}
