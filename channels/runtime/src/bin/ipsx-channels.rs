//! `ipsx-channels` — tools around the payment channels.
//!
//! `stream`: a payer and a receiver exchanging balance proofs through their durable stores, one
//! line per step (`sent N` once the payer has persisted and signed N, `ack N` once the receiver
//! has checked and persisted it). The crash tests kill it mid-stream and check nothing printed
//! was lost and nothing is signed twice.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ipsx_channels::{ChannelDomain, ChannelId, PayerChannel, ReceiverChannel, SigningKey};
use ipsx_channels_runtime::store::ProofStore;

#[derive(Parser)]
#[command(version, about = "IPSX payment channel tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream proofs from a payer to a receiver through durable stores in DIR.
    Stream {
        /// Directory holding payer.redb and receiver.redb (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Steps to run (0 = until killed).
        #[arg(long, default_value_t = 0)]
        steps: u64,
        /// Base units added per step.
        #[arg(long, default_value_t = 1_000)]
        increment: u128,
    },
}

const CHANNEL: ChannelId = ChannelId(1);

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Stream {
            dir,
            steps,
            increment,
        } => stream(dir, steps, increment),
    }
}

fn stream(dir: PathBuf, steps: u64, increment: u128) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let payer_store = ProofStore::open(&dir.join("payer.redb"))?;
    let receiver_store = ProofStore::open(&dir.join("receiver.redb"))?;
    let domain = ChannelDomain::new(31337, alloy::primitives::Address::repeat_byte(0xce));
    let sender = SigningKey::from_bytes(&[0x51; 32])?;
    let receiver_address = SigningKey::from_bytes(&[0x52; 32])?.address();
    let deposit = u128::MAX / 2;

    let mut payer = PayerChannel::new(
        CHANNEL,
        receiver_address,
        deposit,
        payer_store.highest_signed(CHANNEL)?,
    );
    let mut receiver = ReceiverChannel::new(
        CHANNEL,
        sender.address(),
        deposit,
        receiver_store.latest_received(CHANNEL)?,
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "start signed={} received={}",
        payer.signed(),
        receiver.received()
    )?;
    out.flush()?;
    let mut step = 0;
    while steps == 0 || step < steps {
        step += 1;
        let amount = payer.signed() + increment;
        // Persist the amount before the proof exists outside this process.
        payer_store.persist_signed(&[(CHANNEL, amount)])?;
        let Some(proof) = payer.sign(&domain, &sender, amount) else {
            bail!("payer refused to sign {amount}");
        };
        writeln!(out, "sent {amount}")?;
        out.flush()?;
        receiver
            .check(&domain, &proof)
            .with_context(|| format!("receiver refused {amount}"))?;
        receiver_store.persist_received(&[proof])?;
        receiver.accept(proof);
        writeln!(out, "ack {amount}")?;
        out.flush()?;
    }
    Ok(())
}
