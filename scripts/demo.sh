#!/usr/bin/env bash
# The whole exchange on this machine, in one command: installs anvil (pinned in
# contracts/package-lock.json) when missing, builds the `ipsx` command, and runs `ipsx demo`:
# anvil + the real contracts, a node with payments, providers on 127.0.0.2…, a test site, a
# crawling fleet paying by the second, settlement on chain, and a report checked to the wei.
# Extra arguments go to `ipsx demo` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
if [ ! -x contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
  command -v npm >/dev/null || { echo "npm is required to install anvil (Node.js 18+)" >&2; exit 1; }
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build --locked --release -p ipsx-cli --quiet
exec ./target/release/ipsx demo "$@"
