#!/usr/bin/env bash
# Every check the project runs: formatting, lints, then all tests (unit, property, integration,
# crash-recovery with real processes, doc examples). Installs nothing by hand: cargo fetches the
# pinned crates from Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
