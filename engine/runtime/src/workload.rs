//! Synthetic, deterministic markets and command streams, for the demo, the crash tests and the
//! benchmarks. The same arguments always give the same commands.

use std::net::{IpAddr, Ipv4Addr};

use ipsx_engine::{
    Address, Amount, Command, CommandKind, Country, CountrySet, DealId, Filters, IpKind, IpSpec,
    MAX_LEASE_SECONDS, OfferId, OfferSpec, Protocol, ProtocolSet, RequestSpec, Start, TimeInForce,
    Timestamp, Window,
};

/// Start of synthetic time (2026-01-01T00:00:00Z).
pub const EPOCH: Timestamp = Timestamp(1_767_225_600);

/// The shape of a synthetic market.
#[derive(Clone, Copy, Debug)]
pub struct MarketShape {
    /// How many countries offers spread over (at most 249).
    pub countries: usize,
    /// How many offers.
    pub offers: usize,
    /// IPs per offer (at most 256: each offer is one /24's first addresses).
    pub ips_per_offer: u32,
    /// Distinct providers.
    pub providers: u64,
}

impl MarketShape {
    /// About a million IPs over 200 countries: 10,000 offers of 100 IPs.
    pub const MILLION: MarketShape = MarketShape {
        countries: 200,
        offers: 10_000,
        ips_per_offer: 100,
        providers: 2_000,
    };

    /// IPs in the whole market.
    pub fn total_ips(&self) -> u64 {
        self.offers as u64 * u64::from(self.ips_per_offer)
    }

    /// The country of offer `index`.
    pub fn country(&self, index: usize) -> Country {
        Country::from_index(index % self.countries.clamp(1, 249)).expect("index below 249")
    }

    /// Offer number `index`: its own /24 (starting at 11.0.0.0), a price between 100 and 149
    /// base units per IP-second, kinds and protocols varying with the index.
    pub fn offer(&self, index: usize) -> OfferSpec {
        let base = u32::from(Ipv4Addr::new(11, 0, 0, 0)) + ((index as u32) << 8);
        let ips = (0..self.ips_per_offer.min(256))
            .map(|i| IpAddr::V4(Ipv4Addr::from(base + i)))
            .collect();
        let mut protocols = vec![Protocol::Http, Protocol::Https, Protocol::Socks5];
        if index.is_multiple_of(5) {
            protocols.push(Protocol::Smtp);
        }
        OfferSpec {
            provider: Address::from_low_u64(1 + index as u64 % self.providers.max(1)),
            ips: IpSpec::List(ips),
            country: self.country(index),
            region: None,
            city: None,
            asn: 64_512 + (index % 1000) as u32,
            kind: IpKind::ALL[index % 3],
            protocols: ProtocolSet::of(&protocols),
            window: Window {
                from: EPOCH,
                until: Timestamp(EPOCH.0 + 365 * 86_400),
            },
            min_lease: 5,
            max_lease: MAX_LEASE_SECONDS,
            price: 100 + (index as u128 * 7_919) % 50,
            tenants: 1,
        }
    }

    /// Lease request number `index`: `count` IPs in one country for `duration` seconds, IOC,
    /// from one of a thousand fleet wallets.
    pub fn lease(&self, index: usize, count: u32, duration: u64) -> RequestSpec {
        RequestSpec {
            requester: Address::from_low_u64(1_000_000 + index as u64 % 1_000),
            count,
            filters: Filters {
                countries: CountrySet::of(&[self.country(index.wrapping_mul(7_919))]),
                protocols: ProtocolSet::of(&[Protocol::Socks5]),
                ..Filters::default()
            },
            start: Start::Now,
            duration,
            max_price: 1_000,
            time_in_force: TimeInForce::Ioc,
        }
    }
}

/// Command number `index` of a mixed, deterministic stream: offers, leases of 1–3 IPs, provider
/// readiness, cancellations, GTC requests and ticks, with time moving one second every 20
/// commands. Some commands are refused (unknown ids, IPs already offered): real traffic has
/// those too.
pub fn mixed_stream(index: u64) -> Command {
    let at = Timestamp(EPOCH.0 + index / 20);
    let shape = MarketShape {
        countries: 20,
        offers: usize::MAX,
        ips_per_offer: 4,
        providers: 50,
    };
    let kind = match index % 10 {
        0..=2 => CommandKind::PlaceOffer(shape.offer(index as usize)),
        3..=5 => {
            CommandKind::SubmitRequest(shape.lease(index as usize, 1 + (index % 3) as u32, 30))
        }
        6 => CommandKind::ProviderReady {
            deal: DealId(index / 8),
            provider: Address::from_low_u64(1 + (index / 8) % 50),
        },
        7 => CommandKind::CancelOffer {
            offer: OfferId(index / 12),
            provider: Address::from_low_u64(1 + (index / 12) % 50),
        },
        8 => {
            let mut gtc = shape.lease(index as usize, 5, 60);
            gtc.time_in_force = TimeInForce::Gtc {
                expires_at: Timestamp(at.0 + 120),
            };
            gtc.max_price = 100 + Amount::from(index % 60);
            CommandKind::SubmitRequest(gtc)
        }
        _ => CommandKind::Tick,
    };
    Command { at, kind }
}
