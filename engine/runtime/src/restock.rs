//! Recovery's third helper: builds the empty record chunks a replaying engine grows into, on
//! the other core, so that the engine's thread does not pay their page faults (see
//! [`ipsx_engine::Stock`]).
//!
//! The applier tends the helper every [`TEND_EVERY`] commands: it takes what was built and,
//! when it holds fewer than [`AHEAD`] spare chunks of some kind, orders the rest. One order is
//! out at a time, and an order names only what is missing, so the helper never builds more
//! than [`AHEAD`] chunks of a kind beyond what the engine used: a replay that stops growing
//! (or never grew) leaves at most that behind. If the helper falls behind, the engine builds
//! its own chunks as it always could.

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use ipsx_engine::{Engine, Stock, StockOrder};

/// Commands between two looks at the engine's spares: a chunk holds 256 records, so the
/// engine cannot run through [`AHEAD`] chunks in this many.
pub(crate) const TEND_EVERY: u64 = 16;
/// Spare chunks of each kind the engine should hold: 16 chunks are 4,096 deals, a few
/// milliseconds of replay, and a few megabytes.
const AHEAD: usize = 32;

pub(crate) struct Restocker {
    orders: Option<Sender<StockOrder>>,
    built: Receiver<Stock>,
    ordered: bool,
    helper: Option<JoinHandle<()>>,
}

impl Restocker {
    /// Starts the helper thread; `None` if it cannot be started (the engine then builds its
    /// own chunks, a little slower).
    pub(crate) fn spawn() -> Option<Restocker> {
        let (orders, to_build) = crossbeam_channel::bounded::<StockOrder>(1);
        let (send_built, built) = crossbeam_channel::bounded::<Stock>(1);
        let helper = thread::Builder::new()
            .name("ipsx-replay-stock".into())
            .spawn(move || {
                for order in to_build {
                    if send_built.send(order.build()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| tracing::warn!(%error, "replaying without a chunk builder"))
            .ok()?;
        Some(Restocker {
            orders: Some(orders),
            built,
            ordered: false,
            helper: Some(helper),
        })
    }

    /// Hands the engine what was built, and orders what it lacks.
    pub(crate) fn tend(&mut self, engine: &mut Engine) {
        if self.ordered {
            match self.built.try_recv() {
                Ok(stock) => {
                    engine.restock(stock);
                    self.ordered = false;
                }
                // Still building (or gone, and the engine builds its own).
                Err(_) => return,
            }
        }
        let order = engine.stock_order(AHEAD);
        if !order.is_empty()
            && let Some(orders) = &self.orders
        {
            self.ordered = orders.send(order).is_ok();
        }
    }
}

impl Drop for Restocker {
    fn drop(&mut self) {
        // Closing the orders ends the helper once it has handed over (or dropped) its last
        // build.
        self.orders = None;
        while self.built.recv().is_ok() {}
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ipsx_engine::EngineConfig;

    use super::*;

    #[test]
    fn an_engine_is_stocked_to_the_mark_and_the_helper_stops_with_its_owner() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut restocker = Restocker::spawn().expect("the helper starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.stock_order(AHEAD).is_empty() {
            assert!(Instant::now() < deadline, "the engine was never stocked");
            restocker.tend(&mut engine);
            thread::yield_now();
        }
        // Stocked: nothing more is ordered.
        restocker.tend(&mut engine);
        assert!(!restocker.ordered);
        drop(restocker);
    }
}
