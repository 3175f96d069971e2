//! Which provider is connected from which public IP, and when one is gone for good — sans-I/O:
//! time is an argument, changes come out as values.
//!
//! A provider whose connection drops keeps its IP for a grace period: requester connections
//! fail meanwhile, but its deals and offers stand, so a brief outage (a Wi-Fi hand-over, a
//! router reboot) costs nothing else. Gone longer than the grace, or back from another IP (the
//! home IP was renewed), it is *gone* from its old IP: the node withdraws the offers naming
//! that IP and ends the deals on it as dropped. One public IP serves one provider at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A provider, by its 20-byte address.
pub type Provider = [u8; 20];

/// A change the node must hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `provider` is connected from `ip`: it may offer `ip`.
    Up {
        /// The provider.
        provider: Provider,
        /// Its observed public IP.
        ip: IpAddr,
    },
    /// `provider` no longer serves `ip`.
    Gone {
        /// The provider.
        provider: Provider,
        /// The IP it served.
        ip: IpAddr,
    },
}

/// An arrival the relay refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Another provider holds the IP (connected, or away within its grace).
    IpInUse,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: IpAddr,
    /// The connection that counts; a late close of an older one changes nothing.
    connection: u64,
    away_since: Option<Instant>,
}

/// How long a provider has been connected since the relay first saw it.
#[derive(Debug, Clone, Copy)]
struct Record {
    first_seen: Instant,
    up_before: Duration,
    up_since: Option<Instant>,
}

impl Record {
    fn up_for(&self, now: Instant) -> Duration {
        self.up_before
            + self
                .up_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    fn basis_points(&self, now: Instant) -> u16 {
        let known = now.saturating_duration_since(self.first_seen);
        if known.is_zero() {
            return 10_000;
        }
        let share = self.up_for(now).as_secs_f64() / known.as_secs_f64();
        (share.clamp(0.0, 1.0) * 10_000.0).round() as u16
    }
}

/// Providers' presence.
#[derive(Debug)]
pub struct Presence {
    grace: Duration,
    providers: HashMap<Provider, Entry>,
    holders: HashMap<IpAddr, Provider>,
    /// Uptime since first seen, kept after a provider is gone (it may come back).
    records: HashMap<Provider, Record>,
}

impl Presence {
    /// Presence with a grace period for dropped connections.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            providers: HashMap::new(),
            holders: HashMap::new(),
            records: HashMap::new(),
        }
    }

    /// The share of time `provider` was connected since the relay first saw it, in basis
    /// points (10,000 = always).
    pub fn uptime(&self, provider: Provider, now: Instant) -> Option<u16> {
        Some(self.records.get(&provider)?.basis_points(now))
    }

    /// Every provider's uptime (see [`Presence::uptime`]).
    pub fn uptimes(&self, now: Instant) -> Vec<(Provider, u16)> {
        self.records
            .iter()
            .map(|(provider, record)| (*provider, record.basis_points(now)))
            .collect()
    }

    fn went_up(&mut self, provider: Provider, now: Instant) {
        let record = self.records.entry(provider).or_insert(Record {
            first_seen: now,
            up_before: Duration::ZERO,
            up_since: None,
        });
        record.up_since.get_or_insert(now);
    }

    fn went_down(&mut self, provider: Provider, now: Instant) {
        if let Some(record) = self.records.get_mut(&provider)
            && let Some(since) = record.up_since.take()
        {
            record.up_before += now.saturating_duration_since(since);
        }
    }

    /// `provider` connected from `ip` on `connection` at `now`.
    pub fn arrive(
        &mut self,
        provider: Provider,
        ip: IpAddr,
        connection: u64,
        now: Instant,
    ) -> Result<Vec<Change>, Conflict> {
        if self
            .holders
            .get(&ip)
            .is_some_and(|holder| *holder != provider)
        {
            return Err(Conflict::IpInUse);
        }
        let mut changes = Vec::new();
        if let Some(old) = self.providers.get(&provider)
            && old.ip != ip
        {
            self.holders.remove(&old.ip);
            changes.push(Change::Gone {
                provider,
                ip: old.ip,
            });
        }
        self.providers.insert(
            provider,
            Entry {
                ip,
                connection,
                away_since: None,
            },
        );
        self.holders.insert(ip, provider);
        self.went_up(provider, now);
        changes.push(Change::Up { provider, ip });
        Ok(changes)
    }

    /// `connection` of `provider` closed at `now`.
    pub fn leave(&mut self, provider: Provider, connection: u64, now: Instant) {
        if let Some(entry) = self.providers.get_mut(&provider)
            && entry.connection == connection
        {
            entry.away_since = Some(now);
            self.went_down(provider, now);
        }
    }

    /// The providers away longer than the grace at `now`, taken out.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let grace = self.grace;
        let gone: Vec<Provider> = self
            .providers
            .iter()
            .filter(|(_, entry)| {
                entry
                    .away_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= grace)
            })
            .map(|(provider, _)| *provider)
            .collect();
        gone.into_iter()
            .filter_map(|provider| {
                let entry = self.providers.remove(&provider)?;
                self.holders.remove(&entry.ip);
                Some(Change::Gone {
                    provider,
                    ip: entry.ip,
                })
            })
            .collect()
    }

    /// When the next provider's grace runs out, if one is away.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.providers
            .values()
            .filter_map(|entry| entry.away_since)
            .min()
            .map(|since| since + self.grace)
    }

    /// The provider serving `ip` and whether it is connected now.
    pub fn holder(&self, ip: IpAddr) -> Option<(Provider, bool)> {
        let provider = *self.holders.get(&ip)?;
        let entry = self.providers.get(&provider)?;
        Some((provider, entry.away_since.is_none()))
    }

    /// Providers known (connected or within their grace).
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether no provider is known.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Provider = [1; 20];
    const B: Provider = [2; 20];

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_drop_within_the_grace_costs_nothing_and_a_longer_one_is_gone() {
        let t0 = Instant::now();
        let mut presence = Presence::new(Duration::from_secs(10));
        let home = ip("203.0.113.7");
        assert_eq!(
            presence.arrive(A, home, 1, t0),
            Ok(vec![Change::Up {
                provider: A,
                ip: home
            }])
        );
        presence.leave(A, 1, t0 + Duration::from_secs(1));
        assert_eq!(presence.holder(home), Some((A, false)));
        assert_eq!(presence.next_expiry(), Some(t0 + Duration::from_secs(11)));
        assert!(presence.expire(t0 + Duration::from_secs(10)).is_empty());
        // Back in time, from the same IP: nothing is lost.
        assert_eq!(
            presence.arrive(A, home, 2, t0 + Duration::from_secs(10)),
            Ok(vec![Change::Up {
                provider: A,
                ip: home
            }])
        );
        // The old connection's late close does not mark the new one away.
        presence.leave(A, 1, t0 + Duration::from_secs(11));
        assert_eq!(presence.next_expiry(), None);
        presence.leave(A, 2, t0 + Duration::from_secs(20));
        assert_eq!(
            presence.expire(t0 + Duration::from_secs(30)),
            vec![Change::Gone {
                provider: A,
                ip: home
            }]
        );
        assert!(presence.is_empty());
        assert_eq!(presence.holder(home), None);
    }

    #[test]
    fn a_renewed_home_ip_ends_the_old_one_and_an_ip_serves_one_provider() {
        let t0 = Instant::now();
        let mut presence = Presence::new(Duration::from_secs(10));
        let (old, new) = (ip("203.0.113.7"), ip("203.0.113.8"));
        presence.arrive(A, old, 1, t0).expect("A");
        assert_eq!(presence.arrive(B, old, 2, t0), Err(Conflict::IpInUse));
        presence.leave(A, 1, t0);
        assert_eq!(
            presence.arrive(B, old, 3, t0 + Duration::from_secs(1)),
            Err(Conflict::IpInUse),
            "still A's within the grace"
        );
        assert_eq!(
            presence.arrive(A, new, 4, t0 + Duration::from_secs(2)),
            Ok(vec![
                Change::Gone {
                    provider: A,
                    ip: old
                },
                Change::Up {
                    provider: A,
                    ip: new
                }
            ])
        );
        assert_eq!(
            presence.arrive(B, old, 5, t0 + Duration::from_secs(3)),
            Ok(vec![Change::Up {
                provider: B,
                ip: old
            }])
        );
        assert_eq!(presence.len(), 2);
    }

    #[test]
    fn uptime_is_the_share_of_time_connected_since_first_seen() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut presence = Presence::new(Duration::from_secs(10));
        let home = ip("203.0.113.7");
        assert_eq!(presence.uptime(A, t0), None);
        presence.arrive(A, home, 1, t0).expect("up");
        assert_eq!(presence.uptime(A, at(50)), Some(10_000));
        presence.leave(A, 1, at(75));
        assert_eq!(presence.uptime(A, at(100)), Some(7_500));
        // Gone past the grace, the record stays; back, it counts on.
        presence.expire(at(100));
        presence.arrive(A, home, 2, at(100)).expect("back");
        assert_eq!(presence.uptime(A, at(200)), Some(8_750));
        assert_eq!(presence.uptimes(at(200)), vec![(A, 8_750)]);
    }
}
