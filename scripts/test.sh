#!/usr/bin/env bash
# Every check the project runs: formatting, lints, then all tests (unit, property, integration,
# crash-recovery with real processes, doc examples, Solidity unit/fuzz/invariant tests). Installs
# nothing by hand: cargo fetches the crates pinned in Cargo.lock, npm the Foundry toolchain,
# solc and OpenZeppelin pinned in contracts/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
# Contracts: Foundry and the Solidity compiler come pinned from npm (contracts/package-lock.json).
command -v npm >/dev/null || { echo "npm is required for the contracts (Node.js 18+)" >&2; exit 1; }
(cd contracts && npm ci --no-audit --no-fund --loglevel=error && ./scripts/forge test && ./scripts/smoke-deploy.sh)
