#!/usr/bin/env bash
# The node's lease calls under load against nginx serving a static response, in one run on this
# machine (Debian's nginx and wrk, installed here, pinned). Extra arguments go to the
# harness, e.g. `--rounds 5` or `--clients 128`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt-pinned.sh
apt_pinned nginx=1.22.1-9+deb12u11 nginx-common=1.22.1-9+deb12u11 wrk=4.1.0-3+b2
cargo build --release --locked -p ipsx-cli -p ipsx-benches
exec ./target/release/gateway-load "$@"
