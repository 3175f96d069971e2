#!/usr/bin/env bash
# Deploys everything to a throw-away anvil on a loopback port with scripts/deploy.sh and checks
# the result with cast: the chain id is checked first, the deploy script works, writes its
# addresses file, and leaves a finalized sale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=node_modules/@foundry-rs
port=${ANVIL_PORT:-18545}
rpc=http://127.0.0.1:$port
# anvil's first well-known development key (public, local chains only).
key=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
deployer=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
"$bin/anvil-linux-amd64/bin/anvil" --host 127.0.0.1 --port "$port" --silent &
anvil=$!
trap 'kill $anvil 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$bin/cast-linux-amd64/bin/cast" chain-id --rpc-url "$rpc" >/dev/null 2>&1 && break
  sleep 0.1
done
# The deploy command refuses a chain id the endpoint does not have, sending nothing.
if ./scripts/deploy.sh --rpc-url "$rpc" --chain-id 8453 --private-key "$key" 2>/dev/null; then
  echo "deployed to a chain id the endpoint does not have" >&2; exit 1
fi
[ "$("$bin/cast-linux-amd64/bin/cast" nonce "$deployer" --rpc-url "$rpc")" = 0 ] || { echo "sent something" >&2; exit 1; }
./scripts/deploy.sh --rpc-url "$rpc" --chain-id 31337 --private-key "$key" >/dev/null
token=$(node -e "console.log(require('./deployments/31337.json').token)")
centralizer=$(node -e "console.log(require('./deployments/31337.json').centralizer)")
cast() { "$bin/cast-linux-amd64/bin/cast" call "$@" --rpc-url "$rpc"; }
[ "$(cast "$token" 'transfersEnabled()(bool)')" = true ] || { echo "sale not finalized" >&2; exit 1; }
[ "$(cast "$token" 'totalSupply()(uint256)' | cut -d' ' -f1)" = 1800000000000000000000000000 ] || { echo "bad supply" >&2; exit 1; }
[ "$(cast "$centralizer" 'commissionBps()(uint16)')" = 250 ] || { echo "bad commission" >&2; exit 1; }
[ "$(cast "$token" 'balanceOf(address)(uint256)' "$deployer" | cut -d' ' -f1)" = 1800000000000000000000000000 ] || { echo "allocations not with the deployer" >&2; exit 1; }
anchor=$(node -e "console.log(require('./deployments/31337.json').anchor)")
[ "$(cast "$anchor" 'anchorer()(address)')" = "$deployer" ] || { echo "anchor not run by the treasury" >&2; exit 1; }
echo "deploy smoke test: passed (token $token, centralizer $centralizer, anchor $anchor)"
