//! When a receiver should turn its latest proofs into tokens on chain.
//!
//! A checkpoint costs gas (about 55k for one channel alone, 19k for each further channel of a
//! batch, as `scripts/gas-report.sh` measures them; the default still prices a channel at the
//! 66k the contracts cost before, which errs toward fewer checkpoints) and earns nothing by itself: the signed proof is already as good as
//! money while the channel is open and the watcher guards closes. So the policy checkpoints a
//! channel when its unclaimed value is worth many times the gas it costs (default 20x, gas at
//! most 5 % of what is claimed), or when it has waited `max_interval` with anything unclaimed
//! (bounding how long value sits off chain), and batches every channel that is due into one
//! transaction.

/// What a checkpoint costs and when it pays off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Gas one channel adds to a batch checkpoint.
    pub gas_per_channel: u64,
    /// Gas price in wei.
    pub gas_price_wei: u128,
    /// Token base units one ether buys (the node's price feed or a configured rate).
    pub tokens_per_ether: u128,
    /// Checkpoint when unclaimed value is at least this many times its gas cost.
    pub value_over_gas: u128,
    /// Checkpoint anything unclaimed after this many seconds.
    pub max_interval: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            gas_per_channel: 66_000,
            gas_price_wei: 1_000_000_000,
            tokens_per_ether: 10_000 * 10u128.pow(18),
            value_over_gas: 20,
            max_interval: 6 * 3600,
        }
    }
}

/// One channel as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unclaimed {
    /// Latest proof amount minus what the contract has paid out.
    pub amount: u128,
    /// When it was last checkpointed (or opened).
    pub since: u64,
}

impl CheckpointPolicy {
    /// The token value of one channel's checkpoint gas.
    pub fn gas_cost_in_tokens(&self) -> u128 {
        u128::from(self.gas_per_channel)
            .saturating_mul(self.gas_price_wei)
            .saturating_mul(self.tokens_per_ether)
            / 10u128.pow(18)
    }

    /// Whether a channel is due at `now`.
    pub fn due(&self, channel: Unclaimed, now: u64) -> bool {
        if channel.amount == 0 {
            return false;
        }
        let worth_it = channel.amount
            >= self
                .gas_cost_in_tokens()
                .saturating_mul(self.value_over_gas);
        let waited = now.saturating_sub(channel.since) >= self.max_interval;
        worth_it || waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_when_worth_the_gas_or_waited_long_enough() {
        let policy = CheckpointPolicy {
            gas_per_channel: 50_000,
            gas_price_wei: 2_000_000_000,
            tokens_per_ether: 1_000 * 10u128.pow(18),
            value_over_gas: 20,
            max_interval: 3600,
        };
        // 50k gas * 2 gwei = 1e14 wei = 1e-4 ETH = 0.1 token.
        assert_eq!(policy.gas_cost_in_tokens(), 10u128.pow(17));
        let threshold = 2 * 10u128.pow(18);
        assert!(!policy.due(
            Unclaimed {
                amount: threshold - 1,
                since: 0
            },
            10
        ));
        assert!(policy.due(
            Unclaimed {
                amount: threshold,
                since: 0
            },
            10
        ));
        assert!(policy.due(
            Unclaimed {
                amount: 1,
                since: 0
            },
            3600
        ));
        assert!(!policy.due(
            Unclaimed {
                amount: 0,
                since: 0
            },
            1_000_000
        ));
    }
}
