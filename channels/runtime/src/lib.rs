//! # ipsx-channels-runtime — the I/O edges of IPSX payments
//!
//! `ipsx-channels` decides what to sign, accept, cut and checkpoint; this crate does the I/O
//! around it:
//!
//! * [`store::ProofStore`] — the durable proof store (redb, fsync on commit): a received proof
//!   counts once it is in the store; an amount is in the store before its proof is sent.
//! * [`chain::ChainClient`] — the Centralizer and IPSX token over JSON-RPC with alloy: deposit
//!   with an ERC-2612 permit, open, top up, checkpoint and batch checkpoint, cooperative,
//!   receiver and unilateral close, challenge, settle; reverts come back decoded from the ABI.
//! * [`sender::Sender`] — one task per account that every transaction of a client goes
//!   through: nonces counted locally, EIP-1559 fees, a stuck transaction replaced at the same
//!   nonce with higher fees.
//! * [`watcher::Watcher`] — follows the contract's events from the last handled block (the
//!   cursor is in the store, so a restart resumes) and challenges a close that admits less
//!   than the latest stored proof.
//! * [`settle::Settler`] — applies the checkpoint policy to every stored proof and claims the
//!   due ones in one batch.
//! * [`devnet`] — anvil from the pinned npm package and a deployment of the real contracts from
//!   their committed bytecode, for tests and local exchanges.
//!
//! ## Data flow (a receiver)
//!
//! ```text
//!  proof bytes ─► SignedProof::decode ─► ReceiverChannel::check ─► ProofStore::persist_received ─► accept
//!                                                                          │
//!        Settler::run_once (policy) ─► ChainClient::batch_checkpoint ◄─────┤
//!        Watcher::poll (CloseStarted below our proof) ─► ChainClient::challenge
//! ```
//!
//! ## Example
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use ipsx_channels::{CheckpointPolicy, SigningKey};
//! use ipsx_channels_runtime::{chain::ChainClient, settle::Settler, store::ProofStore};
//!
//! let key = SigningKey::from_hex("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")?;
//! let centralizer = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0".parse()?;
//! let client = ChainClient::connect("http://127.0.0.1:8545", centralizer, key).await?;
//! let store = Arc::new(ProofStore::open("provider.redb".as_ref())?);
//! let settler = Settler::new(client, store, CheckpointPolicy::default());
//! let paid = settler.run_once(1_700_000_000, false).await?; // claims what is worth its gas
//! # Ok(()) }
//! ```

pub mod chain;
pub mod contracts;
pub mod devnet;
pub mod sender;
pub mod settle;
pub mod store;
pub mod watcher;
