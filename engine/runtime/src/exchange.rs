//! Several shards behind one front: commands go to the shard that owns their market.
//!
//! Markets are countries: country `c` belongs to shard `c.index() % shards`. Offers go to their
//! country's shard; requests to the shard owning every country they name; commands naming an
//! id go to the shard whose number the id carries. A request for "any country", or for
//! countries of different shards, is refused with [`SubmitError::CrossShard`] when more than one
//! shard runs: matching across shards would need them to agree on one priority order, which a
//! later coordinator can add. With one shard (the default) every request is accepted.

use std::path::Path;

use ipsx_engine::{CommandKind, Country, EngineConfig, MarketDepth};

use crate::error::{StoreError, SubmitError};
use crate::shard::{Outcome, ShardConfig, ShardHandle};

/// The shards of one node.
pub struct Exchange {
    shards: Vec<ShardHandle>,
}

impl Exchange {
    /// Starts `count` shards with stores under `dir/shard-<i>`, each configured like `template`.
    pub fn start(dir: &Path, count: u16, template: &ShardConfig) -> Result<Exchange, StoreError> {
        let shards = (0..count.max(1))
            .map(|shard| {
                let mut config = template.clone();
                config.store.dir = dir.join(format!("shard-{shard}"));
                config.store.engine.shard = shard;
                ShardHandle::start(config)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exchange { shards })
    }

    /// The shards, by number.
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// The shard that owns a country's market.
    pub fn shard_of_country(&self, country: Country) -> usize {
        country.index() % self.shards.len()
    }

    /// The shard a command must go to.
    pub fn route(&self, kind: &CommandKind) -> Result<usize, SubmitError> {
        let by_id = |id: u64| {
            let shard = EngineConfig::shard_of(id);
            if usize::from(shard) < self.shards.len() {
                Ok(usize::from(shard))
            } else {
                Err(SubmitError::UnknownShard(shard))
            }
        };
        match kind {
            CommandKind::Tick => Ok(0),
            // A setting of one engine: a node with several shards sets each in turn.
            CommandKind::SetDealRetention { .. } if self.shards.len() == 1 => Ok(0),
            CommandKind::SetDealRetention { .. } => Err(SubmitError::CrossShard),
            CommandKind::PlaceOffer(spec) => Ok(self.shard_of_country(spec.country)),
            CommandKind::SubmitRequest(spec) => {
                let mut owners = spec
                    .filters
                    .countries
                    .iter()
                    .map(|c| self.shard_of_country(c));
                match owners.next() {
                    None if self.shards.len() == 1 => Ok(0),
                    None => Err(SubmitError::CrossShard),
                    Some(first) if owners.all(|s| s == first) => Ok(first),
                    Some(_) => Err(SubmitError::CrossShard),
                }
            }
            CommandKind::CancelOffer { offer, .. } | CommandKind::AmendOffer { offer, .. } => {
                by_id(offer.0)
            }
            CommandKind::CancelRequest { request, .. }
            | CommandKind::AmendRequest { request, .. } => by_id(request.0),
            CommandKind::ProviderReady { deal, .. }
            | CommandKind::ProviderFailed { deal, .. }
            | CommandKind::PaymentLapsed { deal, .. }
            | CommandKind::CancelDeal { deal, .. }
            | CommandKind::Rate { deal, .. } => by_id(deal.0),
            // Profiles live in every shard; uptime notes are for single-shard nodes for now.
            CommandKind::NoteUptime { .. } if self.shards.len() == 1 => Ok(0),
            CommandKind::NoteUptime { .. } => Err(SubmitError::CrossShard),
        }
    }

    /// Routes a command, stamped now, and waits until it is durable (or refused).
    pub fn submit(&self, kind: CommandKind) -> Result<Outcome, SubmitError> {
        let shard = self.route(&kind)?;
        self.shards[shard].submit(kind)
    }

    /// Market depth over every shard.
    pub fn depth(&self) -> MarketDepth {
        let mut levels: Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| s.depth().levels.clone())
            .collect();
        levels.sort_by_key(|l| (l.country, l.protocol, l.kind, l.price));
        MarketDepth { levels }
    }

    /// Stops every shard after a final snapshot.
    pub fn shutdown(self) -> Result<(), StoreError> {
        for shard in self.shards {
            shard.shutdown()?;
        }
        Ok(())
    }
}
