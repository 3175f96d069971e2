//! The hub against a simple reference: random leases, payers that pay in full, in part or not
//! at all, early ends and ticks. After every tick the hub must agree with a brute-force model
//! (paid-through found second by second, provider totals summed lease by lease), its books must
//! balance to the wei, and every provider must accept what the hub sent it.

use alloy_primitives::{Address, keccak256};
use ipsx_channels::{
    ChannelDomain, ChannelId, Hub, HubConfig, HubLease, LeaseTerms, PayerChannel, ProviderLedger,
    ReceiverChannel, SigningKey,
};
use proptest::prelude::*;

const GRACE: u64 = 3;
const START: u64 = 10_000;

#[derive(Debug, Clone)]
enum Op {
    Lease {
        requester: usize,
        provider: usize,
        rate: u128,
        delay: u64,
        length: u64,
    },
    Pay {
        requester: usize,
        full: bool,
    },
    End {
        lease: usize,
        offset: u64,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3usize, 1..1_000u128, 0..4u64, 1..15u64).prop_map(
            |(requester, provider, rate, delay, length)| Op::Lease { requester, provider, rate, delay, length }
        ),
        4 => (0..3usize, prop::bool::weighted(0.8)).prop_map(|(requester, full)| Op::Pay { requester, full }),
        1 => (0..40usize, 0..6u64).prop_map(|(lease, offset)| Op::End { lease, offset }),
        3 => (0..4u64).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelLease {
    requester: usize,
    provider: usize,
    rate: u128,
    start: u64,
    end: u64,
}

impl ModelLease {
    fn accrued(&self, t: u64) -> u128 {
        self.rate * u128::from(t.clamp(self.start, self.end) - self.start)
    }
}

struct Model {
    leases: Vec<ModelLease>,
    received: [u128; 3],
    paid_through: [u64; 3],
}

impl Model {
    fn owed(&self, requester: usize, t: u64) -> u128 {
        self.leases
            .iter()
            .filter(|l| l.requester == requester)
            .map(|l| l.accrued(t))
            .sum()
    }

    fn tick(&mut self, now: u64) {
        for r in 0..3 {
            let mut t = self.paid_through[r];
            while t < now && self.owed(r, t + 1) <= self.received[r] {
                t += 1;
            }
            self.paid_through[r] = t;
            if now - t > GRACE {
                for lease in self.leases.iter_mut().filter(|l| l.requester == r) {
                    if lease.start < now && now < lease.end {
                        lease.end = now;
                    }
                }
            }
        }
    }

    fn provider_owed(&self, provider: usize) -> u128 {
        self.leases
            .iter()
            .filter(|l| l.provider == provider)
            .map(|l| l.accrued(self.paid_through[l.requester]))
            .sum()
    }
}

fn key(tag: &str) -> SigningKey {
    SigningKey::from_bytes(&keccak256(tag.as_bytes()).0).expect("key")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_hub_pays_providers_exactly_what_requesters_paid(
        ops in prop::collection::vec(op(), 1..120),
        provider_interval in 1..4u64,
    ) {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(0xc0));
        let node = key("node");
        let requesters: Vec<SigningKey> = (0..3).map(|i| key(&format!("requester {i}"))).collect();
        let providers: Vec<Address> = (0..3).map(|i| key(&format!("provider {i}")).address()).collect();
        let mut hub = Hub::new(domain.clone(), node.clone(), HubConfig { grace: GRACE, provider_interval }, START);
        let mut ledgers = Vec::new();
        for (i, requester) in requesters.iter().enumerate() {
            hub.add_requester(ReceiverChannel::new(ChannelId(1 + i as u64), requester.address(), u128::MAX / 4, None));
        }
        for (i, provider) in providers.iter().enumerate() {
            let id = ChannelId(10 + i as u64);
            hub.add_provider(PayerChannel::new(id, *provider, u128::MAX / 4, 0));
            ledgers.push(ProviderLedger::new(ReceiverChannel::new(id, node.address(), u128::MAX / 4, None)));
        }
        let mut model = Model { leases: Vec::new(), received: [0; 3], paid_through: [START; 3] };
        let mut now = START;
        for op in ops {
            match op {
                Op::Lease { requester, provider, rate, delay, length } => {
                    let start = now + delay;
                    let terms = LeaseTerms { id: model.leases.len() as u64, rate, start, end: start + length };
                    hub.add_lease(HubLease { terms, requester: requesters[requester].address(), provider: providers[provider] })
                        .expect("lease");
                    ledgers[provider].add_lease(terms).expect("ledger lease");
                    model.leases.push(ModelLease { requester, provider, rate, start, end: start + length });
                }
                Op::Pay { requester, full } => {
                    let owed = model.owed(requester, now);
                    let latest = model.received[requester];
                    let amount = if full { owed } else { latest + (owed.saturating_sub(latest)) / 2 };
                    if amount > latest {
                        let proof = domain.sign_balance_proof(&requesters[requester], ChannelId(1 + requester as u64), amount);
                        hub.check(requesters[requester].address(), &proof).expect("valid proof");
                        hub.accept(requesters[requester].address(), proof);
                        model.received[requester] = amount;
                    }
                }
                Op::End { lease, offset } => {
                    if let Some(l) = model.leases.get_mut(lease) {
                        let pt = model.paid_through[l.requester];
                        let at = (now + offset).max(pt.min(l.end));
                        // The hub may already have folded a fully paid, ended lease.
                        if hub.end_lease(lease as u64, now + offset).is_ok() {
                            l.end = l.end.min(at.max(l.start));
                        }
                    }
                }
                Op::Advance(seconds) => now += seconds,
            }
            let tick = hub.tick(now);
            model.tick(now);
            for payment in &tick.payments {
                let p = providers.iter().position(|a| *a == payment.provider).expect("provider");
                ledgers[p].check(&domain, &payment.proof, &payment.paid_through).expect("provider accepts");
                ledgers[p].accept(payment.proof, &payment.paid_through);
            }
            for cut in &tick.cuts {
                let r = requesters.iter().position(|k| k.address() == cut.requester).expect("requester");
                prop_assert!(now - model.paid_through[r] > GRACE, "cut only late payers");
            }
            let books = hub.books();
            prop_assert!(books.balance(), "books: {books:?}");
            for (r, requester) in requesters.iter().enumerate() {
                prop_assert_eq!(hub.paid_through(requester.address()), Some(model.paid_through[r]));
            }
            for (p, provider) in providers.iter().enumerate() {
                let (owed, signed) = hub.provider_position(*provider).expect("provider");
                prop_assert_eq!(owed, model.provider_owed(p));
                if provider_interval == 1 {
                    prop_assert_eq!(signed, owed);
                } else {
                    prop_assert!(signed <= owed);
                }
                // What the provider can attribute to leases is exactly what it was signed.
                prop_assert_eq!(ledgers[p].covered(), signed);
            }
        }
    }
}
