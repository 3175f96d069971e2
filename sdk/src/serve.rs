//! Serving leases, from the provider's side: a state machine free of I/O.
//!
//! [`Serving`] follows the node's event stream for one provider and says what to do: report
//! ready for a deal of its IPs, cut a lease (ended early, the requester stopped paying, or
//! left unpaid past the grace while this process ran), forget a lease once it is over. With
//! payments it keeps the provider's [`ProviderLedger`]: a payment is checked here, stored by
//! the caller, then accepted here. Time comes in as arguments: the wall clock (`now`, unix
//! seconds, what lease terms are in) and the seconds this process has been running (`running`,
//! which stops while a laptop sleeps), so tests drive both by hand.
//!
//! ```text
//!  node stream ──► Serving::on_event ──► Ready(deal) ─► POST /v1/deals/{id}/ready
//!                                     └► Cut{deal}   ─► proxy refuses and closes the lease
//!  every second ─► Serving::on_second ─► Cut{deal, Unpaid}
//!                                     └► Forget{deal} ─► proxy drops the lease's state
//!  payment ──► check_payment ──► (caller stores the proof) ──► accept_payment
//! ```
//!
//! Memory follows what runs: a lease is forgotten [`Serving::LINGER`] seconds after it is over.
//!
//! ```
//! use std::collections::HashSet;
//! use ipsx_sdk::serve::{Action, Serving};
//! use ipsx_sdk::{Address, StreamEvent};
//!
//! let me = Address::repeat_byte(7);
//! let ip = "192.0.2.1".parse().unwrap();
//! let mut serving = Serving::new(me, HashSet::from([ip]), None);
//! // A deal of one of its IPs: report ready.
//! # let deal: ipsx_sdk::DealView = serde_json::from_value(serde_json::json!({
//! #     "deal": 1, "request": 1, "offer": 1, "provider": me, "requester": Address::ZERO,
//! #     "ips": [ip], "start": 100, "end": 160, "price": "5", "protocols": ["socks5"],
//! #     "status": "pending", "closed_at": null})).unwrap();
//! let actions = serving.on_event(&StreamEvent::DealMade { deal: deal.clone() });
//! assert_eq!(actions, vec![Action::Ready(deal)]);
//! ```

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use alloy_primitives::Address;
use ipsx_api::{DealStatus, DealView, LeaseEnd, StreamEvent};
use ipsx_channels::{ChannelDomain, LeaseTerms, ProofError, ProviderLedger, SignedProof};

/// Why a lease is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// The node ended it early (cancelled, voided, payment lapsed, provider failed).
    Ended(LeaseEnd),
    /// The node cut it: its requester stopped paying.
    NotPaying,
    /// Unpaid for more than the grace, counted while this process ran.
    Unpaid,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Report ready for this deal (`POST /v1/deals/{id}/ready`).
    Ready(DealView),
    /// Refuse the lease's new connections and close its open ones.
    Cut {
        /// The deal.
        deal: u64,
        /// Why.
        why: CutReason,
        /// The lease's last second: the cut must hold while its credentials do.
        until: u64,
    },
    /// The lease is over and settled as far as it will be: drop what the proxy keeps for it.
    Forget {
        /// The deal.
        deal: u64,
    },
}

/// A lease this provider serves.
#[derive(Clone, Copy, Debug)]
struct Served {
    end: u64,
    /// The node said it ended.
    over: bool,
    cut: bool,
    /// The `running` second it was first seen unpaid, while it stays unpaid.
    unpaid_since: Option<u64>,
}

/// The payments side: the ledger and its grace.
#[derive(Debug)]
pub struct Earning {
    /// The provider's ledger of its channel from the node.
    pub ledger: ProviderLedger,
    /// The channel's signing domain.
    pub domain: ChannelDomain,
    /// Seconds a lease may go unpaid before it is cut.
    pub grace: u64,
}

/// A provider's serving state (see the [module docs](self)).
#[derive(Debug)]
pub struct Serving {
    me: Address,
    ours: HashSet<IpAddr>,
    leases: HashMap<u64, Served>,
    earning: Option<Earning>,
}

impl Serving {
    /// Seconds a lease is kept after it is over (late payments for it still count).
    pub const LINGER: u64 = 60;

    /// A provider `me` serving `ours`, paid through `earning` (none: a node without payments).
    pub fn new(me: Address, ours: HashSet<IpAddr>, earning: Option<Earning>) -> Serving {
        Serving {
            me,
            ours,
            leases: HashMap::new(),
            earning,
        }
    }

    /// The IPs served changed (a relayed provider got another public IP).
    pub fn serve_ips(&mut self, ours: HashSet<IpAddr>) {
        self.ours = ours;
    }

    /// Whether this provider should report ready for `deal`: its own, pending, on its IPs.
    pub fn should_ready(&self, deal: &DealView) -> bool {
        deal.provider == self.me
            && deal.status == DealStatus::Pending
            && deal.ips.iter().all(|ip| self.ours.contains(ip))
    }

    /// Takes one event from the node's stream. `Payment` is not taken here: see
    /// [`Serving::check_payment`].
    pub fn on_event(&mut self, event: &StreamEvent) -> Vec<Action> {
        match event {
            StreamEvent::DealMade { deal } if self.should_ready(deal) => {
                vec![Action::Ready(deal.clone())]
            }
            StreamEvent::LeaseReady {
                terms, provider, ..
            } if *provider == self.me => {
                self.leases.entry(terms.deal).or_insert(Served {
                    end: terms.end,
                    over: false,
                    cut: false,
                    unpaid_since: None,
                });
                if let Some(earning) = &mut self.earning {
                    // A lease told twice (a reconnect) is already followed.
                    let _ = earning.ledger.add_lease(LeaseTerms {
                        id: terms.deal,
                        rate: terms.rate.0,
                        start: terms.start,
                        end: terms.end,
                    });
                }
                Vec::new()
            }
            StreamEvent::LeaseEnded {
                terms,
                status,
                provider,
                ..
            } if *provider == self.me => {
                if let Some(earning) = &mut self.earning {
                    earning.ledger.end_lease(terms.deal, terms.end);
                }
                let early = !matches!(status, LeaseEnd::Completed | LeaseEnd::Ended);
                // Ended before this process knew it ran (a greeting after a restart): only
                // the cut matters, and nothing is left to forget but the proxy's state.
                let served = self.leases.entry(terms.deal).or_insert(Served {
                    end: terms.end,
                    over: true,
                    cut: false,
                    unpaid_since: None,
                });
                served.end = terms.end;
                served.over = true;
                self.cut_once(terms.deal, CutReason::Ended(*status), early)
            }
            StreamEvent::CutOff { deal, .. } => {
                self.cut_once(*deal, CutReason::NotPaying, self.leases.contains_key(deal))
            }
            _ => Vec::new(),
        }
    }

    fn cut_once(&mut self, deal: u64, why: CutReason, wanted: bool) -> Vec<Action> {
        match self.leases.get_mut(&deal) {
            Some(served) if wanted && !served.cut => {
                served.cut = true;
                vec![Action::Cut {
                    deal,
                    why,
                    until: served.end,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The once-a-second work at wall-clock second `now`, `running` seconds into this
    /// process: cut leases left unpaid past the grace, forget leases over for
    /// [`Serving::LINGER`] seconds.
    pub fn on_second(&mut self, now: u64, running: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(earning) = &self.earning {
            for (&deal, served) in &mut self.leases {
                let unpaid = earning
                    .ledger
                    .paid_through(deal)
                    .is_some_and(|through| now.saturating_sub(through) > earning.grace);
                if !unpaid || served.cut || now >= served.end {
                    served.unpaid_since = None;
                    continue;
                }
                // Judged on what this process heard while running: after a freeze (a laptop
                // asleep) the payments sent meanwhile are still queued, so an unpaid lease is
                // cut only once it stays unpaid for another grace period of running.
                let since = *served.unpaid_since.get_or_insert(running);
                if running.saturating_sub(since) >= earning.grace {
                    served.cut = true;
                    actions.push(Action::Cut {
                        deal,
                        why: CutReason::Unpaid,
                        until: served.end,
                    });
                }
            }
        }
        let done: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, served)| {
                // Over as the node said, or long past its end if the node never did.
                let over_at = if served.over {
                    served.end
                } else {
                    served.end.saturating_add(10 * Self::LINGER)
                };
                now >= over_at.saturating_add(Self::LINGER)
            })
            .map(|(&deal, _)| deal)
            .collect();
        for deal in done {
            self.leases.remove(&deal);
            if let Some(earning) = &mut self.earning {
                earning.ledger.forget(deal);
            }
            actions.push(Action::Forget { deal });
        }
        actions
    }

    /// Checks a payment from the node (`StreamEvent::Payment`, its proof decoded); store the
    /// proof, then [`Serving::accept_payment`].
    pub fn check_payment(
        &self,
        proof: &SignedProof,
        paid_through: &[(u64, u64)],
    ) -> Result<(), ProofError> {
        match &self.earning {
            Some(earning) => earning.ledger.check(&earning.domain, proof, paid_through),
            None => Ok(()),
        }
    }

    /// Counts a checked, stored payment.
    pub fn accept_payment(&mut self, proof: SignedProof, paid_through: &[(u64, u64)]) {
        if let Some(earning) = &mut self.earning {
            earning.ledger.accept(proof, paid_through);
        }
    }

    /// The payments side, if any.
    pub fn earning(&self) -> Option<&Earning> {
        self.earning.as_ref()
    }

    /// Leases followed now.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Leases followed now, by deal id.
    pub fn leases(&self) -> impl Iterator<Item = u64> + '_ {
        self.leases.keys().copied()
    }
}

#[cfg(test)]
mod tests;
