//! Checking the node's word against the chain: a deal's anchored entries (from
//! [`crate::Client::deal_proofs`]) are proven only by the roots the `DealAnchor` contract holds,
//! never by the roots the node shows, and they must say what the node told the party about
//! the deal.
//!
//! ```no_run
//! # async fn run(client: ipsx_sdk::Client, anchor: ipsx_sdk::Address) -> Result<(), ipsx_sdk::SdkError> {
//! let proofs = client.deal_proofs(7).await?;
//! let told = client.deal(7).await?;
//! let report = ipsx_sdk::anchor::check(&proofs, told.as_ref(), "http://127.0.0.1:8545", anchor).await?;
//! assert!(report.proven(), "{:?}", report.disagreements);
//! # Ok(()) }
//! ```

use alloy_primitives::{Address, B256};
use alloy_sol_types::{SolCall, SolValue};
use ipsx_anchor::{DealAnchor, DealEntry, Proof, leaf};
use ipsx_api::{AnchorEntryKind, AnchorEntryView, DealProofs, DealView};
use ipsx_channels_runtime::chain::{ChainError, read_view};

use crate::SdkError;

/// What checking one entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its epoch's root is on chain, the proof leads from the entry to it, and the contract's
    /// `verify` view agrees.
    Proven,
    /// Its epoch is not on chain yet (the node anchors within its epoch length): ask again.
    NotAnchoredYet,
    /// The chain holds another root than the node showed: the node shows a history it did
    /// not anchor.
    RootMismatch {
        /// The root anchored on chain.
        on_chain: B256,
        /// The root the node showed.
        shown: B256,
    },
    /// The proof does not lead from the entry to the root on chain: the entry is not the one
    /// anchored.
    BadProof,
    /// The entry is of another deal than the one asked about.
    OtherDeal,
}

/// One entry and what its check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCheck {
    /// The epoch the node placed it in.
    pub epoch: u64,
    /// The entry as the node showed it.
    pub entry: AnchorEntryView,
    /// What the check found.
    pub verdict: Verdict,
}

/// A deal's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealCheck {
    /// The deal.
    pub deal: u64,
    /// Each entry in a closed epoch.
    pub entries: Vec<EntryCheck>,
    /// Entries still in the node's open epoch (not provable yet).
    pub pending: usize,
    /// Where the proven entries and what the node told the party differ.
    pub disagreements: Vec<String>,
}

impl DealCheck {
    /// Every entry is proven on chain, there is at least one, and they agree with what the
    /// node told the party.
    pub fn proven(&self) -> bool {
        !self.entries.is_empty()
            && self
                .entries
                .iter()
                .all(|check| check.verdict == Verdict::Proven)
            && self.disagreements.is_empty()
    }

    /// Some entry is proven false: the node showed what it did not anchor, or anchored other
    /// terms than it told (not merely "not anchored yet").
    pub fn caught(&self) -> bool {
        !self.disagreements.is_empty()
            || self
                .entries
                .iter()
                .any(|check| !matches!(check.verdict, Verdict::Proven | Verdict::NotAnchoredYet))
    }
}

/// Checks `proofs` against the `DealAnchor` at `anchor` through `rpc_url`, and, given what the
/// node told the party of the deal (`told`, from `/v1/deals`), that the proven entries say the
/// same.
pub async fn check(
    proofs: &DealProofs,
    told: Option<&DealView>,
    rpc_url: &str,
    anchor: Address,
) -> Result<DealCheck, SdkError> {
    let mut entries = Vec::with_capacity(proofs.entries.len());
    for anchored in &proofs.entries {
        let entry = DealEntry::from(&anchored.entry);
        let verdict = if anchored.entry.deal != proofs.deal {
            Verdict::OtherDeal
        } else {
            let proof = Proof {
                siblings: anchored.proof.clone(),
            };
            judge(
                rpc_url,
                anchor,
                anchored.epoch,
                &entry,
                &proof,
                anchored.root,
            )
            .await?
        };
        entries.push(EntryCheck {
            epoch: anchored.epoch,
            entry: anchored.entry.clone(),
            verdict,
        });
    }
    let proven: Vec<&AnchorEntryView> = entries
        .iter()
        .filter(|check| check.verdict == Verdict::Proven)
        .map(|check| &check.entry)
        .collect();
    let disagreements = told.map_or_else(Vec::new, |view| disagreements(&proven, view));
    Ok(DealCheck {
        deal: proofs.deal,
        entries,
        pending: proofs.pending.len(),
        disagreements,
    })
}

/// One entry against the chain: the root there, the proof offline, then the contract's view.
async fn judge(
    rpc_url: &str,
    anchor: Address,
    epoch: u64,
    entry: &DealEntry,
    proof: &Proof,
    shown: B256,
) -> Result<Verdict, SdkError> {
    let answer = read_view(
        rpc_url,
        anchor,
        DealAnchor::rootOfCall(epoch).abi_encode().into(),
    )
    .await?;
    let on_chain = B256::abi_decode(&answer)
        .map_err(|e| ChainError::Rpc(format!("{anchor} is not a DealAnchor: {e}")))?;
    if on_chain == B256::ZERO {
        return Ok(Verdict::NotAnchoredYet);
    }
    if on_chain != shown {
        return Ok(Verdict::RootMismatch { on_chain, shown });
    }
    if !proof.verify(on_chain, leaf(entry)) {
        return Ok(Verdict::BadProof);
    }
    let call = DealAnchor::verifyCall {
        epoch,
        entry: entry.clone(),
        proof: proof.siblings.clone(),
    };
    let answer = read_view(rpc_url, anchor, call.abi_encode().into()).await?;
    let verified = bool::abi_decode(&answer)
        .map_err(|e| ChainError::Rpc(format!("verify answered {answer}: {e}")))?;
    Ok(if verified {
        Verdict::Proven
    } else {
        Verdict::BadProof
    })
}

/// Where the proven entries and the deal as the node told it differ.
fn disagreements(proven: &[&AnchorEntryView], told: &DealView) -> Vec<String> {
    let mut found = Vec::new();
    let Some(made) = proven
        .iter()
        .find(|entry| entry.kind == AnchorEntryKind::Made)
    else {
        return vec!["no proven entry of the deal being made".to_owned()];
    };
    let terms = [
        ("provider", made.provider == told.provider),
        ("requester", made.requester == told.requester),
        ("IPs", made.ips as usize == told.ips.len()),
        ("start", made.start == told.start),
        ("end", made.end == told.end),
        ("price", made.price == told.price),
    ];
    for (what, same) in terms {
        if !same {
            found.push(format!("the anchored {what} is not the one the node told"));
        }
    }
    let ended = proven
        .iter()
        .find(|entry| entry.kind == AnchorEntryKind::Ended);
    match (ended, told.status.is_over()) {
        (Some(ended), true) if ended.outcome != told.status.anchor_outcome() => {
            found.push(format!(
                "anchored as ended with outcome {}, told {}",
                ended.outcome, told.status
            ))
        }
        (Some(_), false) => {
            found.push(format!("anchored as ended, told {}", told.status));
        }
        _ => {}
    }
    found
}
