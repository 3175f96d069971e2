//! A fleet paying in the background through the SDK's `Payer`, as the money stories need it.

use std::time::{Duration, Instant};

use ipsx_sdk::{Client, LeaseTermsView, LeaseView, Payer, StreamEvent};
use tokio::sync::{mpsc, watch};

use super::{Chain, Process, TOKEN};

/// How the fleet's paying task should end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    Running,
    /// Pay up to now, then close.
    Finish,
    /// Stop signing, as a fleet that runs out of will to pay.
    Abandon,
}

/// A fleet paying in the background; its events come out on `events`.
pub struct Paying {
    stop: watch::Sender<Stop>,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    task: tokio::task::JoinHandle<Result<u128, String>>,
}

pub async fn pay_in_background(
    fleet: &Client,
    wallet: &ipsx_sdk::Wallet,
    deals: &[LeaseView],
) -> Paying {
    let mut payer = Payer::connect(fleet, wallet).await.expect("payer connects");
    for deal in deals {
        payer.expect(&deal.deal);
    }
    let (stop, mut stopping) = watch::channel(Stop::Running);
    let (forward, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopping.changed() => {
                    let how = *stopping.borrow();
                    return match how {
                        Stop::Finish => payer.finish().await.map_err(|e| e.to_string()),
                        _ => Ok(payer.accepted()),
                    };
                }
                event = payer.next() => match event {
                    Ok(Some(event)) => { let _ = forward.send(event); }
                    Ok(None) => return Err("stream closed".to_owned()),
                    Err(error) => return Err(error.to_string()),
                }
            }
        }
    });
    Paying { stop, events, task }
}

impl Paying {
    /// Waits (up to `within`) for an event `pick` accepts.
    pub async fn wait<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&StreamEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("the awaited event came in time")
                .expect("the payer still runs");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    /// Waits (up to `within`) for `deal`'s lease to be ready: its terms as fixed.
    pub async fn ready(&mut self, deal: u64, within: Duration) -> LeaseTermsView {
        self.wait(within, |event| match event {
            StreamEvent::LeaseReady { terms, .. } if terms.deal == deal => Some(*terms),
            _ => None,
        })
        .await
    }

    /// Waits (up to `within`) until the node has accepted proofs paying through `second`.
    pub async fn paid_through(&mut self, second: u64, within: Duration) {
        self.wait(within, |event| match event {
            StreamEvent::ProofAccepted {
                paid_through: Some(through),
                ..
            } if *through >= second => Some(()),
            _ => None,
        })
        .await
    }

    /// Waits (up to `within`) for the node to accept a proof: its amount.
    pub async fn accepted(&mut self, within: Duration) -> u128 {
        self.wait(within, |event| match event {
            StreamEvent::ProofAccepted { amount, .. } => Some(amount.0),
            _ => None,
        })
        .await
    }

    pub async fn end(self, how: Stop) -> Result<u128, String> {
        let _ = self.stop.send(how);
        self.task.await.expect("payer task")
    }
}

/// The fleet (anvil wallet 1), signed in, paying on a channel of 50 IPSX.
pub async fn paying_fleet(
    chain: &Chain,
    node: &str,
) -> (Client, ipsx_sdk::Wallet, ipsx_sdk::ChannelView) {
    let wallet = chain.wallet(1);
    let fleet = signed_in(node, &wallet).await;
    let channel = ipsx_sdk::ensure_channel(&fleet, &wallet, &chain.anvil.endpoint(), 50 * TOKEN)
        .await
        .expect("deposit and channel");
    (fleet, wallet, channel)
}

pub async fn signed_in(node: &str, wallet: &ipsx_sdk::Wallet) -> Client {
    let mut client = Client::new(node);
    client.sign_in(wallet).await.expect("sign in");
    client
}

pub fn ended(event: &StreamEvent) -> Option<LeaseTermsView> {
    match event {
        StreamEvent::LeaseEnded { terms, .. } => Some(*terms),
        _ => None,
    }
}

/// After a lease of `metered` ended: the node paid provider `wallet` that much, its daemon
/// (stopped now, claiming on chain) says it earned it, and the chain credited it minus the
/// commission — to the wei.
pub async fn provider_settles(
    chain: &Chain,
    node: &str,
    wallet: usize,
    mut provider: Process,
    lines: &std::sync::mpsc::Receiver<String>,
    metered: u128,
) {
    let client = signed_in(node, &chain.wallet(wallet)).await;
    node_paid(&client, metered).await;
    holds_proof_for(lines, metered);
    provider.terminate();
    let earned = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
        // The closing line, not the "so far" note a daemon prints every 30 s.
        .find(|line| line.starts_with("earned ") && !line.contains(" so far "))
        .expect("the provider reports its earnings");
    assert!(
        earned.starts_with(&format!("earned {metered} ")),
        "{earned}"
    );
    let commission = chain.node.commission_on(metered).await.expect("commission");
    let balance = chain
        .node
        .balance_of(chain.wallet(wallet).address())
        .await
        .expect("balance");
    assert_eq!(
        balance,
        metered - commission,
        "provider: metered − commission"
    );
}

/// The channel the signed-in requester `client` pays the node on, as the node sees it now.
pub async fn inbound(client: &Client) -> ipsx_sdk::ChannelView {
    client
        .wallet()
        .await
        .expect("wallet")
        .payments
        .and_then(|p| p.inbound)
        .expect("the requester's channel")
}

/// The channel the node pays the signed-in provider `client` on, once it opened one.
pub async fn outbound(client: &Client) -> Option<ipsx_sdk::ChannelView> {
    client
        .wallet()
        .await
        .expect("wallet")
        .payments
        .and_then(|p| p.outbound)
}

/// Waits (15 s at most) until the provider's daemon (its output `lines`) says a lease is paid
/// in full with proofs coming to `amount` in all: stopped now, it claims that much.
pub fn holds_proof_for(lines: &std::sync::mpsc::Receiver<String>, amount: u128) {
    let said = format!("paid in full: earned {amount} in all");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(&said) => return,
            Ok(_) => {}
            Err(_) => panic!("the provider did not say {said:?} within 15 s"),
        }
    }
}

/// Waits (15 s at most) until the node's proofs to the signed-in provider `client` reach
/// `amount`.
pub async fn node_paid(client: &Client, amount: u128) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let outbound = outbound(client).await;
        if outbound.is_some_and(|c| c.amount.0 == amount) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node paid the provider {amount}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (up to 30 s) until every entry of `deal` — made, ready and ended among them — is
/// anchored, and checks each against the chain and what the node told `client`.
pub async fn proven_on_chain(
    client: &Client,
    deal: u64,
    rpc_url: &str,
    anchor: ipsx_sdk::Address,
) -> ipsx_sdk::anchor::DealCheck {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let proofs = client.deal_proofs(deal).await.expect("proofs");
        let told = client.deal(deal).await.expect("deal");
        let report = ipsx_sdk::anchor::check(&proofs, told.as_ref(), rpc_url, anchor)
            .await
            .expect("check");
        assert!(!report.caught(), "deal {deal}: {report:?}");
        let kinds = [
            ipsx_sdk::AnchorEntryKind::Made,
            ipsx_sdk::AnchorEntryKind::Ready,
            ipsx_sdk::AnchorEntryKind::Ended,
        ];
        let complete = kinds
            .iter()
            .all(|kind| report.entries.iter().any(|check| check.entry.kind == *kind));
        if report.proven() && complete && report.pending == 0 {
            return report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deal {deal} not proven on chain in time: {report:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
