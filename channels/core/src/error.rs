//! Typed errors. A refused proof or message changes nothing.

use alloy_primitives::Address;

use crate::proof::ChannelId;

/// A signature or key that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not 65 bytes.
    #[error("a signature is 65 bytes (r, s, v), got {0}")]
    Length(usize),
    /// `v` other than 27 or 28.
    #[error("signature v must be 27 or 28, got {0}")]
    BadV(u8),
    /// `s` in the upper half of the curve order (the malleable twin of a valid signature).
    #[error("signature s is in the upper half of the curve order (malleable form refused)")]
    HighS,
    /// `r`/`s` do not recover to any public key.
    #[error("signature does not recover to a public key")]
    Invalid,
    /// A private key of zero or at/above the curve order, or not 32 hex bytes.
    #[error("a private key is 32 bytes, non-zero and below the secp256k1 order")]
    BadKey,
}

/// A balance proof (or the bytes claiming to be one) that a receiver refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The bytes are not a proof.
    #[error("malformed proof: {0}")]
    Malformed(#[from] DecodeError),
    /// The proof names another channel than the one it arrived on.
    #[error("proof is for channel {got}, this channel is {expected}")]
    OtherChannel {
        /// The channel the receiver holds.
        expected: ChannelId,
        /// The channel the proof names.
        got: ChannelId,
    },
    /// The signature is not the channel sender's over this channel, chain and contract.
    #[error(
        "signature recovers to {recovered}, not the channel's sender {sender} (forged, or signed for another channel, chain or contract)"
    )]
    NotSender {
        /// Who signed the digest this receiver computed.
        recovered: Address,
        /// The channel's sender.
        sender: Address,
    },
    /// The signature's shape is wrong.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    /// The amount does not exceed the latest accepted one.
    #[error("amount {amount} does not exceed the latest accepted amount {latest}")]
    NotIncreasing {
        /// The latest accepted cumulative amount.
        latest: u128,
        /// The proof's amount.
        amount: u128,
    },
    /// The amount is above what the channel holds.
    #[error("amount {amount} is above the channel deposit {deposit}")]
    AboveDeposit {
        /// The channel's deposit.
        deposit: u128,
        /// The proof's amount.
        amount: u128,
    },
    /// A hub's per-lease breakdown claims more paid-through time than its amount covers.
    #[error("the per-lease breakdown needs {claimed}, the proof only signs {amount}")]
    BreakdownNotCovered {
        /// What the breakdown adds up to.
        claimed: u128,
        /// The signed amount.
        amount: u128,
    },
    /// The hub has no channel from this party.
    #[error("no channel from {0}")]
    NoChannel(Address),
    /// The breakdown names a lease this side does not know.
    #[error("the breakdown names lease {0}, unknown here")]
    UnknownLease(u64),
}

/// Bytes that do not decode to a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Wrong length.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// The exact length of the encoding.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// A channel id beyond 64 bits (the contract counts from 1; none that large exists).
    #[error("channel id does not fit in 64 bits")]
    ChannelIdTooLarge,
    /// An amount beyond 128 bits (more than all the tokens there are).
    #[error("amount does not fit in 128 bits")]
    AmountTooLarge,
}

/// A lease the meter refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The id is already metered.
    #[error("lease {0} is already metered")]
    Duplicate(u64),
    /// End not after start.
    #[error("lease {id} ends at {end}, not after its start {start}")]
    EmptySpan {
        /// The lease.
        id: u64,
        /// Start, unix seconds.
        start: u64,
        /// End, unix seconds.
        end: u64,
    },
    /// Unknown lease id.
    #[error("lease {0} is not metered here")]
    Unknown(u64),
    /// A party the hub has no channel with.
    #[error("no channel with {0}")]
    NoChannel(Address),
    /// Accrual overflows 128 bits.
    #[error("lease {0} would accrue more than 2^128 base units")]
    Overflow(u64),
    /// A lease starting before the second its requester is already paid through.
    #[error("lease {id} starts at {start}, before its requester's settled second {paid_through}")]
    StartsInSettledTime {
        /// The lease.
        id: u64,
        /// Its start.
        start: u64,
        /// The requester's paid-through second.
        paid_through: u64,
    },
}
