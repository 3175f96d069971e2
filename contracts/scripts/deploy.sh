#!/usr/bin/env bash
# Deploys the IPSX contracts (sale and token, Centralizer, deal anchor) to any chain, from this
# folder's pinned forge, and prints where they went.
#
#   scripts/deploy.sh --rpc-url URL --chain-id ID [forge signing options…]
#
# The chain id is checked against what the RPC endpoint says before anything is sent, so a
# deployment meant for one network never lands on another. Signing is forge's: `--account NAME`
# (an encrypted keystore, `cast wallet import`), `--ledger`, or `--private-key` for local chains.
# Settings come from the environment (see script/Deploy.s.sol): TREASURY, ANCHORER,
# COMMISSION_BPS, CHALLENGE_PERIOD, the sale's dates and allocation holders. The addresses are
# written to deployments/<chain id>.json, which the node reads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage() { echo "usage: scripts/deploy.sh --rpc-url URL --chain-id ID [forge signing options]" >&2; exit 2; }
rpc="" chain=""
forward=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rpc-url) rpc=${2:-}; shift 2 || usage ;;
    --chain-id) chain=${2:-}; shift 2 || usage ;;
    *) forward+=("$1"); shift ;;
  esac
done
[ -n "$rpc" ] && [ -n "$chain" ] || usage
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
cast=node_modules/@foundry-rs/cast-linux-amd64/bin/cast
actual=$("$cast" chain-id --rpc-url "$rpc") || { echo "deploy: cannot reach $rpc" >&2; exit 1; }
if [ "$actual" != "$chain" ]; then
  echo "deploy: $rpc is chain $actual, not $chain: nothing sent" >&2
  exit 1
fi
./scripts/forge script script/Deploy.s.sol --rpc-url "$rpc" --broadcast "${forward[@]}" >/dev/null
echo "deployed to chain $chain:"
cat "deployments/$chain.json"
