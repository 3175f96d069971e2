#!/usr/bin/env bash
# What each Centralizer call costs as a transaction, before and after, with budgets.
#
#   scripts/gas-report.sh            the table: the contracts of $GAS_BASE (built in a git
#                                    worktree beside this tree) against this tree's
#   scripts/gas-report.sh --check    this tree only, against the budgets (what the tests run)
#
# Both sides run this tree's contracts/test/CentralizerGas.t.sol under `forge test --isolate`,
# so every figure is one transaction's gasUsed: intrinsic 21,000, calldata, cold storage, refunds.
# Exits non-zero when a figure is over its budget (a regression guard); the table also shows the
# targets the product needs, met or not.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The last commit with the unoptimised contracts (the figures the budgets were set against).
base=${GAS_BASE:-a41920a}
check_only=false
[ "${1:-}" = "--check" ] && check_only=true

measure() { # contracts folder -> "name<TAB>gas" lines
  (cd "$1" && ./scripts/forge test --match-contract "CentralizerGasTest|DealAnchorGasTest" --isolate -vv 2>&1) |
    sed -n 's/^  \([a-zA-Z][^:]*\): \([0-9][0-9]*\)$/\1\t\2/p'
}

[ -d "$root/contracts/node_modules" ] || (cd "$root/contracts" && npm ci --no-audit --no-fund --loglevel=error)
after=$(mktemp)
before=$(mktemp)
trap 'rm -f "$after" "$before"' EXIT
measure "$root/contracts" >"$after"
[ -s "$after" ] || { echo "gas-report: the gas test printed nothing (does it compile?)" >&2; exit 1; }

if ! $check_only; then
  old=$(mktemp -d)
  trap 'rm -f "$after" "$before"; git -C "$root" worktree remove --force "$old" >/dev/null 2>&1 || true' EXIT
  git -C "$root" worktree add --detach "$old" "$base" >/dev/null 2>&1
  ln -s "$root/contracts/node_modules" "$old/contracts/node_modules"
  # The same scenarios on both sides; Testing.sol only gains what they use (lastCallGas).
  cp "$root/contracts/test/CentralizerGas.t.sol" "$old/contracts/test/"
  cp "$root/contracts/test/utils/Testing.sol" "$old/contracts/test/utils/"
  measure "$old/contracts" >"$before"
fi

python3 - "$before" "$after" <<'PY'
import sys
# Budgets: the most each call may cost before this script fails (today's figure and a little
# room), so no change makes a call dearer unnoticed. Lower them as the contracts get cheaper.
BUDGET = {
    "checkpoint, requester to node (the receiver is the treasury)": 45_000,
    "checkpoint, node to provider (the sender is the treasury)": 45_000,
    "cooperativeClose, node to provider": 60_000,
    "deposit": 43_500,
    "withdraw": 64_500,
    "openChannel (the contract's first)": 97_500,
    "openChannel": 80_000,
    "topUp": 35_500,
    "checkpoint, third-party treasury (first on the channel)": 50_000,
    "checkpoint, third-party treasury": 50_000,
    "checkpoint, third-party treasury, 64-byte signature": 50_000,
    "batchCheckpoint (per channel after the first)": 18_700,
    "cooperativeClose, third-party treasury": 65_000,
    "startClose": 54_500,
    "settle (nothing more to pay)": 40_000,
    "challenge": 38_000,
    "settle (pays the rest)": 55_500,
    "receiverClose": 60_000,
    "DealAnchor.anchor (the first epoch)": 69_500,
    "DealAnchor.anchor (an epoch of any size)": 52_500,
}
# Targets: where the product needs them (a provider earns cents an hour; micro-Raiden opened
# for 89-120 k and closed cooperatively for 71 k in 2018, an Orchid claim is about 60 k). In the
# hub model the node is the treasury, so the hub rows are the ones users pay; the third-party
# rows (a treasury that is neither party, a payment crediting three wallets) are shown too.
TARGET = {
    "checkpoint, requester to node (the receiver is the treasury)": 45_000,
    "checkpoint, node to provider (the sender is the treasury)": 45_000,
    "cooperativeClose, node to provider": 60_000,
    "checkpoint, third-party treasury": 45_000,
    "checkpoint, third-party treasury, 64-byte signature": 45_000,
    "openChannel": 80_000,
    "batchCheckpoint (per channel after the first)": 25_000,
    "cooperativeClose, third-party treasury": 60_000,
    "settle (nothing more to pay)": 40_000,
    "DealAnchor.anchor (an epoch of any size)": 60_000,
}
def read(path):
    rows = {}
    for line in open(path):
        name, gas = line.rstrip("\n").split("\t")
        rows[name] = int(gas)
    return rows
def cell(value, width):
    return f"{value:>{width}}" if value else f"{'-':>{width}}"
before, after = read(sys.argv[1]), read(sys.argv[2])
print(f"| {'call (gas per transaction)':<62} | {'before':>8} | {'after':>8} | {'change':>7} | {'target':>7} | {'budget':>7} |")
print(f"|{'-'*64}|{'-'*10}|{'-'*10}|{'-'*9}|{'-'*9}|{'-'*9}|")
over = []
for name, gas in after.items():
    old = before.get(name)
    change = f"{(gas - old) / old:>+7.0%}" if old and gas else f"{'':>7}"
    target, budget = TARGET.get(name), BUDGET.get(name)
    notes = []
    if gas == 0:
        notes.append("REFUSED")
        over.append(name)
    elif budget is not None and gas > budget:
        notes.append("OVER BUDGET")
        over.append(name)
    if gas and target is not None:
        notes.append("target met" if gas <= target else "target not met")
    print(f"| {name:<62} | {cell(old, 8)} | {cell(gas, 8)} | {change} | {cell(target, 7)} | {cell(budget, 7)} | {', '.join(notes)}")
if over:
    print(f"gas-report: over budget or refused: {', '.join(over)}", file=sys.stderr)
    sys.exit(1)
PY
