#!/usr/bin/env bash
# The soak: a node with payments, provider daemons and paying fleets churning 5-second leases
# (30 minutes by default); the node's RSS, file descriptors and open deals are sampled every
# 10 s and plotted (target/soak/soak.svg, soak.csv). Fails if, after the warm-up, the node's
# RSS moves more than the bound from its median. Installs anvil (pinned in
# contracts/package-lock.json) when missing. Extra arguments go to the harness (`--help`), e.g.
# `--minutes 2 --warmup-minutes 1 --bound 0.25` (the CI check).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
  command -v npm >/dev/null || { echo "npm is required to install anvil (Node.js 18+)" >&2; exit 1; }
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
fi
profile="${SOAK_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --locked --release -p ipsx-cli -p ipsx-benches --bin ipsx --bin soak
else
  cargo build --locked -p ipsx-cli -p ipsx-benches --bin ipsx --bin soak
fi
exec "./target/$profile/soak" "$@"
