#!/usr/bin/env bash
# A provider behind the relay against the same provider proxy reached directly, in one run on
# this machine: one tunnel's bulk throughput, CONNECT + small answer per second, 1,000 tunnels
# over one provider connection, and the relay's memory per idle provider connection with
# 10,000 simulated providers. Extra arguments go to the harness, e.g. `--rounds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ipsx-cli -p ipsx-benches
exec ./target/release/relay-load "$@"
