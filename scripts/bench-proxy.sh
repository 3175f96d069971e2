#!/usr/bin/env bash
# The egress proxy against its peers, in one run on this machine: direct loopback (the
# ceiling), ipsx-proxy, Debian's microsocks and dante-server (installed here, pinned).
# Extra arguments go to the harness, e.g. `--rounds 5` or `--peers direct,ipsx`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt-pinned.sh
apt_pinned microsocks=1.0.3-2 dante-server=1.4.2+dfsg-7+b8
cargo build --release --locked -p ipsx-proxy -p ipsx-benches
exec ./target/release/proxy-load "$@"
