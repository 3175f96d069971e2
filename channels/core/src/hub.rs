//! The node's payment hub: one channel in from each requester, one channel out to each provider.
//!
//! ```text
//!   requester ──proof (all its leases)──► Hub ──proof (all its leases) + per-lease paid-through──► provider
//!                                          │
//!     per requester: received amount ──► paid through second T (the meter's inverse)
//!     per lease:     paid through min(T of its requester, lease end)
//!     per provider:  owed = Σ its leases' rate × paid seconds  ──► one signed proof per tick
//! ```
//!
//! The hub pays a provider for a lease only as far as that lease's requester has paid, so its
//! books balance to the wei at every tick: what requesters' proofs sum to equals what the hub
//! owes providers plus the part of a requester's payment not yet matched by a whole second
//! ([`Books::unallocated`], zero when requesters sign what they owe at whole seconds). The
//! platform's commission is taken by the contract when providers checkpoint; the node's address
//! is the contract's treasury, so the commission on its own inbound checkpoints returns to it.
//!
//! A requester whose payments fall more than `grace` seconds behind has its running leases cut
//! at that tick ([`LeaseCut`]); the provider, seeing its paid-through stop, cuts too.

use alloy_primitives::Address;
use rustc_hash::FxHashMap;

use crate::crypto::SigningKey;
use crate::error::{LeaseError, ProofError};
use crate::meter::{LeaseId, LeaseMeter, LeaseTerms};
use crate::payer::{NextProof, PayerChannel};
use crate::proof::{ChannelDomain, ChannelId, SignedProof};
use crate::receiver::ReceiverChannel;

/// How the hub treats late payers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Seconds a requester may be behind before its leases are cut (and so the most a provider
    /// serves unpaid). Default 3.
    pub grace: u64,
    /// Seconds between two proofs to the same provider; 0 or 1 sign at every tick whose amount
    /// grew (default 1, ticks come once a second). Signing is the hub's main
    /// cost (one signature per provider per proof), so a node serving many small providers can
    /// sign every 2 or 3 seconds; a provider's cut-off grace must then cover `grace` plus this.
    pub provider_interval: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            grace: 3,
            provider_interval: 1,
        }
    }
}

/// One lease as the hub meters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLease {
    /// Price, span and id.
    pub terms: LeaseTerms,
    /// Who pays.
    pub requester: Address,
    /// Who serves.
    pub provider: Address,
}

/// A payment for one provider, produced by [`Hub::tick`]: persist the amount, then send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    /// The provider.
    pub provider: Address,
    /// The hub's signed cumulative proof on its channel to the provider.
    pub proof: SignedProof,
    /// Leases whose paid-through second moved, with the new value.
    pub paid_through: Vec<(LeaseId, u64)>,
}

/// A lease cut because its requester stopped paying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCut {
    /// The lease.
    pub lease: LeaseId,
    /// Its requester.
    pub requester: Address,
    /// Its provider.
    pub provider: Address,
    /// The second it stopped accruing.
    pub at: u64,
    /// The second its requester had paid through.
    pub paid_through: u64,
}

/// A channel to a provider whose deposit does not cover what the hub owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopUpNeeded {
    /// The outbound channel.
    pub channel: ChannelId,
    /// The provider.
    pub provider: Address,
    /// What is owed in all.
    pub owed: u128,
    /// The deposit.
    pub deposit: u128,
}

/// Everything one tick produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubTick {
    /// Proofs to providers.
    pub payments: Vec<ProviderPayment>,
    /// Leases cut for non-payment.
    pub cuts: Vec<LeaseCut>,
    /// Outbound channels to top up.
    pub top_ups: Vec<TopUpNeeded>,
    /// Leases folded away this tick: ended, paid through their end, and the provider told so.
    /// The hub keeps only their sum from now on (per requester and per provider); a caller
    /// that books leases can do the same ([`Hub::restore_folded`] after a restart).
    pub folded: Vec<HubLease>,
}

/// The hub's money at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Books {
    /// Sum of requesters' latest accepted proofs.
    pub received: u128,
    /// What the hub owes providers in all (paid seconds of their leases).
    pub owed_to_providers: u128,
    /// Sum of the hub's latest signed proofs to providers.
    pub signed_to_providers: u128,
    /// Received but not yet matched by a whole paid second.
    pub unallocated: u128,
}

impl Books {
    /// `received == owed_to_providers + unallocated`, and nothing signed beyond what is owed.
    pub fn balance(&self) -> bool {
        self.owed_to_providers.checked_add(self.unallocated) == Some(self.received)
            && self.signed_to_providers <= self.owed_to_providers
    }
}

#[derive(Debug, Clone)]
struct Inbound {
    channel: ReceiverChannel,
    meter: LeaseMeter,
    paid_through: u64,
}

impl Inbound {
    /// Moves the paid-through second as far as what was received covers, up to `now`.
    /// `None` from the meter cannot happen while leases start at or after the paid-through
    /// second; the old value stays rather than move backwards (nor behind a restored settled
    /// second the clock has not reached yet).
    fn advance(&mut self, now: u64) {
        let received = self.channel.received();
        if let Some(t) = self.meter.paid_through(received, self.paid_through, now) {
            self.paid_through = self.paid_through.max(t);
        }
    }
}

#[derive(Debug, Clone)]
struct Outbound {
    channel: PayerChannel,
    /// What folded (ended and fully paid) leases came to.
    base: u128,
    owed: u128,
    /// When the last proof to this provider was signed.
    last_signed: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    lease: HubLease,
    /// Index of the requester in `inbound`, of the provider in `outbound`: the tick walks
    /// every lease every second, so it indexes instead of hashing addresses.
    requester: usize,
    provider: usize,
    /// Paid-through last reported to the provider.
    reported: u64,
}

/// The payment hub's state machine. No I/O: the caller persists what [`Hub::tick`] signs
/// before sending it, and persists inbound proofs before [`Hub::accept`].
#[derive(Debug, Clone)]
pub struct Hub {
    domain: ChannelDomain,
    key: SigningKey,
    config: HubConfig,
    inbound: Vec<Inbound>,
    inbound_index: FxHashMap<Address, usize>,
    outbound: Vec<Outbound>,
    outbound_index: FxHashMap<Address, usize>,
    slots: Vec<Slot>,
    position: FxHashMap<LeaseId, usize>,
    now: u64,
    /// No lease is cut before this second (a restarted node gives payers time to reconnect).
    cuts_held_until: u64,
}

/// A requester's position at the hub's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequesterPosition {
    /// Its channel.
    pub channel: ChannelId,
    /// Its channel's deposit.
    pub deposit: u128,
    /// Its latest accepted cumulative proof.
    pub received: u128,
    /// What its leases have accrued by the hub's clock.
    pub owed: u128,
    /// The second its leases are paid through.
    pub paid_through: u64,
}

impl Hub {
    /// A hub signing with `key` (the node's address, also the contract's treasury).
    pub fn new(domain: ChannelDomain, key: SigningKey, config: HubConfig, now: u64) -> Self {
        Self {
            domain,
            key,
            config,
            inbound: Vec::new(),
            inbound_index: FxHashMap::default(),
            outbound: Vec::new(),
            outbound_index: FxHashMap::default(),
            slots: Vec::new(),
            position: FxHashMap::default(),
            now,
            cuts_held_until: 0,
        }
    }

    /// Cuts nobody before second `t`: after a restart, payers whose proofs could not reach the
    /// node while it was down get until `t` to catch up.
    pub fn hold_cuts_until(&mut self, t: u64) {
        self.cuts_held_until = t;
    }

    /// The hub's clock (the latest tick's second).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// A lease's terms as metered now (its end moves earlier when it is ended or cut).
    pub fn lease_terms(&self, id: LeaseId) -> Option<LeaseTerms> {
        self.position
            .get(&id)
            .map(|&index| self.slots[index].lease.terms)
    }

    /// Where a requester stands at the hub's clock.
    pub fn requester_position(&self, requester: Address) -> Option<RequesterPosition> {
        self.inbound_index.get(&requester).map(|&index| {
            let inbound = &self.inbound[index];
            RequesterPosition {
                channel: inbound.channel.id,
                deposit: inbound.channel.deposit,
                received: inbound.channel.received(),
                owed: inbound.meter.owed_at(self.now),
                paid_through: inbound.paid_through,
            }
        })
    }

    /// The hub's channel to a provider.
    pub fn provider_channel(&self, provider: Address) -> Option<&PayerChannel> {
        self.outbound_index
            .get(&provider)
            .map(|&index| &self.outbound[index].channel)
    }

    /// The hub's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The domain proofs are signed in.
    pub fn domain(&self) -> &ChannelDomain {
        &self.domain
    }

    /// Registers a requester's channel to the hub (`latest` from the store after a restart).
    /// A requester has one channel for the hub's lifetime; registering it again replaces the
    /// channel and keeps its leases.
    pub fn add_requester(&mut self, channel: ReceiverChannel) {
        if let Some(&index) = self.inbound_index.get(&channel.sender) {
            self.inbound[index].channel = channel;
            return;
        }
        self.inbound_index
            .insert(channel.sender, self.inbound.len());
        self.inbound.push(Inbound {
            channel,
            meter: LeaseMeter::new(),
            paid_through: self.now,
        });
    }

    /// Registers the hub's channel to a provider (`signed` from the store after a restart).
    /// Registering it again replaces the channel and keeps its leases.
    pub fn add_provider(&mut self, channel: PayerChannel) {
        if let Some(&index) = self.outbound_index.get(&channel.receiver) {
            self.outbound[index].channel = channel;
            return;
        }
        self.outbound_index
            .insert(channel.receiver, self.outbound.len());
        self.outbound.push(Outbound {
            channel,
            base: 0,
            owed: 0,
            last_signed: None,
        });
    }

    /// Counts `paid` as what a requester's folded leases came to and `earned` as what a
    /// provider's did (after a restart, from a book that keeps only those sums). Parties
    /// without a channel are skipped.
    pub fn restore_folded(&mut self, party: Address, paid: u128, earned: u128) {
        if let Some(&index) = self.inbound_index.get(&party) {
            self.inbound[index].meter.add_base(paid);
        }
        if let Some(&index) = self.outbound_index.get(&party) {
            let outbound = &mut self.outbound[index];
            outbound.base = outbound.base.saturating_add(earned);
            outbound.owed = outbound.owed.saturating_add(earned);
        }
    }

    /// Where `requester` stands if it owes something and is paid through a second more than
    /// the grace behind the hub's clock: a requester whose running leases the hub cuts, and
    /// who should get no new one until it pays.
    pub fn overdue(&self, requester: Address) -> Option<RequesterPosition> {
        self.requester_position(requester).filter(|position| {
            position.owed > position.received
                && past_grace(self.now, position.paid_through, self.config.grace)
        })
    }

    /// Marks `requester` settled through `second` at least (after a restart: the last end
    /// among its folded leases, each folded only once paid through its end). Call it once
    /// the book's leases are added, some of which may start before `second`: a lease read
    /// again that ends by then was billed already, and [`Hub::billable_from`] says so.
    pub fn restore_settled(&mut self, requester: Address, second: u64) {
        if let Some(&index) = self.inbound_index.get(&requester) {
            let inbound = &mut self.inbound[index];
            inbound.paid_through = inbound.paid_through.max(second);
        }
    }

    /// Starts metering a lease; both parties need a channel. A lease may not start before the
    /// second its requester is paid through (that time is already settled).
    pub fn add_lease(&mut self, lease: HubLease) -> Result<(), LeaseError> {
        let provider = *self
            .outbound_index
            .get(&lease.provider)
            .ok_or(LeaseError::NoChannel(lease.provider))?;
        let requester = *self
            .inbound_index
            .get(&lease.requester)
            .ok_or(LeaseError::NoChannel(lease.requester))?;
        let inbound = &mut self.inbound[requester];
        if self.position.contains_key(&lease.terms.id) {
            return Err(LeaseError::Duplicate(lease.terms.id));
        }
        if lease.terms.start < inbound.paid_through {
            return Err(LeaseError::StartsInSettledTime {
                id: lease.terms.id,
                start: lease.terms.start,
                paid_through: inbound.paid_through,
            });
        }
        inbound.meter.add(lease.terms)?;
        self.position.insert(lease.terms.id, self.slots.len());
        self.slots.push(Slot {
            lease,
            requester,
            provider,
            reported: lease.terms.start,
        });
        Ok(())
    }

    /// Ends a lease early at `at` (cancelled, provider dropped): it stops accruing there.
    pub fn end_lease(&mut self, id: LeaseId, at: u64) -> Result<(), LeaseError> {
        let index = *self.position.get(&id).ok_or(LeaseError::Unknown(id))?;
        let slot = &mut self.slots[index];
        let inbound = &mut self.inbound[slot.requester];
        let at = at.max(inbound.paid_through.min(slot.lease.terms.end));
        slot.lease.terms = inbound.meter.end_at(id, at)?;
        Ok(())
    }

    /// Checks a requester's proof without recording it (see [`ReceiverChannel::check`]).
    pub fn check(&self, requester: Address, proof: &SignedProof) -> Result<(), ProofError> {
        let index = *self
            .inbound_index
            .get(&requester)
            .ok_or(ProofError::NoChannel(requester))?;
        self.inbound[index].channel.check(&self.domain, proof)
    }

    /// Records a checked, persisted proof from a requester, and moves its paid-through second
    /// at once (up to the hub's clock), so the answer to the proof, and a lease asked for
    /// right after it, see what it paid rather than wait for the next tick.
    pub fn accept(&mut self, requester: Address, proof: SignedProof) {
        if let Some(&index) = self.inbound_index.get(&requester) {
            let inbound = &mut self.inbound[index];
            inbound.channel.accept(proof);
            inbound.advance(self.now);
        }
    }

    /// Adds a top-up seen on chain to a channel in or out.
    pub fn set_deposit(&mut self, party: Address, deposit: u128) {
        if let Some(&index) = self.inbound_index.get(&party) {
            self.inbound[index].channel.set_deposit(deposit);
        }
        if let Some(&index) = self.outbound_index.get(&party) {
            self.outbound[index].channel.set_deposit(deposit);
        }
    }

    /// The first second a new lease of `requester` asked to start at `start` can be billed
    /// from: the seconds the requester has already paid through are settled and are not
    /// billed again. `start` itself when the requester is unknown (adding the lease refuses).
    pub fn billable_from(&self, requester: Address, start: u64) -> u64 {
        start.max(self.paid_through(requester).unwrap_or(0))
    }

    /// The second a requester has paid through.
    pub fn paid_through(&self, requester: Address) -> Option<u64> {
        self.inbound_index
            .get(&requester)
            .map(|&index| self.inbound[index].paid_through)
    }

    /// What the hub owes a provider as of the last tick, and what it signed.
    pub fn provider_position(&self, provider: Address) -> Option<(u128, u128)> {
        self.outbound_index.get(&provider).map(|&index| {
            let outbound = &self.outbound[index];
            (outbound.owed, outbound.channel.signed())
        })
    }

    /// Leases metered (running, future, or ended but not yet fully paid).
    pub fn lease_count(&self) -> usize {
        self.slots.len()
    }

    /// Moves the clock to `now`: advances each requester's paid-through, cuts leases of
    /// requesters more than `grace` behind, and signs one proof per provider whose amount grew.
    pub fn tick(&mut self, now: u64) -> HubTick {
        let mut out = HubTick::default();
        self.now = self.now.max(now);
        let now = self.now;
        let grace = self.config.grace;

        for inbound in &mut self.inbound {
            inbound.advance(now);
        }

        // Cut the running leases of requesters beyond their grace.
        for slot in &mut self.slots {
            let inbound = &mut self.inbound[slot.requester];
            let lease = &mut slot.lease;
            if past_grace(now, inbound.paid_through, grace)
                && now >= self.cuts_held_until
                && lease.terms.end > now
                && lease.terms.start < now
                && let Ok(terms) = inbound.meter.end_at(lease.terms.id, now)
            {
                lease.terms = terms;
                out.cuts.push(LeaseCut {
                    lease: terms.id,
                    requester: lease.requester,
                    provider: lease.provider,
                    at: now,
                    paid_through: inbound.paid_through,
                });
            }
        }

        // What each provider is owed: its leases up to their requesters' paid-through.
        for outbound in &mut self.outbound {
            outbound.owed = outbound.base;
        }
        let mut breakdowns: Vec<Vec<(LeaseId, u64)>> = vec![Vec::new(); self.outbound.len()];
        let mut index = 0;
        while index < self.slots.len() {
            let slot = &mut self.slots[index];
            let terms = slot.lease.terms;
            let requester_paid = self.inbound[slot.requester].paid_through;
            let paid = requester_paid.clamp(terms.start, terms.end);
            let provider = slot.provider;
            let outbound = &mut self.outbound[provider];
            let already_reported = paid == slot.reported;
            if !already_reported {
                slot.reported = paid;
                breakdowns[provider].push((terms.id, paid));
            }
            if paid >= terms.end && already_reported {
                // Ended, fully paid, and the provider was told so in a proof it received:
                // fold it away.
                outbound.base = outbound.base.saturating_add(terms.total());
                outbound.owed = outbound.owed.saturating_add(terms.total());
                out.folded.push(slot.lease);
                self.slots.swap_remove(index);
                self.position.remove(&terms.id);
                if let Some(moved) = self.slots.get(index) {
                    self.position.insert(moved.lease.terms.id, index);
                }
            } else {
                outbound.owed = outbound.owed.saturating_add(terms.accrued_at(paid));
                index += 1;
            }
        }
        for inbound in &mut self.inbound {
            inbound.meter.fold_ended(inbound.paid_through);
        }

        let interval = self.config.provider_interval;
        for (provider, outbound) in self.outbound.iter_mut().enumerate() {
            if interval > 1
                && outbound
                    .last_signed
                    .is_some_and(|at| now.saturating_sub(at) < interval)
            {
                continue;
            }
            let channel = &mut outbound.channel;
            let (amount, full) = match channel.next(outbound.owed) {
                NextProof::UpToDate => continue,
                NextProof::Sign(amount) => (amount, true),
                NextProof::DepositShort { signable, owed } => {
                    out.top_ups.push(TopUpNeeded {
                        channel: channel.id,
                        provider: channel.receiver,
                        owed,
                        deposit: channel.deposit,
                    });
                    match signable {
                        Some(amount) => (amount, false),
                        None => continue,
                    }
                }
            };
            let Some(proof) = channel.sign(&self.domain, &self.key, amount) else {
                continue;
            };
            outbound.last_signed = Some(now);
            // A short proof carries no breakdown: the provider checks that the per-lease
            // paid-through it is told is covered by the signed amount.
            let paid_through = if full {
                std::mem::take(&mut breakdowns[provider])
            } else {
                Vec::new()
            };
            out.payments.push(ProviderPayment {
                provider: channel.receiver,
                proof,
                paid_through,
            });
        }
        // Leases whose advance was not sent are reported again with the next proof.
        for leases in breakdowns {
            for (id, _) in leases {
                if let Some(&index) = self.position.get(&id) {
                    let slot = &mut self.slots[index];
                    slot.reported = slot.lease.terms.start;
                }
            }
        }
        out
    }

    /// The hub's books as of the last tick.
    pub fn books(&self) -> Books {
        let mut books = Books::default();
        for inbound in &self.inbound {
            let received = inbound.channel.received();
            books.received += received;
            books.unallocated +=
                received.saturating_sub(inbound.meter.owed_at(inbound.paid_through));
        }
        for outbound in &self.outbound {
            books.owed_to_providers += outbound.owed;
            books.signed_to_providers += outbound.channel.signed();
        }
        books
    }
}

/// Whether a requester paid through `paid_through` is more than `grace` seconds behind `now`.
fn past_grace(now: u64, paid_through: u64, grace: u64) -> bool {
    now.saturating_sub(paid_through) > grace
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub at second 100 with one requester (channel 1) and one provider (channel 2), each
    /// channel holding `deposit`: the hub, its domain, the requester's key and the provider.
    fn hub_of_two(deposit: u128) -> (Hub, ChannelDomain, SigningKey, Address) {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let node = SigningKey::from_bytes(&[2u8; 32]).expect("key");
        let requester = SigningKey::from_bytes(&[3u8; 32]).expect("key");
        let provider = Address::repeat_byte(9);
        let mut hub = Hub::new(domain.clone(), node, HubConfig::default(), 100);
        hub.add_requester(ReceiverChannel::new(
            ChannelId(1),
            requester.address(),
            deposit,
            None,
        ));
        hub.add_provider(PayerChannel::new(ChannelId(2), provider, deposit, 0));
        (hub, domain, requester, provider)
    }

    #[test]
    fn strangers_and_backdated_leases_are_refused() {
        let (mut hub, domain, requester, provider) = hub_of_two(1_000);
        let stranger = SigningKey::from_bytes(&[4u8; 32]).expect("key");
        let proof = domain.sign_balance_proof(&stranger, ChannelId(1), 10);
        assert_eq!(
            hub.check(stranger.address(), &proof),
            Err(ProofError::NoChannel(stranger.address()))
        );
        let lease = |start| HubLease {
            terms: LeaseTerms {
                id: 1,
                rate: 1,
                start,
                end: start + 10,
            },
            requester: requester.address(),
            provider,
        };
        assert!(matches!(
            hub.add_lease(lease(99)),
            Err(LeaseError::StartsInSettledTime { .. })
        ));
        assert_eq!(hub.billable_from(requester.address(), 99), 100);
        assert_eq!(hub.billable_from(requester.address(), 101), 101);
        assert_eq!(
            hub.add_lease(HubLease {
                provider: Address::repeat_byte(7),
                ..lease(100)
            }),
            Err(LeaseError::NoChannel(Address::repeat_byte(7)))
        );
        hub.add_lease(lease(100)).expect("lease");
        assert_eq!(hub.add_lease(lease(100)), Err(LeaseError::Duplicate(1)));
        assert_eq!(hub.lease_count(), 1);
        assert_eq!(hub.end_lease(5, 100), Err(LeaseError::Unknown(5)));
    }

    /// A proof's answer says what it paid for: the paid-through second moves as the proof is
    /// accepted, up to the hub's clock and no further, not at the next tick.
    #[test]
    fn an_accepted_proof_moves_paid_through_at_once_but_never_past_the_clock() {
        let (mut hub, domain, requester, provider) = hub_of_two(1_000_000);
        hub.add_lease(HubLease {
            terms: LeaseTerms {
                id: 1,
                rate: 10,
                start: 100,
                end: 200,
            },
            requester: requester.address(),
            provider,
        })
        .expect("lease");
        hub.tick(120);
        assert_eq!(hub.paid_through(requester.address()), Some(100));
        // Paid for 15 seconds: through second 115, at once.
        hub.accept(
            requester.address(),
            domain.sign_balance_proof(&requester, ChannelId(1), 150),
        );
        assert_eq!(hub.paid_through(requester.address()), Some(115));
        // Paid ahead, for 50 seconds: through the clock, not beyond it.
        hub.accept(
            requester.address(),
            domain.sign_balance_proof(&requester, ChannelId(1), 500),
        );
        assert_eq!(hub.paid_through(requester.address()), Some(120));
        hub.tick(130);
        assert_eq!(hub.paid_through(requester.address()), Some(130));
    }

    /// A hub rebuilt from its channels, the sums of what folded and the leases not folded
    /// stands exactly where the original stood.
    #[test]
    fn a_hub_restored_from_folded_sums_and_open_leases_stands_where_it_stood() {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let node = SigningKey::from_bytes(&[2u8; 32]).expect("key");
        let requester = SigningKey::from_bytes(&[3u8; 32]).expect("key");
        let provider = Address::repeat_byte(9);
        let channels = |hub: &mut Hub, received: Option<SignedProof>, signed: u128| {
            hub.add_requester(ReceiverChannel::new(
                ChannelId(1),
                requester.address(),
                1_000_000,
                received,
            ));
            hub.add_provider(PayerChannel::new(ChannelId(2), provider, 1_000_000, signed));
        };
        let mut hub = Hub::new(domain.clone(), node.clone(), HubConfig::default(), 100);
        channels(&mut hub, None, 0);
        let lease = |id, start, end| HubLease {
            terms: LeaseTerms {
                id,
                rate: 7,
                start,
                end,
            },
            requester: requester.address(),
            provider,
        };
        // Three short leases that end and get paid, one long one still running.
        let leases = [lease(1, 100, 105), lease(2, 101, 110), lease(3, 102, 104)];
        for l in leases {
            hub.add_lease(l).expect("lease");
        }
        hub.add_lease(lease(4, 100, 1_000)).expect("lease");
        let mut folded = Vec::new();
        let mut last_proof = None;
        for now in 100..=130 {
            let owed: u128 = (leases.iter().chain([&lease(4, 100, 1_000)]))
                .map(|l| l.terms.accrued_at(now))
                .sum();
            if owed > last_proof.map_or(0, |p: SignedProof| p.amount) {
                let proof = domain.sign_balance_proof(&requester, ChannelId(1), owed);
                hub.accept(requester.address(), proof);
                last_proof = Some(proof);
            }
            folded.extend(hub.tick(now).folded);
        }
        let mut ids: Vec<u64> = folded.iter().map(|l| l.terms.id).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            [1, 2, 3],
            "the paid, ended leases folded; the running one did not"
        );
        let sum: u128 = folded.iter().map(|l| l.terms.total()).sum();

        let signed = hub.provider_channel(provider).expect("channel").signed();
        let mut restored = Hub::new(domain, node, HubConfig::default(), 100);
        channels(&mut restored, last_proof, signed);
        restored.restore_folded(requester.address(), sum, 0);
        restored.restore_folded(provider, 0, sum);
        restored.add_lease(lease(4, 100, 1_000)).expect("lease");
        // Lease 2, folded, is read again after the restart: only the settled second keeps it
        // from being billed twice.
        assert_eq!(restored.billable_from(requester.address(), 101), 101);
        let through = folded.iter().map(|l| l.terms.end).max().expect("folded");
        restored.restore_settled(requester.address(), through);
        assert_eq!(restored.billable_from(requester.address(), 101), 110);
        // A first tick behind that second moves nothing back.
        restored.tick(105);
        assert_eq!(restored.billable_from(requester.address(), 101), 110);
        restored.tick(130);
        assert_eq!(
            restored.requester_position(requester.address()),
            hub.requester_position(requester.address())
        );
        assert_eq!(
            restored.provider_position(provider),
            hub.provider_position(provider)
        );
        assert_eq!(restored.books(), hub.books());
        assert!(restored.books().balance());
    }
}
