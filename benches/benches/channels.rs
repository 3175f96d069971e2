//! Criterion benchmarks of the payment path. `cargo bench -p ipsx-benches --bench channels`.
//!
//! * `proof_sign` / `proof_recover`: one EIP-712 balance proof, libsecp256k1 (what the crate
//!   uses) against pure-Rust k256 (alloy's default signer and recovery), same digest.
//! * `proof_digest`: the EIP-712 hashing alone.
//! * `meter_owed_100k`: what 100,000 running leases owe at a second (per lease-second cost).
//! * `hub_second_100k`: the node's whole payment work for one second with 100,000 running
//!   leases and 100 requesters (1,000 leases each), across 100 or 1,000 providers: check and
//!   accept 100 requester proofs, advance paid-through, sum what each provider is owed, sign one
//!   proof per provider with its per-lease breakdown. Requesters sign on their own
//!   machines, so their signatures are made outside the timed part.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipsx_channels::{
    ChannelDomain, ChannelId, Hub, HubConfig, HubLease, LeaseMeter, LeaseTerms, MeteredPayer,
    PayerChannel, ReceiverChannel, SigningKey, recover_signer, recover_signer_k256,
};

const T0: u64 = 1_000_000;
const REQUESTERS: usize = 100;
const LEASES: usize = 100_000;

fn key(tag: u64) -> SigningKey {
    SigningKey::from_bytes(&keccak256(tag.to_be_bytes()).0).expect("key")
}

fn signatures(c: &mut Criterion) {
    let domain = ChannelDomain::new(31337, Address::repeat_byte(0xce));
    let key = key(1);
    let wallet = PrivateKeySigner::from_bytes(&B256::from(key.to_bytes())).expect("wallet");
    let digest = domain.balance_proof_digest(ChannelId(7), 123_456_789);
    let signature = key.sign_digest(&digest);

    let mut group = c.benchmark_group("proof_sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("libsecp256k1", |b| b.iter(|| key.sign_digest(&digest)));
    group.bench_function("k256", |b| {
        b.iter(|| wallet.sign_hash_sync(&digest).expect("sign"))
    });
    group.finish();

    let mut group = c.benchmark_group("proof_recover");
    group.throughput(Throughput::Elements(1));
    group.bench_function("libsecp256k1", |b| {
        b.iter(|| recover_signer(&digest, &signature).expect("recover"))
    });
    group.bench_function("k256", |b| {
        b.iter(|| recover_signer_k256(&digest, &signature).expect("recover"))
    });
    group.finish();

    c.bench_function("proof_digest", |b| {
        b.iter(|| domain.balance_proof_digest(ChannelId(7), 123_456_789))
    });
}

fn lease(index: usize) -> LeaseTerms {
    LeaseTerms {
        id: index as u64,
        rate: 1_000_000_000_000 + index as u128,
        start: T0 - (index as u64 % 30),
        end: T0 + 30 * 86_400,
    }
}

fn metering(c: &mut Criterion) {
    let mut meter = LeaseMeter::new();
    for index in 0..LEASES {
        meter.add(lease(index)).expect("lease");
    }
    let mut group = c.benchmark_group("meter_owed_100k");
    group.throughput(Throughput::Elements(LEASES as u64));
    let mut now = T0;
    group.bench_function("lease_seconds", |b| {
        b.iter(|| {
            now += 1;
            meter.owed_at(now)
        })
    });
    group.finish();
}

struct Market {
    domain: ChannelDomain,
    hub: Hub,
    payers: Vec<(SigningKey, MeteredPayer)>,
}

fn market(providers: usize, provider_interval: u64) -> Market {
    let domain = ChannelDomain::new(31337, Address::repeat_byte(0xce));
    let node = key(0);
    let config = HubConfig {
        provider_interval,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(domain.clone(), node.clone(), config, T0 - 60);
    let deposit = u128::MAX / 4;
    let mut payers = Vec::new();
    for r in 0..REQUESTERS {
        let requester = key(1 + r as u64);
        let channel = ChannelId(1 + r as u64);
        hub.add_requester(ReceiverChannel::new(
            channel,
            requester.address(),
            deposit,
            None,
        ));
        payers.push((
            requester,
            MeteredPayer::new(PayerChannel::new(channel, node.address(), deposit, 0)),
        ));
    }
    let providers: Vec<Address> = (0..providers)
        .map(|p| key(10_000 + p as u64).address())
        .collect();
    for (p, provider) in providers.iter().enumerate() {
        hub.add_provider(PayerChannel::new(
            ChannelId(100_000 + p as u64),
            *provider,
            deposit,
            0,
        ));
    }
    for index in 0..LEASES {
        let terms = lease(index);
        let r = index % REQUESTERS;
        payers[r].1.meter.add(terms).expect("lease");
        hub.add_lease(HubLease {
            terms,
            requester: payers[r].0.address(),
            provider: providers[index % providers.len()],
        })
        .expect("lease");
    }
    Market {
        domain,
        hub,
        payers,
    }
}

fn hub_second(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_second_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(LEASES as u64));
    // 1,000 providers of 100 leases (small hosts) and 100 of 1,000 (data centres): the node
    // signs one proof per provider per second, so the count of providers sets the cost.
    // With 1,000 providers, also signing each every 2 s (`HubConfig::provider_interval`).
    for (providers, interval) in [(100usize, 1u64), (1_000, 1), (1_000, 2)] {
        let mut market = market(providers, interval);
        let mut now = T0;
        group.bench_function(format!("providers_{providers}_every_{interval}s"), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    now += 1;
                    // Requesters sign on their own machines: not timed.
                    let proofs: Vec<_> = market
                        .payers
                        .iter_mut()
                        .filter_map(|(key, payer)| {
                            let tick = payer.tick(&market.domain, key, now, 60);
                            tick.proof.map(|proof| (key.address(), proof))
                        })
                        .collect();
                    let started = Instant::now();
                    for (requester, proof) in proofs {
                        market.hub.check(requester, &proof).expect("valid");
                        market.hub.accept(requester, proof);
                    }
                    let tick = market.hub.tick(now);
                    spent += started.elapsed();
                    assert!(tick.payments.len() <= providers);
                    assert!(tick.cuts.is_empty());
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signatures, metering, hub_second);
criterion_main!(benches);
