#!/usr/bin/env bash
# Re-runs every experiment the README quotes, from a clean tree, one after
# the other (never two loads at once on a small machine), into results/.
# About 25 minutes on 2 cores. The runs refuse nothing on a dirty tree, but
# mark it; this script refuses to start on one.
#
# usage: scripts/readme-results.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain --untracked-files=normal -- . ':!results')" ]; then
  echo "readme-results: the tree has uncommitted changes; commit first" >&2
  exit 1
fi
stamp=$(date -u +%Y%m%dT%H%M%S)
lab() { cargo run --quiet --release -p lab -- "$@"; }

cargo build --quiet --release -p lab
# The default matrix, every kind.
lab run --name "$stamp-default"
# What pinning the server and the load generator to disjoint CPUs changes.
lab run --pin on --models bare,prefork,threadpool,node-cluster,node-threads \
  --workloads noop,cpu --workers 1,2 --duration 3s --name "$stamp-pinned"
# Latency at the same share of each kind's capacity (open loop).
lab run --models prefork,threadpool,node-cluster,node-threads --workloads cpu,io \
  --workers 2 --load 0.5,0.8 --duration 3s --name "$stamp-open-loop"
# Crash isolation, every kind and fault; then prefork with a shared socket.
lab crash --name "$stamp-crash"
lab crash --models prefork --balance shared --name "$stamp-crash-prefork-shared"
# The dataset memory lesson: shared before the fork, or built per worker.
for load in before-fork per-worker; do
  lab run --models prefork,threadpool,node-cluster,node-threads --workloads noop \
    --dataset-mb 64 --dataset-load "$load" --duration 2s --warmup 0 \
    --name "$stamp-dataset-64mb-$load"
done
# The no-op throughput ratios, repeated.
scripts/noop-ratios.sh 5 3s
