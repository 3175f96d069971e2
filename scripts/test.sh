#!/usr/bin/env bash
# Every check the project runs: formatting, lints, then all tests (unit, property, integration,
# crash-recovery with real processes, anvil-backed chain tests, doc examples, Solidity
# unit/fuzz/invariant tests). Installs nothing by hand: npm installs the Foundry toolchain
# (anvil, forge, cast), solc and OpenZeppelin pinned in contracts/package-lock.json; cargo
# fetches the crates pinned in Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required for the contracts and anvil (Node.js 18+)" >&2; exit 1; }
# Real clients for the proxy and gate tests, from Debian's packages (pinned), when missing: curl,
# Python's requests with SOCKS support (PySocks) for /usr/bin/python3, and Scrapy.
source scripts/apt-pinned.sh
# Chromium drives the dashboard's browser test; nats-server (JetStream) carries the cluster's log.
apt_pinned curl=7.88.1-10+deb12u15 python3-requests=2.28.1+dfsg-1 python3-socks=1.7.1+dfsg-1 \
  python3-scrapy=2.8.0-2 chromium=156.0.8078.114-1~deb12u1 nats-server=2.9.10-1+b3
# Contracts first: the Rust chain tests run against the anvil this installs, with the ABI files
# checked to match the Solidity sources.
(cd contracts && npm ci --no-audit --no-fund --loglevel=error && ./scripts/forge test \
  && node scripts/export-abi.js --check && ./scripts/smoke-deploy.sh)
# Gas per call, against budgets: a change that makes a call dearer fails here.
scripts/gas-report.sh --check
# The npm EIP-4361 verifier (siwe + ethers, pinned) that checks the node's sign-in messages.
(cd gateway/tests/siwe && npm ci --no-audit --no-fund --loglevel=error)
# The dashboard: uPlot (embedded in the node, checked to be the pinned package's files) and
# playwright-core, which drives Chromium in the browser test.
(cd dashboard && npm ci --no-audit --no-fund --loglevel=error && node build.mjs --check)
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
# A home provider behind a real NAT (network namespaces made and removed by the script, nftables
# masquerade) serves a fleet through the node's relay.
bash scripts/test-nat.sh target/debug/ipsx
# The month-long node in two minutes: a paying exchange churning 5-second leases; fails if the
# node's memory leaves ±25 % of its median after a minute (the 30-minute soak holds ±10 %).
SOAK_PROFILE=debug bash scripts/soak.sh --minutes 2 --warmup-minutes 1 --bound 0.25 \
  --sample-secs 5 --leases-per-second 4
