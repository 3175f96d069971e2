//! The paying end of a channel: what to sign next, never more than the deposit, never less than
//! what was already signed.

use alloy_primitives::Address;

use crate::crypto::SigningKey;
use crate::meter::LeaseMeter;
use crate::proof::{ChannelDomain, ChannelId, SignedProof};

/// The sender's side of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerChannel {
    /// The channel.
    pub id: ChannelId,
    /// Who receives.
    pub receiver: Address,
    /// The channel's deposit on chain.
    pub deposit: u128,
    signed: u128,
}

/// What a payer should do about what it owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextProof {
    /// The latest signed proof already covers what is owed.
    UpToDate,
    /// Sign this cumulative amount.
    Sign(u128),
    /// What is owed is above the deposit: sign up to the deposit and top up (the receiver will
    /// cut off what stays unpaid past its grace).
    DepositShort {
        /// The most that can be signed (the deposit), if above the latest.
        signable: Option<u128>,
        /// What is owed.
        owed: u128,
    },
}

impl PayerChannel {
    /// A channel on which `signed` was the highest amount signed so far (0 for a new one; the
    /// durable store's value after a restart).
    pub fn new(id: ChannelId, receiver: Address, deposit: u128, signed: u128) -> Self {
        Self {
            id,
            receiver,
            deposit,
            signed,
        }
    }

    /// The highest amount signed so far.
    pub fn signed(&self) -> u128 {
        self.signed
    }

    /// What to sign given what is owed in all.
    pub fn next(&self, owed: u128) -> NextProof {
        if owed > self.deposit {
            let signable = (self.deposit > self.signed).then_some(self.deposit);
            return NextProof::DepositShort { signable, owed };
        }
        if owed > self.signed {
            NextProof::Sign(owed)
        } else {
            NextProof::UpToDate
        }
    }

    /// Signs `amount` in all. The caller persists `amount` as the highest signed before the
    /// proof leaves, so a restart starts from it. Amounts at or under the latest, or above the
    /// deposit, give `None`: a payer never signs backwards or beyond its funds.
    pub fn sign(
        &mut self,
        domain: &ChannelDomain,
        key: &SigningKey,
        amount: u128,
    ) -> Option<SignedProof> {
        if amount <= self.signed || amount > self.deposit {
            return None;
        }
        self.signed = amount;
        Some(domain.sign_balance_proof(key, self.id, amount))
    }

    /// A top-up arrived on chain.
    pub fn set_deposit(&mut self, deposit: u128) {
        self.deposit = self.deposit.max(deposit);
    }
}

/// A payer that meters its own leases: a requester paying the hub (or a provider directly).
#[derive(Debug, Clone)]
pub struct MeteredPayer {
    /// The channel.
    pub channel: PayerChannel,
    /// The leases it pays for.
    pub meter: LeaseMeter,
}

/// What one payer tick produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayerTick {
    /// A proof to persist (its amount, as the highest signed) and then send.
    pub proof: Option<SignedProof>,
    /// What to add to the deposit to keep paying for the next `horizon` seconds.
    pub top_up: Option<u128>,
}

impl MeteredPayer {
    /// A payer over `channel`.
    pub fn new(channel: PayerChannel) -> Self {
        Self {
            channel,
            meter: LeaseMeter::new(),
        }
    }

    /// Signs what is owed at `now` (all seconds up to `now`) if it grew, and tells how much the
    /// deposit lacks to cover the next `horizon` seconds at the leases' known schedule.
    pub fn tick(
        &mut self,
        domain: &ChannelDomain,
        key: &SigningKey,
        now: u64,
        horizon: u64,
    ) -> PayerTick {
        let owed = self.meter.owed_at(now);
        let proof = match self.channel.next(owed) {
            NextProof::UpToDate | NextProof::DepositShort { signable: None, .. } => None,
            NextProof::Sign(amount)
            | NextProof::DepositShort {
                signable: Some(amount),
                ..
            } => self.channel.sign(domain, key, amount),
        };
        self.meter.fold_ended(now);
        let ahead = self.meter.owed_at(now.saturating_add(horizon));
        let top_up = ahead
            .checked_sub(self.channel.deposit)
            .filter(|&lacking| lacking > 0);
        PayerTick { proof, top_up }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payer_signs_forward_and_within_its_deposit() {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let key = SigningKey::from_bytes(&[3u8; 32]).expect("key");
        let mut payer = PayerChannel::new(ChannelId(4), Address::repeat_byte(2), 1_000, 100);
        assert_eq!(payer.next(50), NextProof::UpToDate);
        assert_eq!(payer.next(100), NextProof::UpToDate);
        assert_eq!(payer.next(400), NextProof::Sign(400));
        assert_eq!(payer.sign(&domain, &key, 90), None, "never backwards");
        assert_eq!(
            payer.sign(&domain, &key, 1_001),
            None,
            "never past the deposit"
        );
        let proof = payer.sign(&domain, &key, 400).expect("signed");
        assert_eq!(domain.proof_signer(&proof), Ok(key.address()));
        assert_eq!(payer.signed(), 400);
        assert_eq!(
            payer.next(1_500),
            NextProof::DepositShort {
                signable: Some(1_000),
                owed: 1_500
            }
        );
        payer.set_deposit(2_000);
        assert_eq!(payer.next(1_500), NextProof::Sign(1_500));
    }
}
