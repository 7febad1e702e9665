#!/usr/bin/env bash
# What each piece of prefork's per-request machinery costs, in CPU time per
# no-op request: prefork as it is, prefork with one piece switched off
# (its hidden `--without`, which breaks the contract and exists for this
# only), prefork with all of them off, and bare, the ceiling, in one
# `lab run` with the repeats interleaved. Each at one worker, closed loop
# and open loop at a fixed rate (the same load for every variant, so that
# how many requests share one wake-up of the loop is the same too).
#
# usage: scripts/machinery-cost.sh [REPEATS=5] [DURATION=3s] [RATE=20000]
# Quotable only from a clean tree, like every run.
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-5}
duration=${2:-3s}
rate=${3:-20000}
target=${CARGO_TARGET_DIR:-target}

cargo build --quiet --release -p lab -p prefork -p bare
prefork="$target/release/prefork --listen {addr} --workers {workers} --worker-timeout-ms 0"
servers=(--server "prefork-full=$prefork")
models=bare,prefork-full
for piece in stats x-worker routing header-timer ticker stats,x-worker,routing,header-timer,ticker; do
  name="prefork-no-${piece//,/-}"
  [ "$piece" = "${piece//,/}" ] || name=prefork-none
  servers+=(--server "$name=$prefork --without $piece")
  models+=",$name"
done

cargo run --quiet --release -p lab -- run "${servers[@]}" --models "$models" \
  --workloads noop --workers 1 --rate "$rate" --repeat "$repeats" \
  --duration "$duration" --name "$(date -u +%Y%m%dT%H%M%S)-machinery-cost"
