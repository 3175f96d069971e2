//! What the node remembers beside the engine, in one redb file (`data_dir/node.redb`):
//! each provider's proxy credential key and port. What a deal's credentials grant (IPs,
//! protocols, window) comes from the deal itself, which the engine journals.
//!
//! A provider registers once (`POST /v1/providers`): the node makes a 32-byte key, keeps it,
//! and hands it to the provider's daemon, whose proxy then verifies every lease credential the
//! node issues for its IPs without calling back. A provider behind NAT registers as relayed:
//! its deals' endpoints then point at the node's relay, with credentials the relay can check.

use std::net::SocketAddr;
use std::path::Path;

use alloy_primitives::Address;
use ipsx_credentials::{CredentialKey, Grant, Protocols};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use ipsx_api::{DealView, Endpoint, Via};

use ipsx_credentials::RelayKey;

const PROVIDERS: TableDefinition<&[u8; 20], &[u8; 34]> = TableDefinition::new("providers");
/// Providers that serve through a relay (present: relayed).
const RELAYED: TableDefinition<&[u8; 20], ()> = TableDefinition::new("relayed");

/// The node's registry failed on disk.
#[derive(Debug, thiserror::Error)]
#[error("node registry: {0}")]
pub struct RegistryError(#[from] redb::Error);

fn db_error(error: impl Into<redb::Error>) -> RegistryError {
    RegistryError(error.into())
}

/// A registered provider.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    /// The key its proxy verifies credentials with.
    pub key: CredentialKey,
    /// The port its proxy listens on, on every offered IP.
    pub port: u16,
    /// Behind NAT, served through the relay.
    pub relayed: bool,
}

/// The node's registry.
#[derive(Debug)]
pub struct Registry {
    db: Database,
}

impl Registry {
    /// Opens (or creates) the registry at `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        // redb's default cache is 1 GiB, which a node left running would fill: one small row per
        // provider.
        let db = Database::builder()
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(PROVIDERS).map_err(db_error)?;
        txn.open_table(RELAYED).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self { db })
    }

    /// Registers `provider` with its proxy `port`, relayed or not: the first time with
    /// `fresh_key`, later keeping the key it has (only the port and the route change). Durable
    /// when it returns.
    pub fn register(
        &self,
        provider: Address,
        port: u16,
        relayed: bool,
        fresh_key: [u8; 32],
    ) -> Result<ProviderEntry, RegistryError> {
        self.write(provider, port, relayed, |existing| {
            existing.unwrap_or(fresh_key)
        })
    }

    /// Stores `provider`'s entry as given (a cluster's shared entry, which decided the key).
    pub fn store(
        &self,
        provider: Address,
        key: [u8; 32],
        port: u16,
        relayed: bool,
    ) -> Result<ProviderEntry, RegistryError> {
        self.write(provider, port, relayed, |_| key)
    }

    /// Writes `provider`'s port and route with the key `key` picks from the one it has, in
    /// one transaction.
    fn write(
        &self,
        provider: Address,
        port: u16,
        relayed: bool,
        key: impl FnOnce(Option<[u8; 32]>) -> [u8; 32],
    ) -> Result<ProviderEntry, RegistryError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let existing = txn
            .open_table(PROVIDERS)
            .map_err(db_error)?
            .get(&provider.0.0)
            .map_err(db_error)?
            .map(|stored| split(stored.value()).0);
        let key = key(existing);
        put_entry(&txn, provider, key, port, relayed)?;
        txn.commit().map_err(db_error)?;
        Ok(ProviderEntry {
            key: CredentialKey::new(key),
            port,
            relayed,
        })
    }

    /// A registered provider.
    pub fn provider(&self, provider: Address) -> Result<Option<ProviderEntry>, RegistryError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(PROVIDERS).map_err(db_error)?;
        let relayed = txn
            .open_table(RELAYED)
            .map_err(db_error)?
            .get(&provider.0.0)
            .map_err(db_error)?
            .is_some();
        Ok(table.get(&provider.0.0).map_err(db_error)?.map(|stored| {
            let (key, port) = split(stored.value());
            ProviderEntry {
                key: CredentialKey::new(key),
                port,
                relayed,
            }
        }))
    }

    /// The endpoints of a deal's IPs: credentials valid over the lease's window for the
    /// deal's protocols, at the provider's proxy or, for a relayed provider, at the relay's
    /// requester address `relay` gives (and sealed with its key). Empty if the provider has
    /// not registered a proxy.
    pub fn endpoints(
        &self,
        deal: &DealView,
        relay: Option<&(RelayKey, SocketAddr)>,
    ) -> Result<Vec<Endpoint>, RegistryError> {
        let Some(provider) = self.provider(deal.provider)? else {
            return Ok(Vec::new());
        };
        let relay = relay.filter(|_| provider.relayed);
        let protocols = proxy_protocols(&deal.protocols);
        Ok(deal
            .ips
            .iter()
            .map(|ip| {
                let mut credentials = provider.key.issue(&Grant {
                    lease: deal.deal,
                    ip: *ip,
                    protocols,
                    not_before: deal.start,
                    not_after: deal.end,
                });
                let (at, via) = match relay {
                    Some((key, requesters)) => {
                        credentials = key.seal(credentials);
                        (*requesters, Via::Relay)
                    }
                    None => (SocketAddr::new(*ip, provider.port), Via::Direct),
                };
                let url = |scheme: &str| {
                    format!(
                        "{scheme}://{}:{}@{at}",
                        credentials.username, credentials.password
                    )
                };
                Endpoint {
                    ip: *ip,
                    proxy: at,
                    port: at.port(),
                    via,
                    socks5h: protocols
                        .contains(Protocols::SOCKS5)
                        .then(|| url("socks5h")),
                    http: (protocols.contains(Protocols::HTTP)
                        || protocols.contains(Protocols::HTTPS))
                    .then(|| url("http")),
                    username: credentials.username,
                    password: credentials.password,
                }
            })
            .collect())
    }
}

/// Writes a provider's key, port and route in `txn`.
fn put_entry(
    txn: &redb::WriteTransaction,
    provider: Address,
    key: [u8; 32],
    port: u16,
    relayed: bool,
) -> Result<(), RegistryError> {
    let mut value = [0u8; 34];
    value[..32].copy_from_slice(&key);
    value[32..].copy_from_slice(&port.to_be_bytes());
    txn.open_table(PROVIDERS)
        .map_err(db_error)?
        .insert(&provider.0.0, &value)
        .map_err(db_error)?;
    let mut routes = txn.open_table(RELAYED).map_err(db_error)?;
    if relayed {
        routes.insert(&provider.0.0, ()).map_err(db_error)?;
    } else {
        routes.remove(&provider.0.0).map_err(db_error)?;
    }
    Ok(())
}

fn split(value: &[u8; 34]) -> ([u8; 32], u16) {
    let mut key = [0u8; 32];
    key.copy_from_slice(&value[..32]);
    (key, u16::from_be_bytes([value[32], value[33]]))
}

/// The proxy's protocol bits for a deal's protocols.
pub fn proxy_protocols(protocols: &[ipsx_api::Protocol]) -> Protocols {
    use ipsx_api::Protocol;
    protocols
        .iter()
        .fold(Protocols::default(), |bits, protocol| {
            bits.union(match protocol {
                Protocol::Http => Protocols::HTTP,
                Protocol::Https => Protocols::HTTPS,
                Protocol::Socks5 => Protocols::SOCKS5,
                Protocol::Smtp => Protocols::SMTP,
                Protocol::Vpn => Protocols::VPN,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_keeps_its_key_across_registrations_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.redb");
        let provider = Address::repeat_byte(7);
        let first = {
            let registry = Registry::open(&path).expect("open");
            let entry = registry
                .register(provider, 1080, false, [1; 32])
                .expect("register");
            let again = registry
                .register(provider, 2080, false, [2; 32])
                .expect("again");
            assert_eq!(again.port, 2080);
            (entry, again)
        };
        let registry = Registry::open(&path).expect("reopen");
        let stored = registry
            .provider(provider)
            .expect("read")
            .expect("registered");
        assert_eq!(stored.port, 2080);
        // Same key all along: a credential issued under the first verifies under the stored one.
        let grant = Grant {
            lease: 1,
            ip: "127.0.0.2".parse().expect("ip"),
            protocols: Protocols::SOCKS5,
            not_before: 0,
            not_after: 10,
        };
        let issued = first.0.key.issue(&grant);
        assert_eq!(
            stored.key.verify(
                issued.username.as_bytes(),
                issued.password.as_bytes(),
                grant.ip,
                5
            ),
            Ok(grant)
        );
        assert_eq!(first.1.key.issue(&grant), issued);
    }

    #[test]
    fn endpoints_grant_exactly_the_deals_protocols() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(&dir.path().join("node.redb")).expect("open");
        let provider = Address::repeat_byte(7);
        let entry = registry
            .register(provider, 1080, false, [1; 32])
            .expect("register");
        let deal = DealView {
            deal: 4,
            request: 1,
            offer: 1,
            provider,
            requester: Address::repeat_byte(8),
            ips: vec!["127.0.0.2".parse().expect("ip")],
            start: 100,
            end: 160,
            price: ipsx_api::TokenAmount(1),
            protocols: vec![ipsx_api::Protocol::Socks5],
            status: ipsx_api::DealStatus::Pending,
            closed_at: None,
        };
        let endpoints = registry.endpoints(&deal, None).expect("endpoints");
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints[0].socks5h.is_some());
        assert_eq!(
            endpoints[0].http, None,
            "no HTTP URL for a SOCKS5-only deal"
        );
        let grant = entry
            .key
            .verify(
                endpoints[0].username.as_bytes(),
                endpoints[0].password.as_bytes(),
                deal.ips[0],
                120,
            )
            .expect("valid credentials");
        assert_eq!(
            grant.protocols,
            Protocols::SOCKS5,
            "never more than the deal's"
        );
    }

    #[test]
    fn deal_protocols_map_to_proxy_bits() {
        use ipsx_api::Protocol;
        assert_eq!(
            proxy_protocols(&[Protocol::Socks5, Protocol::Vpn]),
            Protocols::SOCKS5.union(Protocols::VPN)
        );
        assert_eq!(proxy_protocols(&[]), Protocols::default());
    }
}
