//! Providers behind NAT, as the node sees them. A relay tells the node which public IP each
//! relayed provider's connection comes from ([`PresenceHook::up`]) and when a provider is gone
//! from an IP ([`PresenceHook::gone`]). The node lets a relayed provider offer only that IP,
//! points requesters at the relay for its deals (credentials sealed for the relay), and when
//! it is gone withdraws its offers on that IP and ends its deals there as dropped.

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use axum::http::StatusCode;
use ipsx_api::{RelayQuality, RelayReport, ReportTaken};
use ipsx_credentials::RelayKey;
use ipsx_engine::{CommandKind, DealStatus, OfferId};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::market::to_engine;
use crate::server::{AppState, lock};

/// Reads what the relay measures of every provider it has seen.
pub type QualitySource = Arc<dyn Fn() -> Vec<(Address, RelayQuality)> + Send + Sync>;

/// A relay as providers and requesters reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// Where providers dial (QUIC).
    pub providers: SocketAddr,
    /// Where requesters connect (SOCKS5 / HTTP).
    pub requesters: SocketAddr,
    /// Its certificate (DER), which providers pin.
    pub certificate: Vec<u8>,
}

/// The node's relays: the one it runs itself, if any, and those run apart that report to it,
/// all sharing one key for tickets, seals and reports.
#[derive(Clone)]
pub struct RelaySettings {
    /// Shared with every relay: tickets, credential seals, reports.
    pub key: RelayKey,
    /// The relay this node runs in its own process, if any.
    pub local: Option<RelayInfo>,
    /// Its measures, read every `note_every` for profiles and `min_uptime` filters.
    pub quality: Option<QualitySource>,
    /// How long a ticket stays valid, seconds. Default one hour (a ticket only opens a
    /// connection; one that is up stays up).
    pub ticket_lifetime: u64,
    /// How often measures are noted. Default 10 s.
    pub note_every: Duration,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl RelaySettings {
    /// Relays that share `key`, none run by the node itself yet.
    pub fn new(key: RelayKey) -> Self {
        Self {
            key,
            local: None,
            quality: None,
            ticket_lifetime: 3600,
            note_every: Duration::from_secs(10),
        }
    }
}

/// A relay run apart, as its reports describe it.
#[derive(Debug)]
struct Remote {
    info: RelayInfo,
    seq: u64,
    seen: Instant,
}

/// A relay run apart that has not reported for this long is not handed to providers.
const REMOTE_FRESH: Duration = Duration::from_secs(60);
/// Reports sent longer ago (or later) than this are refused.
const REPORT_SKEW: u64 = 30;

/// The node's view of relayed providers: the IP each connected one comes from, and the
/// relay's last measures.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    ips: Mutex<HashMap<Address, IpAddr>>,
    quality: Mutex<HashMap<Address, RelayQuality>>,
    /// The relay each relayed provider was last connected to.
    on: Mutex<HashMap<Address, RelayInfo>>,
    /// Relays run apart, by their QUIC address.
    remotes: Mutex<HashMap<SocketAddr, Remote>>,
}

impl Observed {
    /// Where requesters reach `provider`: the relay it was last on, else the node's own.
    pub(crate) fn requesters(
        &self,
        provider: Address,
        local: Option<&RelayInfo>,
    ) -> Option<SocketAddr> {
        lock(&self.on)
            .get(&provider)
            .map(|info| info.requesters)
            .or(local.map(|info| info.requesters))
    }

    /// A relay to hand a provider: the node's own, else the freshest one run apart.
    pub(crate) fn relay_for(&self, local: Option<&RelayInfo>) -> Option<RelayInfo> {
        if let Some(local) = local {
            return Some(local.clone());
        }
        lock(&self.remotes)
            .values()
            .filter(|remote| remote.seen.elapsed() < REMOTE_FRESH)
            .max_by_key(|remote| remote.seen)
            .map(|remote| remote.info.clone())
    }

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
    source: Option<QualitySource>,
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
        if let Some(source) = &source {
            lock(&state.observed.quality).extend(source());
        }
        let measures: Vec<(Address, RelayQuality)> = lock(&state.observed.quality)
            .iter()
            .map(|(provider, quality)| (*provider, *quality))
            .collect();
        let changed: Vec<(Address, u16)> = measures
            .iter()
            .filter(|(provider, quality)| {
                noted
                    .get(provider)
                    .is_none_or(|before| before.abs_diff(quality.uptime) >= NOTE_STEP)
            })
            .map(|(provider, quality)| (*provider, quality.uptime))
            .collect();
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
            ErrorCode::RelayNotConnected,
            "you registered as relayed: connect to the relay first (POST /v1/relay/access), \
             then offer the IP it sees",
        ));
    };
    if let Some(other) = offered.iter().find(|ip| ip.to_canonical() != observed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::IpNotObserved,
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
    /// `provider` is connected from `ip` to the node's own relay; it may offer `ip` from now
    /// on.
    pub fn up(&self, provider: Address, ip: IpAddr) {
        tracing::info!(%provider, %ip, "relayed provider up");
        lock(&self.0.observed.ips).insert(provider, ip.to_canonical());
        lock(&self.0.observed.on).remove(&provider);
    }

    /// `provider` is connected from `ip` to a relay run apart.
    fn up_via(&self, provider: Address, ip: IpAddr, relay: &RelayInfo) {
        self.up(provider, ip);
        lock(&self.0.observed.on).insert(provider, relay.clone());
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

/// Takes a report from a relay run apart: its tag under the relay key, its age, its sequence,
/// then its changes and measures. Nothing is applied from a refused report.
pub(crate) fn take_report(
    state: &Arc<AppState>,
    settings: &RelaySettings,
    body: &[u8],
    tag: Option<&str>,
    now: u64,
) -> Result<ReportTaken, ApiError> {
    if !tag.is_some_and(|tag| settings.key.check_report(body, tag)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::BadRelayTag,
            "a relay report must carry x-ipsx-relay-tag, made with the node's relay key",
        ));
    }
    let report: RelayReport = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidInput, e.to_string()))?;
    if report.sent_at.abs_diff(now) > REPORT_SKEW {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::StaleReport,
            "the report was sent more than 30 s from now (a replay, or a clock far off)",
        ));
    }
    let certificate = alloy_primitives::hex::decode(&report.relay.certificate)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidInput, format!("certificate: {e}")))?;
    let info = RelayInfo {
        providers: report.relay.providers,
        requesters: report.relay.requesters,
        certificate,
    };
    {
        let mut remotes = lock(&state.observed.remotes);
        if remotes
            .get(&info.providers)
            .is_some_and(|remote| report.seq <= remote.seq)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ReplayedReport,
                "this relay already reported this sequence number",
            ));
        }
        remotes.insert(
            info.providers,
            Remote {
                info: info.clone(),
                seq: report.seq,
                seen: Instant::now(),
            },
        );
    }
    let hook = PresenceHook(Arc::clone(state));
    for change in &report.changes {
        if change.present {
            hook.up_via(change.provider, change.ip, &info);
        } else {
            hook.gone(change.provider, change.ip);
        }
    }
    lock(&state.observed.quality).extend(
        report
            .quality
            .iter()
            .map(|measured| (measured.provider, measured.quality)),
    );
    Ok(ReportTaken {
        changes: u32::try_from(report.changes.len()).unwrap_or(u32::MAX),
    })
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
            Err(ErrorCode::RelayNotConnected)
        );
        assert_eq!(
            check_offer(Some(home), &[home, other]).map_err(|e| e.code),
            Err(ErrorCode::IpNotObserved)
        );
        assert_eq!(check_offer(Some(home), &[home]), Ok(()));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        assert_eq!(check_offer(Some(home), &[mapped]), Ok(()));
    }
}
