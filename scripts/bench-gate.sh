#!/usr/bin/env bash
# The crawler endpoint under load: 1 KiB pages over keep-alive through `ipsx gate`, through the
# provider endpoints directly and with no proxy, in one run on this machine (Debian's nginx as
# the origin, installed here, pinned). Extra arguments go to the harness, e.g. `--rounds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt-pinned.sh
apt_pinned nginx=1.22.1-9+deb12u11 nginx-common=1.22.1-9+deb12u11
cargo build --release --locked -p ipsx-cli -p ipsx-benches
exec ./target/release/gate-load "$@"
