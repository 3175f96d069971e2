#!/usr/bin/env bash
# Fuzzes every parser that reads bytes from the network or the disk with libFuzzer
# (cargo fuzz): the SOCKS5 negotiation, HTTP proxy request heads, SOCKS5 UDP headers, the
# balance-proof wire form, the engine's journal and the node's API bodies / sign-in inputs.
#
#   bash scripts/fuzz.sh                      # every target, 10 million runs (at most an hour each)
#   bash scripts/fuzz.sh --runs 1000000 journal http_head
#   bash scripts/fuzz.sh --seconds 60         # a time budget instead
#
# Each target starts from the seeds committed in fuzz/seeds/<target> and grows a working
# corpus in target/fuzz-corpus/<target> (kept between runs, not committed). A crash stops the
# script with libFuzzer's reproducer in fuzz/artifacts/<target>/; its final stats line
# (executions, corpus size) is printed per target. Needs the nightly toolchain (rustup) and
# installs cargo-fuzz (pinned) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10000000
seconds=3600
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; runs=-1; shift 2 ;;  # libFuzzer: -runs=-1 is no limit (0 runs nothing)
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(socks5 http_head udp_header balance_proof journal api_bodies gate_credentials gate_socks5 relay_sniff)
fi

rustup toolchain list | grep -q '^nightly' \
  || { echo "the nightly toolchain is required: rustup toolchain install nightly" >&2; exit 1; }
if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.1'; then
  cargo install cargo-fuzz --version 0.13.1 --locked
fi

(cd fuzz && cargo +nightly fuzz build -O)
for target in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  log="target/fuzz-corpus/$target.log"
  echo "== $target: $([[ $runs -gt 0 ]] && echo "$runs runs" || echo "${seconds}s")"
  (cd fuzz && cargo +nightly fuzz run -O "$target" "../$corpus" -- \
      -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 -close_fd_mask=3) \
      >"$log" 2>&1 || { tail -40 "$log"; echo "$target: FAILED (see $log and fuzz/artifacts/$target)" >&2; exit 1; }
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  size=$(ls "$corpus" | wc -l)
  echo "   $execs executions, $rate/s, corpus $size inputs, no crash"
done
