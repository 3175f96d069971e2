#!/usr/bin/env bash
# The contracts' long runs, apart from the test command (minutes, not seconds):
#
#   1. the Centralizer's invariant suite under the `bench` profile: 200 runs of 500 calls,
#      100,000 random calls of deposits, channels, proofs, closes and withdrawals, each run
#      checking that tokens are conserved and nobody is paid more than was signed;
#   2. the gas table, the old contracts beside these (scripts/gas-report.sh).
#
# Writes both outputs to benches/results/contracts-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -d "$root/contracts/node_modules" ] || (cd "$root/contracts" && npm ci --no-audit --no-fund --loglevel=error)
out="$root/benches/results/contracts-$(date -u +%Y-%m-%d).txt"
{
  echo "# FOUNDRY_PROFILE=bench forge test --match-contract Invariant"
  (cd "$root/contracts" && FOUNDRY_PROFILE=bench ./scripts/forge test --match-contract Invariant 2>&1)
  echo
  echo "# scripts/gas-report.sh"
  bash "$root/scripts/gas-report.sh"
} | tee "$out"
echo "written to ${out#"$root"/}"
