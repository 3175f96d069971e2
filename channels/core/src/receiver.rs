//! The receiving end of a channel: which proofs count.

use alloy_primitives::Address;

use crate::error::ProofError;
use crate::proof::{ChannelDomain, ChannelId, SignedProof};

/// The receiver's side of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverChannel {
    /// The channel.
    pub id: ChannelId,
    /// Who pays.
    pub sender: Address,
    /// The channel's deposit on chain.
    pub deposit: u128,
    latest: Option<SignedProof>,
}

impl ReceiverChannel {
    /// A channel whose latest accepted proof is `latest` (from the durable store after a
    /// restart, or `None`).
    pub fn new(id: ChannelId, sender: Address, deposit: u128, latest: Option<SignedProof>) -> Self {
        Self {
            id,
            sender,
            deposit,
            latest,
        }
    }

    /// Checks a proof without recording it: right channel, signed by the sender for this
    /// channel, chain and contract, above the latest amount, within the deposit. The caller
    /// persists it and then calls [`ReceiverChannel::accept`]: a proof counts once durable.
    pub fn check(&self, domain: &ChannelDomain, proof: &SignedProof) -> Result<(), ProofError> {
        if proof.channel != self.id {
            return Err(ProofError::OtherChannel {
                expected: self.id,
                got: proof.channel,
            });
        }
        let latest = self.received();
        if proof.amount <= latest {
            return Err(ProofError::NotIncreasing {
                latest,
                amount: proof.amount,
            });
        }
        if proof.amount > self.deposit {
            return Err(ProofError::AboveDeposit {
                deposit: self.deposit,
                amount: proof.amount,
            });
        }
        let recovered = domain.proof_signer(proof)?;
        if recovered != self.sender {
            return Err(ProofError::NotSender {
                recovered,
                sender: self.sender,
            });
        }
        Ok(())
    }

    /// Records a proof that passed [`ReceiverChannel::check`] and is now durable.
    pub fn accept(&mut self, proof: SignedProof) {
        debug_assert!(proof.channel == self.id && proof.amount > self.received());
        self.latest = Some(proof);
    }

    /// The latest accepted proof.
    pub fn latest(&self) -> Option<&SignedProof> {
        self.latest.as_ref()
    }

    /// The cumulative amount of the latest accepted proof.
    pub fn received(&self) -> u128 {
        self.latest.map_or(0, |proof| proof.amount)
    }

    /// A top-up arrived on chain.
    pub fn set_deposit(&mut self, deposit: u128) {
        self.deposit = self.deposit.max(deposit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::error::SignatureError;

    #[test]
    fn every_kind_of_bad_proof_is_refused_and_changes_nothing() {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let sender = SigningKey::from_bytes(&[3u8; 32]).expect("key");
        let stranger = SigningKey::from_bytes(&[4u8; 32]).expect("key");
        let mut receiver = ReceiverChannel::new(ChannelId(7), sender.address(), 1_000, None);

        let good = domain.sign_balance_proof(&sender, ChannelId(7), 100);
        receiver.check(&domain, &good).expect("good proof");
        receiver.accept(good);
        let before = receiver.clone();

        let cases = [
            (
                domain.sign_balance_proof(&sender, ChannelId(8), 200),
                ProofError::OtherChannel {
                    expected: ChannelId(7),
                    got: ChannelId(8),
                },
            ),
            (
                domain.sign_balance_proof(&sender, ChannelId(7), 100),
                ProofError::NotIncreasing {
                    latest: 100,
                    amount: 100,
                },
            ),
            (
                domain.sign_balance_proof(&sender, ChannelId(7), 50),
                ProofError::NotIncreasing {
                    latest: 100,
                    amount: 50,
                },
            ),
            (
                domain.sign_balance_proof(&sender, ChannelId(7), 1_001),
                ProofError::AboveDeposit {
                    deposit: 1_000,
                    amount: 1_001,
                },
            ),
            (
                domain.sign_balance_proof(&stranger, ChannelId(7), 200),
                ProofError::NotSender {
                    recovered: stranger.address(),
                    sender: sender.address(),
                },
            ),
        ];
        for (proof, expected) in cases {
            assert_eq!(receiver.check(&domain, &proof), Err(expected));
        }
        // Signed for another chain: recovers to somebody else.
        let other_chain = ChannelDomain::new(1, Address::repeat_byte(1));
        let foreign = other_chain.sign_balance_proof(&sender, ChannelId(7), 200);
        assert!(matches!(
            receiver.check(&domain, &foreign),
            Err(ProofError::NotSender { .. })
        ));
        let mut garbled = domain.sign_balance_proof(&sender, ChannelId(7), 200);
        garbled.signature.0[64] = 29;
        assert_eq!(
            receiver.check(&domain, &garbled),
            Err(ProofError::Signature(SignatureError::BadV(29)))
        );
        assert_eq!(receiver, before);
    }
}
